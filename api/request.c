/*
 * request.c: helpers on struct req and struct resp (see request.h).
 */
#include "request.h"

#include <stdlib.h>
#include <string.h>

#include "../common/err.h"

const char *req_query(const struct req *r, const char *name)
{
	for (size_t i = 0; i < r->nquery; i++)
		if (!strcmp(r->query[i].key, name))
			return r->query[i].value ? r->query[i].value : "";
	return NULL;
}

void resp_header(struct resp *r, const char *key, const char *value)
{
	if (r->nheaders >= RESP_MAX_HEADERS)
		return;
	char *k = strdup(key), *v = strdup(value);
	if (!k || !v) {
		free(k);
		free(v);
		return;
	}
	r->headers[r->nheaders].key = k;
	r->headers[r->nheaders].value = v;
	r->nheaders++;
}

int resp_text(struct resp *r, int status, const char *type, const char *text)
{
	size_t n = strlen(text);
	char *b = malloc(n + 1);

	if (!b)
		return ck_error(CK_ENOMEM, "out of memory");
	memcpy(b, text, n + 1);
	free(r->body);
	r->status = status;
	r->body = b;
	r->body_len = n;
	r->content_type = type;
	return 0;
}

void resp_release(struct resp *r)
{
	for (size_t i = 0; i < r->nheaders; i++) {
		free(r->headers[i].key);
		free(r->headers[i].value);
	}
	r->nheaders = 0;
	free(r->body);
	r->body = NULL;
	if (r->gen.free && r->gen.ctx)
		r->gen.free(r->gen.ctx);
	memset(&r->gen, 0, sizeof(r->gen));
}
