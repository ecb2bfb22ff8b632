/*
 * sql.h: what a SQL engine offers the index, so that one implementation of the
 * index's operations (storage/index_sql.c) serves every SQL backend: SQLite
 * (storage/index_sqlite.c) and PostgreSQL (storage/index_pg.c) fill this
 * struct; a third SQL engine is one more file that does.
 *
 * Statements are written once, with numbered parameters `?1`, `?2`, ... (a
 * driver whose engine spells them otherwise, like PostgreSQL's `$1`, rewrites
 * them when it prepares), and in the SQL both engines understand. Where the
 * dialects differ (JSON functions, upserts with arrays), index_sql.c holds one
 * string per dialect and picks by `dialect`.
 *
 * A connection is used by one thread at a time (index_sql.c pools them). A
 * statement belongs to its connection: prepare returns the connection's cached
 * statement for that SQL text (keyed by the string's address: callers pass
 * literals), reset and unbound; it stays valid until the connection is freed.
 * Column values are valid until the next step or prepare of that statement.
 *
 * Errors: every fallible call returns 0 or a CK_E* code with the message set
 * (common/err.h): CK_EUNAVAIL when the engine is unreachable or busy (the
 * caller may retry later: the HTTP answer is 503), CK_ENOSPC when its disk is
 * full, CK_ECORRUPT for a damaged database, CK_ECONFLICT for a uniqueness
 * violation, CK_EIO otherwise.
 */
#ifndef CK_SQL_H
#define CK_SQL_H

#include <stddef.h>
#include <stdint.h>

enum sql_dialect {
	SQL_SQLITE,
	SQL_POSTGRES,
};

/* What a transaction is for; the driver maps each to its engine's locking. */
enum sql_txn {
	SQL_TXN_READ,	 /* reads that must see one snapshot */
	SQL_TXN_WRITE,	 /* changes to checkpoints, blobs, models */
	SQL_TXN_CLAIM,	 /* adding or dropping claims: shares the reaper's lock */
	SQL_TXN_REAP,	 /* removing blobs: holds the reaper's lock alone, so no claim is
			    added between its check and its removal (storage/gc.h) */
	SQL_TXN_MIGRATE, /* schema changes: one process at a time */
};

struct sql_conn;
struct sql_stmt;

struct sql_driver {
	const char *name; /* "sqlite", "postgresql" */
	enum sql_dialect dialect;

	/* Opens a connection to target (a file path, a libpq URL). */
	int (*connect)(struct sql_conn **out, const char *target);
	void (*disconnect)(struct sql_conn *c);
	/* 0 when the connection is broken and must not go back to the pool. */
	int (*usable)(struct sql_conn *c);

	/* Runs statements without parameters or rows (DDL, PRAGMAs). */
	int (*exec)(struct sql_conn *c, const char *sql);
	int (*begin)(struct sql_conn *c, enum sql_txn kind);
	int (*commit)(struct sql_conn *c);
	/* Ends an open transaction without its changes; harmless when none is
	 * open. Never fails (a broken connection is then not usable). */
	void (*rollback)(struct sql_conn *c);

	int (*prepare)(struct sql_stmt **out, struct sql_conn *c, const char *sql);
	void (*bind_int)(struct sql_stmt *st, int i, int64_t v);
	void (*bind_double)(struct sql_stmt *st, int i, double v);
	void (*bind_text)(struct sql_stmt *st, int i, const char *v); /* copied; NULL binds NULL */
	void (*bind_blob)(struct sql_stmt *st, int i, const void *p, size_t n); /* copied */
	void (*bind_null)(struct sql_stmt *st, int i);
	/* Array parameters, optional: NULL when the engine has none. A driver
	 * that has them lets index_sql.c write a checkpoint's hundreds of rows
	 * per table with one statement (PostgreSQL: unnest) instead of one round
	 * trip each, so a commit holds its row locks for milliseconds. Binds
	 * parameter i to n integers, n byte strings of `width` bytes laid end to
	 * end, or n strings; all copied. */
	void (*bind_int_array)(struct sql_stmt *st, int i, const int64_t *v, size_t n);
	void (*bind_blob_array)(struct sql_stmt *st, int i, const void *p, size_t width, size_t n);
	void (*bind_text_array)(struct sql_stmt *st, int i, const char *const *v, size_t n);
	/* Runs the statement (first call) or moves to its next row: 1 = a row,
	 * 0 = no more rows, < 0 = an error. */
	int (*step)(struct sql_stmt *st);
	int (*column_null)(struct sql_stmt *st, int i);
	int64_t (*column_int)(struct sql_stmt *st, int i);
	double (*column_double)(struct sql_stmt *st, int i);
	const char *(*column_text)(struct sql_stmt *st, int i); /* "" for NULL */
	/* The bytes of a BLOB/BYTEA column; *n is 0 for NULL. */
	const void *(*column_blob)(struct sql_stmt *st, int i, size_t *n);
	/* Rows changed by the statement's last run (INSERT, UPDATE, DELETE). */
	int64_t (*changes)(struct sql_stmt *st);

	/* The schema version the database holds (0 = empty) and setting it,
	 * inside a SQL_TXN_MIGRATE transaction. */
	int (*schema_version)(struct sql_conn *c, int *version);
	int (*schema_version_set)(struct sql_conn *c, int version);
};

extern const struct sql_driver sql_sqlite_driver;
extern const struct sql_driver sql_pg_driver;

#endif
