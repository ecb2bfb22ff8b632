/*
 * request.h: the request and response that handlers work on (STYLE 9).
 *
 * server/http.c fills a struct req from libmicrohttpd's callbacks (method,
 * decoded path, query arguments, the body already spooled to an unlinked
 * file or, for small JSON bodies, held in memory) and turns a struct resp
 * into an HTTP response. Handlers in api/ never see libmicrohttpd.
 *
 * A response body is either bytes in memory (owned by the response) or a
 * generator: a total size and a read function called with absolute
 * positions, so the server can serve HEAD and Range requests of any
 * generated file without the handler knowing.
 */
#ifndef CK_REQUEST_H
#define CK_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "../common/hash.h"

struct kv {
	char *key;
	char *value;
};

enum scope {
	SCOPE_NONE = 0,
	SCOPE_READ = 1,
	SCOPE_WRITE = 2,
	SCOPE_ADMIN = 3,
};

#define REQ_MAX_PARAMS 4

struct req {
	const char *method; /* "GET", "POST", ... */
	const char *path;   /* percent-decoded path, without the query */
	struct kv *query;   /* query arguments (and form fields of a multipart
			       upload) in order; repeated keys repeat */
	size_t nquery;
	char *params[REQ_MAX_PARAMS]; /* route parameters, decoded */
	size_t nparams;

	/* Looks up a request header (case-insensitive); NULL when absent. */
	const char *(*header)(const struct req *r, const char *name);
	void *conn; /* for header(): the server's connection, opaque here */

	/* The body. For upload routes: an unlinked spool file, its size and
	 * SHA-256 (of the file part only, for multipart). For JSON routes:
	 * body/body_len in memory (bounded). */
	int body_fd;
	uint64_t body_size;
	struct hash body_sha256;
	char *body;
	size_t body_len;
	void *upload; /* the api's state while an upload streams in */

	enum scope scope; /* what the caller's token allows */
};

/* The first value of query argument name, or NULL. */
const char *req_query(const struct req *r, const char *name);

/* A generated body: read fills buf with up to n bytes from absolute position
 * pos and returns the count (> 0), or a negative CK_E* code on failure (the
 * server then aborts the connection: a download never silently serves bad
 * bytes). free releases ctx; both run on the server's threads, one call at a
 * time per response. */
struct resp_gen {
	uint64_t size;
	long (*read)(void *ctx, uint64_t pos, uint8_t *buf, size_t n);
	void (*free)(void *ctx);
	void *ctx;
	int rangeable; /* 1: the server answers Range requests on it */
	/* Called (when set) before the first read of a Range response: the
	 * generator then cannot count on seeing every byte in order. */
	void (*ranged)(void *ctx);
};

#define RESP_MAX_HEADERS 12

struct resp {
	int status;
	struct kv headers[RESP_MAX_HEADERS]; /* owned */
	size_t nheaders;
	char *body; /* owned (malloc), body_len bytes */
	size_t body_len;
	struct resp_gen gen;	  /* used when gen.read is set */
	const char *content_type; /* static string */
};

/* Adds a header (copied). Silently drops headers past RESP_MAX_HEADERS,
 * which is a program bug caught by tests. */
void resp_header(struct resp *r, const char *key, const char *value);

/* Sets a text body (copied) with content type type (a static string). */
int resp_text(struct resp *r, int status, const char *type, const char *text);

/* Frees what r owns (headers, body, generator ctx). */
void resp_release(struct resp *r);

#endif
