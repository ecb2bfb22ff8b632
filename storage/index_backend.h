/*
 * index_backend.h: what an index backend implements (STYLE 2; libgit2 pairs
 * git_refdb_backend with git_odb_backend the same way).
 *
 * Only backends include this; everyone else calls the index_* functions of
 * index.h, which dispatch here. Each operation has the contract its index_*
 * function states in index.h. A backend fills every pointer.
 *
 * To add a backend: a SQL engine is one file filling struct sql_driver
 * (storage/sql.h, as index_sqlite.c and index_pg.c do) plus its URL scheme in
 * index.c's table; an engine that is not SQL is one file filling this struct
 * (it may use storage/index_sql.c as the reference), plus the same table row.
 */
#ifndef CK_INDEX_BACKEND_H
#define CK_INDEX_BACKEND_H

#include "index.h"

struct index {
	const char *name; /* "sqlite", "postgresql" */

	int (*checkpoint_insert)(int64_t *id, struct index_dedup *dedup, struct index *idx,
				 const struct index_new_checkpoint *c);
	int (*checkpoint_resolve)(int64_t *id, struct index *idx, const char *model,
				  const char *ref, const char *run, const char *metric,
				  int maximize);
	int (*checkpoint_get)(struct index_checkpoint **out, struct index *idx, int64_t id);
	int (*checkpoint_list)(struct index_checkpoint_list **out, struct index *idx,
			       const struct index_list_query *q);
	int (*checkpoint_layout)(struct index_layout **out, struct index *idx, int64_t id);
	int (*checkpoint_tensors)(struct index_tensors **out, struct index *idx, int64_t id);
	int (*checkpoint_delete)(struct index_freed *freed, struct index *idx, const char *model,
				 int64_t id);
	int (*model_delete)(struct index_freed *freed, struct index *idx, const char *model);
	int (*checkpoint_patch)(struct index *idx, int64_t id, const struct index_patch *p);
	int (*models)(struct index_model_list **out, struct index *idx);
	int (*stats)(struct index_stats *out, struct index *idx);
	int (*blob_get)(struct index_blob *out, struct index *idx, const struct hash *h);
	int (*blob_sizes)(uint64_t *size, struct index *idx, const struct hash *h, size_t n);
	int (*blob_page)(struct index_blob *out, size_t *n, struct index *idx,
			 const struct hash *after, size_t max);
	int (*retention_get)(struct index_retention *out, int *has, struct index *idx,
			     const char *model);
	int (*retention_set)(struct index *idx, const char *model, const struct index_retention *p);
	int (*retention_victims)(int64_t **ids, size_t *n, struct index *idx, const char *model);
	int (*metric_count)(int64_t *n, struct index *idx, const char *model, const char *metric);
	int (*claims_add)(struct index *idx, const char *owner, int64_t group, const struct hash *h,
			  size_t n, int64_t expires_at);
	int (*claims_renew)(struct index *idx, const char *owner, int64_t group,
			    int64_t expires_at);
	int (*claims_release)(struct hash **orphans, size_t *n, struct index *idx,
			      const char *owner, int64_t group);
	int (*claims_owned)(struct hash **out, size_t *n, struct index *idx, const char *owner);
	int (*blobs_claimed)(uint8_t *yes, struct index *idx, const struct hash *h, size_t n,
			     int64_t now);
	int (*reap)(uint64_t *removed, struct index *idx, const struct hash *h, size_t n,
		    int64_t now, int (*unlink_cb)(void *arg, const struct hash *h), void *arg);
	int (*generation)(uint64_t *out, struct index *idx);
	int (*file_write_begin)(struct index *idx, const char *model, int64_t id, int64_t token,
				int64_t expires_at);
	int (*file_write_end)(struct index *idx, int64_t id, int64_t token, int64_t expires_at);
	int (*staged_commit)(struct index *idx, const char *model, int64_t id,
			     const char *created_at);
	int (*files_writing)(int64_t *n, struct index *idx, int64_t id);
	int (*checkpoint_files)(struct index_file_list **out, struct index *idx, int64_t id);
	int (*staged_expire)(struct index_freed *freed, int64_t *removed, struct index *idx,
			     int64_t now);

	void (*close)(struct index *idx);
};

#endif
