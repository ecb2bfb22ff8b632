/*
 * index_sql.c: the index's operations (index.h) on any SQL engine that fills
 * struct sql_driver (sql.h): SQLite and PostgreSQL. Every SQL statement of
 * ckptd is in this file or in schema.c.
 *
 * Connections come from a pool (one per thread at a time, made on demand; a
 * broken one is dropped when it comes back). Each operation is one
 * transaction, kept short: what can be computed before it (merging metrics,
 * sorting blob references) is computed before it.
 *
 * Concurrency across instances (PostgreSQL, READ COMMITTED): a writer locks
 * the rows it changes in a fixed order so that two never deadlock: the model
 * row first (uploads share-lock it, a model delete locks it), then blob rows
 * in hash order; a delete locks its checkpoint row first, so two deletes of
 * one checkpoint cannot both drop its references. Every change also moves the
 * 'generation' counter (index_generation), last, to hold that row briefly.
 *
 * Stored encodings: metrics, tags and retention policies are small JSON
 * documents (jansson reads and writes them here; what the HTTP API shows is
 * made in api/). Shapes and strides are "[1,2,3]" text. Hashes are 32 bytes.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <jansson.h>

#include "../common/err.h"
#include "../common/hash.h"
#include "../common/vec.h"
#include "index_backend.h"
#include "schema.h"
#include "sql.h"

struct pooled {
	struct sql_conn *c;
	struct pooled *next;
};

struct sqlx {
	struct index base;
	const struct sql_driver *d;
	char *target;
	pthread_mutex_t lock;
	struct pooled *free_conns;
	struct pooled *spare; /* list nodes to reuse */
};

#define SQLX(idx)	  ((struct sqlx *)(idx))
#define PICK(x, lite, pg) ((x)->d->dialect == SQL_POSTGRES ? (pg) : (lite))

/* ---- connections ---- */

static int conn_get(struct sql_conn **out, struct sqlx *x)
{
	for (;;) {
		struct sql_conn *c = NULL;

		pthread_mutex_lock(&x->lock);
		struct pooled *p = x->free_conns;
		if (p) {
			/* read the node before it goes to the spare list, where
			 * another thread's conn_put may reuse it at once */
			c = p->c;
			x->free_conns = p->next;
			p->next = x->spare;
			x->spare = p;
		}
		pthread_mutex_unlock(&x->lock);
		if (!c)
			return x->d->connect(out, x->target);
		if (x->d->usable(c)) {
			*out = c;
			return 0;
		}
		/* the server went away while it idled in the pool (a restart) */
		x->d->disconnect(c);
	}
}

static void conn_put(struct sqlx *x, struct sql_conn *c)
{
	struct pooled *p;

	if (!c)
		return;
	x->d->rollback(c); /* ends what an error path left open */
	if (!x->d->usable(c)) {
		x->d->disconnect(c);
		return;
	}
	pthread_mutex_lock(&x->lock);
	p = x->spare;
	if (p)
		x->spare = p->next;
	pthread_mutex_unlock(&x->lock);
	if (!p && !(p = malloc(sizeof(*p)))) {
		x->d->disconnect(c);
		return;
	}
	p->c = c;
	pthread_mutex_lock(&x->lock);
	p->next = x->free_conns;
	x->free_conns = p;
	pthread_mutex_unlock(&x->lock);
}

/* ---- small helpers ---- */

static int prep(struct sql_stmt **st, struct sqlx *x, struct sql_conn *c, const char *sql)
{
	return x->d->prepare(st, c, sql);
}

/* Steps a statement that returns no rows (or whose rows are not needed). */
static int run_done(struct sqlx *x, struct sql_stmt *st)
{
	int rc = x->d->step(st);

	return rc < 0 ? rc : 0;
}

static void now_rfc3339(char out[40])
{
	struct timeval tv;
	struct tm tm;

	char tmp[96];

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	snprintf(tmp, sizeof(tmp), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		 (int)(tv.tv_usec / 1000));
	snprintf(out, 40, "%.39s", tmp);
}

static void bind_hash(struct sqlx *x, struct sql_stmt *st, int i, const struct hash *h)
{
	x->d->bind_blob(st, i, h->b, 32);
}

static int column_hash(struct hash *h, struct sqlx *x, struct sql_stmt *st, int i)
{
	size_t n;
	const void *p = x->d->column_blob(st, i, &n);

	if (!p || n != 32) {
		memset(h->b, 0, 32);
		return ck_error(CK_ECORRUPT, "index: a stored hash is %zu bytes, not 32", n);
	}
	memcpy(h->b, p, 32);
	return 0;
}

static char *dup_text(struct sqlx *x, struct sql_stmt *st, int i)
{
	return strdup(x->d->column_text(st, i));
}

static int oom(void)
{
	return ck_error(CK_ENOMEM, "index: out of memory");
}

static int hashes_push(struct index_freed *f, size_t *cap, const struct hash *h)
{
	if (f->n == *cap) {
		size_t c = *cap ? *cap * 2 : 16;
		struct hash *v = realloc(f->v, c * sizeof(*v));
		if (!v)
			return oom();
		f->v = v;
		*cap = c;
	}
	f->v[f->n++] = *h;
	return 0;
}

/* Runs st (bound) and appends column 0 of every row, a hash, to *f. */
static int collect_hashes(struct index_freed *f, size_t *cap, struct sqlx *x, struct sql_stmt *st)
{
	struct hash h;
	int err, rc;

	while ((rc = x->d->step(st)) == 1)
		if ((err = column_hash(&h, x, st, 0)) < 0 || (err = hashes_push(f, cap, &h)) < 0)
			return err;
	return rc < 0 ? rc : 0;
}

/* Runs st (bound) and collects column 0 of every row, an id, into a new
 * array *ids (caller frees) of *n. */
static int collect_ids(int64_t **ids, size_t *n, struct sqlx *x, struct sql_stmt *st)
{
	size_t cap = 0;
	int rc;

	*ids = NULL;
	*n = 0;
	while ((rc = x->d->step(st)) == 1) {
		if (*n == cap) {
			cap = cap ? cap * 2 : 64;
			int64_t *v = realloc(*ids, cap * sizeof(*v));
			if (!v)
				return oom();
			*ids = v;
		}
		(*ids)[(*n)++] = x->d->column_int(st, 0);
	}
	return rc < 0 ? rc : 0;
}

static int bump_generation(struct sqlx *x, struct sql_conn *c)
{
	struct sql_stmt *st;
	int err;

	if ((err = prep(&st, x, c, "UPDATE meta SET value = value + 1 WHERE name = 'generation'")) <
	    0)
		return err;
	return run_done(x, st);
}

/* "[1,2,3]" */
static int dims_text(char *out, size_t cap, int ndim, const int64_t *v)
{
	size_t n = 0;

	out[n++] = '[';
	for (int i = 0; i < ndim; i++) {
		int k = snprintf(out + n, cap - n, "%s%" PRId64, i ? "," : "", v[i]);
		if (k < 0 || (size_t)k >= cap - n)
			return ck_error(CK_EINVALID, "index: too many dimensions");
		n += (size_t)k;
	}
	if (n + 2 > cap)
		return ck_error(CK_EINVALID, "index: too many dimensions");
	out[n++] = ']';
	out[n] = '\0';
	return 0;
}

static int dims_parse(int *ndim, int64_t *v, const char *text)
{
	const char *p = text;
	int n = 0;

	if (*p++ != '[')
		return ck_error(CK_ECORRUPT, "index: bad dims '%.60s'", text);
	while (*p && *p != ']') {
		char *end;
		if (n >= TENSOR_MAX_NDIM)
			return ck_error(CK_ECORRUPT, "index: too many dims '%.60s'", text);
		v[n++] = strtoll(p, &end, 10);
		if (end == p)
			return ck_error(CK_ECORRUPT, "index: bad dims '%.60s'", text);
		p = end;
		if (*p == ',')
			p++;
	}
	if (*p != ']')
		return ck_error(CK_ECORRUPT, "index: bad dims '%.60s'", text);
	*ndim = n;
	return 0;
}

/* ---- stored JSON: metrics, tags, retention ---- */

static int metrics_encode(char **out, const struct index_metric *m, size_t n)
{
	json_t *o = json_object();

	if (!o)
		return oom();
	for (size_t i = 0; i < n; i++)
		if (json_object_set_new(o, m[i].name, json_real(m[i].value)) < 0) {
			json_decref(o);
			return oom();
		}
	*out = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(o);
	return *out ? 0 : oom();
}

static int metrics_decode(struct index_metric **out, size_t *n, const char *text, int64_t id)
{
	json_error_t jerr;
	json_t *o = json_loads(text, JSON_DECODE_INT_AS_REAL, &jerr), *v;
	const char *k;
	size_t i = 0;

	*out = NULL;
	*n = 0;
	if (!json_is_object(o)) {
		json_decref(o);
		return ck_error(CK_ECORRUPT, "index: checkpoint %" PRId64 " has damaged metrics",
				id);
	}
	if (json_object_size(o) && !(*out = calloc(json_object_size(o), sizeof(**out)))) {
		json_decref(o);
		return oom();
	}
	json_object_foreach(o, k, v)
	{
		if (!json_is_number(v) || strlen(k) > INDEX_MAX_NAME)
			continue;
		snprintf((*out)[i].name, sizeof((*out)[i].name), "%s", k);
		(*out)[i].value = json_number_value(v);
		i++;
	}
	*n = i;
	json_decref(o);
	return 0;
}

static int tags_encode(char **out, const char *const *t, size_t n)
{
	json_t *a = json_array();

	if (!a)
		return oom();
	for (size_t i = 0; i < n; i++)
		if (json_array_append_new(a, json_string(t[i])) < 0) {
			json_decref(a);
			return oom();
		}
	*out = json_dumps(a, JSON_COMPACT);
	json_decref(a);
	return *out ? 0 : oom();
}

/* A JSON array of strings into a new char* array. */
static int strings_decode(char ***out, size_t *n, const char *text, const char *what)
{
	json_t *a = json_loads(text, 0, NULL), *v;
	size_t i;

	*out = NULL;
	*n = 0;
	if (!json_is_array(a)) {
		json_decref(a);
		return ck_error(CK_ECORRUPT, "index: damaged %s", what);
	}
	if (json_array_size(a) && !(*out = calloc(json_array_size(a), sizeof(char *)))) {
		json_decref(a);
		return oom();
	}
	json_array_foreach(a, i, v)
	{
		const char *s = json_string_value(v);
		if (!s)
			continue;
		if (!((*out)[*n] = strdup(s))) {
			json_decref(a);
			return oom();
		}
		(*n)++;
	}
	json_decref(a);
	return 0;
}

/* ---- models and runs ---- */

static int model_id(int64_t *id, struct sqlx *x, struct sql_conn *c, const char *model)
{
	struct sql_stmt *st;
	int err, rc;

	if ((err = prep(&st, x, c, "SELECT id FROM models WHERE name = ?1")) < 0)
		return err;
	x->d->bind_text(st, 1, model);
	if ((rc = x->d->step(st)) < 0)
		return rc;
	if (rc == 0)
		return ck_error(CK_ENOTFOUND, "model '%s' not found", model);
	*id = x->d->column_int(st, 0);
	return 0;
}

static int run_id(int64_t *id, struct sqlx *x, struct sql_conn *c, int64_t mid, const char *run)
{
	struct sql_stmt *st;
	int err, rc;

	if ((err = prep(&st, x, c, "SELECT id FROM runs WHERE model_id = ?1 AND name = ?2")) < 0)
		return err;
	x->d->bind_int(st, 1, mid);
	x->d->bind_text(st, 2, run);
	if ((rc = x->d->step(st)) < 0)
		return rc;
	if (rc == 0)
		return ck_error(CK_ENOTFOUND, "run '%s' not found", run);
	*id = x->d->column_int(st, 0);
	return 0;
}

/* Inside a write: the model's id (created when new, share-locked against a
 * concurrent model delete on engines with row locks) and the run's. */
static int ensure_model_run(int64_t *mid, int64_t *rid, struct sqlx *x, struct sql_conn *c,
			    const char *model, const char *run)
{
	struct sql_stmt *st;
	char now[40];
	int err, rc;

	now_rfc3339(now);
	if ((err = prep(&st, x, c,
			"INSERT INTO models(name, created_at) VALUES(?1, ?2)"
			" ON CONFLICT(name) DO NOTHING")) < 0)
		return err;
	x->d->bind_text(st, 1, model);
	x->d->bind_text(st, 2, now);
	if ((err = run_done(x, st)) < 0)
		return err;
	if ((err = prep(&st, x, c,
			PICK(x, "SELECT id FROM models WHERE name = ?1",
			     "SELECT id FROM models WHERE name = ?1 FOR SHARE"))) < 0)
		return err;
	x->d->bind_text(st, 1, model);
	if ((rc = x->d->step(st)) <= 0)
		return rc < 0 ? rc : ck_error(CK_EIO, "index: model '%s' vanished", model);
	*mid = x->d->column_int(st, 0);
	if ((err = prep(&st, x, c,
			"INSERT INTO runs(model_id, name) VALUES(?1, ?2)"
			" ON CONFLICT(model_id, name) DO NOTHING")) < 0)
		return err;
	x->d->bind_int(st, 1, *mid);
	x->d->bind_text(st, 2, run);
	if ((err = run_done(x, st)) < 0)
		return err;
	return run_id(rid, x, c, *mid, run);
}

/* ---- insert ---- */

struct ref {
	struct hash h;
	uint64_t raw, stored;
	uint32_t crc;
	int codec;
	int is_storage;
};

static int cmp_ref(const void *a, const void *b)
{
	return memcmp(((const struct ref *)a)->h.b, ((const struct ref *)b)->h.b, 32);
}

/* A checkpoint's references to one blob (refs[first .. first + n) of the
 * sorted references), `storages` of them from storages, the rest the
 * skeleton. */
struct ref_group {
	struct hash h;
	size_t first;
	int64_t n, storages, after; /* after: the row's refcount once added */
};

static int group_cmp(const void *a, const void *b)
{
	return hash_cmp(&((const struct ref_group *)a)->h, &((const struct ref_group *)b)->h);
}

/* Adds the references refs[0..n) (sorted) to the blobs' rows, inserting the
 * rows new to the store, in hash order: the lock order of blob rows, so two
 * writers sharing blobs never deadlock. A driver with arrays does it in one
 * statement. Unless dd is NULL, counts the storages and the bytes in it,
 * and those whose blob this checkpoint brings to the store. */
static int blobs_ref(struct index_dedup *dd, struct sqlx *x, struct sql_conn *c,
		     const struct ref *refs, size_t n)
{
	struct ref_group *g = calloc(n ? n : 1, sizeof(*g));
	struct sql_stmt *st;
	size_t ng = 0;
	int err = 0, rc;

	if (!g)
		return oom();
	for (size_t i = 0; i < n; i++) {
		if (!ng || hash_cmp(&refs[i].h, &g[ng - 1].h))
			g[ng++] = (struct ref_group){.h = refs[i].h, .first = i, .after = -1};
		g[ng - 1].n++;
		g[ng - 1].storages += refs[i].is_storage;
	}
	if (x->d->bind_int_array) {
		uint8_t *h = malloc(ng * 32 + 1);
		int64_t *v = malloc(5 * ng * sizeof(*v) + 1);
		if (!h || !v) {
			free(h);
			free(v);
			err = oom();
			goto out;
		}
		for (size_t i = 0; i < ng; i++) {
			const struct ref *r = &refs[g[i].first];
			memcpy(h + i * 32, r->h.b, 32);
			v[i] = (int64_t)r->raw;
			v[ng + i] = (int64_t)r->stored;
			v[2 * ng + i] = r->codec;
			v[3 * ng + i] = r->crc;
			v[4 * ng + i] = g[i].n;
		}
		if ((err = prep(
			 &st, x, c,
			 "INSERT INTO blobs(hash, raw_size, stored_size, codec, crc32, refcount)"
			 " SELECT * FROM unnest(?1::bytea[], ?2::int8[], ?3::int8[],"
			 " ?4::int8[], ?5::int8[], ?6::int8[])"
			 " ON CONFLICT(hash) DO UPDATE SET refcount = blobs.refcount"
			 " + excluded.refcount RETURNING hash, refcount")) == 0) {
			x->d->bind_blob_array(st, 1, h, 32, ng);
			for (int k = 0; k < 5; k++)
				x->d->bind_int_array(st, 2 + k, v + (size_t)k * ng, ng);
		}
		free(h);
		free(v);
		if (err < 0)
			goto out;
		while ((rc = x->d->step(st)) == 1) {
			struct ref_group key, *hit;
			if ((err = column_hash(&key.h, x, st, 0)) < 0)
				goto out;
			if ((hit = bsearch(&key, g, ng, sizeof(*g), group_cmp)))
				hit->after = x->d->column_int(st, 1);
		}
		if (rc < 0) {
			err = rc;
			goto out;
		}
	} else {
		for (size_t i = 0; i < ng; i++) {
			const struct ref *r = &refs[g[i].first];
			if ((err =
				 prep(&st, x, c,
				      "INSERT INTO blobs(hash, raw_size, stored_size, codec, crc32,"
				      " refcount) VALUES(?1, ?2, ?3, ?4, ?5, ?6)"
				      " ON CONFLICT(hash) DO UPDATE SET refcount = blobs.refcount"
				      " + excluded.refcount RETURNING refcount")) < 0)
				goto out;
			bind_hash(x, st, 1, &r->h);
			x->d->bind_int(st, 2, (int64_t)r->raw);
			x->d->bind_int(st, 3, (int64_t)r->stored);
			x->d->bind_int(st, 4, r->codec);
			x->d->bind_int(st, 5, r->crc);
			x->d->bind_int(st, 6, g[i].n);
			if ((rc = x->d->step(st)) < 0) {
				err = rc;
				goto out;
			}
			if (rc == 1)
				g[i].after = x->d->column_int(st, 0);
		}
	}
	for (size_t i = 0; i < ng; i++) {
		const struct ref *r = &refs[g[i].first];
		if (g[i].after < 0) {
			err = ck_error(CK_EIO, "index: the upsert of blob %zu returned nothing", i);
			goto out;
		}
		if (!dd)
			continue;
		dd->tensors += (uint64_t)g[i].storages;
		dd->bytes += (uint64_t)g[i].storages * r->raw;
		if (g[i].storages && g[i].after == g[i].n) { /* the row is new */
			dd->new_tensors++;
			dd->new_bytes += r->raw;
		}
	}
out:
	free(g);
	return err;
}

/* The rows of the blobs checkpoint cid's storages need (k->extra): idx -1,
 * -2, ..., so that deletes drop their references as the storages' while
 * nothing that lists storages (idx >= 0) sees them. */
static int extra_insert(struct sqlx *x, struct sql_conn *c, int64_t cid,
			const struct index_new_checkpoint *k)
{
	struct sql_stmt *st;
	int err;

	for (size_t i = 0; i < k->nextra; i++) {
		const struct index_storage *s = &k->extra[i];
		if ((err = prep(&st, x, c,
				"INSERT INTO storages(checkpoint_id, idx, blob, dtype, file_off,"
				" nbytes) VALUES(?1, ?2, ?3, ?4, 0, ?5)")) < 0)
			return err;
		x->d->bind_int(st, 1, cid);
		x->d->bind_int(st, 2, -1 - (int64_t)i);
		bind_hash(x, st, 3, &s->blob);
		x->d->bind_text(st, 4, dtype_name(s->dtype));
		x->d->bind_int(st, 5, (int64_t)s->raw_size);
		if ((err = run_done(x, st)) < 0)
			return err;
	}
	return 0;
}

/* The storages' rows of checkpoint cid. */
static int storages_insert(struct sqlx *x, struct sql_conn *c, int64_t cid,
			   const struct index_new_checkpoint *k)
{
	struct sql_stmt *st;
	size_t n = k->nstorages;
	int err;

	if ((err = extra_insert(x, c, cid, k)) < 0)
		return err;
	if (x->d->bind_int_array) {
		if (!n)
			return 0;
		uint8_t *h = malloc(n * 32);
		int64_t *v = malloc(2 * n * sizeof(*v));
		const char **dt = malloc(n * sizeof(*dt));
		if (!h || !v || !dt) {
			err = oom();
			goto arrays_out;
		}
		for (size_t i = 0; i < n; i++) {
			const struct index_storage *s = &k->storages[i];
			memcpy(h + i * 32, s->blob.b, 32);
			dt[i] = dtype_name(s->dtype);
			v[i] = (int64_t)s->file_off;
			v[n + i] = (int64_t)s->raw_size;
		}
		if ((err = prep(
			 &st, x, c,
			 "INSERT INTO storages(checkpoint_id, idx, blob, dtype, file_off, nbytes)"
			 " SELECT ?1, t.i - 1, t.b, t.d, t.o, t.n FROM unnest(?2::bytea[],"
			 " ?3::text[], ?4::int8[], ?5::int8[]) WITH ORDINALITY AS t(b, d, o, n, "
			 "i)")) < 0)
			goto arrays_out;
		x->d->bind_int(st, 1, cid);
		x->d->bind_blob_array(st, 2, h, 32, n);
		x->d->bind_text_array(st, 3, dt, n);
		x->d->bind_int_array(st, 4, v, n);
		x->d->bind_int_array(st, 5, v + n, n);
		err = run_done(x, st);
	arrays_out:
		free(h);
		free(v);
		free(dt);
		return err;
	}
	for (size_t i = 0; i < n; i++) {
		const struct index_storage *s = &k->storages[i];
		if ((err = prep(&st, x, c,
				"INSERT INTO storages(checkpoint_id, idx, blob, dtype, file_off,"
				" nbytes) VALUES(?1, ?2, ?3, ?4, ?5, ?6)")) < 0)
			return err;
		x->d->bind_int(st, 1, cid);
		x->d->bind_int(st, 2, (int64_t)i);
		bind_hash(x, st, 3, &s->blob);
		x->d->bind_text(st, 4, dtype_name(s->dtype));
		x->d->bind_int(st, 5, (int64_t)s->file_off);
		x->d->bind_int(st, 6, (int64_t)s->raw_size);
		if ((err = run_done(x, st)) < 0)
			return err;
	}
	return 0;
}

static int tensor_check(const struct index_new_checkpoint *k, const struct index_tensor *t)
{
	if (t->storage >= k->nstorages)
		return ck_error(CK_EINVALID, "index: tensor %s names storage %zu of %zu", t->path,
				t->storage, k->nstorages);
	return 0;
}

/* The tensors' rows of checkpoint cid, with arrays: the shapes and strides
 * as text are laid end to end in one buffer. */
static int tensors_insert_arrays(struct sqlx *x, struct sql_conn *c, int64_t cid,
				 const struct index_new_checkpoint *k)
{
	size_t n = k->ntensors, used = 0, cap = n * 16 + 64;
	char *text = malloc(cap), dims[TENSOR_MAX_NDIM * 21 + 3];
	size_t *off = malloc(2 * n * sizeof(*off));
	const char **col = malloc(4 * n * sizeof(*col));
	int64_t *v = malloc(3 * n * sizeof(*v));
	struct sql_stmt *st;
	int err = 0;

	if (!text || !off || !col || !v) {
		err = oom();
		goto out;
	}
	for (size_t i = 0; i < n && !err; i++) {
		const struct index_tensor *t = &k->tensors[i];
		for (int w = 0; w < 2 && !err; w++) {
			if ((err = tensor_check(k, t)) < 0 ||
			    (err = dims_text(dims, sizeof(dims), t->ndim,
					     w ? t->strides : t->shape)) < 0)
				break;
			size_t len = strlen(dims) + 1;
			if (used + len > cap) {
				char *p = realloc(text, cap * 2 + len);
				if (!p) {
					err = oom();
					break;
				}
				text = p;
				cap = cap * 2 + len;
			}
			memcpy(text + used, dims, len);
			off[2 * i + (size_t)w] = used;
			used += len;
		}
		col[i] = t->path;
		col[n + i] = dtype_name(t->dtype);
		v[i] = (int64_t)t->offset;
		v[n + i] = (int64_t)t->storage;
		v[2 * n + i] = (int64_t)t->nbytes;
	}
	if (err < 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		col[2 * n + i] = text + off[2 * i];
		col[3 * n + i] = text + off[2 * i + 1];
	}
	if ((err = prep(
		 &st, x, c,
		 "INSERT INTO tensors(checkpoint_id, seq, path, dtype, shape, strides,"
		 " \"offset\", storage_idx, nbytes)"
		 " SELECT ?1, t.i - 1, t.p, t.d, t.sh, t.st, t.o, t.s, t.n"
		 " FROM unnest(?2::text[], ?3::text[], ?4::text[], ?5::text[], ?6::int8[],"
		 " ?7::int8[], ?8::int8[]) WITH ORDINALITY AS t(p, d, sh, st, o, s, n, i)")) < 0)
		goto out;
	x->d->bind_int(st, 1, cid);
	for (int w = 0; w < 4; w++)
		x->d->bind_text_array(st, 2 + w, col + (size_t)w * n, n);
	for (int w = 0; w < 3; w++)
		x->d->bind_int_array(st, 6 + w, v + (size_t)w * n, n);
	err = run_done(x, st);
out:
	free(text);
	free(off);
	free(col);
	free(v);
	return err;
}

/* The tensors' rows of checkpoint cid. */
static int tensors_insert(struct sqlx *x, struct sql_conn *c, int64_t cid,
			  const struct index_new_checkpoint *k)
{
	char shape[TENSOR_MAX_NDIM * 21 + 3], strides[TENSOR_MAX_NDIM * 21 + 3];
	struct sql_stmt *st;
	int err;

	if (!k->ntensors)
		return 0;
	if (x->d->bind_int_array)
		return tensors_insert_arrays(x, c, cid, k);
	for (size_t i = 0; i < k->ntensors; i++) {
		const struct index_tensor *t = &k->tensors[i];
		if ((err = tensor_check(k, t)) < 0 ||
		    (err = dims_text(shape, sizeof(shape), t->ndim, t->shape)) < 0 ||
		    (err = dims_text(strides, sizeof(strides), t->ndim, t->strides)) < 0 ||
		    (err = prep(&st, x, c,
				"INSERT INTO tensors(checkpoint_id, seq, path, dtype, shape,"
				" strides, \"offset\", storage_idx, nbytes)"
				" VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")) < 0)
			return err;
		x->d->bind_int(st, 1, cid);
		x->d->bind_int(st, 2, (int64_t)i);
		x->d->bind_text(st, 3, t->path);
		x->d->bind_text(st, 4, dtype_name(t->dtype));
		x->d->bind_text(st, 5, shape);
		x->d->bind_text(st, 6, strides);
		x->d->bind_int(st, 7, (int64_t)t->offset);
		x->d->bind_int(st, 8, (int64_t)t->storage);
		x->d->bind_int(st, 9, (int64_t)t->nbytes);
		if ((err = run_done(x, st)) < 0)
			return err;
	}
	return 0;
}

static int delete_one(struct index_freed *freed, size_t *cap, struct sqlx *x, struct sql_conn *c,
		      int64_t mid, int64_t id);

/* Inside a write: locks staged checkpoint id of model mid (its row carries
 * -mid while staged). CK_ENOTFOUND when there is none (or it expired),
 * CK_ECONFLICT when it is committed. */
static int staged_lock(struct sqlx *x, struct sql_conn *c, int64_t mid, int64_t id)
{
	struct sql_stmt *st;
	int err, rc;

	if ((err =
		 prep(&st, x, c,
		      PICK(x, "SELECT stage_until FROM checkpoints WHERE id = ?1 AND model_id = ?2",
			   "SELECT stage_until FROM checkpoints WHERE id = ?1 AND model_id = ?2"
			   " FOR UPDATE"))) < 0)
		return err;
	x->d->bind_int(st, 1, id);
	x->d->bind_int(st, 2, -mid);
	if ((rc = x->d->step(st)) < 0)
		return rc;
	if (rc == 1 && !x->d->column_null(st, 0) && x->d->column_int(st, 0) > (int64_t)time(NULL))
		return 0;
	if (rc == 0) {
		if ((err = prep(&st, x, c,
				"SELECT 1 FROM checkpoints WHERE id = ?1 AND model_id = ?2")) < 0)
			return err;
		x->d->bind_int(st, 1, id);
		x->d->bind_int(st, 2, mid);
		if ((rc = x->d->step(st)) < 0)
			return rc;
		if (rc == 1)
			return ck_error(CK_ECONFLICT,
					"checkpoint %" PRId64 " is committed: its files are final; "
					"open a new one with ?staged=1",
					id);
	}
	return ck_error(CK_ENOTFOUND,
			"no staged checkpoint %" PRId64 " (never opened, expired after "
			"--stage-timeout, or deleted)",
			id);
}

/* Inside a write: names part cid file k->file_name of staged checkpoint
 * k->part_of, deleting the part it replaces, and ends the writer's mark. */
static int file_link(struct index_freed *replaced, struct sqlx *x, struct sql_conn *c, int64_t mid,
		     const struct index_new_checkpoint *k, int64_t cid)
{
	struct index_freed none = {0};
	struct index_freed *fr = replaced ? replaced : &none;
	size_t cap = fr->n;
	struct sql_stmt *st;
	int64_t old = 0;
	int err, rc;

	if ((err = prep(&st, x, c,
			"SELECT part_id FROM files WHERE checkpoint_id = ?1 AND name = ?2")) < 0)
		return err;
	x->d->bind_int(st, 1, k->part_of);
	x->d->bind_text(st, 2, k->file_name);
	if ((rc = x->d->step(st)) < 0)
		return rc;
	if (rc == 1)
		old = x->d->column_int(st, 0);
	if (old > 0 && (err = delete_one(fr, &cap, x, c, -mid, old)) < 0 && err != CK_ENOTFOUND)
		goto out;
	if ((err = prep(
		 &st, x, c,
		 old > 0 ? "UPDATE files SET part_id = ?3 WHERE checkpoint_id = ?1 AND name = ?2"
			 : "INSERT INTO files(checkpoint_id, name, part_id) VALUES(?1, ?2, ?3)")) <
	    0)
		goto out;
	x->d->bind_int(st, 1, k->part_of);
	x->d->bind_text(st, 2, k->file_name);
	x->d->bind_int(st, 3, cid);
	if ((err = run_done(x, st)) < 0 ||
	    (err = prep(&st, x, c,
			"DELETE FROM file_writes WHERE checkpoint_id = ?1 AND token = ?2")) < 0)
		goto out;
	x->d->bind_int(st, 1, k->part_of);
	x->d->bind_int(st, 2, k->write_token);
	err = run_done(x, st);
out:
	if (fr == &none)
		index_freed_clear(&none);
	return err;
}

static int sql_checkpoint_insert(int64_t *id, struct index_dedup *dedup, struct index *idx,
				 const struct index_new_checkpoint *k)
{
	struct sqlx *x = SQLX(idx);
	struct sql_conn *c = NULL;
	struct sql_stmt *st;
	struct ref *refs = NULL;
	struct index_dedup dd = {0};
	char now[40], *metrics = NULL, *tags = NULL;
	int64_t mid = 0, rid = 0, cid = 0;
	int err, rc;

	if (k->nmetrics > INDEX_MAX_METRICS || k->ntags > INDEX_MAX_TAGS)
		return ck_error(CK_EINVALID, "at most %d metrics and %d tags", INDEX_MAX_METRICS,
				INDEX_MAX_TAGS);
	/* Computed before the transaction: the encodings and the blob
	 * references in hash order (the lock order of blob rows). */
	if ((err = metrics_encode(&metrics, k->metrics, k->nmetrics)) < 0 ||
	    (err = tags_encode(&tags, k->tags, k->ntags)) < 0)
		goto out;
	if (!(refs = calloc(k->nstorages + k->nextra + 1, sizeof(*refs)))) {
		err = oom();
		goto out;
	}
	for (size_t i = 0; i < k->nstorages; i++) {
		const struct index_storage *s = &k->storages[i];
		refs[i] = (struct ref){s->blob, s->raw_size, s->stored_size, s->crc32, s->codec, 1};
	}
	for (size_t i = 0; i < k->nextra; i++) {
		const struct index_storage *s = &k->extra[i];
		refs[k->nstorages + i] =
		    (struct ref){s->blob, s->raw_size, s->stored_size, s->crc32, s->codec, 0};
	}
	refs[k->nstorages + k->nextra] =
	    (struct ref){k->skeleton,	  k->skeleton_size,  k->skeleton_stored,
			 k->skeleton_crc, k->skeleton_codec, 0};
	qsort(refs, k->nstorages + k->nextra + 1, sizeof(*refs), cmp_ref);
	now_rfc3339(now);

	if ((err = conn_get(&c, x)) < 0)
		goto out;
	if ((err = x->d->begin(c, SQL_TXN_WRITE)) < 0 ||
	    (err = ensure_model_run(&mid, &rid, x, c, k->model, k->run)) < 0)
		goto out;
	if (k->part_of > 0 && (err = staged_lock(x, c, mid, k->part_of)) < 0)
		goto out;
	if ((err = blobs_ref(k->dedup ? NULL : &dd, x, c, refs, k->nstorages + k->nextra + 1)) < 0)
		goto out;
#define CKPT_INSERT(ID, OVERRIDE, IDV)                                                             \
	"INSERT INTO checkpoints(" ID "model_id, run_id, epoch, step, loss,"                       \
	" metrics, tags, pinned, created_at, format, size, sha256,"                                \
	" tensor_count, storage_count, new_storages, tensor_bytes, new_bytes,"                     \
	" skeleton, skeleton_size, resumed_from, stage_until)" OVERRIDE " VALUES(" IDV             \
	"?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?21,?22)"              \
	" RETURNING id"
	static const char *const insert_new = CKPT_INSERT("", "", "");
	static const char *const import_lite = CKPT_INSERT("id, ", "", "?20, ");
	static const char *const import_pg =
	    CKPT_INSERT("id, ", " OVERRIDING SYSTEM VALUE", "?20, ");
#undef CKPT_INSERT
	if (k->dedup) /* an import: the counters its source computed */
		dd = *k->dedup;
	if ((err = prep(&st, x, c, k->id > 0 ? PICK(x, import_lite, import_pg) : insert_new)) < 0)
		goto out;
	if (k->id > 0)
		x->d->bind_int(st, 20, k->id);
	/* staged checkpoints and files carry the model's id negated */
	x->d->bind_int(st, 1, k->stage_until > 0 || k->part_of > 0 ? -mid : mid);
	x->d->bind_int(st, 2, rid);
	if (k->stage_until > 0)
		x->d->bind_int(st, 22, k->stage_until);
	else
		x->d->bind_null(st, 22);
	if (k->has_epoch)
		x->d->bind_int(st, 3, k->epoch);
	else
		x->d->bind_null(st, 3);
	if (k->has_step)
		x->d->bind_int(st, 4, k->step);
	else
		x->d->bind_null(st, 4);
	if (k->has_loss)
		x->d->bind_double(st, 5, k->loss);
	else
		x->d->bind_null(st, 5);
	x->d->bind_text(st, 6, metrics);
	x->d->bind_text(st, 7, tags);
	x->d->bind_int(st, 8, k->pinned ? 1 : 0);
	x->d->bind_text(st, 9, k->created_at ? k->created_at : now);
	x->d->bind_text(st, 10, k->format);
	x->d->bind_int(st, 11, (int64_t)k->size);
	bind_hash(x, st, 12, &k->sha256);
	x->d->bind_int(st, 13, (int64_t)k->ntensors);
	x->d->bind_int(st, 14, (int64_t)k->nstorages);
	x->d->bind_int(st, 15, (int64_t)dd.new_tensors);
	x->d->bind_int(st, 16, (int64_t)dd.bytes);
	x->d->bind_int(st, 17, (int64_t)dd.new_bytes);
	bind_hash(x, st, 18, &k->skeleton);
	x->d->bind_int(st, 19, (int64_t)k->skeleton_size);
	if (k->resumed_from > 0)
		x->d->bind_int(st, 21, k->resumed_from);
	else
		x->d->bind_null(st, 21);
	if ((rc = x->d->step(st)) <= 0) {
		err = rc < 0 ? rc : ck_error(CK_EIO, "index: checkpoint insert returned no id");
		goto out;
	}
	cid = x->d->column_int(st, 0);
	/* after an explicit id, PostgreSQL's identity must move past it (SQLite's
	 * AUTOINCREMENT does by itself) */
	if (k->id > 0 && x->d->dialect == SQL_POSTGRES) {
		if ((err = prep(&st, x, c,
				"SELECT setval(pg_get_serial_sequence('checkpoints', 'id'),"
				" (SELECT max(id) FROM checkpoints))")) < 0 ||
		    (err = run_done(x, st)) < 0)
			goto out;
	}
	if ((err = storages_insert(x, c, cid, k)) < 0 || (err = tensors_insert(x, c, cid, k)) < 0)
		goto out;
	if (k->part_of > 0 && (err = file_link(k->replaced, x, c, mid, k, cid)) < 0)
		goto out;
	if ((err = bump_generation(x, c)) < 0 || (err = x->d->commit(c)) < 0)
		goto out;
	*id = cid;
	*dedup = dd;
out:
	conn_put(x, c);
	free(refs);
	free(metrics);
	free(tags);
	return err;
}

/* ---- resolve ---- */

static int is_decimal(const char *s)
{
	if (!*s || strlen(s) > 18)
		return 0;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return 0;
	return 1;
}

/* The argument that names a metric in the engine's JSON functions:
 * SQLite's path '$."name"', PostgreSQL's key. Metric names are validated by
 * the caller to [A-Za-z0-9._-], so nothing needs quoting inside. */
static void metric_arg(char *out, size_t n, struct sqlx *x, const char *metric)
{
	if (x->d->dialect == SQL_POSTGRES)
		snprintf(out, n, "%s", metric);
	else
		snprintf(out, n, "$.\"%s\"", metric);
}

static int sql_checkpoint_resolve(int64_t *id, struct index *idx, const char *model,
				  const char *ref, const char *run, const char *metric,
				  int maximize)
{
	struct sqlx *x = SQLX(idx);
	struct sql_conn *c = NULL;
	struct sql_stmt *st = NULL;
	int64_t mid, rid = -1;
	char marg[200];
	int err, rc;

	if (!is_decimal(ref) && strcmp(ref, "latest") && strcmp(ref, "best"))
		return ck_error(CK_EINVALID,
				"'%.64s' is not a checkpoint reference: use an id, 'latest' or "
				"'best'",
				ref);
	if ((err = conn_get(&c, x)) < 0)
		return err;
	if ((err = model_id(&mid, x, c, model)) < 0)
		goto out;
	if (run && (err = run_id(&rid, x, c, mid, run)) < 0)
		goto out;
	if (is_decimal(ref)) {
		if ((err = prep(&st, x, c,
				"SELECT id FROM checkpoints WHERE model_id = ?1 AND id = ?2")) < 0)
			goto out;
		x->d->bind_int(st, 1, mid);
		x->d->bind_int(st, 2, strtoll(ref, NULL, 10));
	} else if (!strcmp(ref, "latest")) {
		if ((err = prep(&st, x, c,
				"SELECT id FROM checkpoints WHERE model_id = ?1"
				" AND (?2 < 0 OR run_id = ?2) ORDER BY id DESC LIMIT 1")) < 0)
			goto out;
		x->d->bind_int(st, 1, mid);
		x->d->bind_int(st, 2, rid);
	} else if (!metric) {
		if ((err = prep(&st, x, c,
				maximize ? "SELECT id FROM checkpoints WHERE model_id = ?1"
					   " AND (?2 < 0 OR run_id = ?2) AND loss IS NOT NULL"
					   " ORDER BY loss DESC, id DESC LIMIT 1"
					 : "SELECT id FROM checkpoints WHERE model_id = ?1"
					   " AND (?2 < 0 OR run_id = ?2) AND loss IS NOT NULL"
					   " ORDER BY loss ASC, id DESC LIMIT 1")) < 0)
			goto out;
		x->d->bind_int(st, 1, mid);
		x->d->bind_int(st, 2, rid);
	} else {
		static const char *const lite[2] = {
		    "SELECT id FROM checkpoints WHERE model_id = ?1 AND (?2 < 0 OR run_id = ?2)"
		    " AND json_type(metrics, ?3) IN ('real', 'integer')"
		    " ORDER BY json_extract(metrics, ?3) ASC, id DESC LIMIT 1",
		    "SELECT id FROM checkpoints WHERE model_id = ?1 AND (?2 < 0 OR run_id = ?2)"
		    " AND json_type(metrics, ?3) IN ('real', 'integer')"
		    " ORDER BY json_extract(metrics, ?3) DESC, id DESC LIMIT 1"};
		static const char *const pg[2] = {
		    "SELECT id FROM checkpoints WHERE model_id = ?1 AND (?2 < 0 OR run_id = ?2)"
		    " AND jsonb_typeof(metrics -> ?3::text) = 'number'"
		    " ORDER BY (metrics ->> ?3::text)::float8 ASC, id DESC LIMIT 1",
		    "SELECT id FROM checkpoints WHERE model_id = ?1 AND (?2 < 0 OR run_id = ?2)"
		    " AND jsonb_typeof(metrics -> ?3::text) = 'number'"
		    " ORDER BY (metrics ->> ?3::text)::float8 DESC, id DESC LIMIT 1"};
		metric_arg(marg, sizeof(marg), x, metric);
		if ((err = prep(&st, x, c, PICK(x, lite, pg)[maximize ? 1 : 0])) < 0)
			goto out;
		x->d->bind_int(st, 1, mid);
		x->d->bind_int(st, 2, rid);
		x->d->bind_text(st, 3, marg);
	}
	if ((rc = x->d->step(st)) < 0) {
		err = rc;
	} else if (rc == 1) {
		*id = x->d->column_int(st, 0);
	} else if (!strcmp(ref, "best")) {
		err = ck_error(
		    CK_ENOTFOUND, "model '%s' has no checkpoint with %s%s%s to pick the best by",
		    model, metric ? "metric '" : "a loss", metric ? metric : "", metric ? "'" : "");
	} else if (!strcmp(ref, "latest")) {
		err = ck_error(CK_ENOTFOUND, "model '%s' has no checkpoints%s%s", model,
			       run ? " in run " : "", run ? run : "");
	} else {
		err = ck_error(CK_ENOTFOUND, "checkpoint %s of model '%s' not found", ref, model);
	}
out:
	conn_put(x, c);
	return err;
}

/* ---- reads ---- */

#define CKPT_COLUMNS                                                                               \
	"c.id, m.name, r.name, c.epoch, c.step, c.loss, c.metrics, c.tags, c.pinned,"              \
	" c.created_at, c.format, c.size, c.sha256, c.tensor_count, c.storage_count,"              \
	" c.new_storages, c.tensor_bytes, c.new_bytes, c.resumed_from, c.stage_until"
/* a staged checkpoint's row names its model negated (storage/schema.c) */
#define CKPT_FROM                                                                                  \
	" FROM checkpoints c JOIN models m ON m.id = abs(c.model_id) JOIN runs r ON r.id = "       \
	"c.run_id"

/* Fills *o from a row of CKPT_COLUMNS. On error *o holds what was read (the
 * caller clears it). */
static int ckpt_row(struct index_checkpoint *o, struct sqlx *x, struct sql_stmt *st)
{
	const struct sql_driver *d = x->d;
	int err;

	memset(o, 0, sizeof(*o));
	o->id = d->column_int(st, 0);
	if (!(o->model = dup_text(x, st, 1)) || !(o->run = dup_text(x, st, 2)) ||
	    !(o->format = dup_text(x, st, 10)))
		return oom();
	o->has_epoch = !d->column_null(st, 3);
	o->epoch = d->column_int(st, 3);
	o->has_step = !d->column_null(st, 4);
	o->step = d->column_int(st, 4);
	o->has_loss = !d->column_null(st, 5);
	o->loss = d->column_double(st, 5);
	if ((err = metrics_decode(&o->metrics, &o->nmetrics, d->column_text(st, 6), o->id)) < 0 ||
	    (err = strings_decode(&o->tags, &o->ntags, d->column_text(st, 7), "tags")) < 0)
		return err;
	o->pinned = d->column_int(st, 8) != 0;
	snprintf(o->created_at, sizeof(o->created_at), "%s", d->column_text(st, 9));
	o->size = (uint64_t)d->column_int(st, 11);
	if ((err = column_hash(&o->sha256, x, st, 12)) < 0)
		return err;
	o->tensor_count = (uint64_t)d->column_int(st, 13);
	o->dedup.tensors = (uint64_t)d->column_int(st, 14);
	o->dedup.new_tensors = (uint64_t)d->column_int(st, 15);
	o->dedup.bytes = (uint64_t)d->column_int(st, 16);
	o->dedup.new_bytes = (uint64_t)d->column_int(st, 17);
	o->resumed_from = d->column_null(st, 18) ? 0 : d->column_int(st, 18);
	o->stage_until = d->column_null(st, 19) ? 0 : d->column_int(st, 19);
	return 0;
}

static int sql_checkpoint_get(struct index_checkpoint **out, struct index *idx, int64_t id)
{
	struct sqlx *x = SQLX(idx);
	struct sql_conn *c = NULL;
	struct sql_stmt *st;
	struct index_checkpoint *o = calloc(1, sizeof(*o));
	int err, rc;

	if (!o)
		return oom();
	if ((err = conn_get(&c, x)) < 0 ||
	    (err = prep(&st, x, c, "SELECT " CKPT_COLUMNS CKPT_FROM " WHERE c.id = ?1")) < 0)
		goto out;
	x->d->bind_int(st, 1, id);
	if ((rc = x->d->step(st)) <= 0) {
		err = rc < 0 ? rc : ck_error(CK_ENOTFOUND, "checkpoint %" PRId64 " not found", id);
		goto out;
	}
	if ((err = ckpt_row(o, x, st)) < 0)
		goto out;
	*out = o;
	o = NULL;
out:
	index_checkpoint_free(o);
	conn_put(x, c);
	return err;
}

static int sql_checkpoint_list(struct index_checkpoint_list **out, struct index *idx,
			       const struct index_list_query *q)
{
	struct sqlx *x = SQLX(idx);
	struct sql_conn *c = NULL;
	struct sql_stmt *st;
	struct index_checkpoint_list *l = calloc(1, sizeof(*l));
	const char *order = q->order ? q->order : "created";
	size_t which, cap = 0;
	char marg[200] = "";
	int64_t mid, rid = -1;
	int err, rc, desc = 0;

	if (!l)
		return oom();
	if (order[0] == '-') {
		desc = 1;
		order++;
	}
	/* The ORDER BY clauses are fixed strings chosen here, never built from
	 * the request; a metric name is a bound parameter. */
	if (!strcmp(order, "created") || !strcmp(order, "id"))
		which = 0;
	else if (!strcmp(order, "epoch"))
		which = 2;
	else if (!strcmp(order, "step"))
		which = 4;
	else if (!strcmp(order, "loss"))
		which = 6;
	else if (!strncmp(order, "metric.", 7) && order[7]) {
		metric_arg(marg, sizeof(marg), x, order + 7);
		which = 8;
	} else {
		free(l);
		return ck_error(CK_EINVALID,
				"order '%.64s' is not one of created, epoch, step, loss, "
				"metric.NAME (prefix '-' for descending)",
				q->order);
	}
	which += (size_t)desc;

	if ((err = conn_get(&c, x)) < 0)
		goto out;
	/* count and page from one snapshot */
	if ((err = x->d->begin(c, SQL_TXN_READ)) < 0 || (err = model_id(&mid, x, c, q->model)) < 0)
		goto out;
	if (q->run && (err = run_id(&rid, x, c, mid, q->run)) < 0) {
		/* an unknown run is an empty list, not an error */
		ck_error_clear();
		err = 0;
		goto done;
	}
#define LITE_WHERE                                                                                 \
	" WHERE c.model_id = ?1 AND (?2 < 0 OR c.run_id = ?2)"                                     \
	" AND (?3 IS NULL OR EXISTS (SELECT 1 FROM json_each(c.tags) WHERE value = ?3))"           \
	" AND (?4 = 0 OR c.epoch = ?5)"
#define PG_WHERE                                                                                   \
	" WHERE c.model_id = ?1 AND (?2 < 0 OR c.run_id = ?2)"                                     \
	" AND (?3::text IS NULL OR c.tags @> jsonb_build_array(?3::text))"                         \
	" AND (?4 = 0 OR c.epoch = ?5)"
#define LITE_M "json_extract(c.metrics, ?7)"
#define PG_M   "(c.metrics ->> ?7::text)::float8"
#define PAGE   " LIMIT ?6 OFFSET ?8"
#define ORDERS(W, M)                                                                               \
	{                                                                                          \
		"SELECT " CKPT_COLUMNS CKPT_FROM W " ORDER BY c.id ASC" PAGE,                      \
		    "SELECT " CKPT_COLUMNS CKPT_FROM W " ORDER BY c.id DESC" PAGE,                 \
		    "SELECT " CKPT_COLUMNS CKPT_FROM W                                             \
		    " ORDER BY c.epoch IS NULL, c.epoch ASC, c.id ASC" PAGE,                       \
		    "SELECT " CKPT_COLUMNS CKPT_FROM W                                             \
		    " ORDER BY c.epoch IS NULL, c.epoch DESC, c.id DESC" PAGE,                     \
		    "SELECT " CKPT_COLUMNS CKPT_FROM W                                             \
		    " ORDER BY c.step IS NULL, c.step ASC, c.id ASC" PAGE,                         \
		    "SELECT " CKPT_COLUMNS CKPT_FROM W                                             \
		    " ORDER BY c.step IS NULL, c.step DESC, c.id DESC" PAGE,                       \
		    "SELECT " CKPT_COLUMNS CKPT_FROM W                                             \
		    " ORDER BY c.loss IS NULL, c.loss ASC, c.id ASC" PAGE,                         \
		    "SELECT " CKPT_COLUMNS CKPT_FROM W                                             \
		    " ORDER BY c.loss IS NULL, c.loss DESC, c.id DESC" PAGE,                       \
		    "SELECT " CKPT_COLUMNS CKPT_FROM W " ORDER BY " M " IS NULL, " M               \
		    " ASC, c.id ASC" PAGE,                                                         \
		    "SELECT " CKPT_COLUMNS CKPT_FROM W " ORDER BY " M " IS NULL, " M               \
		    " DESC, c.id DESC" PAGE,                                                       \
	}
	static const char *const lite_by[] = ORDERS(LITE_WHERE, LITE_M);
	static const char *const pg_by[] = ORDERS(PG_WHERE, PG_M);
	static const char *const lite_count = "SELECT count(*) FROM checkpoints c" LITE_WHERE;
	static const char *const pg_count = "SELECT count(*) FROM checkpoints c" PG_WHERE;
#undef ORDERS
#undef PAGE
	for (int pass = 0; pass < 2; pass++) {
		if ((err = prep(&st, x, c,
				pass == 0 ? PICK(x, lite_count, pg_count)
					  : PICK(x, lite_by, pg_by)[which])) < 0)
			goto out;
		x->d->bind_int(st, 1, mid);
		x->d->bind_int(st, 2, rid);
		x->d->bind_text(st, 3, q->tag);
		x->d->bind_int(st, 4, q->has_epoch);
		x->d->bind_int(st, 5, q->epoch);
		if (pass == 0) {
			if ((rc = x->d->step(st)) < 0) {
				err = rc;
				goto out;
			}
			l->total = x->d->column_int(st, 0);
			continue;
		}
		x->d->bind_int(st, 6, q->limit);
		if (which >= 8)
			x->d->bind_text(st, 7, marg);
		else
			x->d->bind_null(st, 7);
		x->d->bind_int(st, 8, q->offset);
		while ((rc = x->d->step(st)) == 1) {
			if (l->nitems == cap) {
				size_t nc = cap ? cap * 2 : 32;
				struct index_checkpoint *v = realloc(l->items, nc * sizeof(*v));
				if (!v) {
					err = oom();
					goto out;
				}
				l->items = v;
				cap = nc;
			}
			err = ckpt_row(&l->items[l->nitems], x, st);
			l->nitems++; /* counted even when partial: the free clears it */
			if (err < 0)
				goto out;
		}
		if (rc < 0) {
			err = rc;
			goto out;
		}
	}
done:
	*out = l;
	l = NULL;
out:
	index_checkpoint_list_free(l);
	conn_put(x, c);
	return err;
}

static int sql_checkpoint_layout(struct index_layout **out, struct index *idx, int64_t id)
{
	struct sqlx *x = SQLX(idx);
	struct sql_conn *c = NULL;
	struct sql_stmt *st;
	struct index_layout *l = calloc(1, sizeof(*l));
	struct hash skel;
	uint64_t skel_size, nstor = 0, pos = 0, skel_off = 0;
	uint32_t skel_crc = 0;
	int err = 0, rc;

	if (!l)
		return oom();
	if ((err = conn_get(&c, x)) < 0 || (err = x->d->begin(c, SQL_TXN_READ)) < 0 ||
	    (err = prep(&st, x, c,
			"SELECT m.name, c.epoch, c.format, c.size, c.sha256, c.skeleton,"
			" c.skeleton_size, c.storage_count,"
			" (SELECT crc32 FROM blobs WHERE hash = c.skeleton) FROM checkpoints c"
			" JOIN models m ON m.id = abs(c.model_id) WHERE c.id = ?1")) < 0)
		goto out;
	x->d->bind_int(st, 1, id);
	if ((rc = x->d->step(st)) <= 0) {
		err = rc < 0 ? rc : ck_error(CK_ENOTFOUND, "checkpoint %" PRId64 " not found", id);
		goto out;
	}
	l->id = id;
	l->model = dup_text(x, st, 0);
	l->has_epoch = !x->d->column_null(st, 1);
	l->epoch = x->d->column_int(st, 1);
	l->format = dup_text(x, st, 2);
	l->size = (uint64_t)x->d->column_int(st, 3);
	if ((err = column_hash(&l->sha256, x, st, 4)) < 0 ||
	    (err = column_hash(&skel, x, st, 5)) < 0)
		goto out;
	skel_size = (uint64_t)x->d->column_int(st, 6);
	l->skeleton = skel;
	l->skeleton_size = skel_size;
	nstor = (uint64_t)x->d->column_int(st, 7);
	if (x->d->column_null(st, 8)) {
		err =
		    ck_error(CK_ECORRUPT,
			     "index: checkpoint %" PRId64 " names a skeleton blob with no row", id);
		goto out;
	}
	skel_crc = (uint32_t)x->d->column_int(st, 8);
	/* a checkpoint of several files has no bytes of its own (no parts):
	 * its files are its parts' rows (index_checkpoint_files) */
	if (l->model && l->format && index_format_multi(l->format)) {
		*out = l;
		l = NULL;
		goto out;
	}
	if (!l->model || !l->format || nstor > (1u << 26) ||
	    !(l->parts = calloc(2 * nstor + 1, sizeof(*l->parts)))) {
		err = oom();
		goto out;
	}
	if ((err = prep(&st, x, c,
			"SELECT s.blob, s.file_off, s.nbytes, b.crc32 FROM storages s"
			" LEFT JOIN blobs b ON b.hash = s.blob"
			" WHERE s.checkpoint_id = ?1 AND s.idx >= 0 ORDER BY s.file_off, s.idx")) <
	    0)
		goto out;
	x->d->bind_int(st, 1, id);
	while ((rc = x->d->step(st)) == 1) {
		uint64_t off = (uint64_t)x->d->column_int(st, 1);
		uint64_t n = (uint64_t)x->d->column_int(st, 2);
		if (off < pos || l->nparts + 2 > 2 * nstor + 1 || x->d->column_null(st, 3)) {
			err = ck_error(CK_ECORRUPT,
				       "index: checkpoint %" PRId64
				       " has overlapping storages or one without a blob row",
				       id);
			goto out;
		}
		if (off > pos) {
			struct index_layout_part *p = &l->parts[l->nparts++];
			*p = (struct index_layout_part){skel,	  pos,	     off - pos,
							skel_off, skel_size, skel_crc};
			skel_off += off - pos;
		}
		struct index_layout_part *p = &l->parts[l->nparts++];
		if ((err = column_hash(&p->blob, x, st, 0)) < 0)
			goto out;
		p->file_off = off;
		p->size = n;
		p->src_off = 0;
		p->blob_size = n;
		p->blob_crc = (uint32_t)x->d->column_int(st, 3);
		pos = off + n;
	}
	if (rc < 0) {
		err = rc;
		goto out;
	}
	if (pos < l->size) {
		struct index_layout_part *p = &l->parts[l->nparts++];
		*p = (struct index_layout_part){skel,	  pos,	     l->size - pos,
						skel_off, skel_size, skel_crc};
		skel_off += l->size - pos;
	}
	if (skel_off != skel_size || pos > l->size) {
		err = ck_error(CK_ECORRUPT,
			       "index: checkpoint %" PRId64 " layout does not add up to its size",
			       id);
		goto out;
	}
	*out = l;
	l = NULL;
out:
	index_layout_free(l);
	conn_put(x, c);
	return err;
}

/* A tensor of file `name` in a checkpoint of several files: the file's name
 * as the pointer's first segment (RFC 6901 escapes), then its own path. */
static char *file_tensor_path(const char *name, const char *path)
{
	size_t n = strlen(name), m = strlen(path), k = 0;
	char *out = malloc(2 * n + m + 2);

	if (!out)
		return NULL;
	out[k++] = '/';
	for (size_t i = 0; i < n; i++) {
		if (name[i] == '~' || name[i] == '/') {
			out[k++] = '~';
			out[k++] = name[i] == '~' ? '0' : '1';
		} else {
			out[k++] = name[i];
		}
	}
	memcpy(out + k, path, m + 1);
	return out;
}

static int sql_checkpoint_tensors(struct index_tensors **out, struct index *idx, int64_t id)
{
	struct sqlx *x = SQLX(idx);
	struct sql_conn *c = NULL;
	struct sql_stmt *st;
	struct index_tensors *t = calloc(1, sizeof(*t));
	int64_t nt = 0, ns = 0;
	int err = 0, rc;
	/* a checkpoint of several files: its files' tensors, each file's
	 * storages after the previous file's (bases: the first storage of
	 * each part, in part order) */
	struct part_base {
		int64_t part;
		size_t first;
	} *bases = NULL;
	size_t nbases = 0, bcap = 0;
	int multi = 0, flat = 0;

	if (!t)
		return oom();
	if ((err = conn_get(&c, x)) < 0 || (err = x->d->begin(c, SQL_TXN_READ)) < 0 ||
	    (err = prep(&st, x, c,
			"SELECT tensor_count, storage_count, format FROM checkpoints"
			" WHERE id = ?1")) < 0)
		goto out;
	x->d->bind_int(st, 1, id);
	if ((rc = x->d->step(st)) <= 0) {
		err = rc < 0 ? rc : ck_error(CK_ENOTFOUND, "checkpoint %" PRId64 " not found", id);
		goto out;
	}
	nt = x->d->column_int(st, 0);
	ns = x->d->column_int(st, 1);
	multi = index_format_multi(x->d->column_text(st, 2));
	/* shards of one model name their tensors as the model does; other
	 * files' tensors are found under the file's name */
	flat = multi && !strcmp(x->d->column_text(st, 2), "safetensors-sharded");
	if (nt < 0 || ns < 0 || nt > (1 << 26) || ns > (1 << 26)) {
		err = ck_error(CK_ECORRUPT, "index: checkpoint %" PRId64 " has bad counts", id);
		goto out;
	}
	t->tensors = calloc((size_t)nt + 1, sizeof(*t->tensors));
	t->storages = calloc((size_t)ns + 1, sizeof(*t->storages));
	if (!t->tensors || !t->storages) {
		err = oom();
		goto out;
	}
	if ((err = prep(
		 &st, x, c,
		 multi ? "SELECT s.blob, s.dtype, s.nbytes, b.crc32, b.refcount, s.file_off,"
			 " f.part_id FROM files f JOIN storages s ON s.checkpoint_id = f.part_id"
			 " LEFT JOIN blobs b ON b.hash = s.blob"
			 " WHERE f.checkpoint_id = ?1 AND s.idx >= 0 ORDER BY f.part_id, s.idx"
		       : "SELECT s.blob, s.dtype, s.nbytes, b.crc32, b.refcount, s.file_off,"
			 " 0 FROM storages s LEFT JOIN blobs b ON b.hash = s.blob"
			 " WHERE s.checkpoint_id = ?1 AND s.idx >= 0 ORDER BY s.idx")) < 0)
		goto out;
	x->d->bind_int(st, 1, id);
	while ((rc = x->d->step(st)) == 1 && t->nstorages < (size_t)ns) {
		int64_t part = x->d->column_int(st, 6);
		if (multi && (!nbases || bases[nbases - 1].part != part)) {
			struct part_base *b = vec_grow(bases, &bcap, nbases, sizeof(*b), 8);
			if (!b) {
				err = oom();
				goto out;
			}
			bases = b;
			bases[nbases++] = (struct part_base){part, t->nstorages};
		}
		struct index_storage_row *s = &t->storages[t->nstorages++];
		if ((err = column_hash(&s->blob, x, st, 0)) < 0)
			goto out;
		s->dtype = dtype_from_name(x->d->column_text(st, 1));
		s->nbytes = (uint64_t)x->d->column_int(st, 2);
		s->crc32 = (uint32_t)x->d->column_int(st, 3);
		s->refcount = x->d->column_int(st, 4);
		s->file_off = (uint64_t)x->d->column_int(st, 5);
	}
	if (rc < 0) {
		err = rc;
		goto out;
	}
	if ((err =
		 prep(&st, x, c,
		      multi ? "SELECT t.path, t.dtype, t.shape, t.strides, t.\"offset\","
			      " t.storage_idx, t.nbytes, f.part_id, f.name FROM files f"
			      " JOIN tensors t ON t.checkpoint_id = f.part_id"
			      " WHERE f.checkpoint_id = ?1 ORDER BY f.part_id, t.seq"
			    : "SELECT path, dtype, shape, strides, \"offset\", storage_idx, nbytes,"
			      " 0, '' FROM tensors WHERE checkpoint_id = ?1 ORDER BY seq")) < 0)
		goto out;
	x->d->bind_int(st, 1, id);
	while ((rc = x->d->step(st)) == 1 && t->ntensors < (size_t)nt) {
		struct index_tensor_row *r = &t->tensors[t->ntensors];
		size_t base = 0;
		int nd2 = 0;
		if (multi) {
			int64_t part = x->d->column_int(st, 7);
			size_t k = 0;
			while (k < nbases && bases[k].part != part)
				k++;
			base = k < nbases ? bases[k].first : t->nstorages; /* none: caught below */
		}
		r->path = multi && !flat
			      ? file_tensor_path(x->d->column_text(st, 8), x->d->column_text(st, 0))
			      : dup_text(x, st, 0);
		if (!r->path) {
			err = oom();
			goto out;
		}
		t->ntensors++;
		r->dtype = dtype_from_name(x->d->column_text(st, 1));
		if ((err = dims_parse(&r->ndim, r->shape, x->d->column_text(st, 2))) < 0 ||
		    (err = dims_parse(&nd2, r->strides, x->d->column_text(st, 3))) < 0)
			goto out;
		if (nd2 != r->ndim) {
			err = ck_error(CK_ECORRUPT, "index: tensor %s has mismatched strides",
				       r->path);
			goto out;
		}
		r->offset = (uint64_t)x->d->column_int(st, 4);
		r->storage = base + (size_t)x->d->column_int(st, 5);
		r->nbytes = (uint64_t)x->d->column_int(st, 6);
		if (r->storage >= t->nstorages) {
			err = ck_error(CK_ECORRUPT, "index: tensor %s names a missing storage",
				       r->path);
			goto out;
		}
	}
	if (rc < 0) {
		err = rc;
		goto out;
	}
	*out = t;
	t = NULL;
out:
	free(bases);
	index_tensors_free(t);
	conn_put(x, c);
	return err;
}

/* ---- delete ---- */

/* Drops one reference of each refs[0..n), freeing rows at zero. The rows
 * are locked in hash order, as blobs_ref does; a driver with arrays does it
 * in three statements (lock, update, delete). */
static int unref_blobs(struct index_freed *freed, size_t *cap, struct sqlx *x, struct sql_conn *c,
		       struct hash *refs, size_t n)
{
	struct sql_stmt *st;
	int64_t *cnt;
	size_t ng = 0;
	int err = 0, rc;

	qsort(refs, n, sizeof(*refs), hash_cmp);
	if (!(cnt = malloc((n ? n : 1) * sizeof(*cnt))))
		return oom();
	for (size_t i = 0; i < n; i++) { /* refs[0..ng): distinct, cnt: how often */
		if (ng && !hash_cmp(&refs[ng - 1], &refs[i])) {
			cnt[ng - 1]++;
			continue;
		}
		refs[ng] = refs[i];
		cnt[ng++] = 1;
	}
	if (x->d->bind_int_array) {
		if (!ng)
			goto out;
		if ((err = prep(&st, x, c,
				"SELECT hash FROM blobs WHERE hash = ANY(?1::bytea[])"
				" ORDER BY hash FOR UPDATE")) < 0)
			goto out;
		x->d->bind_blob_array(st, 1, refs, 32, ng);
		while ((rc = x->d->step(st)) == 1)
			;
		if ((err = rc) < 0 || (err = prep(&st, x, c,
						  "UPDATE blobs SET refcount = blobs.refcount - d.n"
						  " FROM unnest(?1::bytea[], ?2::int8[]) AS d(h, "
						  "n) WHERE blobs.hash = d.h")) < 0)
			goto out;
		x->d->bind_blob_array(st, 1, refs, 32, ng);
		x->d->bind_int_array(st, 2, cnt, ng);
		if ((err = run_done(x, st)) < 0 ||
		    (err = prep(&st, x, c,
				"DELETE FROM blobs WHERE hash = ANY(?1::bytea[]) AND refcount <= 0"
				" RETURNING hash")) < 0)
			goto out;
		x->d->bind_blob_array(st, 1, refs, 32, ng);
		err = collect_hashes(freed, cap, x, st);
		goto out;
	}
	for (size_t i = 0; i < ng; i++) {
		if ((err = prep(&st, x, c,
				"UPDATE blobs SET refcount = refcount - ?2 WHERE hash = ?1"
				" RETURNING refcount")) < 0)
			goto out;
		bind_hash(x, st, 1, &refs[i]);
		x->d->bind_int(st, 2, cnt[i]);
		if ((rc = x->d->step(st)) < 0) {
			err = rc;
			goto out;
		}
		if (rc == 0) /* no row: the index was already missing it */
			continue;
		if (x->d->column_int(st, 0) > 0)
			continue;
		if ((err = prep(&st, x, c, "DELETE FROM blobs WHERE hash = ?1 AND refcount <= 0")) <
			0 ||
		    (err = (bind_hash(x, st, 1, &refs[i]), run_done(x, st))) < 0 ||
		    (err = hashes_push(freed, cap, &refs[i])) < 0)
			goto out;
	}
out:
	free(cnt);
	return err;
}

/* Inside a write: deletes checkpoint id's rows (its row is deleted first,
 * which locks it) and drops its references. 0, or CK_ENOTFOUND when gone. */
static int delete_one(struct index_freed *freed, size_t *cap, struct sqlx *x, struct sql_conn *c,
		      int64_t mid, int64_t id)
{
	struct index_freed refs = {0};
	size_t rcap = 0, nparts = 0;
	int64_t *parts = NULL;
	struct sql_stmt *st;
	struct hash h;
	int err, rc;

	if ((err = prep(&st, x, c,
			"DELETE FROM checkpoints WHERE id = ?1 AND model_id = ?2"
			" RETURNING skeleton")) < 0)
		return err;
	x->d->bind_int(st, 1, id);
	x->d->bind_int(st, 2, mid);
	if ((rc = x->d->step(st)) <= 0)
		return rc < 0 ? rc : CK_ENOTFOUND;
	if ((err = column_hash(&h, x, st, 0)) < 0 || (err = hashes_push(&refs, &rcap, &h)) < 0)
		goto out;
	if ((err = prep(&st, x, c, "SELECT blob FROM storages WHERE checkpoint_id = ?1")) < 0)
		goto out;
	x->d->bind_int(st, 1, id);
	if ((err = collect_hashes(&refs, &rcap, x, st)) < 0 ||
	    (err = unref_blobs(freed, cap, x, c, refs.v, refs.n)) < 0)
		goto out;
	static const char *const dels[] = {
	    "DELETE FROM tensors WHERE checkpoint_id = ?1",
	    "DELETE FROM storages WHERE checkpoint_id = ?1",
	    "DELETE FROM file_writes WHERE checkpoint_id = ?1",
	};
	for (size_t i = 0; i < 3; i++) {
		if ((err = prep(&st, x, c, dels[i])) < 0)
			goto out;
		x->d->bind_int(st, 1, id);
		if ((err = run_done(x, st)) < 0)
			goto out;
	}
	/* a checkpoint of several files: its files go with it */
	if ((err = prep(&st, x, c,
			"DELETE FROM files WHERE checkpoint_id = ?1 RETURNING part_id")) < 0)
		goto out;
	x->d->bind_int(st, 1, id);
	if ((err = collect_ids(&parts, &nparts, x, st)) < 0)
		goto out;
	for (size_t i = 0; i < nparts; i++) {
		int e = delete_one(freed, cap, x, c, mid < 0 ? mid : -mid, parts[i]);
		if (e < 0 && e != CK_ENOTFOUND) {
			err = e;
			goto out;
		}
	}
out:
	free(parts);
	index_freed_clear(&refs);
	return err;
}

static int sql_checkpoint_delete(struct index_freed *freed, struct index *idx, const char *model,
				 int64_t id)
{
	struct sqlx *x = SQLX(idx);
	struct sql_conn *c = NULL;
	size_t cap = freed->n;
	int64_t mid;
	int err;

	if ((err = conn_get(&c, x)) < 0)
		return err;
	if ((err = x->d->begin(c, SQL_TXN_WRITE)) < 0 || (err = model_id(&mid, x, c, model)) < 0)
		goto out;
	err = delete_one(freed, &cap, x, c, mid, id);
	if (err == CK_ENOTFOUND)
		err = ck_error(CK_ENOTFOUND, "checkpoint %" PRId64 " of model '%s' not found", id,
			       model);
	if (err < 0 || (err = bump_generation(x, c)) < 0 || (err = x->d->commit(c)) < 0)
		goto out;
out:
	conn_put(x, c);
	return err;
}

static int sql_model_delete(struct index_freed *freed, struct index *idx, const char *model)
{
	struct sqlx *x = SQLX(idx);
	struct sql_conn *c = NULL;
	struct sql_stmt *st;
	int64_t mid, *ids = NULL;
	size_t nids = 0, cap = freed->n;
	int err, rc;

	if ((err = conn_get(&c, x)) < 0)
		return err;
	if ((err = x->d->begin(c, SQL_TXN_WRITE)) < 0 ||
	    (err = prep(&st, x, c, "DELETE FROM models WHERE name = ?1 RETURNING id")) < 0)
		goto out;
	x->d->bind_text(st, 1, model);
	if ((rc = x->d->step(st)) <= 0) {
		err = rc < 0 ? rc : ck_error(CK_ENOTFOUND, "model '%s' not found", model);
		goto out;
	}
	mid = x->d->column_int(st, 0);
	/* its checkpoints, then the staged ones (-mid, stage_until set); their
	 * files go with them */
	for (int pass = 0; pass < 2; pass++) {
		if ((err = prep(&st, x, c,
				pass ? "SELECT id FROM checkpoints WHERE model_id = ?1"
				       " AND stage_until IS NOT NULL"
				     : "SELECT id FROM checkpoints WHERE model_id = ?1")) < 0)
			goto out;
		x->d->bind_int(st, 1, pass ? -mid : mid);
		free(ids);
		ids = NULL;
		if ((err = collect_ids(&ids, &nids, x, st)) < 0)
			goto out;
		for (size_t i = 0; i < nids; i++) {
			err = delete_one(freed, &cap, x, c, pass ? -mid : mid, ids[i]);
			if (err < 0 && err != CK_ENOTFOUND)
				goto out;
		}
	}
	if ((err = prep(&st, x, c, "DELETE FROM runs WHERE model_id = ?1")) < 0)
		goto out;
	x->d->bind_int(st, 1, mid);
	if ((err = run_done(x, st)) < 0 || (err = bump_generation(x, c)) < 0 ||
	    (err = x->d->commit(c)) < 0)
		goto out;
out:
	free(ids);
	conn_put(x, c);
	return err;
}

/* ---- patch ---- */

/* The metrics of cur merged with p's (set overrides, remove drops) into a
 * new encoded object; CK_EINVALID past INDEX_MAX_METRICS. */
static int metrics_merge(char **out, const char *cur, const struct index_patch *p, int64_t id)
{
	struct index_metric *m = NULL;
	size_t n = 0;
	int err;

	if ((err = metrics_decode(&m, &n, cur, id)) < 0)
		return err;
	struct index_metric *all = calloc(n + p->nset + 1, sizeof(*all));
	size_t k = 0;
	if (!all) {
		free(m);
		return oom();
	}
	for (size_t i = 0; i < n; i++) {
		int dropped = 0;
		for (size_t j = 0; j < p->nremove && !dropped; j++)
			dropped = !strcmp(m[i].name, p->remove[j]);
		for (size_t j = 0; j < p->nset && !dropped; j++)
			dropped = !strcmp(m[i].name, p->set[j].name);
		if (!dropped)
			all[k++] = m[i];
	}
	for (size_t j = 0; j < p->nset; j++)
		all[k++] = p->set[j];
	free(m);
	if (k > INDEX_MAX_METRICS) {
		free(all);
		return ck_error(CK_EINVALID,
				"checkpoint %" PRId64
				" would have %zu metrics; at most %d are kept",
				id, k, INDEX_MAX_METRICS);
	}
	err = metrics_encode(out, all, k);
	free(all);
	return err;
}

static int sql_checkpoint_patch(struct index *idx, int64_t id, const struct index_patch *p)
{
	struct sqlx *x = SQLX(idx);
	struct sql_conn *c = NULL;
	struct sql_stmt *st;
	char *metrics = NULL, *tags = NULL;
	int err, rc;

	if (p->ntags > INDEX_MAX_TAGS || p->nset > INDEX_MAX_METRICS)
		return ck_error(CK_EINVALID, "at most %d metrics and %d tags", INDEX_MAX_METRICS,
				INDEX_MAX_TAGS);
	if (p->has_tags && (err = tags_encode(&tags, p->tags, p->ntags)) < 0)
		return err;
	if ((err = conn_get(&c, x)) < 0 || (err = x->d->begin(c, SQL_TXN_WRITE)) < 0 ||
	    (err = prep(&st, x, c,
			PICK(x, "SELECT metrics FROM checkpoints WHERE id = ?1",
			     "SELECT metrics FROM checkpoints WHERE id = ?1 FOR UPDATE"))) < 0)
		goto out;
	x->d->bind_int(st, 1, id);
	if ((rc = x->d->step(st)) <= 0) {
		err = rc < 0 ? rc : ck_error(CK_ENOTFOUND, "checkpoint %" PRId64 " not found", id);
		goto out;
	}
	/* a merge of at most 2 x 256 names: microseconds */
	if ((p->nset || p->nremove) &&
	    (err = metrics_merge(&metrics, x->d->column_text(st, 0), p, id)) < 0)
		goto out;
	if ((err = prep(&st, x, c,
			"UPDATE checkpoints SET"
			" loss = CASE WHEN ?2 = 1 THEN ?3 ELSE loss END,"
			" metrics = coalesce(?4, metrics),"
			" tags = coalesce(?5, tags),"
			" pinned = CASE WHEN ?6 = 1 THEN ?7 ELSE pinned END"
			" WHERE id = ?1")) < 0)
		goto out;
	x->d->bind_int(st, 1, id);
	x->d->bind_int(st, 2, p->has_loss);
	if (p->has_loss && !p->loss_null)
		x->d->bind_double(st, 3, p->loss);
	else
		x->d->bind_null(st, 3);
	x->d->bind_text(st, 4, metrics);
	x->d->bind_text(st, 5, tags);
	x->d->bind_int(st, 6, p->has_pinned);
	x->d->bind_int(st, 7, p->pinned ? 1 : 0);
	if ((err = run_done(x, st)) < 0 || (err = bump_generation(x, c)) < 0 ||
	    (err = x->d->commit(c)) < 0)
		goto out;
out:
	conn_put(x, c);
	free(metrics);
	free(tags);
	return err;
}

/* ---- models, stats ---- */

static int sql_models(struct index_model_list **out, struct index *idx)
{
	struct sqlx *x = SQLX(idx);
	struct sql_conn *c = NULL;
	struct sql_stmt *st;
	struct index_model_list *l = calloc(1, sizeof(*l));
	size_t cap = 0;
	int err, rc;

#define MODELS_SQL(RUNS, ORDER)                                                                    \
	"SELECT m.name, m.created_at,"                                                             \
	" (SELECT count(*) FROM checkpoints c WHERE c.model_id = m.id)," RUNS ","                  \
	" (SELECT id FROM checkpoints c WHERE c.model_id = m.id AND loss IS NOT NULL"              \
	"   ORDER BY loss ASC, id DESC LIMIT 1),"                                                  \
	" (SELECT min(loss) FROM checkpoints c WHERE c.model_id = m.id),"                          \
	" (SELECT max(id) FROM checkpoints c WHERE c.model_id = m.id),"                            \
	" (SELECT epoch FROM checkpoints c WHERE c.model_id = m.id"                                \
	"   ORDER BY id DESC LIMIT 1),"                                                            \
	" (SELECT max(epoch) FROM checkpoints c WHERE c.model_id = m.id),"                         \
	" (SELECT coalesce(sum(size), 0) FROM checkpoints c WHERE c.model_id = m.id),"             \
	" (SELECT coalesce(sum(new_bytes), 0) FROM checkpoints c WHERE c.model_id = m.id),"        \
	" (SELECT max(created_at) FROM checkpoints c WHERE c.model_id = m.id)"                     \
	" FROM models m ORDER BY " ORDER
	/* names sort by their bytes on both engines (PostgreSQL would use the
	 * server's locale) */
	static const char *const lite =
	    MODELS_SQL(" (SELECT json_group_array(name) FROM (SELECT name FROM runs"
		       "   WHERE model_id = m.id ORDER BY name))",
		       "m.name");
	static const char *const pg = MODELS_SQL(
	    " (SELECT coalesce(json_agg(name ORDER BY name COLLATE \"C\"), '[]'::json)::text"
	    "   FROM runs WHERE model_id = m.id)",
	    "m.name COLLATE \"C\"");
#undef MODELS_SQL
	if (!l)
		return oom();
	if ((err = conn_get(&c, x)) < 0 || (err = x->d->begin(c, SQL_TXN_READ)) < 0 ||
	    (err = prep(&st, x, c, PICK(x, lite, pg))) < 0)
		goto out;
	while ((rc = x->d->step(st)) == 1) {
		if (l->nitems == cap) {
			size_t nc = cap ? cap * 2 : 16;
			struct index_model *v = realloc(l->items, nc * sizeof(*v));
			if (!v) {
				err = oom();
				goto out;
			}
			l->items = v;
			cap = nc;
		}
		struct index_model *m = &l->items[l->nitems++];
		const struct sql_driver *d = x->d;
		memset(m, 0, sizeof(*m));
		if (!(m->name = dup_text(x, st, 0))) {
			err = oom();
			goto out;
		}
		snprintf(m->created_at, sizeof(m->created_at), "%s", d->column_text(st, 1));
		m->checkpoints = d->column_int(st, 2);
		if ((err = strings_decode(&m->runs, &m->nruns, d->column_text(st, 3), "runs")) < 0)
			goto out;
		m->has_best = !d->column_null(st, 4);
		m->best = d->column_int(st, 4);
		m->has_best_loss = !d->column_null(st, 5);
		m->best_loss = d->column_double(st, 5);
		m->has_latest = !d->column_null(st, 6);
		m->latest = d->column_int(st, 6);
		m->has_latest_epoch = !d->column_null(st, 7);
		m->latest_epoch = d->column_int(st, 7);
		m->has_max_epoch = !d->column_null(st, 8);
		m->max_epoch = d->column_int(st, 8);
		m->bytes = (uint64_t)d->column_int(st, 9);
		m->bytes_added = (uint64_t)d->column_int(st, 10);
		m->has_updated = !d->column_null(st, 11);
		snprintf(m->updated_at, sizeof(m->updated_at), "%s", d->column_text(st, 11));
	}
	if (rc < 0) {
		err = rc;
		goto out;
	}
	*out = l;
	l = NULL;
out:
	index_model_list_free(l);
	conn_put(x, c);
	return err;
}

static int sql_stats(struct index_stats *out, struct index *idx)
{
	struct sqlx *x = SQLX(idx);
	struct sql_conn *c = NULL;
	struct sql_stmt *st;
	int err, rc;

	memset(out, 0, sizeof(*out));
	if ((err = conn_get(&c, x)) < 0 || (err = x->d->begin(c, SQL_TXN_READ)) < 0 ||
	    (err = prep(&st, x, c,
			"SELECT coalesce(sum(size), 0), count(*),"
			" (SELECT count(*) FROM models) FROM checkpoints WHERE model_id > 0")) < 0)
		goto out;
	if ((rc = x->d->step(st)) < 0) {
		err = rc;
		goto out;
	}
	out->logical_bytes = (uint64_t)x->d->column_int(st, 0);
	out->checkpoints = x->d->column_int(st, 1);
	out->models = x->d->column_int(st, 2);
	if ((err = prep(&st, x, c,
			"SELECT coalesce(sum(raw_size), 0), coalesce(sum(stored_size), 0),"
			" count(*) FROM blobs")) < 0)
		goto out;
	if ((rc = x->d->step(st)) < 0) {
		err = rc;
		goto out;
	}
	out->unique_bytes = (uint64_t)x->d->column_int(st, 0);
	out->stored_bytes = (uint64_t)x->d->column_int(st, 1);
	out->blobs = x->d->column_int(st, 2);
out:
	conn_put(x, c);
	return err;
}

/* ---- blobs ---- */

static int blob_row(struct index_blob *b, struct sqlx *x, struct sql_stmt *st)
{
	int err = column_hash(&b->hash, x, st, 0);

	b->raw_size = (uint64_t)x->d->column_int(st, 1);
	b->stored_size = (uint64_t)x->d->column_int(st, 2);
	b->codec = (int)x->d->column_int(st, 3);
	b->crc32 = (uint32_t)x->d->column_int(st, 4);
	b->refcount = x->d->column_int(st, 5);
	return err;
}

#define BLOB_COLUMNS "hash, raw_size, stored_size, codec, crc32, refcount"

static int sql_blob_get(struct index_blob *out, struct index *idx, const struct hash *h)
{
	struct sqlx *x = SQLX(idx);
	struct sql_conn *c = NULL;
	struct sql_stmt *st;
	int err, rc;

	if ((err = conn_get(&c, x)) < 0 ||
	    (err = prep(&st, x, c, "SELECT " BLOB_COLUMNS " FROM blobs WHERE hash = ?1")) < 0)
		goto out;
	bind_hash(x, st, 1, h);
	if ((rc = x->d->step(st)) < 0)
		err = rc;
	else if (rc == 0)
		err = CK_ENOTFOUND;
	else
		err = blob_row(out, x, st);
out:
	conn_put(x, c);
	return err;
}

/* Hashes per statement of sql_blob_sizes with arrays. */
#define SIZES_BATCH 10000

struct asked {
	struct hash h;
	size_t i; /* its place in the question */
};

static int asked_cmp(const void *a, const void *b)
{
	return hash_cmp(&((const struct asked *)a)->h, &((const struct asked *)b)->h);
}

/* A lookup of one number per hash: `one` with ?1 a hash (one run per hash),
 * `many` with ?1 an array of hashes (rows of hash, number). ?2, when the
 * statements use it, is `arg`. */
struct lookup {
	const char *one, *many;
	int has_arg;
};

/* out[i] = the number the lookup finds for h[i], INDEX_NO_BLOB when none:
 * one statement per SIZES_BATCH hashes with arrays, else one per hash, on
 * one connection. */
static int lookup_many(uint64_t *out, struct sqlx *x, const struct lookup *q, const struct hash *h,
		       size_t n, int64_t arg)
{
	struct sql_conn *c = NULL;
	struct sql_stmt *st;
	struct asked *a = NULL;
	int err, rc;

	for (size_t i = 0; i < n; i++)
		out[i] = INDEX_NO_BLOB;
	if ((err = conn_get(&c, x)) < 0)
		return err;
	if (!x->d->bind_int_array) {
		for (size_t i = 0; i < n && !err; i++) {
			if ((err = prep(&st, x, c, q->one)) < 0)
				break;
			bind_hash(x, st, 1, &h[i]);
			if (q->has_arg)
				x->d->bind_int(st, 2, arg);
			if ((rc = x->d->step(st)) < 0)
				err = rc;
			else if (rc == 1)
				out[i] = (uint64_t)x->d->column_int(st, 0);
		}
		goto out;
	}
	if (n && !(a = malloc((n < SIZES_BATCH ? n : SIZES_BATCH) * sizeof(*a)))) {
		err = oom();
		goto out;
	}
	for (size_t base = 0; base < n && !err; base += SIZES_BATCH) {
		size_t m = n - base < SIZES_BATCH ? n - base : SIZES_BATCH;
		/* the answers come in any order: found by binary search */
		for (size_t i = 0; i < m; i++)
			a[i] = (struct asked){h[base + i], base + i};
		qsort(a, m, sizeof(*a), asked_cmp);
		if ((err = prep(&st, x, c, q->many)) < 0)
			break;
		x->d->bind_blob_array(st, 1, &h[base], sizeof(*h), m);
		if (q->has_arg)
			x->d->bind_int(st, 2, arg);
		while ((rc = x->d->step(st)) == 1) {
			struct asked key = {.i = 0};
			if ((err = column_hash(&key.h, x, st, 0)) < 0)
				break;
			struct asked *hit = bsearch(&key, a, m, sizeof(*a), asked_cmp);
			if (!hit)
				continue;
			/* a hash asked twice: every place gets its answer */
			while (hit > a && !hash_cmp(&hit[-1].h, &key.h))
				hit--;
			for (; hit < a + m && !hash_cmp(&hit->h, &key.h); hit++)
				out[hit->i] = (uint64_t)x->d->column_int(st, 1);
		}
		if (rc < 0 && !err)
			err = rc;
	}
out:
	free(a);
	conn_put(x, c);
	return err;
}

static int sql_blob_sizes(uint64_t *size, struct index *idx, const struct hash *h, size_t n)
{
	static const struct lookup q = {
	    "SELECT raw_size FROM blobs WHERE hash = ?1",
	    "SELECT hash, raw_size FROM blobs WHERE hash = ANY(?1::bytea[])",
	    0,
	};

	return lookup_many(size, SQLX(idx), &q, h, n, 0);
}

static int sql_blob_page(struct index_blob *out, size_t *n, struct index *idx,
			 const struct hash *after, size_t max)
{
	struct sqlx *x = SQLX(idx);
	struct sql_conn *c = NULL;
	struct sql_stmt *st;
	int err, rc;

	*n = 0;
	if ((err = conn_get(&c, x)) < 0)
		return err;
	if (after) {
		if ((err = prep(&st, x, c,
				"SELECT " BLOB_COLUMNS " FROM blobs WHERE hash > ?1"
				" ORDER BY hash LIMIT ?2")) < 0)
			goto out;
		bind_hash(x, st, 1, after);
		x->d->bind_int(st, 2, (int64_t)max);
	} else {
		if ((err = prep(&st, x, c,
				"SELECT " BLOB_COLUMNS " FROM blobs ORDER BY hash LIMIT ?1")) < 0)
			goto out;
		x->d->bind_int(st, 1, (int64_t)max);
	}
	while (*n < max && (rc = x->d->step(st)) == 1)
		if ((err = blob_row(&out[(*n)++], x, st)) < 0)
			goto out;
	if (*n < max && rc < 0)
		err = rc;
out:
	conn_put(x, c);
	return err;
}

/* ---- retention ---- */

static int retention_decode(struct index_retention *r, const char *text, const char *model)
{
	json_t *o = json_loads(text, 0, NULL);
	const char *metric = json_string_value(json_object_get(o, "metric"));
	const char *mode = json_string_value(json_object_get(o, "mode"));
	json_t *best = json_object_get(o, "keep_best"), *last = json_object_get(o, "keep_last");

	if (!json_is_object(o) || (best && !json_is_integer(best)) ||
	    (last && !json_is_integer(last)) || (metric && strlen(metric) > INDEX_MAX_NAME) ||
	    (mode && strcmp(mode, "min") && strcmp(mode, "max"))) {
		json_decref(o);
		return ck_error(CK_ECORRUPT, "index: the retention policy of model '%s' is damaged",
				model);
	}
	r->keep_best = best ? json_integer_value(best) : 0;
	r->keep_last = last ? json_integer_value(last) : 0;
	snprintf(r->metric, sizeof(r->metric), "%s", metric ? metric : "loss");
	r->maximize = mode && !strcmp(mode, "max");
	json_decref(o);
	return 0;
}

static int sql_retention_get(struct index_retention *out, int *has, struct index *idx,
			     const char *model)
{
	struct sqlx *x = SQLX(idx);
	struct sql_conn *c = NULL;
	struct sql_stmt *st;
	int err, rc;

	*has = 0;
	if ((err = conn_get(&c, x)) < 0 ||
	    (err = prep(&st, x, c, "SELECT retention FROM models WHERE name = ?1")) < 0)
		goto out;
	x->d->bind_text(st, 1, model);
	if ((rc = x->d->step(st)) <= 0) {
		err = rc < 0 ? rc : ck_error(CK_ENOTFOUND, "model '%s' not found", model);
		goto out;
	}
	if (!x->d->column_null(st, 0)) {
		if ((err = retention_decode(out, x->d->column_text(st, 0), model)) < 0)
			goto out;
		*has = 1;
	}
out:
	conn_put(x, c);
	return err;
}

static int sql_retention_set(struct index *idx, const char *model, const struct index_retention *p)
{
	struct sqlx *x = SQLX(idx);
	struct sql_conn *c = NULL;
	struct sql_stmt *st;
	char *text = NULL, now[40];
	int err;

	if (p) {
		json_t *o = json_pack("{sI sI ss ss}", "keep_best", (json_int_t)p->keep_best,
				      "keep_last", (json_int_t)p->keep_last, "metric", p->metric,
				      "mode", p->maximize ? "max" : "min");
		text = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
		json_decref(o);
		if (!text)
			return oom();
	}
	now_rfc3339(now);
	if ((err = conn_get(&c, x)) < 0 || (err = x->d->begin(c, SQL_TXN_WRITE)) < 0 ||
	    (err = prep(&st, x, c,
			"INSERT INTO models(name, created_at, retention) VALUES(?1, ?2, ?3)"
			" ON CONFLICT(name) DO UPDATE SET retention = excluded.retention")) < 0)
		goto out;
	x->d->bind_text(st, 1, model);
	x->d->bind_text(st, 2, now);
	x->d->bind_text(st, 3, text);
	if ((err = run_done(x, st)) < 0 || (err = bump_generation(x, c)) < 0 ||
	    (err = x->d->commit(c)) < 0)
		goto out;
out:
	free(text);
	conn_put(x, c);
	return err;
}

static int sql_retention_victims(int64_t **ids_out, size_t *n_out, struct index *idx,
				 const char *model)
{
	struct sqlx *x = SQLX(idx);
	struct sql_conn *c = NULL;
	struct sql_stmt *st;
	struct index_retention pol;
	int64_t mid, *ids = NULL;
	size_t n = 0;
	char marg[200];
	int err, has = 0, by_loss;

	*ids_out = NULL;
	*n_out = 0;
	if ((err = sql_retention_get(&pol, &has, idx, model)) < 0 || !has)
		return err;
	by_loss = !strcmp(pol.metric, "loss");
	metric_arg(marg, sizeof(marg), x, pol.metric);
	/* Victims: not pinned, not the newest, not among the keep_last newest
	 * nor the keep_best best; when ranking by a metric, never one that
	 * lacks it (v IS NULL): it is kept, not removed for lacking it. */
#define VICTIMS(V)                                                                                 \
	"WITH k AS (SELECT id, pinned, " V " AS v FROM checkpoints WHERE model_id = ?1),"          \
	" last AS (SELECT id FROM k ORDER BY id DESC LIMIT ?3),"                                   \
	" best AS (SELECT id FROM k WHERE v IS NOT NULL"                                           \
	"  ORDER BY CASE WHEN ?5 = 1 THEN -v ELSE v END ASC, id DESC LIMIT ?4)"                    \
	" SELECT id FROM k WHERE pinned = 0"                                                       \
	" AND id <> (SELECT max(id) FROM k)"                                                       \
	" AND id NOT IN (SELECT id FROM last) AND id NOT IN (SELECT id FROM best)"                 \
	" AND id NOT IN (SELECT resumed_from FROM checkpoints WHERE model_id = ?1"                 \
	"  AND resumed_from IS NOT NULL)"                                                          \
	" AND (?4 = 0 OR v IS NOT NULL) ORDER BY id"
	static const char *const by_loss_sql = VICTIMS("loss");
	static const char *const lite = VICTIMS("json_extract(metrics, ?2)");
	static const char *const pg = VICTIMS("(metrics ->> ?2::text)::float8");
#undef VICTIMS
	if ((err = conn_get(&c, x)) < 0 || (err = model_id(&mid, x, c, model)) < 0 ||
	    (err = prep(&st, x, c, by_loss ? by_loss_sql : PICK(x, lite, pg))) < 0)
		goto out;
	x->d->bind_int(st, 1, mid);
	x->d->bind_text(st, 2, by_loss ? NULL : marg);
	x->d->bind_int(st, 3, pol.keep_last);
	x->d->bind_int(st, 4, pol.keep_best);
	x->d->bind_int(st, 5, pol.maximize);
	if ((err = collect_ids(&ids, &n, x, st)) < 0)
		goto out;
	*ids_out = ids;
	*n_out = n;
	ids = NULL;
out:
	free(ids);
	conn_put(x, c);
	return err;
}

static int sql_metric_count(int64_t *n, struct index *idx, const char *model, const char *metric)
{
	struct sqlx *x = SQLX(idx);
	struct sql_conn *c = NULL;
	struct sql_stmt *st;
	char marg[200];
	int err, rc, by_loss = !strcmp(metric, "loss");
	static const char *const by_loss_sql =
	    "SELECT count(*) FROM checkpoints c JOIN models m ON m.id = c.model_id"
	    " WHERE m.name = ?1 AND c.loss IS NOT NULL";
	static const char *const lite =
	    "SELECT count(*) FROM checkpoints c JOIN models m ON m.id = c.model_id"
	    " WHERE m.name = ?1 AND json_type(c.metrics, ?2) IN ('real', 'integer')";
	static const char *const pg =
	    "SELECT count(*) FROM checkpoints c JOIN models m ON m.id = c.model_id"
	    " WHERE m.name = ?1 AND jsonb_typeof(c.metrics -> ?2::text) = 'number'";

	*n = 0;
	metric_arg(marg, sizeof(marg), x, metric);
	if ((err = conn_get(&c, x)) < 0 ||
	    (err = prep(&st, x, c, by_loss ? by_loss_sql : PICK(x, lite, pg))) < 0)
		goto out;
	x->d->bind_text(st, 1, model);
	x->d->bind_text(st, 2, by_loss ? NULL : marg);
	if ((rc = x->d->step(st)) < 0)
		err = rc;
	else
		*n = x->d->column_int(st, 0);
out:
	conn_put(x, c);
	return err;
}

/* ---- claims and reaping ---- */

static int sql_claims_add(struct index *idx, const char *owner, int64_t group, const struct hash *h,
			  size_t n, int64_t expires_at)
{
	struct sqlx *x = SQLX(idx);
	struct sql_conn *c = NULL;
	struct sql_stmt *st;
	int err;

	if ((err = conn_get(&c, x)) < 0)
		return err;
	if ((err = x->d->begin(c, SQL_TXN_CLAIM)) < 0)
		goto out;
	if (x->d->bind_int_array && n) { /* one statement */
		if ((err = prep(&st, x, c,
				"INSERT INTO claims(owner, grp, blob, expires_at)"
				" SELECT ?1::text, ?2, u.b, ?4 FROM (SELECT DISTINCT b"
				" FROM unnest(?3::bytea[]) AS t(b)) u ON CONFLICT(owner, grp, blob)"
				" DO UPDATE SET expires_at = excluded.expires_at")) < 0)
			goto out;
		x->d->bind_text(st, 1, owner);
		x->d->bind_int(st, 2, group);
		x->d->bind_blob_array(st, 3, h, 32, n);
		x->d->bind_int(st, 4, expires_at);
		if ((err = run_done(x, st)) < 0)
			goto out;
		n = 0;
	}
	for (size_t i = 0; i < n; i++) {
		if ((err = prep(&st, x, c,
				"INSERT INTO claims(owner, grp, blob, expires_at)"
				" VALUES(?1, ?2, ?3, ?4) ON CONFLICT(owner, grp, blob)"
				" DO UPDATE SET expires_at = excluded.expires_at")) < 0)
			goto out;
		x->d->bind_text(st, 1, owner);
		x->d->bind_int(st, 2, group);
		bind_hash(x, st, 3, &h[i]);
		x->d->bind_int(st, 4, expires_at);
		if ((err = run_done(x, st)) < 0)
			goto out;
	}
	err = x->d->commit(c);
out:
	conn_put(x, c);
	return err;
}

/* One claim statement on (owner, group) in its own claim transaction. */
static int claims_one(struct sqlx *x, const char *sql, const char *owner, int64_t group,
		      int64_t expires_at)
{
	struct sql_conn *c = NULL;
	struct sql_stmt *st;
	int err;

	if ((err = conn_get(&c, x)) < 0)
		return err;
	if ((err = x->d->begin(c, SQL_TXN_CLAIM)) < 0 || (err = prep(&st, x, c, sql)) < 0)
		goto out;
	x->d->bind_text(st, 1, owner);
	x->d->bind_int(st, 2, group);
	if (expires_at >= 0)
		x->d->bind_int(st, 3, expires_at);
	if ((err = run_done(x, st)) < 0)
		goto out;
	err = x->d->commit(c);
out:
	conn_put(x, c);
	return err;
}

static int sql_claims_renew(struct index *idx, const char *owner, int64_t group, int64_t expires_at)
{
	return claims_one(SQLX(idx),
			  "UPDATE claims SET expires_at = ?3 WHERE owner = ?1 AND grp = ?2", owner,
			  group, expires_at < 0 ? 0 : expires_at);
}

static int sql_claims_release(struct hash **orphans, size_t *n, struct index *idx,
			      const char *owner, int64_t group)
{
	struct sqlx *x = SQLX(idx);
	struct sql_conn *c = NULL;
	struct sql_stmt *st;
	struct index_freed f = {0};
	size_t cap = 0;
	int err;

	if (orphans) {
		*orphans = NULL;
		*n = 0;
	}
	if ((err = conn_get(&c, x)) < 0)
		return err;
	if ((err = x->d->begin(c, SQL_TXN_CLAIM)) < 0)
		goto out;
	if (orphans) {
		if ((err = prep(&st, x, c,
				"SELECT DISTINCT c.blob FROM claims c WHERE c.owner = ?1"
				" AND (?2 < 0 OR c.grp = ?2)"
				" AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.hash = c.blob)")) <
		    0)
			goto out;
		x->d->bind_text(st, 1, owner);
		x->d->bind_int(st, 2, group);
		if ((err = collect_hashes(&f, &cap, x, st)) < 0)
			goto out;
	}
	if ((err = prep(&st, x, c,
			"DELETE FROM claims WHERE owner = ?1 AND (?2 < 0 OR grp = ?2)")) < 0)
		goto out;
	x->d->bind_text(st, 1, owner);
	x->d->bind_int(st, 2, group);
	if ((err = run_done(x, st)) < 0 || (err = x->d->commit(c)) < 0)
		goto out;
	if (orphans) {
		*orphans = f.v;
		*n = f.n;
		f.v = NULL;
	}
out:
	index_freed_clear(&f);
	conn_put(x, c);
	return err;
}

static int sql_claims_owned(struct hash **out, size_t *n, struct index *idx, const char *owner)
{
	struct sqlx *x = SQLX(idx);
	struct sql_conn *c = NULL;
	struct sql_stmt *st;
	struct index_freed f = {0};
	size_t cap = 0;
	int err;

	*out = NULL;
	*n = 0;
	if ((err = conn_get(&c, x)) < 0 ||
	    (err = prep(&st, x, c, "SELECT DISTINCT blob FROM claims WHERE owner = ?1")) < 0)
		goto out;
	x->d->bind_text(st, 1, owner);
	if ((err = collect_hashes(&f, &cap, x, st)) < 0)
		goto out;
	*out = f.v;
	*n = f.n;
	f.v = NULL;
out:
	index_freed_clear(&f);
	conn_put(x, c);
	return err;
}

static int sql_blobs_claimed(uint8_t *yes, struct index *idx, const struct hash *h, size_t n,
			     int64_t now)
{
	static const struct lookup q = {
	    "SELECT 1 FROM claims WHERE blob = ?1 AND expires_at >= ?2 LIMIT 1",
	    "SELECT DISTINCT blob, 1 FROM claims WHERE blob = ANY(?1::bytea[])"
	    " AND expires_at >= ?2",
	    1,
	};
	uint64_t *v = malloc((n ? n : 1) * sizeof(*v));
	int err;

	if (!v)
		return oom();
	err = lookup_many(v, SQLX(idx), &q, h, n, now);
	for (size_t i = 0; i < n; i++)
		yes[i] = err == 0 && v[i] != INDEX_NO_BLOB;
	free(v);
	return err;
}

/* Blobs are reaped in transactions of this many, so the reaper's lock is
 * never held for long (removals from an object store take milliseconds). */
#define REAP_BATCH 64

static int sql_reap(uint64_t *removed, struct index *idx, const struct hash *h, size_t n,
		    int64_t now, int (*unlink_cb)(void *arg, const struct hash *h), void *arg)
{
	struct sqlx *x = SQLX(idx);
	struct sql_conn *c = NULL;
	struct sql_stmt *st;
	int err = 0, first = 0, rc;

	*removed = 0;
	if ((err = conn_get(&c, x)) < 0)
		return err;
	for (size_t base = 0; base == 0 || base < n; base += REAP_BATCH) {
		if ((err = x->d->begin(c, SQL_TXN_REAP)) < 0)
			break;
		if (base == 0) {
			if ((err = prep(&st, x, c, "DELETE FROM claims WHERE expires_at < ?1")) < 0)
				break;
			x->d->bind_int(st, 1, now);
			if ((err = run_done(x, st)) < 0)
				break;
		}
		for (size_t i = base; i < n && i < base + REAP_BATCH; i++) {
			if ((err = prep(&st, x, c,
					"SELECT (SELECT count(*) FROM blobs WHERE hash = ?1)"
					" + (SELECT count(*) FROM claims WHERE blob = ?1"
					" AND expires_at >= ?2)")) < 0)
				break;
			bind_hash(x, st, 1, &h[i]);
			x->d->bind_int(st, 2, now);
			if ((rc = x->d->step(st)) <= 0) {
				err = rc < 0 ? rc : ck_error(CK_EIO, "index: reap check failed");
				break;
			}
			if (x->d->column_int(st, 0) > 0)
				continue;
			int e = unlink_cb(arg, &h[i]);
			if (e == 0)
				(*removed)++;
			else if (e < 0 && e != CK_ENOTFOUND && !first)
				first = e;
		}
		if (err < 0)
			break;
		if ((err = x->d->commit(c)) < 0)
			break;
	}
	conn_put(x, c);
	return err < 0 ? err : first;
}

/* ---- change tracking ---- */

static int sql_generation(uint64_t *out, struct index *idx)
{
	struct sqlx *x = SQLX(idx);
	struct sql_conn *c = NULL;
	struct sql_stmt *st;
	int err, rc;

	if ((err = conn_get(&c, x)) < 0 ||
	    (err = prep(&st, x, c, "SELECT value FROM meta WHERE name = 'generation'")) < 0)
		goto out;
	if ((rc = x->d->step(st)) <= 0)
		err = rc < 0 ? rc : ck_error(CK_ECORRUPT, "index: no generation counter");
	else
		*out = (uint64_t)x->d->column_int(st, 0);
out:
	conn_put(x, c);
	return err;
}

/* ---- checkpoints of several files (SPEC 3.2) ---- */

/* A write transaction on a connection of the caller's (put back with
 * conn_put, which rolls back what is not committed) with staged checkpoint
 * id of model locked; *mid: the model's id. */
static int staged_begin(struct sql_conn **c, int64_t *mid, struct sqlx *x, const char *model,
			int64_t id)
{
	int err;

	if ((err = conn_get(c, x)) < 0)
		return err;
	if ((err = x->d->begin(*c, SQL_TXN_WRITE)) < 0 || (err = model_id(mid, x, *c, model)) < 0)
		return err;
	return staged_lock(x, *c, *mid, id);
}

static int sql_file_write_begin(struct index *idx, const char *model, int64_t id, int64_t token,
				int64_t expires_at)
{
	struct sqlx *x = SQLX(idx);
	struct sql_conn *c = NULL;
	struct sql_stmt *st;
	int64_t mid;
	int err;

	if ((err = staged_begin(&c, &mid, x, model, id)) < 0 ||
	    (err = prep(&st, x, c,
			"INSERT INTO file_writes(checkpoint_id, token, expires_at)"
			" VALUES(?1, ?2, ?3)")) < 0)
		goto out;
	x->d->bind_int(st, 1, id);
	x->d->bind_int(st, 2, token);
	x->d->bind_int(st, 3, expires_at);
	if ((err = run_done(x, st)) < 0 || (err = x->d->commit(c)) < 0)
		goto out;
out:
	conn_put(x, c);
	return err;
}

static int sql_file_write_end(struct index *idx, int64_t id, int64_t token, int64_t expires_at)
{
	struct sqlx *x = SQLX(idx);
	struct sql_conn *c = NULL;
	struct sql_stmt *st;
	int err;

	if ((err = conn_get(&c, x)) < 0)
		return err;
	if ((err = prep(&st, x, c,
			expires_at > 0 ? "UPDATE file_writes SET expires_at = ?3"
					 " WHERE checkpoint_id = ?1 AND token = ?2"
				       : "DELETE FROM file_writes WHERE checkpoint_id = ?1"
					 " AND token = ?2 AND ?3 = 0")) < 0)
		goto out;
	x->d->bind_int(st, 1, id);
	x->d->bind_int(st, 2, token);
	x->d->bind_int(st, 3, expires_at);
	err = run_done(x, st);
out:
	conn_put(x, c);
	return err;
}

/* *n = the files of checkpoint id being written now (marks not expired). */
static int writing_count(int64_t *n, struct sqlx *x, struct sql_conn *c, int64_t id)
{
	struct sql_stmt *st;
	int err, rc;

	*n = 0;
	if ((err = prep(&st, x, c,
			"SELECT count(*) FROM file_writes WHERE checkpoint_id = ?1"
			" AND expires_at > ?2")) < 0)
		return err;
	x->d->bind_int(st, 1, id);
	x->d->bind_int(st, 2, (int64_t)time(NULL));
	if ((rc = x->d->step(st)) < 0)
		return rc;
	if (rc > 0)
		*n = x->d->column_int(st, 0);
	return 0;
}

static int sql_files_writing(int64_t *n, struct index *idx, int64_t id)
{
	struct sqlx *x = SQLX(idx);
	struct sql_conn *c = NULL;
	int err;

	*n = 0;
	if ((err = conn_get(&c, x)) < 0)
		return err;
	err = writing_count(n, x, c, id);
	conn_put(x, c);
	return err;
}

static int file_cmp(const void *a, const void *b)
{
	return strcmp(((const struct index_file *)a)->name, ((const struct index_file *)b)->name);
}

/* The files of checkpoint id (any connection state), sorted by name. */
static int files_read(struct index_file_list **out, struct sqlx *x, struct sql_conn *c, int64_t id)
{
	struct index_file_list *l = calloc(1, sizeof(*l));
	struct sql_stmt *st;
	size_t cap = 0;
	int err = 0, rc;

	*out = NULL;
	if (!l)
		return oom();
	if ((err = prep(&st, x, c,
			"SELECT f.name, f.part_id, p.size, p.sha256, p.format, p.tensor_count"
			" FROM files f JOIN checkpoints p ON p.id = f.part_id"
			" WHERE f.checkpoint_id = ?1")) < 0)
		goto out;
	x->d->bind_int(st, 1, id);
	while ((rc = x->d->step(st)) == 1) {
		struct index_file *f = vec_grow(l->items, &cap, l->nitems, sizeof(*f), 16);
		if (!f) {
			err = oom();
			goto out;
		}
		l->items = f;
		f = &l->items[l->nitems++];
		memset(f, 0, sizeof(*f));
		if (!(f->name = dup_text(x, st, 0)) || !(f->format = dup_text(x, st, 4))) {
			err = oom();
			goto out;
		}
		f->part = x->d->column_int(st, 1);
		f->size = (uint64_t)x->d->column_int(st, 2);
		f->tensor_count = (uint64_t)x->d->column_int(st, 5);
		if ((err = column_hash(&f->sha256, x, st, 3)) < 0)
			goto out;
	}
	if (rc < 0) {
		err = rc;
		goto out;
	}
	/* byte order, whatever the engine's collation */
	if (l->nitems)
		qsort(l->items, l->nitems, sizeof(*l->items), file_cmp);
	*out = l;
	l = NULL;
out:
	index_file_list_free(l);
	return err;
}

static int sql_checkpoint_files(struct index_file_list **out, struct index *idx, int64_t id)
{
	struct sqlx *x = SQLX(idx);
	struct sql_conn *c = NULL;
	int err;

	if ((err = conn_get(&c, x)) < 0)
		return err;
	err = files_read(out, x, c, id);
	conn_put(x, c);
	return err;
}

/* What a checkpoint of several files is, by its files' names. */
static const char *files_format(const struct index_file_list *l)
{
	static const char suffix[] = ".safetensors.index.json";
	const char *kind = "files";

	for (size_t i = 0; i < l->nitems; i++) {
		const char *n = l->items[i].name, *base = strrchr(n, '/');
		size_t len = strlen(n);
		base = base ? base + 1 : n;
		if (!strcmp(base, ".metadata"))
			return "dcp";
		if (len >= sizeof(suffix) - 1 && !strcmp(n + len - (sizeof(suffix) - 1), suffix))
			kind = "safetensors-sharded";
	}
	return kind;
}

static int sql_staged_commit(struct index *idx, const char *model, int64_t id,
			     const char *created_at)
{
	struct sqlx *x = SQLX(idx);
	struct sql_conn *c = NULL;
	struct sql_stmt *st;
	struct index_file_list *l = NULL;
	struct hasher *h = NULL;
	struct hash digest;
	int64_t mid, sums[5] = {0}, writing;
	uint64_t size = 0;
	char now[40];
	int err, rc;

	now_rfc3339(now);
	if ((err = staged_begin(&c, &mid, x, model, id)) < 0 ||
	    (err = writing_count(&writing, x, c, id)) < 0)
		goto out;
	if (writing > 0) {
		err = ck_error(CK_ECONFLICT,
			       "%" PRId64 " file%s of checkpoint %" PRId64
			       " %s still being written: commit once every upload has answered",
			       writing, writing == 1 ? "" : "s", id, writing == 1 ? "is" : "are");
		goto out;
	}
	if ((err = files_read(&l, x, c, id)) < 0)
		goto out;
	if (!l->nitems) {
		err = ck_error(CK_ECONFLICT,
			       "checkpoint %" PRId64 " has no files yet: PUT them to .../%" PRId64
			       "/files/NAME, then commit",
			       id, id);
		goto out;
	}
	if (!(h = hasher_new())) {
		err = oom();
		goto out;
	}
	for (size_t i = 0; i < l->nitems; i++) {
		char hex[65];
		hash_to_hex(hex, &l->items[i].sha256);
		hasher_update(h, hex, 64);
		hasher_update(h, "  ", 2);
		hasher_update(h, l->items[i].name, strlen(l->items[i].name));
		hasher_update(h, "\n", 1);
		size += l->items[i].size;
	}
	hasher_final(h, &digest, NULL);
	if ((err =
		 prep(&st, x, c,
		      "SELECT coalesce(sum(p.tensor_count), 0), coalesce(sum(p.storage_count), 0),"
		      " coalesce(sum(p.new_storages), 0), coalesce(sum(p.tensor_bytes), 0),"
		      " coalesce(sum(p.new_bytes), 0)"
		      " FROM files f JOIN checkpoints p ON p.id = f.part_id"
		      " WHERE f.checkpoint_id = ?1")) < 0)
		goto out;
	x->d->bind_int(st, 1, id);
	if ((rc = x->d->step(st)) <= 0) {
		err = rc < 0 ? rc : ck_error(CK_EIO, "index: no sums of the files");
		goto out;
	}
	for (int i = 0; i < 5; i++)
		sums[i] = x->d->column_int(st, i);
	if ((err = prep(&st, x, c,
			"UPDATE checkpoints SET model_id = ?2, stage_until = NULL, created_at = ?3,"
			" format = ?4, size = ?5, sha256 = ?6, tensor_count = ?7,"
			" storage_count = ?8, new_storages = ?9, tensor_bytes = ?10,"
			" new_bytes = ?11 WHERE id = ?1 AND model_id = ?12")) < 0)
		goto out;
	x->d->bind_int(st, 1, id);
	x->d->bind_int(st, 2, mid);
	x->d->bind_text(st, 3, created_at ? created_at : now);
	x->d->bind_text(st, 4, files_format(l));
	x->d->bind_int(st, 5, (int64_t)size);
	bind_hash(x, st, 6, &digest);
	for (int i = 0; i < 5; i++)
		x->d->bind_int(st, 7 + i, sums[i]);
	x->d->bind_int(st, 12, -mid);
	if ((err = run_done(x, st)) < 0 ||
	    (err = prep(&st, x, c, "DELETE FROM file_writes WHERE checkpoint_id = ?1")) < 0)
		goto out;
	x->d->bind_int(st, 1, id);
	if ((err = run_done(x, st)) < 0 || (err = bump_generation(x, c)) < 0 ||
	    (err = x->d->commit(c)) < 0)
		goto out;
out:
	hasher_free(h);
	index_file_list_free(l);
	conn_put(x, c);
	return err;
}

static int sql_staged_expire(struct index_freed *freed, int64_t *removed, struct index *idx,
			     int64_t now)
{
	struct sqlx *x = SQLX(idx);
	struct sql_conn *c = NULL;
	struct sql_stmt *st;
	int64_t *ids = NULL, *mids = NULL;
	size_t n = 0, cap = freed->n, mcap = 0;
	int err, rc;

	if ((err = conn_get(&c, x)) < 0)
		return err;
	/* cheap when none is due: the partial index on stage_until */
	if ((err = prep(&st, x, c,
			"SELECT id, model_id FROM checkpoints WHERE stage_until IS NOT NULL"
			" AND stage_until <= ?1")) < 0)
		goto out;
	x->d->bind_int(st, 1, now);
	while ((rc = x->d->step(st)) == 1) {
		int64_t *a = vec_grow(ids, &mcap, n, sizeof(*a), 16), *b;
		if (!a) {
			err = oom();
			goto out;
		}
		ids = a;
		if (!(b = realloc(mids, mcap * sizeof(*b)))) {
			err = oom();
			goto out;
		}
		mids = b;
		ids[n] = x->d->column_int(st, 0);
		mids[n++] = x->d->column_int(st, 1);
	}
	if (rc < 0) {
		err = rc;
		goto out;
	}
	if (!n)
		goto out;
	if ((err = x->d->begin(c, SQL_TXN_WRITE)) < 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		/* gone, or committed meanwhile: the row no longer matches */
		if ((err = prep(&st, x, c,
				"SELECT 1 FROM checkpoints WHERE id = ?1 AND stage_until <= ?2")) <
		    0)
			goto out;
		x->d->bind_int(st, 1, ids[i]);
		x->d->bind_int(st, 2, now);
		if ((rc = x->d->step(st)) < 0) {
			err = rc;
			goto out;
		}
		if (rc == 0)
			continue;
		if ((err = delete_one(freed, &cap, x, c, mids[i], ids[i])) < 0 &&
		    err != CK_ENOTFOUND)
			goto out;
		err = 0;
		(*removed)++;
	}
	if ((err = bump_generation(x, c)) < 0 || (err = x->d->commit(c)) < 0)
		goto out;
out:
	free(ids);
	free(mids);
	conn_put(x, c);
	return err;
}

/* ---- open, close ---- */

static void sql_close(struct index *idx)
{
	struct sqlx *x = SQLX(idx);

	while (x->free_conns) {
		struct pooled *p = x->free_conns;
		x->free_conns = p->next;
		x->d->disconnect(p->c);
		free(p);
	}
	while (x->spare) {
		struct pooled *p = x->spare;
		x->spare = p->next;
		free(p);
	}
	pthread_mutex_destroy(&x->lock);
	free(x->target);
	free(x);
}

int index_sql_open(struct index **out, const struct sql_driver *drv, const char *target);

int index_sql_open(struct index **out, const struct sql_driver *drv, const char *target)
{
	struct sqlx *x = calloc(1, sizeof(*x));
	struct sql_conn *c = NULL;
	int err;

	if (!x || !(x->target = strdup(target))) {
		free(x);
		return oom();
	}
	x->d = drv;
	pthread_mutex_init(&x->lock, NULL);
	x->base = (struct index){
	    .name = drv->name,
	    .checkpoint_insert = sql_checkpoint_insert,
	    .checkpoint_resolve = sql_checkpoint_resolve,
	    .checkpoint_get = sql_checkpoint_get,
	    .checkpoint_list = sql_checkpoint_list,
	    .checkpoint_layout = sql_checkpoint_layout,
	    .checkpoint_tensors = sql_checkpoint_tensors,
	    .checkpoint_delete = sql_checkpoint_delete,
	    .model_delete = sql_model_delete,
	    .checkpoint_patch = sql_checkpoint_patch,
	    .models = sql_models,
	    .stats = sql_stats,
	    .blob_get = sql_blob_get,
	    .blob_page = sql_blob_page,
	    .retention_get = sql_retention_get,
	    .retention_set = sql_retention_set,
	    .retention_victims = sql_retention_victims,
	    .metric_count = sql_metric_count,
	    .claims_add = sql_claims_add,
	    .claims_renew = sql_claims_renew,
	    .claims_release = sql_claims_release,
	    .claims_owned = sql_claims_owned,
	    .blob_sizes = sql_blob_sizes,
	    .blobs_claimed = sql_blobs_claimed,
	    .reap = sql_reap,
	    .generation = sql_generation,
	    .file_write_begin = sql_file_write_begin,
	    .file_write_end = sql_file_write_end,
	    .staged_commit = sql_staged_commit,
	    .files_writing = sql_files_writing,
	    .checkpoint_files = sql_checkpoint_files,
	    .staged_expire = sql_staged_expire,
	    .close = sql_close,
	};
	if ((err = drv->connect(&c, target)) < 0)
		goto fail;
	if ((err = schema_migrate(drv, c, drv->dialect == SQL_SQLITE ? target : "PostgreSQL")) < 0)
		goto fail;
	conn_put(x, c);
	*out = &x->base;
	return 0;
fail:
	if (c)
		drv->disconnect(c);
	sql_close(&x->base);
	return err;
}
