/*
 * torch_walk.h: what the two torch containers share: finding the tensors in
 * an unpickled object graph. Private to formats/: torch.c (zip checkpoints,
 * torch.save since 1.6) and torch_legacy.c (the format before it) use it.
 *
 * Both containers pickle the same objects. A tensor is rebuilt by
 * torch._utils._rebuild_tensor, _rebuild_tensor_v2 or _rebuild_tensor_v3
 * (maybe inside _rebuild_parameter or _rebuild_from_type_v2) from a storage
 * persistent id ('storage', <storage class>, key, location, numel[, view
 * metadata]). The walk names each tensor by its JSON Pointer path through
 * dicts, lists and tuples, or inside a pickled nn.Module as state_dict()
 * names it, and asks the container's resolver which storage of the upload a
 * persistent id means: the zip reader finds the record <top>/data/<key>, the
 * legacy reader the key in the storage list that follows its pickle.
 *
 * The walk is bounded in depth (max_depth) and in visits (max_visits), since
 * the graph may share nodes or be cyclic. Its memory comes from the upload's
 * meter (budget.h): its own buffers from the parse region, the checkpoint it
 * builds from the result region.
 */
#ifndef CK_TORCH_WALK_H
#define CK_TORCH_WALK_H

#include <stddef.h>
#include <stdint.h>

#include "checkpoint.h"
#include "pickle.h"

/* A storage persistent id, as torch_walk_pid reads it. Borrowed from the
 * pickle graph. */
struct torch_pid {
	const struct pickle_value *cls; /* a GLOBAL: torch.FloatStorage, ... */
	const char *key;		/* NUL-terminated, keylen bytes */
	size_t keylen;
	uint64_t numel; /* elements of cls's dtype; bytes for UntypedStorage */
	/* The sixth item (the legacy format's view metadata) when there is
	 * one, else NULL; the zip format has five items. */
	const struct pickle_value *view;
};

/* What a persistent id resolves to, for the tensors built on it. */
struct torch_ref {
	size_t storage;	     /* index into the checkpoint's storages */
	enum dtype dtype;    /* the dtype its tensors have (_rebuild_tensor_v3 may say another) */
	uint64_t view_off;   /* the tensor's storage offset counts from this byte... */
	uint64_t view_bytes; /* ...and it may use this many bytes from there */
};

struct torch_walk;

/* A container's resolver: 1 and *out for a storage persistent id, 0 for a
 * persistent id that is no storage (the walk ignores it; a tensor built on
 * it is refused), or a negative CK_E* code with the message set. */
typedef int (*torch_resolve_fn)(struct torch_ref *out, struct torch_walk *w,
				const struct pickle_value *pid);

struct torch_walk {
	/* Set by the reader before torch_walk_begin. */
	const struct ck_input *in;
	const struct fmt_limits *lim;
	struct fmt_meter *m;	  /* every allocation is charged to it */
	const char *src;	  /* the pickle, in messages: "data.pkl" */
	const char *st_prefix;	  /* before a storage key in messages: "storage " */
	torch_resolve_fn resolve; /* the container's */
	void *arg;		  /* the resolver's */
	uint64_t max_visits;	  /* nodes the walk may visit */
	struct fmt_ckpt *ck;	  /* built by the walk (the meter's result region) */
	/* Private. */
	int *untyped;	/* per storage: saved as UntypedStorage */
	int *dtype_set; /* per storage: its dtype is known (typed, or fixed by a v3 tensor) */
	size_t stcap, tcap;
	char *path; /* the JSON Pointer of the node being walked */
	size_t plen, pcap;
	char *dotted; /* module name prefix ("layer1.0.") */
	size_t dlen, dcap;
	uint64_t visits;
};

/* Allocates the checkpoint (kind) and the path buffer. 0 or the meter's
 * code (CK_ETOOBIG, CK_ENOMEM). */
int torch_walk_begin(struct torch_walk *w, enum fmt_kind kind);

/* Reads pid as ('storage', <class>, key, location, numel[, view]) into *out.
 * 0, or CK_ECORRUPT naming the path being walked. */
int torch_walk_pid(struct torch_pid *out, struct torch_walk *w, const struct pickle_value *pid);

/* Adds a storage to the checkpoint; *idx is its index. untyped: saved as
 * UntypedStorage (dt is then DT_UINT8 until a _rebuild_tensor_v3 tensor
 * fixes it). 0 or the meter's code. */
int torch_walk_add_storage(size_t *idx, struct torch_walk *w, const char *key, size_t keylen,
			   enum dtype dt, int untyped, uint64_t file_off, uint64_t nbytes,
			   uint32_t zip_crc);

/* Walks the graph from root: resolves every storage persistent id and adds
 * every tensor to the checkpoint. Errors: CK_ECORRUPT (a malformed tensor,
 * a tensor past its storage, two tensors with one path), CK_ETOOBIG (depth,
 * visits, tensors, the budget), and the resolver's. */
int torch_walk_run(struct torch_walk *w, const struct pickle_value *root);

/* Epoch, step and loss from root when it is a dict (SPEC 2). A 0-d loss
 * tensor is read from the upload: the storages' file offsets must be known. */
int torch_walk_meta(struct torch_walk *w, const struct pickle_value *root);

/* Sorts the storages by file offset (which must be distinct), refuses two
 * tensors with one path, and hands the checkpoint over to *out
 * (fmt_ckpt_keep). On failure the checkpoint stays with the meter. */
int torch_walk_finish(struct fmt_ckpt **out, struct torch_walk *w);

#endif
