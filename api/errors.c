/*
 * errors.c: the one place where an error code becomes an HTTP status and a
 * JSON body {"error": "<code>", "message": "<what and what to do>"} (SPEC 3).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "internal.h"

static int status_of(int code)
{
	switch (code) {
	case CK_ENOTFOUND: return 404;
	case CK_EEXISTS: return 409;
	case CK_ECONFLICT: return 409;
	case CK_EINVALID: return 400;
	case CK_ECORRUPT: return 422;
	case CK_ETOOBIG: return 413;
	case CK_ENOSPC: return 507;
	case CK_EFORMAT: return 415;
	case CK_EUNAVAIL: return 503;
	}
	return 500;
}

void api_error_status(struct resp *out, int status, const char *name, const char *fmt, ...)
{
	char msg[1200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	utf8_sanitize(msg);
	resp_release(out);
	json_reply(out, status, json_pack("{s:s, s:s}", "error", name, "message", msg));
}

void api_error(struct resp *out, int code)
{
	const char *msg = ck_errmsg();

	if (!msg[0])
		msg = code == CK_ENOMEM ? "ckptd ran out of memory" : "internal error";
	api_error_status(out, status_of(code), ck_err_name(code), "%s", msg);
}

int json_reply(struct resp *out, int status, json_t *v)
{
	/* 15 digits: a loss sent as 0.1 reads back as 0.1, not 0.10000000000000001 */
	char *s = v ? json_dumps(v, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;

	json_decref(v);
	if (!s) {
		/* last resort: a fixed body that needs no allocation by jansson */
		s = NULL;
		out->status = 500;
		out->content_type = "application/json";
		return resp_text(
		    out, 500, "application/json",
		    "{\"error\":\"no_memory\",\"message\":\"ckptd ran out of memory\"}");
	}
	free(out->body);
	out->status = status;
	out->body = s;
	out->body_len = strlen(s);
	out->content_type = "application/json";
	return 0;
}
