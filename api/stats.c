/*
 * stats.c: /healthz, /stats and the dashboard's embedded files.
 */
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "internal.h"
#include "web_assets.h"

int h_healthz(struct resp *out, struct app *app, struct req *r)
{
	return resp_text(out, 200, "text/plain; charset=utf-8", "ok\n");
}

int h_stats(struct resp *out, struct app *app, struct req *r)
{
	json_t *v;
	int err = index_stats_json(&v, app->idx);

	return err < 0 ? err : json_reply(out, 200, v);
}

/* The dashboard is a single page: "/" and every "/ui/..." path answer
 * index.html (the page routes itself), and "/ui/<asset>" answers an asset. */
int h_dashboard(struct resp *out, struct app *app, struct req *r)
{
	const char *want = "/index.html";
	const struct web_asset *a;

	if (r->nparams == 1 && strchr(r->params[0], '.')) {
		static _Thread_local char path[256];
		if (strlen(r->params[0]) + 2 > sizeof(path))
			return ck_error(CK_ENOTFOUND, "no such dashboard file");
		path[0] = '/';
		strcpy(path + 1, r->params[0]);
		want = path;
	}
	for (a = web_assets; a->path; a++)
		if (!strcmp(a->path, want))
			break;
	if (!a->path)
		return ck_error(CK_ENOTFOUND, "no such dashboard file: %s", want);
	out->status = 200;
	out->content_type = a->type;
	out->body = malloc(a->len ? a->len : 1);
	if (!out->body)
		return ck_error(CK_ENOMEM, "out of memory");
	memcpy(out->body, a->data, a->len);
	out->body_len = a->len;
	resp_header(out, "Cache-Control", "no-cache");
	return 0;
}
