/*
 * openapi.c: GET /api/v1/openapi.json, the HTTP API described for machines
 * (OpenAPI 3.1). The document is api/openapi.json, written by hand and
 * compiled into the binary by tools/embed.sh (the symbol below);
 * tests/integration/test_openapi.py checks it against the route table and
 * against real answers.
 */
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "internal.h"
#include "web_assets.h"

/* Generated from api/openapi.json (build/gen/openapi.c): one entry. */
extern const struct web_asset openapi_assets[];

int h_openapi(struct resp *out, struct app *app, struct req *r)
{
	const struct web_asset *a = &openapi_assets[0];

	if (!a->path)
		return ck_error(CK_ENOTFOUND, "this ckptd was built without its OpenAPI document");
	out->body = malloc(a->len ? a->len : 1);
	if (!out->body)
		return ck_error(CK_ENOMEM, "out of memory");
	memcpy(out->body, a->data, a->len);
	out->body_len = a->len;
	out->status = 200;
	out->content_type = a->type;
	resp_header(out, "Cache-Control", "no-cache");
	return 0;
}
