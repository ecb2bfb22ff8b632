/*
 * index_sqlite.c: the SQLite backend of the index: a SQL driver (sql.h) that
 * storage/index_sql.c runs the index's operations on.
 *
 * One file, WAL mode (readers never wait for the writer), synchronous=FULL
 * (a commit is on disk when it returns, SPEC 6). Writers take turns through
 * BEGIN IMMEDIATE, which also serves as the reaper's lock (sql.h): a claim
 * and a reap are both writes, so they never interleave. Claims are written
 * with synchronous=OFF: WAL keeps them atomic, and only an operating-system
 * crash could lose one, which also ends the upload that held it (one process
 * serves a SQLite store).
 *
 * A busy database (another writer held the lock past the busy timeout) is
 * CK_EUNAVAIL, so the HTTP answer is 503 with Retry-After, not 500.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "../common/err.h"
#include "sql.h"

#define STMT_CACHE 64
#define BUSY_MS	   10000

struct sql_stmt {
	sqlite3_stmt *st;
	struct sql_conn *c;
	const char *sql;
	int started; /* stepped since the last reset */
};

struct sql_conn {
	sqlite3 *db;
	struct sql_stmt cache[STMT_CACHE];
	size_t ncache;
	int relaxed; /* synchronous=OFF for the open claim transaction */
};

static int db_error(sqlite3 *db, int rc, const char *what)
{
	rc &= 0xff;
	if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
		return ck_error(CK_EUNAVAIL,
				"index: the database is busy (another writer held it for over "
				"%d s during %s): retry later",
				BUSY_MS / 1000, what);
	if (rc == SQLITE_FULL)
		return ck_error(CK_ENOSPC, "index: %s: disk full", what);
	if (rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB)
		return ck_error(CK_ECORRUPT, "index: %s: %s", what, sqlite3_errmsg(db));
	if (rc == SQLITE_CONSTRAINT)
		return ck_error(CK_ECONFLICT, "index: %s: %s", what, sqlite3_errmsg(db));
	if (rc == SQLITE_NOMEM)
		return ck_error(CK_ENOMEM, "index: out of memory during %s", what);
	return ck_error(CK_EIO, "index: %s: %s", what, sqlite3_errmsg(db));
}

static int lite_exec(struct sql_conn *c, const char *sql)
{
	int rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);

	return rc == SQLITE_OK ? 0 : db_error(c->db, rc, sql);
}

static void lite_disconnect(struct sql_conn *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->ncache; i++)
		sqlite3_finalize(c->cache[i].st);
	sqlite3_close(c->db);
	free(c);
}

static int lite_connect(struct sql_conn **out, const char *path)
{
	struct sql_conn *c = calloc(1, sizeof(*c));
	int err, rc;

	if (!c)
		return ck_error(CK_ENOMEM, "index: out of memory");
	rc = sqlite3_open_v2(
	    path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		err = ck_error(rc == SQLITE_CANTOPEN ? CK_EINVALID : CK_EIO,
			       "index: cannot open %s: %s", path,
			       c->db ? sqlite3_errmsg(c->db) : "out of memory");
		lite_disconnect(c);
		return err;
	}
	sqlite3_busy_timeout(c->db, BUSY_MS);
	if ((err = lite_exec(c, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
				"PRAGMA foreign_keys=OFF; PRAGMA temp_store=MEMORY;")) < 0) {
		lite_disconnect(c);
		return err;
	}
	*out = c;
	return 0;
}

static int lite_usable(struct sql_conn *c)
{
	return 1;
}

static int lite_begin(struct sql_conn *c, enum sql_txn kind)
{
	int err;

	/* A statement left mid-read would pin an old snapshot, and BEGIN
	 * IMMEDIATE would then fail at once with SQLITE_BUSY instead of
	 * waiting for the writer. */
	for (size_t i = 0; i < c->ncache; i++)
		if (c->cache[i].started) {
			sqlite3_reset(c->cache[i].st);
			c->cache[i].started = 0;
		}
	switch (kind) {
	case SQL_TXN_READ: return lite_exec(c, "BEGIN");
	case SQL_TXN_CLAIM:
		if ((err = lite_exec(c, "PRAGMA synchronous=OFF")) < 0)
			return err;
		c->relaxed = 1;
		if ((err = lite_exec(c, "BEGIN IMMEDIATE")) < 0) {
			lite_exec(c, "PRAGMA synchronous=FULL");
			c->relaxed = 0;
		}
		return err;
	case SQL_TXN_WRITE:
	case SQL_TXN_REAP:
	case SQL_TXN_MIGRATE: return lite_exec(c, "BEGIN IMMEDIATE");
	}
	return ck_error(CK_EIO, "index: unknown transaction kind %d", (int)kind);
}

static void relax_end(struct sql_conn *c)
{
	if (c->relaxed) {
		sqlite3_exec(c->db, "PRAGMA synchronous=FULL", NULL, NULL, NULL);
		c->relaxed = 0;
	}
}

static int lite_commit(struct sql_conn *c)
{
	for (size_t i = 0; i < c->ncache; i++)
		if (c->cache[i].started) {
			sqlite3_reset(c->cache[i].st);
			c->cache[i].started = 0;
		}
	int err = lite_exec(c, "COMMIT");
	if (err < 0)
		sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
	relax_end(c);
	return err;
}

static void lite_rollback(struct sql_conn *c)
{
	for (size_t i = 0; i < c->ncache; i++)
		if (c->cache[i].started) {
			sqlite3_reset(c->cache[i].st);
			c->cache[i].started = 0;
		}
	if (!sqlite3_get_autocommit(c->db))
		sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
	relax_end(c);
}

static int lite_prepare(struct sql_stmt **out, struct sql_conn *c, const char *sql)
{
	sqlite3_stmt *st = NULL;
	struct sql_stmt *s;
	int rc;

	for (size_t i = 0; i < c->ncache; i++)
		if (c->cache[i].sql == sql) {
			s = &c->cache[i];
			sqlite3_reset(s->st);
			sqlite3_clear_bindings(s->st);
			s->started = 0;
			*out = s;
			return 0;
		}
	rc = sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
	if (rc != SQLITE_OK)
		return db_error(c->db, rc, "prepare");
	if (c->ncache < STMT_CACHE) {
		s = &c->cache[c->ncache++];
	} else {
		/* the cache is sized for every statement of index_sql.c: a new
		 * one evicts the oldest rather than failing */
		s = &c->cache[0];
		sqlite3_finalize(s->st);
	}
	*s = (struct sql_stmt){st, c, sql, 0};
	*out = s;
	return 0;
}

static void lite_bind_int(struct sql_stmt *s, int i, int64_t v)
{
	sqlite3_bind_int64(s->st, i, v);
}

static void lite_bind_double(struct sql_stmt *s, int i, double v)
{
	sqlite3_bind_double(s->st, i, v);
}

static void lite_bind_text(struct sql_stmt *s, int i, const char *v)
{
	if (v)
		sqlite3_bind_text(s->st, i, v, -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_null(s->st, i);
}

static void lite_bind_blob(struct sql_stmt *s, int i, const void *p, size_t n)
{
	sqlite3_bind_blob64(s->st, i, p, n, SQLITE_TRANSIENT);
}

static void lite_bind_null(struct sql_stmt *s, int i)
{
	sqlite3_bind_null(s->st, i);
}

static int lite_step(struct sql_stmt *s)
{
	int rc = sqlite3_step(s->st);

	s->started = 1;
	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE) {
		/* done: let go of the read snapshot now */
		sqlite3_reset(s->st);
		s->started = 0;
		return 0;
	}
	int err = db_error(s->c->db, rc, "query");
	sqlite3_reset(s->st);
	s->started = 0;
	return err;
}

static int lite_column_null(struct sql_stmt *s, int i)
{
	return sqlite3_column_type(s->st, i) == SQLITE_NULL;
}

static int64_t lite_column_int(struct sql_stmt *s, int i)
{
	return sqlite3_column_int64(s->st, i);
}

static double lite_column_double(struct sql_stmt *s, int i)
{
	return sqlite3_column_double(s->st, i);
}

static const char *lite_column_text(struct sql_stmt *s, int i)
{
	const char *t = (const char *)sqlite3_column_text(s->st, i);

	return t ? t : "";
}

static const void *lite_column_blob(struct sql_stmt *s, int i, size_t *n)
{
	const void *p = sqlite3_column_blob(s->st, i);

	*n = p ? (size_t)sqlite3_column_bytes(s->st, i) : 0;
	return p;
}

static int64_t lite_changes(struct sql_stmt *s)
{
	return sqlite3_changes64(s->c->db);
}

static int lite_schema_version(struct sql_conn *c, int *version)
{
	sqlite3_stmt *st;
	int rc;

	*version = 0;
	if ((rc = sqlite3_prepare_v2(c->db, "PRAGMA user_version", -1, &st, NULL)) != SQLITE_OK)
		return db_error(c->db, rc, "schema version");
	if ((rc = sqlite3_step(st)) == SQLITE_ROW)
		*version = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : db_error(c->db, rc, "schema version");
}

static int lite_schema_version_set(struct sql_conn *c, int version)
{
	char sql[64];

	snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", version);
	return lite_exec(c, sql);
}

const struct sql_driver sql_sqlite_driver = {
    .name = "sqlite",
    .dialect = SQL_SQLITE,
    .connect = lite_connect,
    .disconnect = lite_disconnect,
    .usable = lite_usable,
    .exec = lite_exec,
    .begin = lite_begin,
    .commit = lite_commit,
    .rollback = lite_rollback,
    .prepare = lite_prepare,
    .bind_int = lite_bind_int,
    .bind_double = lite_bind_double,
    .bind_text = lite_bind_text,
    .bind_blob = lite_bind_blob,
    .bind_null = lite_bind_null,
    .step = lite_step,
    .column_null = lite_column_null,
    .column_int = lite_column_int,
    .column_double = lite_column_double,
    .column_text = lite_column_text,
    .column_blob = lite_column_blob,
    .changes = lite_changes,
    .schema_version = lite_schema_version,
    .schema_version_set = lite_schema_version_set,
};
