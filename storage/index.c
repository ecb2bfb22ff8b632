/*
 * index.c: opening an index by URL, and the index_* calls of index.h, each
 * dispatched to the backend (index_backend.h). Also the frees of the structs
 * the index hands out, which are the same for every backend.
 */
#include "index.h"

#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "index_backend.h"
#include "sql.h"

/* Implemented by storage/index_sql.c over a SQL driver. */
int index_sql_open(struct index **out, const struct sql_driver *drv, const char *target);

static const struct {
	const char *prefix;
	const struct sql_driver *drv;
	int keep_prefix; /* the driver wants the whole URL (libpq parses it) */
} schemes[] = {
    {"sqlite:", &sql_sqlite_driver, 0},
    {"postgresql://", &sql_pg_driver, 1},
    {"postgres://", &sql_pg_driver, 1},
};

int index_open(struct index **out, const char *url)
{
	*out = NULL;
	for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
		size_t n = strlen(schemes[i].prefix);
		if (strncmp(url, schemes[i].prefix, n))
			continue;
		if (!url[n])
			return ck_error(CK_EINVALID, "--index %s names no database", url);
		return index_sql_open(out, schemes[i].drv, schemes[i].keep_prefix ? url : url + n);
	}
	return ck_error(CK_EINVALID,
			"--index '%.200s' is not sqlite:PATH or postgresql://USER@HOST:PORT/DB",
			url);
}

void index_close(struct index *idx)
{
	if (idx)
		idx->close(idx);
}

const char *index_kind(const struct index *idx)
{
	return idx->name;
}

int index_checkpoint_insert(int64_t *id, struct index_dedup *dedup, struct index *idx,
			    const struct index_new_checkpoint *c)
{
	return idx->checkpoint_insert(id, dedup, idx, c);
}

int index_checkpoint_resolve(int64_t *id, struct index *idx, const char *model, const char *ref,
			     const char *run, const char *metric, int maximize)
{
	return idx->checkpoint_resolve(id, idx, model, ref, run, metric, maximize);
}

int index_checkpoint_get(struct index_checkpoint **out, struct index *idx, int64_t id)
{
	return idx->checkpoint_get(out, idx, id);
}

int index_checkpoint_list(struct index_checkpoint_list **out, struct index *idx,
			  const struct index_list_query *q)
{
	return idx->checkpoint_list(out, idx, q);
}

int index_checkpoint_layout(struct index_layout **out, struct index *idx, int64_t id)
{
	return idx->checkpoint_layout(out, idx, id);
}

int index_checkpoint_tensors(struct index_tensors **out, struct index *idx, int64_t id)
{
	return idx->checkpoint_tensors(out, idx, id);
}

int index_checkpoint_delete(struct index_freed *freed, struct index *idx, const char *model,
			    int64_t id)
{
	return idx->checkpoint_delete(freed, idx, model, id);
}

int index_model_delete(struct index_freed *freed, struct index *idx, const char *model)
{
	return idx->model_delete(freed, idx, model);
}

int index_checkpoint_patch(struct index *idx, int64_t id, const struct index_patch *p)
{
	return idx->checkpoint_patch(idx, id, p);
}

int index_models(struct index_model_list **out, struct index *idx)
{
	return idx->models(out, idx);
}

int index_stats(struct index_stats *out, struct index *idx)
{
	return idx->stats(out, idx);
}

int index_blob_get(struct index_blob *out, struct index *idx, const struct hash *h)
{
	return idx->blob_get(out, idx, h);
}

int index_blob_sizes(uint64_t *size, struct index *idx, const struct hash *h, size_t n)
{
	return idx->blob_sizes(size, idx, h, n);
}

int index_blob_page(struct index_blob *out, size_t *n, struct index *idx, const struct hash *after,
		    size_t max)
{
	return idx->blob_page(out, n, idx, after, max);
}

int index_retention_get(struct index_retention *out, int *has, struct index *idx, const char *model)
{
	return idx->retention_get(out, has, idx, model);
}

int index_retention_set(struct index *idx, const char *model, const struct index_retention *p)
{
	return idx->retention_set(idx, model, p);
}

int index_retention_victims(int64_t **ids, size_t *n, struct index *idx, const char *model)
{
	return idx->retention_victims(ids, n, idx, model);
}

int index_metric_count(int64_t *n, struct index *idx, const char *model, const char *metric)
{
	return idx->metric_count(n, idx, model, metric);
}

int index_claims_add(struct index *idx, const char *owner, int64_t group, const struct hash *h,
		     size_t n, int64_t expires_at)
{
	return idx->claims_add(idx, owner, group, h, n, expires_at);
}

int index_claims_renew(struct index *idx, const char *owner, int64_t group, int64_t expires_at)
{
	return idx->claims_renew(idx, owner, group, expires_at);
}

int index_claims_release(struct hash **orphans, size_t *n, struct index *idx, const char *owner,
			 int64_t group)
{
	return idx->claims_release(orphans, n, idx, owner, group);
}

int index_claims_owned(struct hash **out, size_t *n, struct index *idx, const char *owner)
{
	return idx->claims_owned(out, n, idx, owner);
}

int index_blobs_claimed(uint8_t *yes, struct index *idx, const struct hash *h, size_t n,
			int64_t now)
{
	return idx->blobs_claimed(yes, idx, h, n, now);
}

int index_reap(uint64_t *removed, struct index *idx, const struct hash *h, size_t n, int64_t now,
	       int (*unlink_cb)(void *arg, const struct hash *h), void *arg)
{
	return idx->reap(removed, idx, h, n, now, unlink_cb, arg);
}

int index_generation(uint64_t *out, struct index *idx)
{
	return idx->generation(out, idx);
}

int index_format_multi(const char *format)
{
	return !strcmp(format, "files") || !strcmp(format, "dcp") ||
	       !strcmp(format, "safetensors-sharded");
}

int index_file_write_begin(struct index *idx, const char *model, int64_t id, int64_t token,
			   int64_t expires_at)
{
	return idx->file_write_begin(idx, model, id, token, expires_at);
}

int index_file_write_end(struct index *idx, int64_t id, int64_t token, int64_t expires_at)
{
	return idx->file_write_end(idx, id, token, expires_at);
}

int index_files_writing(int64_t *n, struct index *idx, int64_t id)
{
	return idx->files_writing(n, idx, id);
}

int index_staged_commit(struct index *idx, const char *model, int64_t id, const char *created_at)
{
	return idx->staged_commit(idx, model, id, created_at);
}

int index_checkpoint_files(struct index_file_list **out, struct index *idx, int64_t id)
{
	*out = NULL;
	return idx->checkpoint_files(out, idx, id);
}

void index_file_list_free(struct index_file_list *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->nitems; i++) {
		free(l->items[i].name);
		free(l->items[i].format);
	}
	free(l->items);
	free(l);
}

int index_staged_expire(struct index_freed *freed, int64_t *removed, struct index *idx, int64_t now)
{
	*removed = 0;
	return idx->staged_expire(freed, removed, idx, now);
}

static void checkpoint_clear(struct index_checkpoint *c)
{
	free(c->model);
	free(c->run);
	free(c->format);
	free(c->metrics);
	for (size_t i = 0; i < c->ntags; i++)
		free(c->tags[i]);
	free(c->tags);
}

void index_checkpoint_free(struct index_checkpoint *c)
{
	if (!c)
		return;
	checkpoint_clear(c);
	free(c);
}

void index_checkpoint_list_free(struct index_checkpoint_list *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->nitems; i++)
		checkpoint_clear(&l->items[i]);
	free(l->items);
	free(l);
}

void index_layout_free(struct index_layout *l)
{
	if (!l)
		return;
	free(l->model);
	free(l->format);
	free(l->parts);
	free(l);
}

size_t index_layout_part_at(const struct index_layout *l, uint64_t pos)
{
	size_t lo = 0, hi = l->nparts;

	while (hi - lo > 1) {
		size_t mid = (lo + hi) / 2;
		if (l->parts[mid].file_off <= pos)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

void index_tensors_free(struct index_tensors *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->ntensors; i++)
		free(t->tensors[i].path);
	free(t->tensors);
	free(t->storages);
	free(t);
}

void index_freed_clear(struct index_freed *f)
{
	free(f->v);
	f->v = NULL;
	f->n = 0;
}

void index_model_list_free(struct index_model_list *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->nitems; i++) {
		free(l->items[i].name);
		for (size_t k = 0; k < l->items[i].nruns; k++)
			free(l->items[i].runs[k]);
		free(l->items[i].runs);
	}
	free(l->items);
	free(l);
}
