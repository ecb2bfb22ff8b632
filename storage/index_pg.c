/*
 * index_pg.c: the PostgreSQL backend of the index: a SQL driver (sql.h) over
 * libpq that storage/index_sql.c runs the index's operations on, so that
 * several ckptd instances share one index (SPEC 9).
 *
 * Statements: the index writes `?N` parameters; they become `$N` here. Each
 * is prepared once per connection (PQprepare) for the parameter types it is
 * first run with (int8, float8, bytea; strings and NULLs leave the type to
 * the server, which reads it from the context), and run with PQexecPrepared: integers, reals and
 * text as text, byte strings in binary; results come back as text (bytea as \x hex).
 *
 * Transactions: READ is REPEATABLE READ (one snapshot for the statements of
 * an operation), WRITE is READ COMMITTED (rows are locked by the statements
 * that change them; index_sql.c orders its writes so that two instances
 * never deadlock). The reaper's lock (sql.h) is a transaction-level advisory
 * lock: claims take it shared, the reaper exclusive. Migrations take another
 * advisory lock, so instances starting together migrate once.
 *
 * A lost server is CK_EUNAVAIL (503 to the client); the connection is then
 * not usable and the pool drops it, so the next request connects again.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "../common/err.h"
#include "../common/hash.h"
#include "sql.h"

#define STMT_CACHE 96
#define MAX_PARAMS 24
#define MAX_SIGS   4

/* Advisory lock keys: the reaper's lock and the migration lock. */
#define LOCK_REAP    "4859272901"
#define LOCK_MIGRATE "4859272902"

/* Type OIDs of the parameters we send (pg_type.h). */
#define OID_BYTEA	17
#define OID_INT8	20
#define OID_TEXT	25
#define OID_FLOAT8	701
#define OID_BYTEA_ARRAY 1001
#define OID_TEXT_ARRAY	1009
#define OID_INT8_ARRAY	1016

struct sql_stmt {
	struct sql_conn *c;
	const char *sql; /* the caller's text: the cache key */
	char *pgsql;	 /* with $N parameters */
	int nparams;
	uint32_t referenced; /* bit k-1: $k appears in the text (MAX_PARAMS <= 32) */
	struct {
		unsigned types[MAX_PARAMS];
		char name[24];
	} sigs[MAX_SIGS];
	int nsigs;
	/* the bound values of the next run */
	char *values[MAX_PARAMS];
	int lengths[MAX_PARAMS], formats[MAX_PARAMS];
	unsigned types[MAX_PARAMS];
	char num[MAX_PARAMS][32]; /* text of bound numbers */
	/* the last run */
	PGresult *res;
	int row, nrows, ran;
	uint8_t **blob;	 /* per column: decoded bytea */
	size_t *blobcap; /* per column */
	int nblob;
};

struct sql_conn {
	PGconn *pg;
	struct sql_stmt *cache[STMT_CACHE];
	size_t ncache;
	unsigned nextname;
	int broken;
};

static int conn_lost(struct sql_conn *c)
{
	return PQstatus(c->pg) != CONNECTION_OK;
}

/* The error of res (or of the connection when res is NULL) as a CK_E* code. */
static int pg_error(struct sql_conn *c, const PGresult *res, const char *what)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(c->pg);
	char clean[512];
	size_t n;

	snprintf(clean, sizeof(clean), "%s", msg && *msg ? msg : "no message");
	n = strlen(clean);
	while (n > 0 && (clean[n - 1] == '\n' || clean[n - 1] == ' '))
		clean[--n] = '\0';
	if (conn_lost(c) || !state) {
		c->broken = 1;
		return ck_error(CK_EUNAVAIL, "index: PostgreSQL is unreachable (%s): %s", what,
				clean);
	}
	if (!strncmp(state, "08", 2) || !strncmp(state, "57P", 3) || !strcmp(state, "53300")) {
		c->broken = 1;
		return ck_error(CK_EUNAVAIL, "index: PostgreSQL is unavailable (%s): %s", what,
				clean);
	}
	if (!strcmp(state, "53100"))
		return ck_error(CK_ENOSPC, "index: PostgreSQL's disk is full (%s): %s", what,
				clean);
	if (!strncmp(state, "53", 2) || !strcmp(state, "40001") || !strcmp(state, "40P01") ||
	    !strcmp(state, "55P03"))
		return ck_error(CK_EUNAVAIL, "index: PostgreSQL is busy (%s): %s: retry later",
				what, clean);
	if (!strcmp(state, "23505"))
		return ck_error(CK_ECONFLICT, "index: %s: %s", what, clean);
	if (!strncmp(state, "XX", 2))
		return ck_error(CK_ECORRUPT, "index: %s: %s", what, clean);
	return ck_error(CK_EIO, "index: %s: %s (SQLSTATE %s)", what, clean, state);
}

static void stmt_clear_run(struct sql_stmt *s)
{
	if (s->res)
		PQclear(s->res);
	s->res = NULL;
	s->row = -1;
	s->nrows = 0;
	s->ran = 0;
}

static void stmt_clear_binds(struct sql_stmt *s)
{
	for (int i = 0; i < MAX_PARAMS; i++) {
		if (s->values[i] && s->values[i] != s->num[i])
			free(s->values[i]);
		s->values[i] = NULL;
		s->lengths[i] = 0;
		s->formats[i] = 0;
		s->types[i] = 0;
	}
}

static void stmt_free(struct sql_stmt *s)
{
	if (!s)
		return;
	stmt_clear_run(s);
	stmt_clear_binds(s);
	for (int i = 0; i < s->nblob; i++)
		free(s->blob[i]);
	free(s->blob);
	free(s->blobcap);
	free(s->pgsql);
	free(s);
}

static void pg_disconnect(struct sql_conn *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->ncache; i++)
		stmt_free(c->cache[i]);
	PQfinish(c->pg);
	free(c);
}

static void quiet(void *arg, const char *message)
{
	/* NOTICEs ("relation already exists, skipping") are not errors */
}

static int pg_connect(struct sql_conn **out, const char *url)
{
	/* Later entries override earlier ones: the URL's own settings win
	 * over these defaults. */
	/* lock_timeout: a row another transaction holds for over 10 s makes
	 * the request 503 (55P03), as SQLite's busy timeout does */
	const char *keys[] = {"connect_timeout", "application_name", "options", "dbname", NULL};
	const char *vals[] = {"5", "ckptd", "-c lock_timeout=10s", url, NULL};
	struct sql_conn *c = calloc(1, sizeof(*c));
	int err;

	if (!c)
		return ck_error(CK_ENOMEM, "index: out of memory");
	c->pg = PQconnectdbParams(keys, vals, 1);
	if (!c->pg) {
		free(c);
		return ck_error(CK_ENOMEM, "index: out of memory");
	}
	if (PQstatus(c->pg) != CONNECTION_OK) {
		char msg[400];
		snprintf(msg, sizeof(msg), "%s", PQerrorMessage(c->pg));
		msg[strcspn(msg, "\n")] = '\0';
		/* a malformed URL is the caller's; an unreachable server is not */
		err = strstr(msg, "invalid") || strstr(msg, "missing")
			  ? ck_error(CK_EINVALID, "index: %s", msg)
			  : ck_error(CK_EUNAVAIL, "index: cannot connect to PostgreSQL: %s", msg);
		pg_disconnect(c);
		return err;
	}
	PQsetNoticeProcessor(c->pg, quiet, NULL);
	*out = c;
	return 0;
}

static int pg_usable(struct sql_conn *c)
{
	/* reads what the server sent meanwhile, without waiting: a server that
	 * restarted closed this socket, and the connection is then bad */
	if (!c->broken && PQconsumeInput(c->pg) == 0)
		c->broken = 1;
	return !c->broken && !conn_lost(c) && PQtransactionStatus(c->pg) == PQTRANS_IDLE;
}

static int run(struct sql_conn *c, const char *sql, const char *what)
{
	PGresult *res = PQexec(c->pg, sql);
	ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	int err = 0;

	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
		err = pg_error(c, res, what);
	PQclear(res);
	return err;
}

static int pg_exec(struct sql_conn *c, const char *sql)
{
	return run(c, sql, "exec");
}

static int pg_begin(struct sql_conn *c, enum sql_txn kind)
{
	int err;

	switch (kind) {
	case SQL_TXN_READ: return run(c, "BEGIN ISOLATION LEVEL REPEATABLE READ", "begin");
	case SQL_TXN_WRITE: return run(c, "BEGIN", "begin");
	case SQL_TXN_CLAIM:
		if ((err = run(c, "BEGIN", "begin")) < 0)
			return err;
		return run(c, "SELECT pg_advisory_xact_lock_shared(" LOCK_REAP ")", "claim lock");
	case SQL_TXN_REAP:
		if ((err = run(c, "BEGIN", "begin")) < 0)
			return err;
		return run(c, "SELECT pg_advisory_xact_lock(" LOCK_REAP ")", "reap lock");
	case SQL_TXN_MIGRATE:
		if ((err = run(c, "BEGIN", "begin")) < 0)
			return err;
		return run(c, "SELECT pg_advisory_xact_lock(" LOCK_MIGRATE ")", "migration lock");
	}
	return ck_error(CK_EIO, "index: unknown transaction kind %d", (int)kind);
}

static int pg_commit(struct sql_conn *c)
{
	PGresult *res = PQexec(c->pg, "COMMIT");
	int err = 0;

	if (!res || PQresultStatus(res) != PGRES_COMMAND_OK)
		err = pg_error(c, res, "commit");
	else if (!strcmp(PQcmdStatus(res), "ROLLBACK")) /* the transaction had failed */
		err = ck_error(CK_EIO, "index: the transaction was rolled back");
	PQclear(res);
	return err;
}

static void pg_rollback(struct sql_conn *c)
{
	for (size_t i = 0; i < c->ncache; i++)
		stmt_clear_run(c->cache[i]);
	if (!conn_lost(c) && PQtransactionStatus(c->pg) != PQTRANS_IDLE) {
		PGresult *res = PQexec(c->pg, "ROLLBACK");
		if (!res || PQresultStatus(res) != PGRES_COMMAND_OK)
			c->broken = 1;
		PQclear(res);
	}
}

/* Rewrites ?N (and bare ?) parameters as $N, outside quotes. */
static int translate(struct sql_stmt *s, const char *sql)
{
	size_t n = strlen(sql);
	char *out = malloc(n * 2 + 1), *w = out;
	char quote = 0;
	int seq = 0, max = 0;

	if (!out)
		return ck_error(CK_ENOMEM, "index: out of memory");
	for (const char *p = sql; *p; p++) {
		if (quote) {
			if (*p == quote)
				quote = 0;
			*w++ = *p;
			continue;
		}
		if (*p == '\'' || *p == '"') {
			quote = *p;
			*w++ = *p;
			continue;
		}
		if (*p != '?') {
			*w++ = *p;
			continue;
		}
		int k;
		if (p[1] >= '0' && p[1] <= '9') {
			k = 0;
			while (p[1] >= '0' && p[1] <= '9')
				k = k * 10 + (*++p - '0');
		} else {
			k = ++seq;
		}
		if (k < 1 || k > MAX_PARAMS) {
			free(out);
			return ck_error(CK_EIO, "index: parameter %d out of range in %.80s", k,
					sql);
		}
		w += sprintf(w, "$%d", k);
		s->referenced |= 1u << (k - 1);
		if (k > max)
			max = k;
	}
	*w = '\0';
	s->pgsql = out;
	s->nparams = max;
	return 0;
}

static int pg_prepare(struct sql_stmt **out, struct sql_conn *c, const char *sql)
{
	struct sql_stmt *s;
	int err;

	for (size_t i = 0; i < c->ncache; i++)
		if (c->cache[i]->sql == sql) {
			s = c->cache[i];
			stmt_clear_run(s);
			stmt_clear_binds(s);
			*out = s;
			return 0;
		}
	if (!(s = calloc(1, sizeof(*s))))
		return ck_error(CK_ENOMEM, "index: out of memory");
	s->c = c;
	s->sql = sql;
	s->row = -1;
	if ((err = translate(s, sql)) < 0) {
		free(s);
		return err;
	}
	if (c->ncache == STMT_CACHE) { /* sized for every statement: evict the oldest */
		stmt_free(c->cache[0]);
		memmove(c->cache, c->cache + 1, (STMT_CACHE - 1) * sizeof(c->cache[0]));
		c->ncache--;
	}
	c->cache[c->ncache++] = s;
	*out = s;
	return 0;
}

static void bind_num(struct sql_stmt *s, int i, unsigned type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void bind_num(struct sql_stmt *s, int i, unsigned type, const char *fmt, ...)
{
	va_list ap;

	if (i < 1 || i > MAX_PARAMS)
		return;
	i--;
	if (s->values[i] && s->values[i] != s->num[i])
		free(s->values[i]);
	va_start(ap, fmt);
	vsnprintf(s->num[i], sizeof(s->num[i]), fmt, ap);
	va_end(ap);
	s->values[i] = s->num[i];
	s->lengths[i] = 0;
	s->formats[i] = 0;
	s->types[i] = type;
}

static void pg_bind_int(struct sql_stmt *s, int i, int64_t v)
{
	bind_num(s, i, OID_INT8, "%" PRId64, v);
}

static void pg_bind_double(struct sql_stmt *s, int i, double v)
{
	bind_num(s, i, OID_FLOAT8, "%.17g", v);
}

static void set_value(struct sql_stmt *s, int i, char *v, int len, int format, unsigned type)
{
	if (i < 1 || i > MAX_PARAMS) {
		free(v);
		return;
	}
	i--;
	if (s->values[i] && s->values[i] != s->num[i])
		free(s->values[i]);
	s->values[i] = v;
	s->lengths[i] = len;
	s->formats[i] = format;
	s->types[i] = type;
}

static void pg_bind_null(struct sql_stmt *s, int i)
{
	set_value(s, i, NULL, 0, 0, 0);
}

/* An allocation failure leaves the parameter NULL: statements that need
 * the value then fail on a NOT NULL constraint rather than store less. */
static void pg_bind_text(struct sql_stmt *s, int i, const char *v)
{
	if (!v) {
		pg_bind_null(s, i);
		return;
	}
	/* unknown, not text: the server takes the type from the context, so
	 * a string goes into a jsonb column as well as a text one */
	set_value(s, i, strdup(v), 0, 0, 0);
}

static void pg_bind_blob(struct sql_stmt *s, int i, const void *p, size_t n)
{
	char *v = malloc(n ? n : 1);

	if (v)
		memcpy(v, p, n);
	set_value(s, i, v, (int)n, 1, OID_BYTEA);
}

/*
 * Arrays go in PostgreSQL's binary form (array_recv): the number of
 * dimensions (1), a has-nulls flag (0), the element type, the length and
 * lower bound (1), then each element as a length and its bytes, all
 * big-endian. Nothing is quoted, so any string or byte goes through as is.
 * An allocation failure (or an array over 2 GB) leaves the parameter NULL,
 * which the statements reject.
 */
struct array {
	char *p;
	size_t n, cap;
};

static void put(struct array *a, const void *p, size_t n)
{
	if (!a->p)
		return;
	if (a->n + n > a->cap) {
		size_t cap = a->cap * 2 > a->n + n ? a->cap * 2 : a->n + n;
		char *q = cap < INT32_MAX ? realloc(a->p, cap) : NULL;
		if (!q) {
			free(a->p);
			a->p = NULL;
			return;
		}
		a->p = q;
		a->cap = cap;
	}
	memcpy(a->p + a->n, p, n);
	a->n += n;
}

static void put32(struct array *a, uint32_t v)
{
	uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};

	put(a, b, 4);
}

static void array_start(struct array *a, unsigned elem, size_t n, size_t bytes)
{
	a->n = 0;
	a->cap = 20 + n * 4 + bytes;
	a->p = a->cap < INT32_MAX ? malloc(a->cap) : NULL;
	put32(a, n ? 1 : 0);
	put32(a, 0);
	put32(a, elem);
	if (n) {
		put32(a, (uint32_t)n);
		put32(a, 1);
	}
}

static void array_bind(struct sql_stmt *s, int i, struct array *a, unsigned type)
{
	if (!a->p) {
		pg_bind_null(s, i);
		return;
	}
	set_value(s, i, a->p, (int)a->n, 1, type);
}

static void pg_bind_int_array(struct sql_stmt *s, int i, const int64_t *v, size_t n)
{
	struct array a;

	array_start(&a, OID_INT8, n, n * 8);
	for (size_t k = 0; k < n; k++) {
		put32(&a, 8);
		put32(&a, (uint32_t)((uint64_t)v[k] >> 32));
		put32(&a, (uint32_t)v[k]);
	}
	array_bind(s, i, &a, OID_INT8_ARRAY);
}

static void pg_bind_blob_array(struct sql_stmt *s, int i, const void *p, size_t width, size_t n)
{
	struct array a;

	array_start(&a, OID_BYTEA, n, n * width);
	for (size_t k = 0; k < n; k++) {
		put32(&a, (uint32_t)width);
		put(&a, (const char *)p + k * width, width);
	}
	array_bind(s, i, &a, OID_BYTEA_ARRAY);
}

static void pg_bind_text_array(struct sql_stmt *s, int i, const char *const *v, size_t n)
{
	struct array a;
	size_t bytes = 0;

	for (size_t k = 0; k < n; k++)
		bytes += strlen(v[k]);
	array_start(&a, OID_TEXT, n, bytes);
	for (size_t k = 0; k < n; k++) {
		size_t len = strlen(v[k]);
		put32(&a, (uint32_t)len);
		put(&a, v[k], len);
	}
	array_bind(s, i, &a, OID_TEXT_ARRAY);
}

/* The prepared name for the bound types, preparing it on first use. */
static int prepared_name(const char **name, struct sql_stmt *s)
{
	struct sql_conn *c = s->c;
	PGresult *res;
	int k;

	/* A parameter the text never uses still needs a type: text. */
	for (int i = 0; i < s->nparams; i++)
		if (!s->types[i] && !(s->referenced & (1u << i)))
			s->types[i] = OID_TEXT;
	for (k = 0; k < s->nsigs; k++)
		if (!memcmp(s->sigs[k].types, s->types, sizeof(s->types)))
			break;
	if (k == s->nsigs) {
		if (k == MAX_SIGS) { /* reuse the last slot */
			k = MAX_SIGS - 1;
			s->nsigs--;
		}
		snprintf(s->sigs[k].name, sizeof(s->sigs[k].name), "ck%u", c->nextname++);
		memcpy(s->sigs[k].types, s->types, sizeof(s->types));
		res = PQprepare(c->pg, s->sigs[k].name, s->pgsql, s->nparams, s->types);
		if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
			int err = pg_error(c, res, "prepare");
			PQclear(res);
			return err;
		}
		PQclear(res);
		s->nsigs = k + 1;
	}
	*name = s->sigs[k].name;
	return 0;
}

static int pg_step(struct sql_stmt *s)
{
	if (!s->ran) {
		const char *name = NULL;
		ExecStatusType st;
		int err;

		s->ran = 1;
		if ((err = prepared_name(&name, s)) < 0)
			return err;
		s->res = PQexecPrepared(s->c->pg, name, s->nparams, (const char *const *)s->values,
					s->lengths, s->formats, 0);
		st = s->res ? PQresultStatus(s->res) : PGRES_FATAL_ERROR;
		if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
			err = pg_error(s->c, s->res, "query");
			stmt_clear_run(s);
			s->ran = 1;
			return err;
		}
		s->nrows = st == PGRES_TUPLES_OK ? PQntuples(s->res) : 0;
		s->row = -1;
	}
	if (s->row + 1 < s->nrows) {
		s->row++;
		return 1;
	}
	return 0;
}

static int pg_column_null(struct sql_stmt *s, int i)
{
	return !s->res || s->row < 0 || PQgetisnull(s->res, s->row, i);
}

static const char *pg_column_text(struct sql_stmt *s, int i)
{
	if (pg_column_null(s, i))
		return "";
	return PQgetvalue(s->res, s->row, i);
}

static int64_t pg_column_int(struct sql_stmt *s, int i)
{
	const char *t = pg_column_text(s, i);

	if (*t == 't' || *t == 'f') /* a boolean */
		return *t == 't';
	return strtoll(t, NULL, 10);
}

static double pg_column_double(struct sql_stmt *s, int i)
{
	return strtod(pg_column_text(s, i), NULL);
}

/* Decodes bytea's text form ("\x0a1b...") into the column's buffer. */
static const void *pg_column_blob(struct sql_stmt *s, int i, size_t *n)
{
	const char *t = pg_column_text(s, i);
	size_t len = strlen(t), want;

	*n = 0;
	if (len < 2 || t[0] != '\\' || t[1] != 'x' || i < 0 || i > 64)
		return NULL;
	want = (len - 2) / 2;
	if (i >= s->nblob) {
		uint8_t **b = realloc(s->blob, (size_t)(i + 1) * sizeof(*b));
		size_t *cap = b ? realloc(s->blobcap, (size_t)(i + 1) * sizeof(*cap)) : NULL;
		if (b)
			s->blob = b;
		if (!cap)
			return NULL;
		s->blobcap = cap;
		for (int k = s->nblob; k <= i; k++) {
			s->blob[k] = NULL;
			s->blobcap[k] = 0;
		}
		s->nblob = i + 1;
	}
	if (s->blobcap[i] < want + 1) {
		uint8_t *b = realloc(s->blob[i], want + 1);
		if (!b)
			return NULL;
		s->blob[i] = b;
		s->blobcap[i] = want + 1;
	}
	for (size_t k = 0; k < want; k++) {
		int hi = hex_value(t[2 + 2 * k]), lo = hex_value(t[3 + 2 * k]);
		if (hi < 0 || lo < 0)
			return NULL;
		s->blob[i][k] = (uint8_t)(hi << 4 | lo);
	}
	*n = want;
	return s->blob[i];
}

static int64_t pg_changes(struct sql_stmt *s)
{
	const char *t = s->res ? PQcmdTuples(s->res) : "";

	return *t ? strtoll(t, NULL, 10) : 0;
}

static int pg_schema_version(struct sql_conn *c, int *version)
{
	PGresult *res;
	int err;

	*version = 0;
	if ((err = run(c, "CREATE TABLE IF NOT EXISTS ckptd_schema(version INTEGER NOT NULL)",
		       "schema version")) < 0)
		return err;
	res = PQexec(c->pg, "SELECT max(version) FROM ckptd_schema");
	if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
		err = pg_error(c, res, "schema version");
		PQclear(res);
		return err;
	}
	if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
		*version = atoi(PQgetvalue(res, 0, 0));
	PQclear(res);
	return 0;
}

static int pg_schema_version_set(struct sql_conn *c, int version)
{
	char sql[96];
	int err;

	if ((err = run(c, "DELETE FROM ckptd_schema", "schema version")) < 0)
		return err;
	snprintf(sql, sizeof(sql), "INSERT INTO ckptd_schema(version) VALUES(%d)", version);
	return run(c, sql, "schema version");
}

const struct sql_driver sql_pg_driver = {
    .name = "postgresql",
    .dialect = SQL_POSTGRES,
    .connect = pg_connect,
    .disconnect = pg_disconnect,
    .usable = pg_usable,
    .exec = pg_exec,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .prepare = pg_prepare,
    .bind_int = pg_bind_int,
    .bind_double = pg_bind_double,
    .bind_text = pg_bind_text,
    .bind_blob = pg_bind_blob,
    .bind_null = pg_bind_null,
    .bind_int_array = pg_bind_int_array,
    .bind_blob_array = pg_bind_blob_array,
    .bind_text_array = pg_bind_text_array,
    .step = pg_step,
    .column_null = pg_column_null,
    .column_int = pg_column_int,
    .column_double = pg_column_double,
    .column_text = pg_column_text,
    .column_blob = pg_column_blob,
    .changes = pg_changes,
    .schema_version = pg_schema_version,
    .schema_version_set = pg_schema_version_set,
};
