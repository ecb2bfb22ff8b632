/*
 * index.c: the SQLite index (see index.h). Every SQL statement of ckptd is in
 * this file.
 *
 * Schema (PRAGMA user_version = 1):
 *   models(id, name UNIQUE, created_at, retention JSON)
 *   runs(id, model_id, name; UNIQUE(model_id, name))
 *   blobs(hash PK, raw_size, stored_size, codec, crc32, refcount)
 *   checkpoints(id AUTOINCREMENT, model_id, run_id, epoch, step, loss,
 *               metrics JSON, tags JSON, pinned, created_at, format, size,
 *               sha256, tensor_count, dedup counters, skeleton hash + size)
 *   storages(checkpoint_id, idx, blob, dtype, file_off, nbytes)
 *   tensors(checkpoint_id, seq, path, dtype, shape, strides, offset,
 *           storage_idx, nbytes)
 * A blob's refcount is the number of storage rows plus checkpoint skeletons
 * that name it; rows reaching zero are deleted in the same transaction and
 * their hashes handed back so storage/gc.c can unlink the files. Ids are
 * never reused (AUTOINCREMENT), so a URL with an id never names another
 * checkpoint later.
 */
#include "index.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <sqlite3.h>

#include "../common/err.h"

#define SCHEMA_VERSION 1
#define STMT_CACHE     48

struct conn {
	sqlite3 *db;
	struct {
		const char *sql;
		sqlite3_stmt *st;
	} cache[STMT_CACHE];
	size_t ncache;
	struct conn *next;
};

struct index {
	char *path;
	pthread_mutex_t lock;
	struct conn *free_conns;
};

static const char *schema_sql =
    "CREATE TABLE IF NOT EXISTS models("
    " id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
    " created_at TEXT NOT NULL, retention TEXT);"
    "CREATE TABLE IF NOT EXISTS runs("
    " id INTEGER PRIMARY KEY, model_id INTEGER NOT NULL, name TEXT NOT NULL,"
    " UNIQUE(model_id, name));"
    "CREATE TABLE IF NOT EXISTS blobs("
    " hash BLOB PRIMARY KEY, raw_size INTEGER NOT NULL,"
    " stored_size INTEGER NOT NULL, codec INTEGER NOT NULL,"
    " crc32 INTEGER NOT NULL, refcount INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS checkpoints("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, model_id INTEGER NOT NULL,"
    " run_id INTEGER NOT NULL, epoch INTEGER, step INTEGER, loss REAL,"
    " metrics TEXT NOT NULL DEFAULT '{}', tags TEXT NOT NULL DEFAULT '[]',"
    " pinned INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL,"
    " format TEXT NOT NULL, size INTEGER NOT NULL, sha256 BLOB NOT NULL,"
    " tensor_count INTEGER NOT NULL, storage_count INTEGER NOT NULL,"
    " new_storages INTEGER NOT NULL, tensor_bytes INTEGER NOT NULL,"
    " new_bytes INTEGER NOT NULL, skeleton BLOB NOT NULL,"
    " skeleton_size INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS checkpoints_by_model ON checkpoints(model_id, id);"
    "CREATE INDEX IF NOT EXISTS checkpoints_by_loss ON checkpoints(model_id, loss);"
    "CREATE TABLE IF NOT EXISTS storages("
    " checkpoint_id INTEGER NOT NULL, idx INTEGER NOT NULL, blob BLOB NOT NULL,"
    " dtype TEXT NOT NULL, file_off INTEGER NOT NULL, nbytes INTEGER NOT NULL,"
    " PRIMARY KEY(checkpoint_id, idx)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS tensors("
    " checkpoint_id INTEGER NOT NULL, seq INTEGER NOT NULL, path TEXT NOT NULL,"
    " dtype TEXT NOT NULL, shape TEXT NOT NULL, strides TEXT NOT NULL,"
    " offset INTEGER NOT NULL, storage_idx INTEGER NOT NULL,"
    " nbytes INTEGER NOT NULL, PRIMARY KEY(checkpoint_id, seq)) WITHOUT ROWID;";

static int db_error(sqlite3 *db, const char *what)
{
	int rc = sqlite3_errcode(db);

	if (rc == SQLITE_FULL)
		return ck_error(CK_ENOSPC, "index: %s: disk full", what);
	if (rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB)
		return ck_error(CK_ECORRUPT, "index: %s: %s", what, sqlite3_errmsg(db));
	return ck_error(CK_EIO, "index: %s: %s", what, sqlite3_errmsg(db));
}

static int exec(sqlite3 *db, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		int err = db_error(db, sql);
		sqlite3_free(msg);
		return err;
	}
	return 0;
}

static void conn_free(struct conn *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->ncache; i++)
		sqlite3_finalize(c->cache[i].st);
	sqlite3_close(c->db);
	free(c);
}

static int conn_new(struct conn **out, const char *path)
{
	struct conn *c = calloc(1, sizeof(*c));
	int err;

	if (!c)
		return ck_error(CK_ENOMEM, "index: out of memory");
	if (sqlite3_open_v2(path, &c->db,
			    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK) {
		err = ck_error(CK_EIO, "index: cannot open %s: %s", path,
			       c->db ? sqlite3_errmsg(c->db) : "out of memory");
		conn_free(c);
		return err;
	}
	sqlite3_busy_timeout(c->db, 30000);
	/* synchronous=FULL: a commit is on disk when it returns (SPEC 6). */
	if ((err = exec(c->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
			       "PRAGMA foreign_keys=OFF; PRAGMA temp_store=MEMORY;")) < 0) {
		conn_free(c);
		return err;
	}
	*out = c;
	return 0;
}

static int conn_get(struct conn **out, struct index *idx)
{
	pthread_mutex_lock(&idx->lock);
	struct conn *c = idx->free_conns;
	if (c)
		idx->free_conns = c->next;
	pthread_mutex_unlock(&idx->lock);
	if (c) {
		*out = c;
		return 0;
	}
	return conn_new(out, idx->path);
}

static void conn_put(struct index *idx, struct conn *c)
{
	if (!c)
		return;
	/* A statement left mid-read would pin an old snapshot, and a later
	 * BEGIN IMMEDIATE on this connection would then fail at once with
	 * SQLITE_BUSY instead of waiting for the writer. */
	for (sqlite3_stmt *st = sqlite3_next_stmt(c->db, NULL); st;
	     st = sqlite3_next_stmt(c->db, st))
		if (sqlite3_stmt_busy(st))
			sqlite3_reset(st);
	if (!sqlite3_get_autocommit(c->db))
		sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
	pthread_mutex_lock(&idx->lock);
	c->next = idx->free_conns;
	idx->free_conns = c;
	pthread_mutex_unlock(&idx->lock);
}

/* A cached prepared statement, reset and unbound; NULL with ck_error set. The
 * cache is keyed by the SQL string's address: callers pass literals. */
static sqlite3_stmt *stmt(struct conn *c, const char *sql)
{
	sqlite3_stmt *st = NULL;

	for (size_t i = 0; i < c->ncache; i++)
		if (c->cache[i].sql == sql) {
			st = c->cache[i].st;
			sqlite3_reset(st);
			sqlite3_clear_bindings(st);
			return st;
		}
	if (sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
		db_error(c->db, "prepare");
		return NULL;
	}
	if (c->ncache < STMT_CACHE) {
		c->cache[c->ncache].sql = sql;
		c->cache[c->ncache].st = st;
		c->ncache++;
	} else {
		/* should not happen: the cache is sized for every statement */
		sqlite3_finalize(c->cache[0].st);
		c->cache[0].sql = sql;
		c->cache[0].st = st;
	}
	return st;
}

int index_open(struct index **out, const char *path)
{
	struct index *idx = calloc(1, sizeof(*idx));
	struct conn *c = NULL;
	int err, version = 0;
	sqlite3_stmt *st;

	if (!idx || !(idx->path = strdup(path))) {
		free(idx);
		return ck_error(CK_ENOMEM, "index: out of memory");
	}
	pthread_mutex_init(&idx->lock, NULL);
	if ((err = conn_new(&c, path)) < 0)
		goto fail;
	if (sqlite3_prepare_v2(c->db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW)
			version = sqlite3_column_int(st, 0);
		sqlite3_finalize(st);
	}
	if (version > SCHEMA_VERSION) {
		err = ck_error(CK_ECORRUPT,
			       "index: %s has schema version %d; this ckptd knows up to %d: "
			       "use a newer ckptd",
			       path, version, SCHEMA_VERSION);
		goto fail;
	}
	if (version < SCHEMA_VERSION) {
		if ((err = exec(c->db, "BEGIN IMMEDIATE")) < 0)
			goto fail;
		if ((err = exec(c->db, schema_sql)) < 0 ||
		    (err = exec(c->db, "PRAGMA user_version = 1")) < 0 ||
		    (err = exec(c->db, "COMMIT")) < 0)
			goto fail;
	}
	conn_put(idx, c);
	*out = idx;
	return 0;
fail:
	conn_free(c);
	index_close(idx);
	return err;
}

void index_close(struct index *idx)
{
	if (!idx)
		return;
	while (idx->free_conns) {
		struct conn *c = idx->free_conns;
		idx->free_conns = c->next;
		conn_free(c);
	}
	pthread_mutex_destroy(&idx->lock);
	free(idx->path);
	free(idx);
}

/* ---- small helpers ---- */

static void now_rfc3339(char out[64])
{
	struct timeval tv;
	struct tm tm;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	snprintf(out, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));
}

static int step_done(struct conn *c, sqlite3_stmt *st, const char *what)
{
	int rc = sqlite3_step(st);

	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		return db_error(c->db, what);
	return 0;
}

static json_t *dims_json(int ndim, const int64_t *v)
{
	json_t *a = json_array();

	for (int i = 0; i < ndim; i++)
		json_array_append_new(a, json_integer(v[i]));
	return a;
}

static int dims_text(char **out, int ndim, const int64_t *v)
{
	json_t *a = dims_json(ndim, v);

	*out = json_dumps(a, JSON_COMPACT);
	json_decref(a);
	return *out ? 0 : ck_error(CK_ENOMEM, "index: out of memory");
}

/* Parses "[1,2,3]" as stored by dims_text. */
static int dims_parse(int *ndim, int64_t *v, const char *text)
{
	const char *p = text;
	int n = 0;

	if (*p++ != '[')
		return ck_error(CK_ECORRUPT, "index: bad dims %s", text);
	while (*p && *p != ']') {
		char *end;
		if (n >= TENSOR_MAX_NDIM)
			return ck_error(CK_ECORRUPT, "index: too many dims %s", text);
		v[n++] = strtoll(p, &end, 10);
		if (end == p)
			return ck_error(CK_ECORRUPT, "index: bad dims %s", text);
		p = end;
		if (*p == ',')
			p++;
	}
	*ndim = n;
	return 0;
}

static void bind_hash(sqlite3_stmt *st, int i, const struct hash *h)
{
	sqlite3_bind_blob(st, i, h->b, 32, SQLITE_TRANSIENT);
}

static void column_hash(struct hash *h, sqlite3_stmt *st, int i)
{
	const void *p = sqlite3_column_blob(st, i);

	if (p && sqlite3_column_bytes(st, i) == 32)
		memcpy(h->b, p, 32);
	else
		memset(h->b, 0, 32);
}

static json_t *hash_json(const struct hash *h)
{
	char hex[65];

	hash_to_hex(hex, h);
	return json_string(hex);
}

static int model_id(int64_t *id, struct conn *c, const char *model)
{
	sqlite3_stmt *st = stmt(c, "SELECT id FROM models WHERE name = ?");

	if (!st)
		return CK_EIO;
	sqlite3_bind_text(st, 1, model, -1, SQLITE_TRANSIENT);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*id = sqlite3_column_int64(st, 0);
		return 0;
	}
	if (rc != SQLITE_DONE)
		return db_error(c->db, "model lookup");
	return ck_error(CK_ENOTFOUND, "model '%s' not found", model);
}

/* ---- insert ---- */

static int blob_ref(int *was_new, struct conn *c, const struct hash *h, uint64_t raw,
		    uint64_t stored, int codec, uint32_t crc)
{
	sqlite3_stmt *st = stmt(c, "UPDATE blobs SET refcount = refcount + 1 WHERE hash = ?");

	if (!st)
		return CK_EIO;
	bind_hash(st, 1, h);
	if (step_done(c, st, "blob ref") < 0)
		return CK_EIO;
	if (sqlite3_changes(c->db) > 0) {
		*was_new = 0;
		return 0;
	}
	st = stmt(c, "INSERT INTO blobs(hash, raw_size, stored_size, codec, crc32, refcount)"
		     " VALUES(?, ?, ?, ?, ?, 1)");
	if (!st)
		return CK_EIO;
	bind_hash(st, 1, h);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)raw);
	sqlite3_bind_int64(st, 3, (sqlite3_int64)stored);
	sqlite3_bind_int(st, 4, codec);
	sqlite3_bind_int64(st, 5, crc);
	*was_new = 1;
	return step_done(c, st, "blob insert");
}

static int ensure_model_run(int64_t *mid, int64_t *rid, struct conn *c, const char *model,
			    const char *run)
{
	char now[64];
	sqlite3_stmt *st;
	int err = model_id(mid, c, model);

	if (err == CK_ENOTFOUND) {
		now_rfc3339(now);
		if (!(st = stmt(c, "INSERT INTO models(name, created_at) VALUES(?, ?)")))
			return CK_EIO;
		sqlite3_bind_text(st, 1, model, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 2, now, -1, SQLITE_TRANSIENT);
		if ((err = step_done(c, st, "model insert")) < 0)
			return err;
		*mid = sqlite3_last_insert_rowid(c->db);
	} else if (err < 0) {
		return err;
	}
	if (!(st = stmt(c, "INSERT INTO runs(model_id, name) VALUES(?, ?)"
			   " ON CONFLICT(model_id, name) DO NOTHING")))
		return CK_EIO;
	sqlite3_bind_int64(st, 1, *mid);
	sqlite3_bind_text(st, 2, run, -1, SQLITE_TRANSIENT);
	if ((err = step_done(c, st, "run insert")) < 0)
		return err;
	if (!(st = stmt(c, "SELECT id FROM runs WHERE model_id = ? AND name = ?")))
		return CK_EIO;
	sqlite3_bind_int64(st, 1, *mid);
	sqlite3_bind_text(st, 2, run, -1, SQLITE_TRANSIENT);
	if (sqlite3_step(st) != SQLITE_ROW)
		return db_error(c->db, "run lookup");
	*rid = sqlite3_column_int64(st, 0);
	return 0;
}

int index_checkpoint_insert(int64_t *id, json_t **dedup, struct index *idx,
			    const struct index_new_checkpoint *k)
{
	struct conn *c = NULL;
	sqlite3_stmt *st;
	int64_t mid = 0, rid = 0, cid;
	uint64_t bytes = 0, new_bytes = 0, new_storages = 0;
	char now[64], *metrics = NULL, *tags = NULL, *shape = NULL, *strides = NULL;
	int err, was_new;

	if ((err = conn_get(&c, idx)) < 0)
		return err;
	if ((err = exec(c->db, "BEGIN IMMEDIATE")) < 0)
		goto out;
	if ((err = ensure_model_run(&mid, &rid, c, k->model, k->run)) < 0)
		goto out;
	for (size_t i = 0; i < k->nstorages; i++) {
		const struct index_storage *s = &k->storages[i];
		if ((err = blob_ref(&was_new, c, &s->blob, s->raw_size, s->stored_size, s->codec,
				    s->crc32)) < 0)
			goto out;
		bytes += s->raw_size;
		if (was_new) {
			new_bytes += s->raw_size;
			new_storages++;
		}
	}
	if ((err = blob_ref(&was_new, c, &k->skeleton, k->skeleton_size, k->skeleton_stored, 0,
			    k->skeleton_crc)) < 0)
		goto out;

	metrics = json_dumps(k->metrics ? k->metrics : json_object(), JSON_COMPACT);
	tags = json_dumps(k->tags ? k->tags : json_array(), JSON_COMPACT);
	if (!metrics || !tags) {
		err = ck_error(CK_ENOMEM, "index: out of memory");
		goto out;
	}
	now_rfc3339(now);
	if (!(st = stmt(c, "INSERT INTO checkpoints(model_id, run_id, epoch, step, loss,"
			   " metrics, tags, pinned, created_at, format, size, sha256,"
			   " tensor_count, storage_count, new_storages, tensor_bytes, new_bytes,"
			   " skeleton, skeleton_size)"
			   " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"))) {
		err = CK_EIO;
		goto out;
	}
	sqlite3_bind_int64(st, 1, mid);
	sqlite3_bind_int64(st, 2, rid);
	if (k->has_epoch)
		sqlite3_bind_int64(st, 3, k->epoch);
	if (k->has_step)
		sqlite3_bind_int64(st, 4, k->step);
	if (k->has_loss)
		sqlite3_bind_double(st, 5, k->loss);
	sqlite3_bind_text(st, 6, metrics, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 7, tags, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(st, 8, k->pinned ? 1 : 0);
	sqlite3_bind_text(st, 9, now, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 10, k->format, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 11, (sqlite3_int64)k->size);
	bind_hash(st, 12, &k->sha256);
	sqlite3_bind_int64(st, 13, (sqlite3_int64)k->ntensors);
	sqlite3_bind_int64(st, 14, (sqlite3_int64)k->nstorages);
	sqlite3_bind_int64(st, 15, (sqlite3_int64)new_storages);
	sqlite3_bind_int64(st, 16, (sqlite3_int64)bytes);
	sqlite3_bind_int64(st, 17, (sqlite3_int64)new_bytes);
	bind_hash(st, 18, &k->skeleton);
	sqlite3_bind_int64(st, 19, (sqlite3_int64)k->skeleton_size);
	if ((err = step_done(c, st, "checkpoint insert")) < 0)
		goto out;
	cid = sqlite3_last_insert_rowid(c->db);

	for (size_t i = 0; i < k->nstorages; i++) {
		const struct index_storage *s = &k->storages[i];
		if (!(st = stmt(c, "INSERT INTO storages(checkpoint_id, idx, blob, dtype,"
				   " file_off, nbytes) VALUES(?,?,?,?,?,?)"))) {
			err = CK_EIO;
			goto out;
		}
		sqlite3_bind_int64(st, 1, cid);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)i);
		bind_hash(st, 3, &s->blob);
		sqlite3_bind_text(st, 4, dtype_name(s->dtype), -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 5, (sqlite3_int64)s->file_off);
		sqlite3_bind_int64(st, 6, (sqlite3_int64)s->raw_size);
		if ((err = step_done(c, st, "storage insert")) < 0)
			goto out;
	}
	for (size_t i = 0; i < k->ntensors; i++) {
		const struct index_tensor *t = &k->tensors[i];
		uint64_t numel = 0;
		if (tensor_numel(&numel, t->ndim, t->shape) < 0)
			numel = 0;
		if ((err = dims_text(&shape, t->ndim, t->shape)) < 0 ||
		    (err = dims_text(&strides, t->ndim, t->strides)) < 0)
			goto out;
		if (!(st = stmt(c, "INSERT INTO tensors(checkpoint_id, seq, path, dtype, shape,"
				   " strides, offset, storage_idx, nbytes)"
				   " VALUES(?,?,?,?,?,?,?,?,?)"))) {
			err = CK_EIO;
			goto out;
		}
		sqlite3_bind_int64(st, 1, cid);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)i);
		sqlite3_bind_text(st, 3, t->path, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 4, dtype_name(t->dtype), -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 5, shape, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 6, strides, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 7, (sqlite3_int64)t->offset);
		sqlite3_bind_int64(st, 8, (sqlite3_int64)t->storage);
		sqlite3_bind_int64(st, 9, (sqlite3_int64)(numel * dtype_size(t->dtype)));
		free(shape);
		free(strides);
		shape = strides = NULL;
		if ((err = step_done(c, st, "tensor insert")) < 0)
			goto out;
	}
	if ((err = exec(c->db, "COMMIT")) < 0)
		goto out;
	*id = cid;
	*dedup = json_pack("{sI sI sI sI}", "tensors", (json_int_t)k->nstorages, "new_tensors",
			   (json_int_t)new_storages, "bytes", (json_int_t)bytes, "new_bytes",
			   (json_int_t)new_bytes);
out:
	free(shape);
	free(strides);
	free(metrics);
	free(tags);
	conn_put(idx, c);
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

static int run_id(int64_t *rid, struct conn *c, int64_t mid, const char *run)
{
	sqlite3_stmt *st = stmt(c, "SELECT id FROM runs WHERE model_id = ? AND name = ?");

	if (!st)
		return CK_EIO;
	sqlite3_bind_int64(st, 1, mid);
	sqlite3_bind_text(st, 2, run, -1, SQLITE_TRANSIENT);
	if (sqlite3_step(st) == SQLITE_ROW) {
		*rid = sqlite3_column_int64(st, 0);
		return 0;
	}
	return ck_error(CK_ENOTFOUND, "run '%s' not found", run);
}

/* '$."name"' for json_extract; metric names are validated by the caller to
 * [A-Za-z0-9._-], so no quoting is needed inside. */
static void metric_path(char *out, size_t n, const char *metric)
{
	snprintf(out, n, "$.\"%s\"", metric);
}

int index_checkpoint_resolve(int64_t *id, struct index *idx, const char *model, const char *ref,
			     const char *run, const char *metric, int maximize)
{
	struct conn *c = NULL;
	sqlite3_stmt *st = NULL;
	int64_t mid, rid = -1;
	char mpath[200];
	int err, rc;

	if ((err = conn_get(&c, idx)) < 0)
		return err;
	if ((err = model_id(&mid, c, model)) < 0)
		goto out;
	if (run && (err = run_id(&rid, c, mid, run)) < 0)
		goto out;
	if (is_decimal(ref)) {
		st = stmt(c, "SELECT id FROM checkpoints WHERE model_id = ? AND id = ?");
		if (!st) {
			err = CK_EIO;
			goto out;
		}
		sqlite3_bind_int64(st, 1, mid);
		sqlite3_bind_int64(st, 2, strtoll(ref, NULL, 10));
	} else if (!strcmp(ref, "latest")) {
		st = stmt(c, "SELECT id FROM checkpoints WHERE model_id = ?1"
			     " AND (?2 < 0 OR run_id = ?2) ORDER BY id DESC LIMIT 1");
		if (!st) {
			err = CK_EIO;
			goto out;
		}
		sqlite3_bind_int64(st, 1, mid);
		sqlite3_bind_int64(st, 2, rid);
	} else if (!strcmp(ref, "best") && !metric) {
		st = stmt(c, maximize ? "SELECT id FROM checkpoints WHERE model_id = ?1"
					" AND (?2 < 0 OR run_id = ?2) AND loss IS NOT NULL"
					" ORDER BY loss DESC, id DESC LIMIT 1"
				      : "SELECT id FROM checkpoints WHERE model_id = ?1"
					" AND (?2 < 0 OR run_id = ?2) AND loss IS NOT NULL"
					" ORDER BY loss ASC, id DESC LIMIT 1");
		if (!st) {
			err = CK_EIO;
			goto out;
		}
		sqlite3_bind_int64(st, 1, mid);
		sqlite3_bind_int64(st, 2, rid);
	} else if (!strcmp(ref, "best")) {
		metric_path(mpath, sizeof(mpath), metric);
		st = stmt(c, maximize ? "SELECT id FROM checkpoints WHERE model_id = ?1"
					" AND (?2 < 0 OR run_id = ?2)"
					" AND json_type(metrics, ?3) IN ('real', 'integer')"
					" ORDER BY json_extract(metrics, ?3) DESC, id DESC LIMIT 1"
				      : "SELECT id FROM checkpoints WHERE model_id = ?1"
					" AND (?2 < 0 OR run_id = ?2)"
					" AND json_type(metrics, ?3) IN ('real', 'integer')"
					" ORDER BY json_extract(metrics, ?3) ASC, id DESC LIMIT 1");
		if (!st) {
			err = CK_EIO;
			goto out;
		}
		sqlite3_bind_int64(st, 1, mid);
		sqlite3_bind_int64(st, 2, rid);
		sqlite3_bind_text(st, 3, mpath, -1, SQLITE_TRANSIENT);
	} else {
		err = ck_error(CK_EINVALID,
			       "'%s' is not a checkpoint reference: use an id, 'latest' or 'best'",
			       ref);
		goto out;
	}
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*id = sqlite3_column_int64(st, 0);
	} else if (rc == SQLITE_DONE) {
		if (!strcmp(ref, "best"))
			err =
			    ck_error(CK_ENOTFOUND,
				     "model '%s' has no checkpoint with %s%s%s to pick the best by",
				     model, metric ? "metric '" : "a loss", metric ? metric : "",
				     metric ? "'" : "");
		else if (!strcmp(ref, "latest"))
			err = ck_error(CK_ENOTFOUND, "model '%s' has no checkpoints%s%s", model,
				       run ? " in run " : "", run ? run : "");
		else
			err = ck_error(CK_ENOTFOUND, "checkpoint %s of model '%s' not found", ref,
				       model);
	} else {
		err = db_error(c->db, "resolve");
	}
out:
	conn_put(idx, c);
	return err;
}

/* ---- reads ---- */

#define CKPT_COLUMNS                                                                               \
	"c.id, m.name, r.name, c.epoch, c.step, c.loss, c.metrics, c.tags, c.pinned,"              \
	" c.created_at, c.format, c.size, c.sha256, c.tensor_count, c.storage_count,"              \
	" c.new_storages, c.tensor_bytes, c.new_bytes"
#define CKPT_FROM                                                                                  \
	" FROM checkpoints c JOIN models m ON m.id = c.model_id JOIN runs r ON r.id = c.run_id"

static json_t *nullable_int(sqlite3_stmt *st, int i)
{
	return sqlite3_column_type(st, i) == SQLITE_NULL
		   ? json_null()
		   : json_integer(sqlite3_column_int64(st, i));
}

static json_t *parsed_or(const char *text, json_t *fallback)
{
	json_t *v = text ? json_loads(text, 0, NULL) : NULL;

	if (!v)
		return fallback;
	json_decref(fallback);
	return v;
}

static json_t *ckpt_row_json(sqlite3_stmt *st)
{
	struct hash h;
	json_t *o = json_object();

	column_hash(&h, st, 12);
	json_object_set_new(o, "id", json_integer(sqlite3_column_int64(st, 0)));
	json_object_set_new(o, "model", json_string((const char *)sqlite3_column_text(st, 1)));
	json_object_set_new(o, "run", json_string((const char *)sqlite3_column_text(st, 2)));
	json_object_set_new(o, "epoch", nullable_int(st, 3));
	json_object_set_new(o, "step", nullable_int(st, 4));
	json_object_set_new(o, "loss",
			    sqlite3_column_type(st, 5) == SQLITE_NULL
				? json_null()
				: json_real(sqlite3_column_double(st, 5)));
	json_object_set_new(o, "metrics",
			    parsed_or((const char *)sqlite3_column_text(st, 6), json_object()));
	json_object_set_new(o, "tags",
			    parsed_or((const char *)sqlite3_column_text(st, 7), json_array()));
	json_object_set_new(o, "pinned", json_boolean(sqlite3_column_int(st, 8)));
	json_object_set_new(o, "created_at", json_string((const char *)sqlite3_column_text(st, 9)));
	json_object_set_new(o, "format", json_string((const char *)sqlite3_column_text(st, 10)));
	json_object_set_new(o, "size", json_integer(sqlite3_column_int64(st, 11)));
	json_object_set_new(o, "sha256", hash_json(&h));
	json_object_set_new(o, "tensor_count", json_integer(sqlite3_column_int64(st, 13)));
	json_object_set_new(o, "dedup",
			    json_pack("{sI sI sI sI}", "tensors",
				      (json_int_t)sqlite3_column_int64(st, 14), "new_tensors",
				      (json_int_t)sqlite3_column_int64(st, 15), "bytes",
				      (json_int_t)sqlite3_column_int64(st, 16), "new_bytes",
				      (json_int_t)sqlite3_column_int64(st, 17)));
	return o;
}

static int tensors_json(json_t **out, struct conn *c, int64_t id)
{
	sqlite3_stmt *st =
	    stmt(c, "SELECT t.path, t.dtype, t.shape, t.strides, t.offset,"
		    " t.nbytes, s.blob, b.refcount"
		    " FROM tensors t JOIN storages s ON s.checkpoint_id = t.checkpoint_id"
		    " AND s.idx = t.storage_idx"
		    " LEFT JOIN blobs b ON b.hash = s.blob"
		    " WHERE t.checkpoint_id = ? ORDER BY t.seq");
	json_t *a;
	int rc;

	if (!st)
		return CK_EIO;
	a = json_array();
	sqlite3_bind_int64(st, 1, id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct hash h;
		column_hash(&h, st, 6);
		json_t *t = json_object();
		json_object_set_new(t, "path",
				    json_string((const char *)sqlite3_column_text(st, 0)));
		json_object_set_new(t, "dtype",
				    json_string((const char *)sqlite3_column_text(st, 1)));
		/* dims_parse, not a JSON parser: this runs for every tensor of
		 * every checkpoint read */
		int64_t dims[TENSOR_MAX_NDIM];
		int nd = 0;
		if (dims_parse(&nd, dims, (const char *)sqlite3_column_text(st, 2)) < 0)
			nd = 0;
		json_object_set_new(t, "shape", dims_json(nd, dims));
		if (dims_parse(&nd, dims, (const char *)sqlite3_column_text(st, 3)) < 0)
			nd = 0;
		json_object_set_new(t, "strides", dims_json(nd, dims));
		json_object_set_new(t, "offset", json_integer(sqlite3_column_int64(st, 4)));
		json_object_set_new(t, "nbytes", json_integer(sqlite3_column_int64(st, 5)));
		json_object_set_new(t, "blob", hash_json(&h));
		json_object_set_new(t, "refs", json_integer(sqlite3_column_int64(st, 7)));
		json_array_append_new(a, t);
	}
	if (rc != SQLITE_DONE) {
		json_decref(a);
		return db_error(c->db, "tensor list");
	}
	*out = a;
	return 0;
}

int index_checkpoint_json(json_t **out, struct index *idx, int64_t id, int with_tensors)
{
	struct conn *c = NULL;
	sqlite3_stmt *st;
	json_t *o = NULL, *t = NULL;
	int err, rc;

	if ((err = conn_get(&c, idx)) < 0)
		return err;
	if (!(st = stmt(c, "SELECT " CKPT_COLUMNS CKPT_FROM " WHERE c.id = ?"))) {
		err = CK_EIO;
		goto out;
	}
	sqlite3_bind_int64(st, 1, id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		err = ck_error(CK_ENOTFOUND, "checkpoint %" PRId64 " not found", id);
		goto out;
	}
	if (rc != SQLITE_ROW) {
		err = db_error(c->db, "checkpoint read");
		goto out;
	}
	o = ckpt_row_json(st);
	if (with_tensors) {
		if ((err = tensors_json(&t, c, id)) < 0)
			goto out;
		json_object_set_new(o, "tensors", t);
	}
	*out = o;
	o = NULL;
out:
	json_decref(o);
	conn_put(idx, c);
	return err;
}

int index_checkpoint_list(json_t **out, struct index *idx, const struct index_list_query *q)
{
	struct conn *c = NULL;
	sqlite3_stmt *st = NULL;
	int64_t mid, rid = -1, total = 0;
	const char *order = q->order ? q->order : "created";
	char mpath[200] = "";
	int err, rc, desc = 0;
	size_t which;
	json_t *items = NULL;

	if (order[0] == '-') {
		desc = 1;
		order++;
	}
	/* The ORDER BY clauses are fixed strings chosen here (sql_by below),
	 * never built from the request; a metric name is a bound parameter. */
	if (!strcmp(order, "created") || !strcmp(order, "id"))
		which = 0;
	else if (!strcmp(order, "epoch"))
		which = 2;
	else if (!strcmp(order, "step"))
		which = 4;
	else if (!strcmp(order, "loss"))
		which = 6;
	else if (!strncmp(order, "metric.", 7) && order[7]) {
		metric_path(mpath, sizeof(mpath), order + 7);
		which = 8;
	} else
		return ck_error(CK_EINVALID,
				"order '%s' is not one of created, epoch, step, loss, metric.NAME "
				"(prefix '-' for descending)",
				q->order);
	which += (size_t)desc;

	if ((err = conn_get(&c, idx)) < 0)
		return err;
	if ((err = model_id(&mid, c, q->model)) < 0)
		goto out;
	if (q->run && (err = run_id(&rid, c, mid, q->run)) < 0) {
		/* an unknown run is an empty list, not an error */
		ck_error_clear();
		err = 0;
		items = json_array();
		goto done;
	}

#define WHERE                                                                                      \
	" WHERE c.model_id = ?1 AND (?2 < 0 OR c.run_id = ?2)"                                     \
	" AND (?3 IS NULL OR EXISTS (SELECT 1 FROM json_each(c.tags) WHERE value = ?3))"           \
	" AND (?4 = 0 OR c.epoch = ?5)"
	/* One statement per order: the cache needs distinct literals. */
	static const char *const sql_by[] = {
	    "SELECT " CKPT_COLUMNS CKPT_FROM WHERE " ORDER BY c.id ASC LIMIT ?6 OFFSET ?8",
	    "SELECT " CKPT_COLUMNS CKPT_FROM WHERE " ORDER BY c.id DESC LIMIT ?6 OFFSET ?8",
	    "SELECT " CKPT_COLUMNS CKPT_FROM WHERE
	    " ORDER BY c.epoch IS NULL, c.epoch ASC, c.id ASC LIMIT ?6 OFFSET ?8",
	    "SELECT " CKPT_COLUMNS CKPT_FROM WHERE
	    " ORDER BY c.epoch IS NULL, c.epoch DESC, c.id DESC LIMIT ?6 OFFSET ?8",
	    "SELECT " CKPT_COLUMNS CKPT_FROM WHERE
	    " ORDER BY c.step IS NULL, c.step ASC, c.id ASC LIMIT ?6 OFFSET ?8",
	    "SELECT " CKPT_COLUMNS CKPT_FROM WHERE
	    " ORDER BY c.step IS NULL, c.step DESC, c.id DESC LIMIT ?6 OFFSET ?8",
	    "SELECT " CKPT_COLUMNS CKPT_FROM WHERE
	    " ORDER BY c.loss IS NULL, c.loss ASC, c.id ASC LIMIT ?6 OFFSET ?8",
	    "SELECT " CKPT_COLUMNS CKPT_FROM WHERE
	    " ORDER BY c.loss IS NULL, c.loss DESC, c.id DESC LIMIT ?6 OFFSET ?8",
	    "SELECT " CKPT_COLUMNS CKPT_FROM WHERE " ORDER BY json_extract(c.metrics, ?7) IS NULL,"
	    " json_extract(c.metrics, ?7) ASC, c.id ASC LIMIT ?6 OFFSET ?8",
	    "SELECT " CKPT_COLUMNS CKPT_FROM WHERE " ORDER BY json_extract(c.metrics, ?7) IS NULL,"
	    " json_extract(c.metrics, ?7) DESC, c.id DESC LIMIT ?6 OFFSET ?8",
	};
	if (!(st = stmt(c, "SELECT count(*) FROM checkpoints c" WHERE))) {
		err = CK_EIO;
		goto out;
	}
	sqlite3_bind_int64(st, 1, mid);
	sqlite3_bind_int64(st, 2, rid);
	if (q->tag)
		sqlite3_bind_text(st, 3, q->tag, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(st, 4, q->has_epoch);
	sqlite3_bind_int64(st, 5, q->epoch);
	if (sqlite3_step(st) == SQLITE_ROW)
		total = sqlite3_column_int64(st, 0);

	if (!(st = stmt(c, sql_by[which]))) {
		err = CK_EIO;
		goto out;
	}
#undef WHERE
	sqlite3_bind_int64(st, 1, mid);
	sqlite3_bind_int64(st, 2, rid);
	if (q->tag)
		sqlite3_bind_text(st, 3, q->tag, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(st, 4, q->has_epoch);
	sqlite3_bind_int64(st, 5, q->epoch);
	sqlite3_bind_int64(st, 6, q->limit);
	if (mpath[0])
		sqlite3_bind_text(st, 7, mpath, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 8, q->offset);
	items = json_array();
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		json_array_append_new(items, ckpt_row_json(st));
	if (rc != SQLITE_DONE) {
		err = db_error(c->db, "checkpoint list");
		goto out;
	}
done:
	*out = json_pack("{so sI}", "checkpoints", items, "total", (json_int_t)total);
	items = NULL;
out:
	json_decref(items);
	conn_put(idx, c);
	return err;
}

int index_checkpoint_layout(struct index_layout **out, struct index *idx, int64_t id)
{
	struct conn *c = NULL;
	sqlite3_stmt *st;
	struct index_layout *l = calloc(1, sizeof(*l));
	struct hash skel;
	uint64_t skel_size, nstor = 0, pos = 0, skel_off = 0;
	uint32_t skel_crc = 0;
	int err = 0, rc;

	if (!l)
		return ck_error(CK_ENOMEM, "out of memory");
	if ((err = conn_get(&c, idx)) < 0)
		goto out;
	if (!(st = stmt(c, "SELECT m.name, c.epoch, c.format, c.size, c.sha256, c.skeleton,"
			   " c.skeleton_size, c.storage_count,"
			   " (SELECT crc32 FROM blobs WHERE hash = c.skeleton) FROM checkpoints c"
			   " JOIN models m ON m.id = c.model_id WHERE c.id = ?"))) {
		err = CK_EIO;
		goto out;
	}
	sqlite3_bind_int64(st, 1, id);
	if ((rc = sqlite3_step(st)) != SQLITE_ROW) {
		err = rc == SQLITE_DONE
			  ? ck_error(CK_ENOTFOUND, "checkpoint %" PRId64 " not found", id)
			  : db_error(c->db, "layout");
		goto out;
	}
	l->id = id;
	l->model = strdup((const char *)sqlite3_column_text(st, 0));
	l->has_epoch = sqlite3_column_type(st, 1) != SQLITE_NULL;
	l->epoch = sqlite3_column_int64(st, 1);
	l->format = strdup((const char *)sqlite3_column_text(st, 2));
	l->size = (uint64_t)sqlite3_column_int64(st, 3);
	column_hash(&l->sha256, st, 4);
	column_hash(&skel, st, 5);
	skel_size = (uint64_t)sqlite3_column_int64(st, 6);
	nstor = (uint64_t)sqlite3_column_int64(st, 7);
	skel_crc = (uint32_t)sqlite3_column_int64(st, 8);
	if (!l->model || !l->format || nstor > (1u << 26) ||
	    !(l->parts = calloc(2 * nstor + 1, sizeof(*l->parts)))) {
		err = ck_error(CK_ENOMEM, "out of memory");
		goto out;
	}
	if (!(st = stmt(c, "SELECT s.blob, s.file_off, s.nbytes, b.crc32 FROM storages s"
			   " LEFT JOIN blobs b ON b.hash = s.blob"
			   " WHERE s.checkpoint_id = ? ORDER BY s.file_off"))) {
		err = CK_EIO;
		goto out;
	}
	sqlite3_bind_int64(st, 1, id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		uint64_t off = (uint64_t)sqlite3_column_int64(st, 1);
		uint64_t n = (uint64_t)sqlite3_column_int64(st, 2);
		if (off < pos || l->nparts + 2 > 2 * nstor + 1) {
			err =
			    ck_error(CK_ECORRUPT,
				     "index: checkpoint %" PRId64 " has overlapping storages", id);
			goto out;
		}
		if (off > pos) {
			struct index_layout_part *p = &l->parts[l->nparts++];
			p->blob = skel;
			p->file_off = pos;
			p->size = off - pos;
			p->src_off = skel_off;
			p->blob_size = skel_size;
			p->blob_crc = skel_crc;
			skel_off += off - pos;
		}
		struct index_layout_part *p = &l->parts[l->nparts++];
		column_hash(&p->blob, st, 0);
		p->file_off = off;
		p->size = n;
		p->src_off = 0;
		p->blob_size = n;
		p->blob_crc = (uint32_t)sqlite3_column_int64(st, 3);
		pos = off + n;
	}
	if (rc != SQLITE_DONE) {
		err = db_error(c->db, "layout storages");
		goto out;
	}
	if (pos < l->size) {
		struct index_layout_part *p = &l->parts[l->nparts++];
		p->blob = skel;
		p->file_off = pos;
		p->size = l->size - pos;
		p->src_off = skel_off;
		p->blob_size = skel_size;
		p->blob_crc = skel_crc;
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
	conn_put(idx, c);
	return err;
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

int index_checkpoint_tensors(struct index_tensors **out, struct index *idx, int64_t id)
{
	struct conn *c = NULL;
	sqlite3_stmt *st;
	struct index_tensors *t = calloc(1, sizeof(*t));
	int64_t nt = 0, ns = 0;
	int err = 0, rc;

	if (!t)
		return ck_error(CK_ENOMEM, "out of memory");
	if ((err = conn_get(&c, idx)) < 0)
		goto out;
	if (!(st = stmt(c, "SELECT tensor_count, storage_count FROM checkpoints WHERE id = ?"))) {
		err = CK_EIO;
		goto out;
	}
	sqlite3_bind_int64(st, 1, id);
	if (sqlite3_step(st) != SQLITE_ROW) {
		err = ck_error(CK_ENOTFOUND, "checkpoint %" PRId64 " not found", id);
		goto out;
	}
	nt = sqlite3_column_int64(st, 0);
	ns = sqlite3_column_int64(st, 1);
	t->tensors = calloc((size_t)nt + 1, sizeof(*t->tensors));
	t->storages = calloc((size_t)ns + 1, sizeof(*t->storages));
	if (!t->tensors || !t->storages) {
		err = ck_error(CK_ENOMEM, "out of memory");
		goto out;
	}
	if (!(st = stmt(c, "SELECT s.blob, s.dtype, s.nbytes, b.crc32 FROM storages s"
			   " LEFT JOIN blobs b ON b.hash = s.blob"
			   " WHERE s.checkpoint_id = ? ORDER BY s.idx"))) {
		err = CK_EIO;
		goto out;
	}
	sqlite3_bind_int64(st, 1, id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW && t->nstorages < (size_t)ns) {
		struct index_storage_row *s = &t->storages[t->nstorages++];
		column_hash(&s->blob, st, 0);
		s->dtype = dtype_from_name((const char *)sqlite3_column_text(st, 1));
		s->nbytes = (uint64_t)sqlite3_column_int64(st, 2);
		s->crc32 = (uint32_t)sqlite3_column_int64(st, 3);
	}
	if (!(st = stmt(c, "SELECT path, dtype, shape, strides, offset, storage_idx, nbytes"
			   " FROM tensors WHERE checkpoint_id = ? ORDER BY seq"))) {
		err = CK_EIO;
		goto out;
	}
	sqlite3_bind_int64(st, 1, id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW && t->ntensors < (size_t)nt) {
		struct index_tensor_row *r = &t->tensors[t->ntensors++];
		int nd2 = 0;
		r->path = strdup((const char *)sqlite3_column_text(st, 0));
		if (!r->path) {
			err = ck_error(CK_ENOMEM, "out of memory");
			goto out;
		}
		r->dtype = dtype_from_name((const char *)sqlite3_column_text(st, 1));
		if ((err = dims_parse(&r->ndim, r->shape,
				      (const char *)sqlite3_column_text(st, 2))) < 0 ||
		    (err = dims_parse(&nd2, r->strides, (const char *)sqlite3_column_text(st, 3))) <
			0)
			goto out;
		if (nd2 != r->ndim) {
			err = ck_error(CK_ECORRUPT, "index: tensor %s has mismatched strides",
				       r->path);
			goto out;
		}
		r->offset = (uint64_t)sqlite3_column_int64(st, 4);
		r->storage = (size_t)sqlite3_column_int64(st, 5);
		r->nbytes = (uint64_t)sqlite3_column_int64(st, 6);
		if (r->storage >= t->nstorages) {
			err = ck_error(CK_ECORRUPT, "index: tensor %s names a missing storage",
				       r->path);
			goto out;
		}
	}
	*out = t;
	t = NULL;
out:
	index_tensors_free(t);
	conn_put(idx, c);
	return err;
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

/* ---- delete ---- */

struct hashes {
	struct hash *v;
	size_t n, cap;
};

static int hashes_push(struct hashes *hs, const struct hash *h)
{
	if (hs->n == hs->cap) {
		size_t cap = hs->cap ? hs->cap * 2 : 16;
		struct hash *v = realloc(hs->v, cap * sizeof(*v));
		if (!v)
			return ck_error(CK_ENOMEM, "out of memory");
		hs->v = v;
		hs->cap = cap;
	}
	hs->v[hs->n++] = *h;
	return 0;
}

static int blob_unref(struct hashes *freed, struct conn *c, const struct hash *h)
{
	sqlite3_stmt *st = stmt(c, "UPDATE blobs SET refcount = refcount - 1 WHERE hash = ?"
				   " RETURNING refcount");
	int64_t left = 1;
	int rc;

	if (!st)
		return CK_EIO;
	bind_hash(st, 1, h);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		left = sqlite3_column_int64(st, 0);
	else if (rc != SQLITE_DONE)
		return db_error(c->db, "blob unref");
	while (rc == SQLITE_ROW)
		rc = sqlite3_step(st);
	if (left > 0)
		return 0;
	if (!(st = stmt(c, "DELETE FROM blobs WHERE hash = ? AND refcount <= 0")))
		return CK_EIO;
	bind_hash(st, 1, h);
	if (step_done(c, st, "blob delete") < 0)
		return CK_EIO;
	return hashes_push(freed, h);
}

/* Deletes one checkpoint's rows inside an open transaction. */
static int delete_one(struct hashes *freed, struct conn *c, int64_t id)
{
	struct hashes refs = {0};
	sqlite3_stmt *st;
	int err = 0, rc;

	if (!(st = stmt(c, "SELECT blob FROM storages WHERE checkpoint_id = ?1"
			   " UNION ALL SELECT skeleton FROM checkpoints WHERE id = ?1")))
		return CK_EIO;
	sqlite3_bind_int64(st, 1, id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct hash h;
		column_hash(&h, st, 0);
		if ((err = hashes_push(&refs, &h)) < 0)
			goto out;
	}
	if (rc != SQLITE_DONE) {
		err = db_error(c->db, "delete refs");
		goto out;
	}
	for (size_t i = 0; i < refs.n; i++)
		if ((err = blob_unref(freed, c, &refs.v[i])) < 0)
			goto out;
	static const char *const dels[] = {
	    "DELETE FROM tensors WHERE checkpoint_id = ?",
	    "DELETE FROM storages WHERE checkpoint_id = ?",
	    "DELETE FROM checkpoints WHERE id = ?",
	};
	for (size_t i = 0; i < 3; i++) {
		if (!(st = stmt(c, dels[i]))) {
			err = CK_EIO;
			goto out;
		}
		sqlite3_bind_int64(st, 1, id);
		if ((err = step_done(c, st, "delete")) < 0)
			goto out;
	}
out:
	free(refs.v);
	return err;
}

int index_checkpoint_delete(struct hash **freed_out, size_t *nfreed, struct index *idx,
			    const char *model, int64_t id)
{
	struct conn *c = NULL;
	struct hashes freed = {0};
	sqlite3_stmt *st;
	int64_t mid;
	int err;

	if ((err = conn_get(&c, idx)) < 0)
		return err;
	if ((err = exec(c->db, "BEGIN IMMEDIATE")) < 0)
		goto out;
	if ((err = model_id(&mid, c, model)) < 0)
		goto out;
	if (!(st = stmt(c, "SELECT 1 FROM checkpoints WHERE id = ? AND model_id = ?"))) {
		err = CK_EIO;
		goto out;
	}
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_int64(st, 2, mid);
	if (sqlite3_step(st) != SQLITE_ROW) {
		err = ck_error(CK_ENOTFOUND, "checkpoint %" PRId64 " of model '%s' not found", id,
			       model);
		goto out;
	}
	if ((err = delete_one(&freed, c, id)) < 0 || (err = exec(c->db, "COMMIT")) < 0)
		goto out;
	*freed_out = freed.v;
	*nfreed = freed.n;
	freed.v = NULL;
out:
	free(freed.v);
	conn_put(idx, c);
	return err;
}

int index_model_delete(struct hash **freed_out, size_t *nfreed, struct index *idx,
		       const char *model)
{
	struct conn *c = NULL;
	struct hashes freed = {0};
	sqlite3_stmt *st;
	int64_t mid, *ids = NULL;
	size_t nids = 0, cap = 0;
	int err, rc;

	if ((err = conn_get(&c, idx)) < 0)
		return err;
	if ((err = exec(c->db, "BEGIN IMMEDIATE")) < 0)
		goto out;
	if ((err = model_id(&mid, c, model)) < 0)
		goto out;
	if (!(st = stmt(c, "SELECT id FROM checkpoints WHERE model_id = ?"))) {
		err = CK_EIO;
		goto out;
	}
	sqlite3_bind_int64(st, 1, mid);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (nids == cap) {
			cap = cap ? cap * 2 : 64;
			int64_t *v = realloc(ids, cap * sizeof(*v));
			if (!v) {
				err = ck_error(CK_ENOMEM, "out of memory");
				goto out;
			}
			ids = v;
		}
		ids[nids++] = sqlite3_column_int64(st, 0);
	}
	for (size_t i = 0; i < nids; i++)
		if ((err = delete_one(&freed, c, ids[i])) < 0)
			goto out;
	static const char *const dels[] = {
	    "DELETE FROM runs WHERE model_id = ?",
	    "DELETE FROM models WHERE id = ?",
	};
	for (size_t i = 0; i < 2; i++) {
		if (!(st = stmt(c, dels[i]))) {
			err = CK_EIO;
			goto out;
		}
		sqlite3_bind_int64(st, 1, mid);
		if ((err = step_done(c, st, "model delete")) < 0)
			goto out;
	}
	if ((err = exec(c->db, "COMMIT")) < 0)
		goto out;
	*freed_out = freed.v;
	*nfreed = freed.n;
	freed.v = NULL;
out:
	free(ids);
	free(freed.v);
	conn_put(idx, c);
	return err;
}

/* ---- patch ---- */

int index_checkpoint_patch(struct index *idx, int64_t id, const json_t *patch)
{
	struct conn *c = NULL;
	sqlite3_stmt *st;
	json_t *v;
	char *text = NULL;
	int err;

	if ((err = conn_get(&c, idx)) < 0)
		return err;
	if ((err = exec(c->db, "BEGIN IMMEDIATE")) < 0)
		goto out;
	if ((v = json_object_get(patch, "loss"))) {
		if (!(st = stmt(c, "UPDATE checkpoints SET loss = ? WHERE id = ?"))) {
			err = CK_EIO;
			goto out;
		}
		if (json_is_number(v))
			sqlite3_bind_double(st, 1, json_number_value(v));
		sqlite3_bind_int64(st, 2, id);
		if ((err = step_done(c, st, "patch loss")) < 0)
			goto out;
	}
	if ((v = json_object_get(patch, "metrics"))) {
		/* metrics merge into the existing object; null removes a name */
		if (!(text = json_dumps(v, JSON_COMPACT))) {
			err = ck_error(CK_ENOMEM, "out of memory");
			goto out;
		}
		if (!(st = stmt(c, "UPDATE checkpoints SET metrics = json_patch(metrics, ?)"
				   " WHERE id = ?"))) {
			err = CK_EIO;
			goto out;
		}
		sqlite3_bind_text(st, 1, text, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 2, id);
		free(text);
		text = NULL;
		if ((err = step_done(c, st, "patch metrics")) < 0)
			goto out;
	}
	if ((v = json_object_get(patch, "tags"))) {
		if (!(text = json_dumps(v, JSON_COMPACT))) {
			err = ck_error(CK_ENOMEM, "out of memory");
			goto out;
		}
		if (!(st = stmt(c, "UPDATE checkpoints SET tags = ? WHERE id = ?"))) {
			err = CK_EIO;
			goto out;
		}
		sqlite3_bind_text(st, 1, text, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 2, id);
		free(text);
		text = NULL;
		if ((err = step_done(c, st, "patch tags")) < 0)
			goto out;
	}
	if ((v = json_object_get(patch, "pinned"))) {
		if (!(st = stmt(c, "UPDATE checkpoints SET pinned = ? WHERE id = ?"))) {
			err = CK_EIO;
			goto out;
		}
		sqlite3_bind_int(st, 1, json_is_true(v));
		sqlite3_bind_int64(st, 2, id);
		if ((err = step_done(c, st, "patch pinned")) < 0)
			goto out;
	}
	err = exec(c->db, "COMMIT");
out:
	free(text);
	conn_put(idx, c);
	return err;
}

/* ---- models, stats ---- */

int index_models_json(json_t **out, struct index *idx)
{
	struct conn *c = NULL;
	sqlite3_stmt *st;
	json_t *models = json_array();
	int err, rc;

	if ((err = conn_get(&c, idx)) < 0) {
		json_decref(models);
		return err;
	}
	if (!(st = stmt(
		  c, "SELECT m.name, m.created_at,"
		     " (SELECT count(*) FROM checkpoints c WHERE c.model_id = m.id),"
		     " (SELECT json_group_array(name) FROM (SELECT name FROM runs"
		     "   WHERE model_id = m.id ORDER BY name)),"
		     " (SELECT id FROM checkpoints c WHERE c.model_id = m.id AND loss IS NOT NULL"
		     "   ORDER BY loss ASC, id DESC LIMIT 1),"
		     " (SELECT min(loss) FROM checkpoints c WHERE c.model_id = m.id),"
		     " (SELECT max(id) FROM checkpoints c WHERE c.model_id = m.id),"
		     " (SELECT epoch FROM checkpoints c WHERE c.model_id = m.id"
		     "   ORDER BY id DESC LIMIT 1),"
		     " (SELECT max(epoch) FROM checkpoints c WHERE c.model_id = m.id),"
		     " (SELECT coalesce(sum(size), 0) FROM checkpoints c WHERE c.model_id = m.id),"
		     " (SELECT coalesce(sum(new_bytes + 0), 0) FROM checkpoints c"
		     "   WHERE c.model_id = m.id),"
		     " (SELECT max(created_at) FROM checkpoints c WHERE c.model_id = m.id)"
		     " FROM models m ORDER BY m.name"))) {
		err = CK_EIO;
		goto out;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		json_t *m = json_object();
		json_object_set_new(m, "name",
				    json_string((const char *)sqlite3_column_text(st, 0)));
		json_object_set_new(m, "created_at",
				    json_string((const char *)sqlite3_column_text(st, 1)));
		json_object_set_new(m, "checkpoints", json_integer(sqlite3_column_int64(st, 2)));
		json_object_set_new(
		    m, "runs", parsed_or((const char *)sqlite3_column_text(st, 3), json_array()));
		json_object_set_new(m, "best", nullable_int(st, 4));
		json_object_set_new(m, "best_loss",
				    sqlite3_column_type(st, 5) == SQLITE_NULL
					? json_null()
					: json_real(sqlite3_column_double(st, 5)));
		json_object_set_new(m, "latest", nullable_int(st, 6));
		json_object_set_new(m, "latest_epoch", nullable_int(st, 7));
		json_object_set_new(m, "max_epoch", nullable_int(st, 8));
		json_object_set_new(m, "bytes", json_integer(sqlite3_column_int64(st, 9)));
		json_object_set_new(m, "bytes_added", json_integer(sqlite3_column_int64(st, 10)));
		json_object_set_new(m, "updated_at",
				    sqlite3_column_type(st, 11) == SQLITE_NULL
					? json_null()
					: json_string((const char *)sqlite3_column_text(st, 11)));
		json_array_append_new(models, m);
	}
	if (rc != SQLITE_DONE) {
		err = db_error(c->db, "models");
		goto out;
	}
	*out = json_pack("{so}", "models", models);
	models = NULL;
out:
	json_decref(models);
	conn_put(idx, c);
	return err;
}

int index_stats_json(json_t **out, struct index *idx)
{
	struct conn *c = NULL;
	sqlite3_stmt *st;
	int64_t logical = 0, ckpts = 0, models = 0, unique = 0, stored = 0, blobs = 0;
	int err;

	if ((err = conn_get(&c, idx)) < 0)
		return err;
	if (!(st = stmt(c, "SELECT coalesce(sum(size), 0), count(*),"
			   " (SELECT count(*) FROM models) FROM checkpoints"))) {
		err = CK_EIO;
		goto out;
	}
	if (sqlite3_step(st) == SQLITE_ROW) {
		logical = sqlite3_column_int64(st, 0);
		ckpts = sqlite3_column_int64(st, 1);
		models = sqlite3_column_int64(st, 2);
	}
	if (!(st = stmt(c, "SELECT coalesce(sum(raw_size), 0), coalesce(sum(stored_size), 0),"
			   " count(*) FROM blobs"))) {
		err = CK_EIO;
		goto out;
	}
	if (sqlite3_step(st) == SQLITE_ROW) {
		unique = sqlite3_column_int64(st, 0);
		stored = sqlite3_column_int64(st, 1);
		blobs = sqlite3_column_int64(st, 2);
	}
	*out = json_pack("{sI sI sI sI sI sI sf sf sf}", "models", (json_int_t)models,
			 "checkpoints", (json_int_t)ckpts, "logical_bytes", (json_int_t)logical,
			 "unique_bytes", (json_int_t)unique, "stored_bytes", (json_int_t)stored,
			 "blobs", (json_int_t)blobs, "dedup_ratio",
			 unique ? (double)logical / (double)unique : 1.0, "compression_ratio",
			 unique ? (double)stored / (double)unique : 1.0, "overall_ratio",
			 logical ? (double)stored / (double)logical : 1.0);
out:
	conn_put(idx, c);
	return err;
}

int index_blob_exists(struct index *idx, const struct hash *h)
{
	uint64_t size;
	uint32_t crc;

	return index_blob_get(&size, &crc, idx, h);
}

int index_blob_get(uint64_t *raw_size, uint32_t *crc32, struct index *idx, const struct hash *h)
{
	struct conn *c = NULL;
	sqlite3_stmt *st;
	int err, rc;

	if ((err = conn_get(&c, idx)) < 0)
		return err;
	if (!(st = stmt(c, "SELECT raw_size, crc32 FROM blobs WHERE hash = ?"))) {
		err = CK_EIO;
		goto out;
	}
	bind_hash(st, 1, h);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*raw_size = (uint64_t)sqlite3_column_int64(st, 0);
		*crc32 = (uint32_t)sqlite3_column_int64(st, 1);
	} else if (rc == SQLITE_DONE) {
		err = CK_ENOTFOUND;
	} else {
		err = db_error(c->db, "blob lookup");
	}
out:
	conn_put(idx, c);
	return err;
}

int index_blob_foreach(struct index *idx,
		       int (*cb)(void *arg, const struct hash *h, uint64_t raw_size,
				 uint32_t crc32),
		       void *arg)
{
	struct conn *c = NULL;
	sqlite3_stmt *st;
	int err, rc;

	if ((err = conn_get(&c, idx)) < 0)
		return err;
	/* Not cached: the callback may use the index (another connection). */
	if (sqlite3_prepare_v2(c->db, "SELECT hash, raw_size, crc32 FROM blobs ORDER BY hash", -1,
			       &st, NULL) != SQLITE_OK) {
		err = db_error(c->db, "blob list");
		goto out;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct hash h;
		column_hash(&h, st, 0);
		if ((err = cb(arg, &h, (uint64_t)sqlite3_column_int64(st, 1),
			      (uint32_t)sqlite3_column_int64(st, 2))) != 0)
			break;
	}
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		err = db_error(c->db, "blob list");
	sqlite3_finalize(st);
out:
	conn_put(idx, c);
	return err;
}

/* ---- retention ---- */

int index_retention_get(json_t **out, struct index *idx, const char *model)
{
	struct conn *c = NULL;
	sqlite3_stmt *st;
	int err;

	if ((err = conn_get(&c, idx)) < 0)
		return err;
	if (!(st = stmt(c, "SELECT retention FROM models WHERE name = ?"))) {
		err = CK_EIO;
		goto out;
	}
	sqlite3_bind_text(st, 1, model, -1, SQLITE_TRANSIENT);
	if (sqlite3_step(st) != SQLITE_ROW) {
		err = ck_error(CK_ENOTFOUND, "model '%s' not found", model);
		goto out;
	}
	*out = sqlite3_column_type(st, 0) == SQLITE_NULL
		   ? NULL
		   : json_loads((const char *)sqlite3_column_text(st, 0), 0, NULL);
out:
	conn_put(idx, c);
	return err;
}

int index_retention_set(struct index *idx, const char *model, const json_t *policy)
{
	struct conn *c = NULL;
	sqlite3_stmt *st;
	char *text = json_dumps(policy, JSON_COMPACT | JSON_SORT_KEYS);
	int err;

	if (!text)
		return ck_error(CK_ENOMEM, "out of memory");
	if ((err = conn_get(&c, idx)) < 0)
		goto out;
	if (!(st = stmt(c, "UPDATE models SET retention = ? WHERE name = ?"))) {
		err = CK_EIO;
		goto out;
	}
	sqlite3_bind_text(st, 1, text, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 2, model, -1, SQLITE_TRANSIENT);
	if ((err = step_done(c, st, "retention")) < 0)
		goto out;
	if (sqlite3_changes(c->db) == 0)
		err = ck_error(CK_ENOTFOUND, "model '%s' not found", model);
out:
	free(text);
	conn_put(idx, c);
	return err;
}

int index_retention_victims(int64_t **ids_out, size_t *n_out, struct index *idx, const char *model)
{
	struct conn *c = NULL;
	sqlite3_stmt *st;
	json_t *pol = NULL;
	int64_t mid, *ids = NULL;
	size_t n = 0, cap = 0;
	int err, rc, maximize;
	char mpath[200];
	const char *metric;

	*ids_out = NULL;
	*n_out = 0;
	if ((err = index_retention_get(&pol, idx, model)) < 0 || !pol)
		return err;
	json_int_t keep_best = json_integer_value(json_object_get(pol, "keep_best"));
	json_int_t keep_last = json_integer_value(json_object_get(pol, "keep_last"));
	metric = json_string_value(json_object_get(pol, "metric"));
	if (!metric)
		metric = "loss";
	maximize = json_string_value(json_object_get(pol, "mode")) &&
		   !strcmp(json_string_value(json_object_get(pol, "mode")), "max");
	if (!strcmp(metric, "loss"))
		snprintf(mpath, sizeof(mpath), "loss");
	else
		metric_path(mpath, sizeof(mpath), metric);

	if ((err = conn_get(&c, idx)) < 0)
		goto out;
	if ((err = model_id(&mid, c, model)) < 0)
		goto out;
	/* Victims: not pinned, not among the keep_last newest, not among the
	 * keep_best best by the metric (checkpoints without it are not best). */
	if (!(st = stmt(c,
			"WITH k AS (SELECT id, pinned,"
			"  CASE WHEN ?2 = 'loss' THEN loss ELSE json_extract(metrics, ?2) END AS v"
			"  FROM checkpoints WHERE model_id = ?1),"
			" last AS (SELECT id FROM k ORDER BY id DESC LIMIT ?3),"
			" best AS (SELECT id FROM k WHERE v IS NOT NULL"
			"  ORDER BY CASE WHEN ?5 THEN -v ELSE v END ASC, id DESC LIMIT ?4)"
			" SELECT id FROM k WHERE pinned = 0 AND id NOT IN (SELECT id FROM last)"
			" AND id NOT IN (SELECT id FROM best) ORDER BY id"))) {
		err = CK_EIO;
		goto out;
	}
	sqlite3_bind_int64(st, 1, mid);
	sqlite3_bind_text(st, 2, mpath, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 3, keep_last);
	sqlite3_bind_int64(st, 4, keep_best);
	sqlite3_bind_int(st, 5, maximize);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			int64_t *v = realloc(ids, cap * sizeof(*v));
			if (!v) {
				err = ck_error(CK_ENOMEM, "out of memory");
				goto out;
			}
			ids = v;
		}
		ids[n++] = sqlite3_column_int64(st, 0);
	}
	if (rc != SQLITE_DONE) {
		err = db_error(c->db, "retention");
		goto out;
	}
	*ids_out = ids;
	*n_out = n;
	ids = NULL;
out:
	free(ids);
	json_decref(pol);
	conn_put(idx, c);
	return err;
}
