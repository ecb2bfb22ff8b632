/*
 * routes.c: the route table (method, pattern, handler, body, scope) and the
 * matcher, token check and dispatch (see api.h).
 *
 * Patterns are split on '/': a literal segment, ":" for one parameter
 * segment, or "*" for the rest of the path (a tensor's JSON Pointer). HEAD is
 * matched as GET; the server sends no body for it.
 */
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/err.h"
#include "internal.h"

struct route {
	const char *method;
	const char *pattern;
	handler_fn fn;
	enum body_kind body;
	enum scope scope; /* SCOPE_READ: a read; SCOPE_WRITE: a write */
	const char *name;
};

#define M "/api/v1/models/:"
static const struct route routes[] = {
    {"GET", "/api/v1/healthz", h_healthz, BODY_NONE, SCOPE_NONE, "healthz"},
    {"GET", "/api/v1/openapi.json", h_openapi, BODY_NONE, SCOPE_NONE, "openapi"},
    {"GET", "/api/v1/stats", h_stats, BODY_NONE, SCOPE_READ, "stats"},
    {"GET", "/api/v1/metrics", h_metrics, BODY_NONE, SCOPE_READ, "metrics"},
    {"GET", "/metrics", h_metrics, BODY_NONE, SCOPE_READ, "metrics"},
    {"GET", "/api/v1/models", h_models, BODY_NONE, SCOPE_READ, "models"},
    {"DELETE", M, h_model_delete, BODY_NONE, SCOPE_WRITE, "model.delete"},
    {"GET", M "/retention", h_retention_get, BODY_NONE, SCOPE_READ, "retention.get"},
    {"PUT", M "/retention", h_retention_put, BODY_JSON, SCOPE_WRITE, "retention.put"},
    {"POST", M "/checkpoints", h_upload, BODY_UPLOAD, SCOPE_WRITE, "checkpoint.upload"},
    {"PUT", M "/checkpoints", h_upload, BODY_UPLOAD, SCOPE_WRITE, "checkpoint.upload"},
    {"GET", M "/checkpoints", h_list, BODY_NONE, SCOPE_READ, "checkpoint.list"},
    {"GET", M "/checkpoints/:", h_get, BODY_NONE, SCOPE_READ, "checkpoint.get"},
    {"PATCH", M "/checkpoints/:", h_patch, BODY_JSON, SCOPE_WRITE, "checkpoint.patch"},
    {"DELETE", M "/checkpoints/:", h_delete, BODY_NONE, SCOPE_WRITE, "checkpoint.delete"},
    {"GET", M "/checkpoints/:/file", h_file, BODY_NONE, SCOPE_READ, "checkpoint.file"},
    {"GET", M "/checkpoints/:/files", h_files, BODY_NONE, SCOPE_READ, "checkpoint.files"},
    {"GET", M "/checkpoints/:/files/*", h_file_one, BODY_NONE, SCOPE_READ, "checkpoint.file.get"},
    {"PUT", M "/checkpoints/:/files/*", h_file_put, BODY_UPLOAD, SCOPE_WRITE,
     "checkpoint.file.put"},
    {"POST", M "/checkpoints/:/commit", h_commit, BODY_NONE, SCOPE_WRITE, "checkpoint.commit"},
    {"GET", M "/checkpoints/:/archive", h_archive, BODY_NONE, SCOPE_READ, "checkpoint.archive"},
    {"GET", M "/checkpoints/:/state_dict", h_state_dict, BODY_NONE, SCOPE_READ,
     "checkpoint.state_dict"},
    {"GET", M "/checkpoints/:/tensors/*", h_tensor, BODY_NONE, SCOPE_READ, "checkpoint.tensor"},
    {"GET", M "/checkpoints/:/diff/:", h_diff, BODY_NONE, SCOPE_READ, "checkpoint.diff"},
    {"POST", "/api/v1/blobs/missing", h_blobs_missing, BODY_JSON_BIG, SCOPE_WRITE, "blobs.missing"},
    {"GET", "/", h_dashboard, BODY_NONE, SCOPE_NONE, "dashboard"},
    {"GET", "/ui/*", h_dashboard, BODY_NONE, SCOPE_NONE, "dashboard"},
};
#undef M
#define NROUTES (sizeof(routes) / sizeof(routes[0]))

/* Matches path against pattern; params are strdup'ed into r. */
static int match(const char *pattern, const char *path, struct req *r, int fill)
{
	const char *p = pattern, *s = path;
	size_t np = 0;

	while (*p && *s) {
		if (*p == '*') {
			if (fill)
				r->params[np] = strdup(s);
			np++;
			s += strlen(s);
			p++;
			break;
		}
		if (*p == ':') {
			const char *end = strchr(s, '/');
			size_t n = end ? (size_t)(end - s) : strlen(s);
			if (n == 0 || np >= REQ_MAX_PARAMS)
				return 0;
			if (fill)
				r->params[np] = strndup(s, n);
			np++;
			s += n;
			p++;
			continue;
		}
		if (*p != *s)
			return 0;
		p++;
		s++;
	}
	if (*p == '*' && !*s) { /* "/ui/" matches the rest pattern with an empty rest */
		if (fill)
			r->params[np] = strdup("");
		np++;
		p++;
	}
	if (*p || *s)
		return 0;
	if (fill)
		r->nparams = np;
	return 1;
}

const struct route *api_route_find(struct resp *out, int *status, struct req *r)
{
	const char *method = strcmp(r->method, "HEAD") ? r->method : "GET";
	int path_known = 0;

	for (size_t i = 0; i < NROUTES; i++) {
		if (!match(routes[i].pattern, r->path, r, 0))
			continue;
		path_known = 1;
		if (strcmp(routes[i].method, method))
			continue;
		match(routes[i].pattern, r->path, r, 1);
		return &routes[i];
	}
	*status = path_known ? 405 : 404;
	if (out) {
		if (path_known)
			api_error_status(out, 405, "method_not_allowed", "%s is not allowed on %s",
					 r->method, r->path);
		else
			api_error_status(out, 404, "not_found",
					 "no such endpoint: %s %s (the API is under /api/v1)",
					 r->method, r->path);
	}
	return NULL;
}

enum body_kind api_route_body(const struct route *rt)
{
	return rt->body;
}

const char *api_route_name(const struct route *rt)
{
	return rt ? rt->name : "none";
}

static enum scope token_scope(struct app *app, const char *token)
{
	enum scope best = SCOPE_NONE;
	size_t n = strlen(token);

	/* Every token is compared (no early exit) in constant time. */
	for (size_t i = 0; i < app->ntokens; i++) {
		size_t m = strlen(app->tokens[i].token);
		int same = n == m && CRYPTO_memcmp(token, app->tokens[i].token, n) == 0;
		if (same && app->tokens[i].scope > best)
			best = app->tokens[i].scope;
	}
	return best;
}

int api_authorize(struct resp *out, struct app *app, const struct route *rt, struct req *r)
{
	const char *h = r->header ? r->header(r, "Authorization") : NULL;
	enum scope need = rt->scope;

	if (app->ntokens == 0) {
		r->scope = SCOPE_ADMIN;
		return 0;
	}
	r->scope = SCOPE_NONE;
	if (h && !strncasecmp(h, "Bearer ", 7))
		r->scope = token_scope(app, h + 7);
	if (need == SCOPE_NONE || (need == SCOPE_READ && !app->cfg.auth_read))
		return 0;
	if (r->scope >= need)
		return 0;
	if (!h || r->scope == SCOPE_NONE) {
		api_error_status(out, 401, "unauthorized",
				 "%s needs a token: send 'Authorization: Bearer <token>' with a "
				 "token from the server's token file",
				 need == SCOPE_WRITE ? "this write" : "this read");
		resp_header(out, "WWW-Authenticate", "Bearer realm=\"ckptd\"");
	} else {
		api_error_status(out, 403, "forbidden",
				 "this token has '%s' scope; %s needs '%s' or 'admin'",
				 r->scope == SCOPE_READ ? "read" : "write", r->method,
				 need == SCOPE_WRITE ? "write" : "read");
	}
	return -1;
}

void api_handle(struct resp *out, struct app *app, const struct route *rt, struct req *r)
{
	int err;

	ck_error_clear();
	err = rt->fn(out, app, r);
	if (err < 0)
		api_error(out, err);
}
