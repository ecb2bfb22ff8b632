/*
 * plan.h: a file to be served, described before any byte is sent.
 *
 * ckptd never assembles an output file in memory. A writer (pth, safetensors,
 * npy, or the rebuild of an upload) produces a plan: an ordered list of
 * segments, each either literal bytes the plan owns (zip headers, a pickle, a
 * JSON header) or a byte range of a stored storage (a blob), or a strided
 * gather of one tensor's elements in C order (for non-contiguous views). The
 * total size is known up front, so HTTP can send Content-Length and serve
 * Range requests by walking the segments; the api layer fills the storage
 * segments from the blob store while streaming.
 */
#ifndef CK_PLAN_H
#define CK_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "tensor.h"

enum plan_kind {
	PLAN_LITERAL = 0, /* lit[0..len) */
	PLAN_RANGE,	  /* bytes [src_off, src_off+len) of storage `storage` */
	PLAN_GATHER,	  /* the elements of view `view` in C order (len bytes) */
};

/* A tensor view, as a writer's input and as a GATHER segment's source. */
struct plan_view {
	const char *name; /* key in the output dict (borrowed) */
	enum dtype dtype;
	int ndim;
	const int64_t *shape;	/* borrowed, ndim entries */
	const int64_t *strides; /* borrowed, ndim entries, in elements */
	uint64_t offset;	/* in elements */
	size_t storage;		/* index into the writer's storages */
};

/* A storage the output refers to, as a writer's input. */
struct plan_storage {
	enum dtype dtype;
	uint64_t nbytes;
	uint32_t crc32; /* CRC-32 of the whole storage (from the blob table) */
};

struct plan_seg {
	enum plan_kind kind;
	uint64_t len;	    /* bytes this segment contributes */
	const uint8_t *lit; /* PLAN_LITERAL: owned by the plan */
	size_t storage;	    /* PLAN_RANGE: storage index */
	uint64_t src_off;   /* PLAN_RANGE: byte offset in the storage */
	size_t view;	    /* PLAN_GATHER: index into the writer's views */
};

struct plan {
	struct plan_seg *segs;
	size_t nsegs;
	uint64_t total; /* sum of segs[i].len */
	/* private: arena for literal bytes */
	uint8_t **chunks;
	size_t nchunks;
};

/* Frees p and its literal bytes; accepts NULL. */
void plan_free(struct plan *p);

/* A PyTorch zip file (what torch.save writes, protocol 2) holding a flat
 * collections.OrderedDict name -> tensor of views[0..nviews), in that order.
 * Each referenced storage is written whole as one record (so views keep their
 * offsets and strides, and views of one storage, such as tied weights, still
 * share it). Records are 64-byte aligned as torch aligns them; zip64 records
 * are used where sizes or offsets pass 4 GiB; CRC-32s come from storages[].
 * archive_name is the zip's top folder ("archive"). torch.load(f,
 * weights_only=True) loads the result on torch 1.13 and 2.x. *out belongs to
 * the caller. */
int plan_torch_zip(struct plan **out, const struct plan_view *views, size_t nviews,
		   const struct plan_storage *storages, size_t nstorages, const char *archive_name);

/* A safetensors file of views[0..nviews): 8-byte length, JSON header padded
 * with spaces to a multiple of 8, then each tensor's elements contiguous in C
 * order (a RANGE when the view is contiguous, else a GATHER). Names must be
 * distinct (CK_EINVALID otherwise). dtypes safetensors cannot name give
 * CK_EINVALID with a message naming the tensor. */
int plan_safetensors(struct plan **out, const struct plan_view *views, size_t nviews,
		     const struct plan_storage *storages, size_t nstorages);

/* A .npy file (format 1.0, or 2.0 when the header needs it) of one view;
 * CK_EINVALID for dtypes numpy has no type for (bfloat16, float8). */
int plan_npy(struct plan **out, const struct plan_view *view, const struct plan_storage *storages,
	     size_t nstorages);

#endif
