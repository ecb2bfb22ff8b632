/*
 * app.c: opening a store (the data directory) and the server's settings.
 *
 * Data directory layout:
 *   index.sqlite (+ -wal, -shm)   the SQLite index (storage/index.c)
 *   blobs/                        the blob store (storage/blob_fs.c)
 *   tmp/                          upload spools (unlinked O_TMPFILE files)
 *   LOCK                          held (flock) by the one serving process
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../common/err.h"
#include "internal.h"

static int mkdir_p(const char *dir)
{
	if (mkdir(dir, 0755) == 0 || errno == EEXIST)
		return 0;
	return ck_error(errno == ENOSPC ? CK_ENOSPC : CK_EIO, "cannot create %s: %s", dir,
			strerror(errno));
}

static char *path_join(const char *a, const char *b)
{
	size_t n = strlen(a) + strlen(b) + 2;
	char *p = malloc(n);

	if (p)
		snprintf(p, n, "%s/%s", a, b);
	return p;
}

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
	char *blob_dir = NULL, *index_path = NULL;
	uint64_t swept = 0;
	int err;

	if (!app)
		return ck_error(CK_ENOMEM, "out of memory");
	app->cfg = *cfg;
	app->data_dir = strdup(cfg->data_dir);
	app->tmp_dir = path_join(cfg->data_dir, "tmp");
	blob_dir = path_join(cfg->data_dir, "blobs");
	index_path = path_join(cfg->data_dir, "index.sqlite");
	if (!app->data_dir || !app->tmp_dir || !blob_dir || !index_path) {
		err = ck_error(CK_ENOMEM, "out of memory");
		goto fail;
	}
	app->cfg.data_dir = app->data_dir;
	app->cfg.token_file = NULL;
	fmt_limits_default(&app->limits);
	if ((err = mkdir_p(app->data_dir)) < 0 || (err = mkdir_p(app->tmp_dir)) < 0)
		goto fail;
	if (cfg->token_file && (err = tokens_load(app, cfg->token_file)) < 0)
		goto fail;
	if ((err = index_open(&app->idx, index_path)) < 0)
		goto fail;
	if ((err = blob_fs_open(&app->blobs, blob_dir, cfg->compress)) < 0)
		goto fail;
	if ((err = gc_new(&app->gc)) < 0 || (err = metrics_new(&app->metrics)) < 0 ||
	    (err = json_cache_new(&app->jcache)) < 0)
		goto fail;
	/* Leftovers of a crash: temporary blob files, and blobs written
	 * whose checkpoint never committed. */
	if (cfg->clean && ((err = app->blobs->clean_tmp(app->blobs, (int64_t)time(NULL))) < 0 ||
			   (err = gc_sweep(&swept, app->gc, app->idx, app->blobs)) < 0))
		goto fail;
	if (swept)
		fprintf(stderr, "ckptd: removed %llu blobs left by an unfinished upload\n",
			(unsigned long long)swept);
	free(blob_dir);
	free(index_path);
	*out = app;
	return 0;
fail:
	free(blob_dir);
	free(index_path);
	app_close(app);
	return err;
}

void app_close(struct app *app)
{
	if (!app)
		return;
	if (app->blobs)
		app->blobs->free(app->blobs);
	index_close(app->idx);
	gc_free(app->gc);
	metrics_free(app->metrics);
	json_cache_free(app->jcache);
	for (size_t i = 0; i < app->ntokens; i++)
		free(app->tokens[i].token);
	free(app->tokens);
	free(app->data_dir);
	free(app->tmp_dir);
	free(app);
}

const char *app_tmp_dir(const struct app *app)
{
	return app->tmp_dir;
}

uint64_t app_max_upload(const struct app *app)
{
	return app->cfg.max_upload;
}
