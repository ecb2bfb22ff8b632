/*
 * app.c: the server's state: its settings, tokens and the store it serves
 * (storage/store.h has the data directory's layout).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "internal.h"

static int tokens_load(struct app *app, const char *file)
{
	FILE *f = fopen(file, "r");
	char line[1024];
	int lineno = 0, err = 0;

	if (!f)
		return ck_error(CK_EINVALID, "cannot read token file %s: %s", file,
				strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		char tok[512], scope[32], extra[8];
		lineno++;
		char *p = line + strspn(line, " \t");
		if (*p == '#' || *p == '\n' || *p == '\0')
			continue;
		int n = sscanf(p, "%511s %31s %7s", tok, scope, extra);
		enum scope sc = SCOPE_NONE;
		if (n == 2 && !strcmp(scope, "read"))
			sc = SCOPE_READ;
		else if (n == 2 && !strcmp(scope, "write"))
			sc = SCOPE_WRITE;
		else if (n == 2 && !strcmp(scope, "admin"))
			sc = SCOPE_ADMIN;
		if (sc == SCOPE_NONE) {
			err =
			    ck_error(CK_EINVALID,
				     "%s line %d: expected 'TOKEN SCOPE' with scope read, write or "
				     "admin",
				     file, lineno);
			break;
		}
		struct token *v = realloc(app->tokens, (app->ntokens + 1) * sizeof(*v));
		if (!v || !(tok[0]) || !(v[app->ntokens].token = strdup(tok))) {
			if (v)
				app->tokens = v;
			err = ck_error(CK_ENOMEM, "out of memory");
			break;
		}
		app->tokens = v;
		app->tokens[app->ntokens++].scope = sc;
	}
	fclose(f);
	if (!err && app->ntokens == 0)
		err = ck_error(CK_EINVALID, "token file %s holds no token", file);
	return err;
}

int app_open(struct app **out, const struct app_config *cfg)
{
	struct app *app = calloc(1, sizeof(*app));
	struct store_config sc = {0};
	int err;

	if (!app)
		return ck_error(CK_ENOMEM, "out of memory");
	app->cfg = *cfg;
	app->cfg.token_file = NULL;
	fmt_limits_default(&app->limits);
	if (cfg->token_file && (err = tokens_load(app, cfg->token_file)) < 0)
		goto fail;
	sc.data_dir = cfg->data_dir;
	sc.index_url = cfg->index_url;
	sc.blobs_url = cfg->blobs_url;
	sc.s3_endpoint = cfg->s3_endpoint;
	sc.s3_region = cfg->s3_region;
	sc.compress = cfg->compress;
	sc.lease = cfg->lease;
	sc.clean = cfg->clean;
	if ((err = store_open(&app->store, &sc)) < 0)
		goto fail;
	if ((err = metrics_new(&app->metrics)) < 0 || (err = json_cache_new(&app->jcache)) < 0)
		goto fail;
	if ((err = upload_pool_new(&app->uploads)) < 0)
		goto fail;
	*out = app;
	return 0;
fail:
	app_close(app);
	return err;
}

void app_close(struct app *app)
{
	if (!app)
		return;
	store_close(app->store);
	metrics_free(app->metrics);
	json_cache_free(app->jcache);
	upload_pool_free(app->uploads);
	for (size_t i = 0; i < app->ntokens; i++)
		free(app->tokens[i].token);
	free(app->tokens);
	free(app);
}

const char *app_tmp_dir(const struct app *app)
{
	return store_tmp_dir(app->store);
}

uint64_t app_max_upload(const struct app *app)
{
	return app->cfg.max_upload;
}

const char *app_index_kind(const struct app *app)
{
	return store_index_kind(app->store);
}

const char *app_blobs_kind(const struct app *app)
{
	return store_blobs_kind(app->store);
}
