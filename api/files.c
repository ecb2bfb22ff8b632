/*
 * files.c: checkpoints of several files (SPEC 3.2): open a staged checkpoint,
 * put its files (from many processes at once), commit it, list its files,
 * serve one of them, or all as one tar stream.
 *
 * Each file is stored as a single upload is (api/ingest.c; formats it reads
 * are parsed into blobs, others kept as bytes), as a part of the checkpoint
 * (storage/schema.c). A staged checkpoint is invisible until its commit,
 * which makes it visible in one transaction.
 *
 * The archive is a POSIX tar (ustar; a pax header carries a name over 100
 * bytes or a size of 8 GiB and more). Its size is known before the first
 * byte, so HEAD and Range work on it as on /file; each file's bytes come
 * from /file's generator, checked as they stream.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/err.h"
#include "internal.h"

int staged_id(int64_t *id, const char *s)
{
	if (!*s || strspn(s, "0123456789") != strlen(s) || strlen(s) > 18 ||
	    (*id = strtoll(s, NULL, 10)) < 1)
		return ck_error(CK_EINVALID,
				"'%.40s' is not a checkpoint id: a staged checkpoint is named by "
				"the id its ?staged=1 upload answered",
				s);
	return 0;
}

int file_name_check(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > 1024)
		return ck_error(CK_EINVALID, "a file name has 1 to 1024 bytes");
	if (!utf8_valid(name))
		return ck_error(CK_EINVALID, "a file name must be UTF-8 text");
	if (name[0] == '/' || name[n - 1] == '/')
		return ck_error(CK_EINVALID,
				"'%.200s': a file name is a relative path, with no leading or "
				"trailing '/'",
				name);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f || name[i] == '\\')
			return ck_error(CK_EINVALID,
					"a file name must not hold control characters or '\\'");
	for (const char *seg = name; seg;) {
		const char *end = strchr(seg, '/');
		size_t len = end ? (size_t)(end - seg) : strlen(seg);
		if (len == 0 || (len == 1 && seg[0] == '.') ||
		    (len == 2 && seg[0] == '.' && seg[1] == '.'))
			return ck_error(CK_EINVALID,
					"'%.200s': a file name has no empty, '.' or '..' segment",
					name);
		seg = end ? end + 1 : NULL;
	}
	return 0;
}

int h_file_put(struct resp *out, struct app *app, struct req *r)
{
	json_t *f = NULL;
	char loc[1400];
	int err;

	if ((err = upload_thin_missing(out, r)) != 0 || (err = ingest_file(&f, app, r)) < 0) {
		upload_file_failed(r);
		return err < 0 ? err : 0;
	}
	snprintf(loc, sizeof(loc), "/api/v1/models/%s/checkpoints/%s/files/%s", r->params[0],
		 r->params[1], r->params[2]);
	resp_header(out, "Location", loc);
	return json_reply(out, 201, f);
}

/* Before a commit: a staged checkpoint of model whose .metadata and files
 * disagree is refused (422), and stays staged (its files can be sent again).
 * While a file is being written it answers 409 as the commit would. A file
 * PUT again between this check and the commit is not checked: the writers
 * of a checkpoint commit once they have all answered.
 * A checkpoint that is not staged, or not model's, is left to
 * store_staged_commit's answer. */
static int commit_check(struct app *app, const struct req *r, int64_t id)
{
	struct index_checkpoint *c = NULL;
	int err = store_checkpoint(&c, app->store, id);

	if (err == CK_ENOTFOUND) {
		ck_error_clear();
		return 0;
	}
	if (err < 0)
		return err;
	int64_t writing = 0;
	if (c->stage_until && !strcmp(c->model, r->params[0]) &&
	    (err = store_files_writing(&writing, app->store, id)) == 0) {
		if (writing > 0) /* as the commit says it, before the files are read */
			err = ck_error(CK_ECONFLICT,
				       "%" PRId64 " file%s of checkpoint %" PRId64
				       " %s still being written: commit once every upload has "
				       "answered",
				       writing, writing == 1 ? "" : "s", id,
				       writing == 1 ? "is" : "are");
		else
			err = tview_check(app, id);
	}
	index_checkpoint_free(c);
	return err;
}

int h_commit(struct resp *out, struct app *app, struct req *r)
{
	struct index_checkpoint *c = NULL;
	struct index_file_list *fl = NULL;
	json_t *o = NULL, *a = NULL;
	int64_t id;
	int err;

	if ((err = name_check("model", r->params[0])) < 0 ||
	    (err = staged_id(&id, r->params[1])) < 0 || (err = commit_check(app, r, id)) < 0 ||
	    (err = store_staged_commit(app->store, r->params[0], id)) < 0 ||
	    (err = store_checkpoint(&c, app->store, id)) < 0 ||
	    (err = store_files(&fl, app->store, id)) < 0)
		goto out;
	if (!(o = render_checkpoint(c)) || !(a = render_files(fl))) {
		err = ck_error(CK_ENOMEM, "out of memory");
		goto out;
	}
	json_object_set_new(o, "state", json_string("committed"));
	json_object_set_new(o, "files", a);
	a = NULL;
	err = json_reply(out, 200, o);
	o = NULL;
out:
	json_decref(o);
	json_decref(a);
	index_checkpoint_free(c);
	index_file_list_free(fl);
	return err;
}

/* The files of checkpoint id: its own list, or a single upload's one
 * file, so every checkpoint answers /files alike. */
static int files_of(struct index_file_list **out, struct app *app, int64_t id)
{
	struct index_file_list *l = NULL;
	struct index_checkpoint *c = NULL;
	char name[300];
	int err;

	if ((err = store_files(&l, app->store, id)) < 0 || l->nitems)
		goto out;
	if ((err = store_checkpoint(&c, app->store, id)) < 0)
		goto out;
	single_file_name(name, sizeof(name), c->model, c->has_epoch, c->epoch, c->id, c->format);
	if (!(l->items = calloc(1, sizeof(*l->items))) || !(l->items[0].name = strdup(name)) ||
	    !(l->items[0].format = strdup(c->format))) {
		l->nitems = l->items ? 1 : 0;
		err = ck_error(CK_ENOMEM, "out of memory");
		goto out;
	}
	l->nitems = 1;
	l->items[0].part = id;
	l->items[0].size = c->size;
	l->items[0].sha256 = c->sha256;
	l->items[0].tensor_count = c->tensor_count;
out:
	index_checkpoint_free(c);
	if (err < 0) {
		index_file_list_free(l);
		l = NULL;
	}
	*out = l;
	return err;
}

int h_files(struct resp *out, struct app *app, struct req *r)
{
	struct index_file_list *l = NULL;
	json_t *o, *a;
	int64_t id;
	int err;

	if ((err = resolve_ref(&id, app, r)) < 0 || (err = files_of(&l, app, id)) < 0)
		return err;
	a = render_files(l);
	index_file_list_free(l);
	if (!a || !(o = json_object())) {
		json_decref(a);
		return ck_error(CK_ENOMEM, "out of memory");
	}
	json_object_set_new(o, "files", a);
	checkpoint_id_header(out, id);
	return json_reply(out, 200, o);
}

/* ---- /archive: every file as one tar stream ---- */

#define TAR_BLOCK 512

struct tar_entry {
	uint64_t head_at, data_at; /* where its header(s) and its data begin */
	uint8_t *head;		   /* head_len bytes: a pax header when needed, then ustar */
	size_t head_len;
	uint64_t size;
	int64_t part;
};

struct tar_gen {
	struct app *app;
	struct tar_entry *e;
	size_t n;
	uint64_t size;
	int64_t mtime;
	int ranged, hold;
	/* the file whose bytes are streaming */
	struct file_gen *g;
	size_t g_of;
};

static uint64_t pad512(uint64_t n)
{
	return (n + TAR_BLOCK - 1) / TAR_BLOCK * TAR_BLOCK;
}

static void octal(char *field, size_t width, uint64_t v)
{
	char tmp[32];

	/* width - 1 digits and a NUL (callers keep v within them) */
	snprintf(tmp, sizeof(tmp), "%0*" PRIo64, (int)(width - 1), v);
	memcpy(field, tmp, width - 1);
	field[width - 1] = '\0';
}

static void ustar_header(uint8_t *b, const char *name, uint64_t size, int64_t mtime, char type)
{
	unsigned sum = 0;

	memset(b, 0, TAR_BLOCK);
	memcpy(b, name, strlen(name) < 100 ? strlen(name) : 100);
	octal((char *)b + 100, 8, 0644);
	octal((char *)b + 108, 8, 0);
	octal((char *)b + 116, 8, 0);
	octal((char *)b + 124, 12, size);
	octal((char *)b + 136, 12, (uint64_t)(mtime > 0 ? mtime : 0));
	memset(b + 148, ' ', 8);
	b[156] = (uint8_t)type;
	memcpy(b + 257, "ustar", 6);
	memcpy(b + 263, "00", 2);
	memcpy(b + 265, "ckptd", 5);
	memcpy(b + 297, "ckptd", 5);
	for (size_t i = 0; i < TAR_BLOCK; i++)
		sum += b[i];
	snprintf((char *)b + 148, 8, "%06o", sum);
	b[155] = ' ';
}

/* A pax record "LEN key=value\n", LEN counting the whole record. */
static size_t pax_record(char *out, size_t cap, const char *key, const char *value)
{
	size_t body = strlen(key) + strlen(value) + 3, len = body + 1;

	while (snprintf(NULL, 0, "%zu", len) + body != len)
		len++;
	return (size_t)snprintf(out, cap, "%zu %s=%s\n", len, key, value);
}

static int tar_entry_make(struct tar_entry *e, const char *name, uint64_t size, int64_t mtime)
{
	size_t nlen = strlen(name);
	int pax = nlen > 100 || size >= (1ULL << 33);

	e->size = size;
	if (!pax) {
		if (!(e->head = malloc(TAR_BLOCK)))
			return ck_error(CK_ENOMEM, "out of memory");
		ustar_header(e->head, name, size, mtime, '0');
		e->head_len = TAR_BLOCK;
		return 0;
	}
	char sz[32], *rec = malloc(nlen + 128);
	size_t rlen = 0;
	if (!rec)
		return ck_error(CK_ENOMEM, "out of memory");
	snprintf(sz, sizeof(sz), "%" PRIu64, size);
	rlen += pax_record(rec + rlen, nlen + 128 - rlen, "path", name);
	if (size >= (1ULL << 33))
		rlen += pax_record(rec + rlen, nlen + 128 - rlen, "size", sz);
	e->head_len = TAR_BLOCK + pad512(rlen) + TAR_BLOCK;
	if (!(e->head = calloc(1, e->head_len))) {
		free(rec);
		return ck_error(CK_ENOMEM, "out of memory");
	}
	ustar_header(e->head, "PaxHeader", rlen, mtime, 'x');
	memcpy(e->head + TAR_BLOCK, rec, rlen);
	free(rec);
	/* the name field keeps what fits; the size field 0 past its 33 bits */
	ustar_header(e->head + e->head_len - TAR_BLOCK, name, size >= (1ULL << 33) ? 0 : size,
		     mtime, '0');
	return 0;
}

static void tar_gen_free(void *ctx)
{
	struct tar_gen *t = ctx;

	if (t->g)
		file_gen_free(t->g);
	for (size_t i = 0; i < t->n; i++)
		free(t->e[i].head);
	free(t->e);
	free(t);
}

static void tar_gen_ranged(void *ctx)
{
	struct tar_gen *t = ctx;

	t->ranged = 1;
	if (t->g)
		file_gen_ranged(t->g);
}

/* The generator of entry i's bytes, opened unless it is already. */
static int tar_open(struct tar_gen *t, size_t i)
{
	struct index_layout *l = NULL;
	int err;

	if (t->g && t->g_of == i)
		return 0;
	if (t->g)
		file_gen_free(t->g);
	t->g = NULL;
	if ((err = store_layout(&l, t->app->store, t->e[i].part)) < 0 ||
	    (err = file_gen_new(&t->g, t->app, l, t->e[i].part)) < 0)
		return err;
	if (t->ranged)
		file_gen_ranged(t->g);
	t->g_of = i;
	return 0;
}

static long tar_gen_read(void *ctx, uint64_t pos, uint8_t *buf, size_t n)
{
	struct tar_gen *t = ctx;
	size_t lo = 0, hi = t->n;
	int err;

	if (pos >= t->size)
		return 0;
	while (hi - lo > 1) { /* the last entry whose header starts at or before pos */
		size_t mid = (lo + hi) / 2;
		if (t->e[mid].head_at <= pos)
			lo = mid;
		else
			hi = mid;
	}
	const struct tar_entry *e = t->n ? &t->e[lo] : NULL;
	if (!e || pos < e->head_at || pos >= e->data_at + pad512(e->size)) {
		/* the two zero blocks at the end */
		uint64_t left = t->size - pos;
		size_t m = n < left ? n : (size_t)left;
		memset(buf, 0, m);
		return (long)m;
	}
	if (pos < e->data_at) {
		size_t m = (size_t)(e->data_at - pos) < n ? (size_t)(e->data_at - pos) : n;
		memcpy(buf, e->head + (pos - e->head_at), m);
		return (long)m;
	}
	if (pos >= e->data_at + e->size) { /* the padding to a whole block */
		uint64_t left = e->data_at + pad512(e->size) - pos;
		size_t m = n < left ? n : (size_t)left;
		memset(buf, 0, m);
		return (long)m;
	}
	if ((err = tar_open(t, lo)) < 0) {
		fprintf(stderr, "ckptd: archive stopped at byte %" PRIu64 ": %s\n", pos,
			ck_errmsg());
		return err;
	}
	uint64_t left = e->data_at + e->size - pos;
	return file_gen_read(t->g, pos - e->data_at, buf, n < left ? n : (size_t)left);
}

static int64_t rfc3339_seconds(const char *s)
{
	struct tm tm;

	memset(&tm, 0, sizeof(tm));
	if (!strptime(s, "%Y-%m-%dT%H:%M:%S", &tm))
		return 0;
	return (int64_t)timegm(&tm);
}

int h_archive(struct resp *out, struct app *app, struct req *r)
{
	struct index_file_list *l = NULL;
	struct index_checkpoint *c = NULL;
	struct tar_gen *t = NULL;
	char etag[80], hex[65], disp[300];
	int64_t id;
	int err;

	if ((err = resolve_ref(&id, app, r)) < 0 ||
	    (err = store_checkpoint(&c, app->store, id)) < 0 || (err = files_of(&l, app, id)) < 0)
		goto out;
	if (!(t = calloc(1, sizeof(*t))) || !(t->e = calloc(l->nitems + 1, sizeof(*t->e)))) {
		err = ck_error(CK_ENOMEM, "out of memory");
		goto out;
	}
	t->app = app;
	t->mtime = rfc3339_seconds(c->created_at);
	for (size_t i = 0; i < l->nitems; i++) {
		struct tar_entry *e = &t->e[i];
		if ((err = tar_entry_make(e, l->items[i].name, l->items[i].size, t->mtime)) < 0)
			goto out;
		t->n++;
		e->part = l->items[i].part;
		e->head_at = t->size;
		e->data_at = t->size + e->head_len;
		t->size = e->data_at + pad512(e->size);
	}
	t->size += 2 * TAR_BLOCK;
	hash_to_hex(hex, &c->sha256);
	snprintf(etag, sizeof(etag), "\"tar-%s\"", hex);
	snprintf(disp, sizeof(disp), "attachment; filename=\"%s-%" PRId64 ".tar\"", c->model, id);
	resp_header(out, "ETag", etag);
	resp_header(out, "Content-Disposition", disp);
	checkpoint_id_header(out, id);
	out->status = 200;
	out->content_type = "application/x-tar";
	out->gen = (struct resp_gen){t->size, tar_gen_read, tar_gen_free, t, 1, tar_gen_ranged};
	t = NULL;
out:
	if (t)
		tar_gen_free(t);
	index_file_list_free(l);
	index_checkpoint_free(c);
	return err;
}
