/*
 * index.h: the SQLite index of models, runs, checkpoints, tensors and blobs.
 *
 * All SQL of ckptd lives in storage/index.c, behind functions that name what
 * they do, so a PostgreSQL index can replace it (SPEC 9). Reads return jansson
 * values shaped as the HTTP API answers them (SPEC 3); the caller owns them.
 *
 * Thread safety: every function may be called from any thread at once; the
 * index keeps a pool of connections (WAL mode: readers never wait for the
 * writer; writers take turns through BEGIN IMMEDIATE).
 */
#ifndef CK_INDEX_H
#define CK_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "../common/hash.h"
#include "../formats/tensor.h"

struct index;

/* Opens (creating or migrating) the index at path. *out belongs to the
 * caller (index_close). CK_EIO with SQLite's message, CK_ECORRUPT for a
 * schema newer than this binary knows. */
int index_open(struct index **out, const char *path);
void index_close(struct index *idx);

/* One storage of a new checkpoint: the blob that holds it and where its
 * bytes sit in the upload. */
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
};

struct index_new_checkpoint {
	const char *model, *run;
	int has_epoch, has_step, has_loss;
	int64_t epoch, step;
	double loss;
	json_t *metrics; /* object name -> number, borrowed; NULL = {} */
	json_t *tags;	 /* array of strings, borrowed; NULL = [] */
	int pinned;
	const char *format;
	uint64_t size;
	struct hash sha256;
	/* the skeleton: every byte of the upload outside the storages */
	struct hash skeleton;
	uint64_t skeleton_size, skeleton_stored;
	uint32_t skeleton_crc;
	const struct index_storage *storages; /* sorted by file_off */
	size_t nstorages;
	const struct index_tensor *tensors;
	size_t ntensors;
};

/* Inserts a checkpoint with its tensors in one transaction, creating the
 * model and run when new and taking a reference on every blob. *id is the
 * new id; *dedup becomes {tensors, new_tensors, bytes, new_bytes} (storages
 * counted once per upload; new = not stored before this transaction). */
int index_checkpoint_insert(int64_t *id, json_t **dedup, struct index *idx,
			    const struct index_new_checkpoint *c);

/* Resolves ref ("latest", "best", or a decimal id) within model to an id.
 * run narrows best/latest when non-NULL. best picks the lowest loss, or by
 * metric (non-NULL) with maximize 0/1. CK_ENOTFOUND with a message. */
int index_checkpoint_resolve(int64_t *id, struct index *idx, const char *model, const char *ref,
			     const char *run, const char *metric, int maximize);

/* One checkpoint as the API shows it; with_tensors adds "tensors". */
int index_checkpoint_json(json_t **out, struct index *idx, int64_t id, int with_tensors);

struct index_list_query {
	const char *model;
	const char *run; /* NULL = all */
	const char *tag; /* NULL = all */
	int has_epoch;
	int64_t epoch;
	const char *order; /* created|-created|epoch|-epoch|loss|-loss|metric.NAME|-metric.NAME */
	int64_t limit, offset;
};

/* {"checkpoints": [...], "total": N}. CK_EINVALID for an unknown order,
 * CK_ENOTFOUND for an unknown model. */
int index_checkpoint_list(json_t **out, struct index *idx, const struct index_list_query *q);

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
	struct index_layout_part *parts; /* in file order, covering [0, size) */
	size_t nparts;
};
int index_checkpoint_layout(struct index_layout **out, struct index *idx, int64_t id);
void index_layout_free(struct index_layout *l);

/* A tensor's storage and geometry, for state_dict/tensor/diff outputs. */
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
};
struct index_tensors {
	struct index_tensor_row *tensors;
	size_t ntensors;
	struct index_storage_row *storages;
	size_t nstorages;
};
int index_checkpoint_tensors(struct index_tensors **out, struct index *idx, int64_t id);
void index_tensors_free(struct index_tensors *t);

/* Deletes a checkpoint (or a whole model, with id < 0), dropping blob
 * references. The blobs whose count reached zero have their rows removed and
 * are returned in *freed (caller frees) for storage/gc.c to unlink. */
int index_checkpoint_delete(struct hash **freed, size_t *nfreed, struct index *idx,
			    const char *model, int64_t id);
int index_model_delete(struct hash **freed, size_t *nfreed, struct index *idx, const char *model);

/* Applies a PATCH body (loss, metrics, tags, pinned), already validated by
 * the caller. */
int index_checkpoint_patch(struct index *idx, int64_t id, const json_t *patch);

/* {"models": [...]} with counts, runs, best and latest, bytes. */
int index_models_json(json_t **out, struct index *idx);

/* The /stats object. */
int index_stats_json(json_t **out, struct index *idx);

/* 0 when a blob row exists, CK_ENOTFOUND when not. */
int index_blob_exists(struct index *idx, const struct hash *h);

/* The blob's row (size, crc, codec): CK_ENOTFOUND when absent. */
int index_blob_get(uint64_t *raw_size, uint32_t *crc32, struct index *idx, const struct hash *h);

/* Retention policy of a model: NULL (*out) when none. */
int index_retention_get(json_t **out, struct index *idx, const char *model);
int index_retention_set(struct index *idx, const char *model, const json_t *policy);

/* The ids a model's retention policy would remove now (never pinned ones). */
int index_retention_victims(int64_t **ids, size_t *n, struct index *idx, const char *model);

/* Calls cb for each blob row (hash, raw size, crc, codec) until cb returns
 * non-zero. For verify. */
int index_blob_foreach(struct index *idx,
		       int (*cb)(void *arg, const struct hash *h, uint64_t raw_size,
				 uint32_t crc32),
		       void *arg);

#endif
