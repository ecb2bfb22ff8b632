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
	struct index_stats st;
	int err = store_stats(&st, app->store);

	return err < 0 ? err : json_reply(out, 200, render_stats(&st));
}

/* The dashboard is a single page: "/" and every "/ui/..." path answer
 * index.html (the page routes itself), except "/ui/<asset>" for the files
 * compiled in from web/. */
int h_dashboard(struct resp *out, struct app *app, struct req *r)
{
	const struct web_asset *a, *page = NULL, *hit = NULL;

	for (a = web_assets; a->path; a++) {
		if (!strcmp(a->path, "/index.html"))
			page = a;
		if (r->nparams == 1 && !strcmp(a->path + 1, r->params[0]))
			hit = a;
	}
	if (!hit)
		hit = page;
	if (!hit)
		return ck_error(CK_ENOTFOUND, "this ckptd was built without its dashboard");
	out->status = 200;
	out->content_type = hit->type;
	out->body = malloc(hit->len ? hit->len : 1);
	if (!out->body)
		return ck_error(CK_ENOMEM, "out of memory");
	memcpy(out->body, hit->data, hit->len);
	out->body_len = hit->len;
	resp_header(out, "Cache-Control", "no-cache");
	return 0;
}
