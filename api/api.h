/*
 * api.h: the HTTP API of ckptd (SPEC 3), independent of libmicrohttpd.
 *
 * server/http.c matches each request to a route (api_route_find) as soon as
 * its headers arrive, checks the caller's token (api_authorize) before any
 * body is read, receives the body as the route asks (an upload spooled to an
 * unlinked file in the store's tmp directory, or a small JSON body in
 * memory), then calls api_handle, which always produces a response: errors
 * become JSON bodies (api/errors.c).
 */
#ifndef CK_API_H
#define CK_API_H

#include <stddef.h>
#include <stdint.h>

#include "request.h"

struct app_config {
	const char *data_dir;  /* this instance's directory (spools; by default
				  also index.sqlite and blobs/) */
	const char *index_url; /* NULL = sqlite:DATA/index.sqlite */
	const char *blobs_url; /* NULL = DATA/blobs */
	const char *s3_endpoint, *s3_region;
	const char *token_file; /* NULL = no tokens: everything open */
	int auth_read;		/* 1: reads need a read token too */
	uint64_t max_upload;	/* bytes; 0 = no limit */
	int compress;		/* 1 = codec per blob, 0 = raw */
	int64_t lease;		/* seconds a claim lives unrenewed; 0 = default */
	int64_t resume_grace;	/* seconds the blobs of a broken-off upload stay for
				   its retry (SPEC 3.1); 0 = none */
	int64_t stage_timeout;	/* seconds a staged checkpoint waits for its
				   commit (SPEC 3.2) */
	int clean;		/* 1 = remove leftovers at open */
};

struct app;

/* Opens the store (storage/store.h: creating it, migrating the index, and
 * with cfg->clean removing leftovers of earlier processes) and loads tokens.
 * *out belongs to the caller (app_close). The caller holds the data
 * directory's lock (one process per data directory). */
int app_open(struct app **out, const struct app_config *cfg);
void app_close(struct app *app);

/* `ckptd verify`: re-hashes every blob, printing bad ones to stdout and a
 * progress bar to stderr when it is a terminal. Returns the number of bad
 * blobs (0 = all good), or a negative error. */
int app_verify(struct app *app, int progress);

/* `ckptd gc`: applies every model's retention policy and removes blobs no
 * checkpoint names. *removed counts blob files removed. */
int app_gc(struct app *app, uint64_t *removed);

/* `ckptd migrate`: copies the store into the backends `to` names (its
 * index_url, blobs_url, s3 settings; data_dir for temporary files), then
 * verifies them (storage/store.h store_migrate). Prints what it did. */
int app_migrate(struct app *app, const struct app_config *to, int progress);

/* `ckptd stats`: the /stats JSON as text (caller frees). */
int app_stats_text(char **out, struct app *app);

/* The directory for spool files (this instance's). Borrowed for the app's
 * lifetime. */
const char *app_tmp_dir(const struct app *app);
uint64_t app_max_upload(const struct app *app);
/* The kinds of the store's index and blob backends, for the log. */
const char *app_index_kind(const struct app *app);
const char *app_blobs_kind(const struct app *app);

enum body_kind {
	BODY_NONE = 0, /* the body, if any, is ignored */
	BODY_UPLOAD,   /* a checkpoint: raw body or multipart form */
	BODY_JSON,     /* a small JSON document, held in memory */
	BODY_JSON_BIG, /* a JSON document of up to API_MAX_JSON_BIG bytes (a
			  list of 100,000 blob hashes), held in memory */
};

#define API_MAX_JSON_BODY (1 << 20)
#define API_MAX_JSON_BIG  (16 << 20)

struct route;

/* Matches r->method and r->path, filling r->params. NULL when nothing
 * matches; then *status is 404 (no such path) or 405 (path known, method
 * not), and out (when non-NULL) holds the error response. */
const struct route *api_route_find(struct resp *out, int *status, struct req *r);
enum body_kind api_route_body(const struct route *rt);
/* A stable label for logs and metrics ("checkpoint.file"). */
const char *api_route_name(const struct route *rt);

/* Resolves the Authorization header into r->scope and checks it against
 * what rt needs. Returns 0, or fills out with 401/403 and returns -1. Tokens
 * are compared in constant time and never logged. */
int api_authorize(struct resp *out, struct app *app, const struct route *rt, struct req *r);

/* Runs rt's handler. Always fills out (an error is a JSON response). */
void api_handle(struct resp *out, struct app *app, const struct route *rt, struct req *r);

/* The body of an upload route, streamed (api/upload.c): begin opens an
 * unlinked spool file in the store's tmp directory (r->body_fd) and starts
 * no thread; write appends to it and enforces --max-upload-size
 * (CK_ETOOBIG), while the app's pool of hashing threads (shared by all
 * uploads) hashes the whole body and, as they pass, the records of a zip
 * (so ingest need not read tensor data twice); end finishes what the pool
 * has not hashed yet on the caller's thread and sets r->body_size and
 * r->body_sha256 (or fails with CK_EIO); free closes the spool (accepts a
 * request with no upload). For a file of a staged checkpoint (SPEC 3.2),
 * begin first marks the write in the index, so the body is refused before
 * it is sent when the checkpoint is not staged, and a commit meanwhile
 * answers 409; the mark is renewed as the body streams and dropped by free
 * unless upload_file_written said the file is in. One thread at a time per
 * request. */
int api_upload_begin(struct app *app, const struct route *rt, struct req *r);
int api_upload_write(struct app *app, struct req *r, const void *p, size_t n);
int api_upload_end(struct req *r);
void api_upload_free(struct req *r);

/* Records one finished request for /metrics. rt may be NULL (no route). */
void api_observe(struct app *app, const struct route *rt, int status, uint64_t bytes_in,
		 uint64_t bytes_out, double seconds);

/* Fills out with the JSON error for code (a CK_E* value), using the
 * thread's error message. */
void api_error(struct resp *out, int code);

/* Fills out with {"error": name, "message": ...} and the given status. */
void api_error_status(struct resp *out, int status, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
