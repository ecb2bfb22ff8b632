/*
 * index.h: the index of models, runs, checkpoints, tensors, blobs and claims,
 * behind a backend interface (SPEC 9).
 *
 * What callers see: C structs in, C structs out, one call per operation
 * (insert a checkpoint, resolve a ref, list, delete, ...). The HTTP API's JSON
 * is made in api/, never here. A backend is a `struct index` of function
 * pointers (storage/index_backend.h); index_open picks one by URL:
 *
 *   sqlite:PATH             storage/index_sqlite.c (the default, one process)
 *   postgresql://...        storage/index_pg.c (several ckptd instances)
 *
 * Both are SQL engines and share one implementation of the operations and one
 * schema with one migration history (storage/index_sql.c, storage/schema.c),
 * applied at open.
 *
 * Thread safety: every function may be called from any thread at once.
 *
 * Errors: 0 or a CK_E* code with the thread's message set. CK_EUNAVAIL means
 * the index could not be reached or was busy: nothing was changed, and the
 * same call may succeed later (the HTTP answer is 503 with Retry-After).
 *
 * Ownership: what comes back through `**out` belongs to the caller and has a
 * matching _free that accepts NULL.
 */
#ifndef CK_INDEX_H
#define CK_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "../common/dtype.h"
#include "../common/hash.h"

struct index;

/* Limits the index enforces on every write (uploads and PATCH alike). */
#define INDEX_MAX_METRICS 256
#define INDEX_MAX_TAGS	  64
#define INDEX_MAX_NAME	  128 /* model, run and metric names (SPEC 2) */
#define INDEX_MAX_TAG_LEN 128

/* Opens the index at url (see above), creating or migrating its schema.
 * CK_EINVALID for a URL of no known kind, CK_EUNAVAIL when the database
 * cannot be reached, CK_ECORRUPT for a schema newer than this binary. */
int index_open(struct index **out, const char *url);
void index_close(struct index *idx);

/* "sqlite" or "postgresql". */
const char *index_kind(const struct index *idx);

/* ---- checkpoints ---- */

struct index_metric {
	char name[INDEX_MAX_NAME + 1];
	double value;
};

struct index_dedup {
	uint64_t tensors;     /* storages the checkpoint references */
	uint64_t new_tensors; /* of those, the ones not stored before it */
	uint64_t bytes;	      /* their bytes */
	uint64_t new_bytes;   /* bytes this checkpoint added to the store */
};

/* One storage of a new checkpoint: the blob that holds it and where its bytes
 * sit in the upload. */
struct index_storage {
	struct hash blob;
	uint64_t raw_size, stored_size;
	uint32_t crc32;
	int codec;
	enum dtype dtype;
	uint64_t file_off;
};

struct index_tensor {
	const char *path;
	enum dtype dtype;
	int ndim;
	const int64_t *shape, *strides;
	uint64_t offset;
	size_t storage; /* index into the storages */
	uint64_t nbytes;
};

struct index_new_checkpoint {
	const char *model, *run;
	int has_epoch, has_step, has_loss;
	int64_t epoch, step;
	double loss;
	const struct index_metric *metrics; /* at most INDEX_MAX_METRICS, distinct */
	size_t nmetrics;
	const char *const *tags; /* at most INDEX_MAX_TAGS */
	size_t ntags;
	int pinned;
	const char *format;
	uint64_t size;
	struct hash sha256;
	/* the skeleton: every byte of the upload outside the storages */
	struct hash skeleton;
	uint64_t skeleton_size, skeleton_stored;
	uint32_t skeleton_crc;
	int skeleton_codec;
	const struct index_storage *storages; /* sorted by file_off */
	size_t nstorages;
	/* Blobs the storages' blobs need to be read (deltas' chains, blob.h):
	 * referenced as storages are (rows in storages with idx < 0, which no
	 * file, layout or tensor list shows), so they live as long as this
	 * checkpoint. blob, raw_size, stored_size, crc32, codec are used. */
	const struct index_storage *extra;
	size_t nextra;
	const struct index_tensor *tensors;
	size_t ntensors;
	/* An import (ckptd migrate) keeps what the source store said: its id
	 * (> 0; CK_ECONFLICT when taken), creation time and dedup counters. 0
	 * and NULLs for a new checkpoint. */
	int64_t id;
	const char *created_at;
	const struct index_dedup *dedup;
	/* the checkpoint the run resumed from (0: none); retention keeps it */
	int64_t resumed_from;
	/* Checkpoints of several files (SPEC 3.2; storage/schema.c has the
	 * rows). stage_until > 0 opens a staged checkpoint (no storages or
	 * tensors; the skeleton is the empty blob), invisible until
	 * index_staged_commit and removed by index_staged_expire once
	 * stage_until (epoch seconds) has passed. part_of > 0 makes this row one
	 * file, file_name, of that staged checkpoint of model: it replaces an
	 * earlier file of the name (the blobs that frees are appended to
	 * *replaced) and ends the write mark write_token. CK_ENOTFOUND when
	 * part_of is no staged checkpoint of model, CK_ECONFLICT when it was
	 * committed meanwhile. */
	int64_t stage_until, part_of, write_token;
	const char *file_name;
	struct index_freed *replaced;
};

/* Inserts a checkpoint with its tensors in one transaction, creating the
 * model and run when new and taking a reference on every blob. *id is the new
 * id (never reused); *dedup counts storages once per checkpoint, new = not
 * stored before this transaction. */
int index_checkpoint_insert(int64_t *id, struct index_dedup *dedup, struct index *idx,
			    const struct index_new_checkpoint *c);

/* Resolves ref ("latest", "best", or a decimal id) within model to an id. run
 * narrows best/latest when non-NULL; best is the lowest loss, or by metric
 * (non-NULL) with maximize 0/1; ties go to the newest. CK_ENOTFOUND with a
 * message naming what is missing; CK_EINVALID for a ref of no known kind. */
int index_checkpoint_resolve(int64_t *id, struct index *idx, const char *model, const char *ref,
			     const char *run, const char *metric, int maximize);

/* A checkpoint's row as the index holds it. */
struct index_checkpoint {
	int64_t id;
	char *model, *run, *format;
	int has_epoch, has_step, has_loss;
	int64_t epoch, step;
	double loss;
	struct index_metric *metrics;
	size_t nmetrics;
	char **tags;
	size_t ntags;
	int pinned;
	char created_at[40]; /* RFC 3339, UTC */
	uint64_t size;
	struct hash sha256;
	uint64_t tensor_count;
	struct index_dedup dedup;
	int64_t resumed_from; /* 0: none */
	int64_t stage_until;  /* 0: committed; else staged until then */
};

int index_checkpoint_get(struct index_checkpoint **out, struct index *idx, int64_t id);
void index_checkpoint_free(struct index_checkpoint *c);

struct index_list_query {
	const char *model;
	const char *run; /* NULL = all */
	const char *tag; /* NULL = all */
	int has_epoch;
	int64_t epoch;
	const char *order; /* created|epoch|step|loss|metric.NAME, '-' prefix = descending */
	int64_t limit, offset;
};

struct index_checkpoint_list {
	struct index_checkpoint *items; /* nitems entries, each owning its strings */
	size_t nitems;
	int64_t total; /* matching checkpoints, before limit and offset */
};

/* CK_EINVALID for an unknown order, CK_ENOTFOUND for an unknown model. An
 * unknown run is an empty list. */
int index_checkpoint_list(struct index_checkpoint_list **out, struct index *idx,
			  const struct index_list_query *q);
void index_checkpoint_list_free(struct index_checkpoint_list *l);

/* Everything /file needs to rebuild an upload. */
struct index_layout_part {
	struct hash blob;
	uint64_t file_off;  /* where the part starts in the upload */
	uint64_t size;	    /* its length */
	uint64_t src_off;   /* where it starts inside the blob */
	uint64_t blob_size; /* the whole blob's raw size */
	uint32_t blob_crc;  /* and its CRC-32, to check it as it streams */
};
struct index_layout {
	char *model;
	int has_epoch;
	int64_t epoch;
	int64_t id;
	char *format;
	uint64_t size;
	struct hash sha256;
	struct hash skeleton; /* the blob of every byte outside the storages */
	uint64_t skeleton_size;
	struct index_layout_part *parts; /* in file order, covering [0, size);
					    none for index_format_multi */
	size_t nparts;
};
int index_checkpoint_layout(struct index_layout **out, struct index *idx, int64_t id);
void index_layout_free(struct index_layout *l);
/* The index of the part holding file offset pos (< l->size). */
size_t index_layout_part_at(const struct index_layout *l, uint64_t pos);

/* A tensor's storage and geometry, for the tensor list, state_dict, tensor
 * and diff outputs. */
struct index_tensor_row {
	char *path;
	enum dtype dtype;
	int ndim;
	int64_t shape[TENSOR_MAX_NDIM], strides[TENSOR_MAX_NDIM];
	uint64_t offset;
	size_t storage; /* index into the checkpoint's storages */
	uint64_t nbytes;
};
struct index_storage_row {
	struct hash blob;
	enum dtype dtype;
	uint64_t nbytes;
	uint32_t crc32;
	int64_t refcount;  /* checkpoint references to the blob, store-wide */
	uint64_t file_off; /* where it sits in the upload */
};
struct index_tensors {
	struct index_tensor_row *tensors;
	size_t ntensors;
	struct index_storage_row *storages;
	size_t nstorages;
};
int index_checkpoint_tensors(struct index_tensors **out, struct index *idx, int64_t id);
void index_tensors_free(struct index_tensors *t);

/* Hashes of blobs whose last reference a delete dropped: their rows are gone,
 * and storage/gc.c removes their data unless claimed. */
struct index_freed {
	struct hash *v;
	size_t n;
};
void index_freed_clear(struct index_freed *f);

/* Deletes one checkpoint of model, dropping its blob references; the blobs
 * left without any are appended to *freed. CK_ENOTFOUND when model has no
 * such checkpoint (also when a concurrent delete got there first). */
int index_checkpoint_delete(struct index_freed *freed, struct index *idx, const char *model,
			    int64_t id);

/* Deletes a model with its runs and checkpoints. */
int index_model_delete(struct index_freed *freed, struct index *idx, const char *model);

/* A PATCH: each part applies when its has_ flag is set. Metrics merge into the
 * checkpoint's (a name in `remove` is dropped); the result may not exceed
 * INDEX_MAX_METRICS (CK_EINVALID). Validated by the caller otherwise. */
struct index_patch {
	int has_loss, loss_null;
	double loss;
	const struct index_metric *set;
	size_t nset;
	const char *const *remove;
	size_t nremove;
	int has_tags;
	const char *const *tags;
	size_t ntags;
	int has_pinned, pinned;
};
int index_checkpoint_patch(struct index *idx, int64_t id, const struct index_patch *p);

/* ---- checkpoints of several files (SPEC 3.2) ---- */

/* Whether a checkpoint of this format is made of several files ("files",
 * "dcp", "safetensors-sharded"): its own row has no bytes (an empty
 * layout), its files are parts. */
int index_format_multi(const char *format);

/* Marks a file being written to staged checkpoint id of model until
 * expires_at (index_staged_commit answers 409 while one lives). token is the
 * writer's, random. CK_ENOTFOUND: no such staged checkpoint (or it expired);
 * CK_ECONFLICT: it is committed. */
int index_file_write_begin(struct index *idx, const char *model, int64_t id, int64_t token,
			   int64_t expires_at);

/* Moves the mark's expiry (expires_at > 0) or drops it (0): a write that
 * goes on, or one that failed. */
int index_file_write_end(struct index *idx, int64_t id, int64_t token, int64_t expires_at);

/* Makes staged checkpoint id of model visible in one transaction (created
 * now, or at created_at for an import: ckptd migrate), its size,
 * counters and tensor count the sums of its files', its sha256 the SHA-256
 * of its file list in sha256sum's format ("HEX  NAME\n", names in byte
 * order), its format "dcp" when a file is named .metadata,
 * "safetensors-sharded" when one ends in .safetensors.index.json, else
 * "files". CK_ECONFLICT while a file is being written or when it has no
 * file; CK_ENOTFOUND when there is no such staged checkpoint. */
int index_staged_commit(struct index *idx, const char *model, int64_t id, const char *created_at);
/* *n = the files of checkpoint id being written now (marks not expired). */
int index_files_writing(int64_t *n, struct index *idx, int64_t id);

struct index_file {
	char *name, *format;
	int64_t part; /* the file's own row, for layout and tensors */
	uint64_t size;
	struct hash sha256;
	uint64_t tensor_count;
};
struct index_file_list {
	struct index_file *items; /* by name, in byte order */
	size_t nitems;
};
/* The files of checkpoint id (staged or not); none for a single upload. */
int index_checkpoint_files(struct index_file_list **out, struct index *idx, int64_t id);
void index_file_list_free(struct index_file_list *l);

/* Removes the staged checkpoints whose time is up, with their files; the
 * blobs left without a reference are appended to *freed, *removed counts
 * the checkpoints. */
int index_staged_expire(struct index_freed *freed, int64_t *removed, struct index *idx,
			int64_t now);

/* ---- models, stats ---- */

struct index_model {
	char *name;
	char created_at[40];
	int64_t checkpoints;
	char **runs; /* sorted */
	size_t nruns;
	int has_best, has_best_loss, has_latest, has_latest_epoch, has_max_epoch, has_updated;
	int64_t best, latest, latest_epoch, max_epoch;
	double best_loss;
	uint64_t bytes, bytes_added;
	char updated_at[40];
};
struct index_model_list {
	struct index_model *items;
	size_t nitems;
};
int index_models(struct index_model_list **out, struct index *idx);
void index_model_list_free(struct index_model_list *l);

struct index_stats {
	int64_t models, checkpoints, blobs;
	uint64_t logical_bytes; /* sum of upload sizes */
	uint64_t unique_bytes;	/* raw bytes of distinct blobs */
	uint64_t stored_bytes;	/* their bytes after the codec */
};
int index_stats(struct index_stats *out, struct index *idx);

/* ---- blobs ---- */

struct index_blob {
	struct hash hash;
	uint64_t raw_size, stored_size;
	uint32_t crc32;
	int codec;
	int64_t refcount;
};

/* CK_ENOTFOUND when no row names h. */
int index_blob_get(struct index_blob *out, struct index *idx, const struct hash *h);

/* size[i] = the raw size of blob h[i], or INDEX_NO_BLOB when no row names
 * it: many lookups at once (a backend with array parameters makes it one
 * statement per 10,000). */
#define INDEX_NO_BLOB UINT64_MAX
int index_blob_sizes(uint64_t *size, struct index *idx, const struct hash *h, size_t n);

/* Up to max blob rows in hash order, starting after *after (NULL = from the
 * first); *n = 0 at the end. For verify and migrate: pages, never the whole
 * table in memory. */
int index_blob_page(struct index_blob *out, size_t *n, struct index *idx, const struct hash *after,
		    size_t max);

/* ---- retention ---- */

struct index_retention {
	int64_t keep_best, keep_last;
	char metric[INDEX_MAX_NAME + 1]; /* "loss" or a metric name */
	int maximize;
};

/* *has = 0 when the model has no policy. CK_ENOTFOUND for no such model. */
int index_retention_get(struct index_retention *out, int *has, struct index *idx,
			const char *model);

/* Sets (or, with p NULL, removes) a model's policy, creating the model when it
 * has none yet (a policy may come before the first upload). */
int index_retention_set(struct index *idx, const char *model, const struct index_retention *p);

/* The checkpoints the policy removes now, oldest first: never a pinned one,
 * never the model's newest, never one of the keep_last newest or the keep_best
 * best by the metric, never one a checkpoint of the model resumed from, and,
 * when keep_best is set, never one that lacks the metric (it cannot be
 * ranked, so it is not removed for lacking it). */
int index_retention_victims(int64_t **ids, size_t *n, struct index *idx, const char *model);

/* How many checkpoints of model have metric ("loss": a loss). */
int index_metric_count(int64_t *n, struct index *idx, const char *model, const char *metric);

/* ---- claims and reaping (storage/gc.h has the protocol) ---- */

/* Claims blobs h[0..n) for (owner, group) until expires_at (epoch seconds).
 * While a claim lives, no blob it names is reaped. Adding a claim that exists
 * moves its expiry. */
int index_claims_add(struct index *idx, const char *owner, int64_t group, const struct hash *h,
		     size_t n, int64_t expires_at);

/* Moves the expiry of every claim of (owner, group). */
int index_claims_renew(struct index *idx, const char *owner, int64_t group, int64_t expires_at);

/* Drops every claim of (owner, group); group < 0: of every group of owner.
 * With orphans non-NULL, *orphans (caller frees) gets the blobs those claims
 * named that no blob row names (a delete freed them while they were held:
 * they are the releaser's to reap). */
int index_claims_release(struct hash **orphans, size_t *n, struct index *idx, const char *owner,
			 int64_t group);

/* The distinct blobs owner claims, in any group (caller frees *out): what a
 * restarted instance held in its previous life. */
int index_claims_owned(struct hash **out, size_t *n, struct index *idx, const char *owner);

/* yes[i] = 1 when a claim alive at `now` names blob h[i] (batched as
 * index_blob_sizes). */
int index_blobs_claimed(uint8_t *yes, struct index *idx, const struct hash *h, size_t n,
			int64_t now);

/* Under the reaper's lock: for each h[i] that no blob row names and no claim
 * alive at `now` names, calls unlink_cb(arg, h[i]), which removes the data
 * and returns 0, or returns > 0 when it kept it, CK_ENOTFOUND when it was
 * gone already, < 0 on an error. Also drops claims that expired before now.
 * *removed counts the blobs unlink_cb removed. Returns the first error of
 * unlink_cb or of the index; the walk goes on past unlink errors. */
int index_reap(uint64_t *removed, struct index *idx, const struct hash *h, size_t n, int64_t now,
	       int (*unlink_cb)(void *arg, const struct hash *h), void *arg);

/* ---- change tracking ---- */

/* A counter that every committed change to checkpoints, models or blobs moves
 * forward, whichever process made it: caches keyed by it see writes made
 * through other instances. */
int index_generation(uint64_t *out, struct index *idx);

#endif
