/*
 * blob_store.c: the codec layer: a blob store (struct blob_backend, blob.h)
 * over any object store (blob_objstore.h), and blob_open, which picks the
 * object store from a URL.
 *
 * Put: a blob already stored in either form, or put earlier in the same
 * batch, is not written again. Otherwise, with compression on, the blob is
 * encoded (codec.c) into a file the object store stages (its temporary file
 * in a local store, so nothing is copied; a local unnamed file for a remote
 * store, which then uploads it) and stored as a container (BLOB_FORM_Z);
 * when the codec does not pay, or compression is off, the raw bytes are
 * stored straight from the caller's fd (BLOB_FORM_RAW).
 *
 * Read: the raw form is preferred (its reader may hand out a local fd for
 * sendfile); a container is decoded by a codec reader that reads the
 * object through the object store's reader (pread on a file, range GETs on
 * S3), so only the chunks a read covers are fetched and decoded.
 *
 * Thread safety: the store holds no mutable state; batches and readers are
 * one thread's each, as the object store's are.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/err.h"
#include "../common/vec.h"
#include "blob.h"
#include "blob_objstore.h"
#include "blob_reader.h"
#include "blob_s3.h"
#include "codec.h"

struct store {
	struct blob_backend base;
	struct blob_objstore *o;
	int compress;
};

struct put_item {
	struct hash h;
	int codec;
	uint64_t stored;
};

struct store_batch {
	struct store *s;
	struct blob_objbatch *ob;
	struct codec_enc *enc; /* made on the first compressed put */
	struct put_item *items;
	size_t n, cap;
};

struct z_reader {
	struct blob_reader base;
	struct blob_reader *obj; /* the container's stored bytes */
	struct codec_reader *cr;
};

static int not_found(const struct hash *h)
{
	char hex[65];

	hash_to_hex(hex, h);
	return ck_error(CK_ENOTFOUND, "blob %s not found", hex);
}

/* Prefixes the current message with "blob <hex>: ", keeping code. */
static int blob_context(int code, const struct hash *h)
{
	char hex[65], msg[512];

	hash_to_hex(hex, h);
	snprintf(msg, sizeof(msg), "%s", ck_errmsg());
	return ck_error(code, "blob %s: %s", hex, msg);
}

/* ---- readers ---- */

static int z_read_container(void *arg, void *buf, size_t n, uint64_t off)
{
	return blob_reader_read(arg, buf, n, off);
}

static int z_read(struct blob_reader *br, void *buf, size_t n, uint64_t off)
{
	struct z_reader *r = (struct z_reader *)br;

	return codec_reader_read(r->cr, buf, n, off);
}

static void z_close(struct blob_reader *br)
{
	struct z_reader *r = (struct z_reader *)br;

	codec_reader_free(r->cr);
	blob_reader_close(r->obj);
	free(r);
}

static const struct blob_reader_ops z_ops = {z_read, z_close};

/* A reader of blob h: its raw object (unless `raw` says it is known to be
 * absent), else its container. */
static int open_blob(struct blob_reader **out, struct store *s, const struct hash *h, int raw)
{
	struct blob_reader *obj = NULL;
	struct z_reader *r;
	int err;

	*out = NULL;
	if (raw) {
		err = s->o->open(out, s->o, h, BLOB_FORM_RAW);
		if (err != CK_ENOTFOUND)
			return err < 0 ? blob_context(err, h) : 0;
	}
	if ((err = s->o->open(&obj, s->o, h, BLOB_FORM_Z)) < 0)
		return err == CK_ENOTFOUND ? not_found(h) : blob_context(err, h);
	if (!(r = calloc(1, sizeof(*r)))) {
		blob_reader_close(obj);
		return ck_error(CK_ENOMEM, "blob: out of memory");
	}
	r->obj = obj;
	err = codec_reader_open(&r->cr, z_read_container, obj, blob_reader_size(obj));
	if (err < 0) {
		err = blob_context(err, h);
		z_close(&r->base);
		return err;
	}
	r->base.ops = &z_ops;
	r->base.size = codec_reader_size(r->cr);
	r->base.codec = codec_reader_codec(r->cr);
	r->base.raw_fd = -1;
	*out = &r->base;
	return 0;
}

static int store_open(struct blob_reader **out, struct blob_backend *b, const struct hash *h)
{
	return open_blob(out, (struct store *)b, h, 1);
}

/* ---- lookups ---- */

/* 0 with the codec and stored size when the blob is stored in either form,
 * CK_ENOTFOUND (no message), or an error. */
static int stat_blob(int *codec, uint64_t *size, struct store *s, const struct hash *h)
{
	struct blob_reader *obj = NULL;
	uint8_t hdr[5];
	int err;

	err = s->o->stat(size, s->o, h, BLOB_FORM_RAW);
	if (err == 0) {
		*codec = CODEC_RAW;
		return 0;
	}
	if (err != CK_ENOTFOUND)
		return blob_context(err, h);
	/* Asked first without a body: on an object store a miss is then one
	 * small answer (the common case for a new blob). */
	if ((err = s->o->stat(size, s->o, h, BLOB_FORM_Z)) < 0)
		return err == CK_ENOTFOUND ? err : blob_context(err, h);
	/* The container's header names its codec (byte 4). */
	if ((err = s->o->open(&obj, s->o, h, BLOB_FORM_Z)) < 0)
		return err == CK_ENOTFOUND ? err : blob_context(err, h);
	*size = blob_reader_size(obj);
	*codec = CODEC_ZSTD;
	if (*size >= sizeof(hdr)) {
		if ((err = blob_reader_read(obj, hdr, sizeof(hdr), 0)) < 0) {
			blob_reader_close(obj);
			return blob_context(err, h);
		}
		if (hdr[4] == CODEC_PLANES)
			*codec = CODEC_PLANES;
	}
	blob_reader_close(obj);
	return 0;
}

static int store_exists(struct blob_backend *b, const struct hash *h)
{
	struct store *s = (struct store *)b;
	uint64_t size;
	int err = s->o->stat(&size, s->o, h, BLOB_FORM_RAW);

	if (err == CK_ENOTFOUND)
		err = s->o->stat(&size, s->o, h, BLOB_FORM_Z);
	if (err == CK_ENOTFOUND)
		return not_found(h);
	return err < 0 ? blob_context(err, h) : 0;
}

static int store_read(struct blob_backend *b, const struct hash *h, void *buf, size_t n,
		      uint64_t off)
{
	struct store *s = (struct store *)b;
	struct blob_reader *r = NULL;
	int err;

	if (s->o->get) {
		err = s->o->get(s->o, h, BLOB_FORM_RAW, buf, n, off);
		if (err != CK_ENOTFOUND)
			return err < 0 ? blob_context(err, h) : 0;
	}
	/* stored compressed, or a store where a reader costs nothing */
	if ((err = open_blob(&r, s, h, !s->o->get)) < 0)
		return err;
	err = blob_reader_read(r, buf, n, off);
	blob_reader_close(r);
	return err < 0 ? blob_context(err, h) : 0;
}

static int store_remove(struct blob_backend *b, const struct hash *h)
{
	struct store *s = (struct store *)b;
	int found = 0, err;

	for (int form = BLOB_FORM_RAW; form <= BLOB_FORM_Z; form++) {
		err = s->o->remove(s->o, h, form);
		if (err == 0)
			found = 1;
		else if (err != CK_ENOTFOUND)
			return blob_context(err, h);
	}
	return found ? 0 : not_found(h);
}

static int store_foreach(struct blob_backend *b,
			 int (*cb)(void *arg, const struct hash *h, int64_t mtime), void *arg)
{
	struct store *s = (struct store *)b;

	return s->o->list(s->o, cb, arg);
}

static int store_clean_tmp(struct blob_backend *b, int64_t older_than, int mine)
{
	struct store *s = (struct store *)b;

	return s->o->clean_tmp(s->o, older_than, mine);
}

/* ---- batches ---- */

static int store_batch_begin(struct blob_batch **out, struct blob_backend *b)
{
	struct store *s = (struct store *)b;
	struct store_batch *bt = calloc(1, sizeof(*bt));
	int err;

	*out = NULL;
	if (!bt)
		return ck_error(CK_ENOMEM, "blob: out of memory");
	bt->s = s;
	if ((err = s->o->batch_begin(&bt->ob, s->o)) < 0) {
		free(bt);
		return err;
	}
	*out = (struct blob_batch *)bt;
	return 0;
}

/* Encodes the blob into a staged file and stores it as a container; *codec
 * is CODEC_RAW (and nothing stored) when the codec does not pay. */
static int put_compressed(int *codec, uint64_t *stored, struct store_batch *bt,
			  const struct blob_meta *meta, int fd, uint64_t off, enum dtype hint)
{
	struct blob_objstore *o = bt->s->o;
	int tfd, err;

	if (!bt->enc && (err = codec_enc_new(&bt->enc)) < 0)
		return err;
	if ((err = o->stage(&tfd, bt->ob, &meta->hash, BLOB_FORM_Z)) < 0)
		return err;
	err = codec_encode_fd(codec, stored, bt->enc, tfd, fd, off, meta->raw_size, hint);
	if (err < 0 || *codec == CODEC_RAW) {
		o->unstage(bt->ob);
		return err;
	}
	return o->put_staged(bt->ob, *stored);
}

static int store_batch_put_fd(struct blob_batch *b, struct blob_meta *meta, int fd, uint64_t off,
			      enum dtype hint)
{
	struct store_batch *bt = (struct store_batch *)b;
	struct store *s = bt->s;
	int codec = CODEC_RAW, err;
	uint64_t stored = meta->raw_size;

	/* The same bytes twice in one batch: stored once. */
	for (size_t i = 0; i < bt->n; i++) {
		if (memcmp(bt->items[i].h.b, meta->hash.b, sizeof(meta->hash.b)) == 0) {
			meta->existed = 1;
			meta->codec = bt->items[i].codec;
			meta->stored_size = bt->items[i].stored;
			return 0;
		}
	}
	err = stat_blob(&meta->codec, &meta->stored_size, s, &meta->hash);
	if (err == 0) {
		meta->existed = 1;
		return 0;
	}
	if (err != CK_ENOTFOUND)
		return err;
	meta->existed = 0;

	struct put_item *it = vec_grow(bt->items, &bt->cap, bt->n, sizeof(*it), 16);
	if (!it)
		return ck_error(CK_ENOMEM, "blob: out of memory");
	bt->items = it;
	if (s->compress && meta->raw_size > 0 &&
	    (err = put_compressed(&codec, &stored, bt, meta, fd, off, hint)) < 0)
		return err;
	if (codec == CODEC_RAW) {
		stored = meta->raw_size;
		err = s->o->put_fd(bt->ob, &meta->hash, BLOB_FORM_RAW, fd, off, meta->raw_size);
		if (err < 0)
			return err;
	}
	bt->items[bt->n++] = (struct put_item){meta->hash, codec, stored};
	meta->codec = codec;
	meta->stored_size = stored;
	return 0;
}

static int store_batch_commit(struct blob_batch *b)
{
	struct store_batch *bt = (struct store_batch *)b;

	return bt->s->o->batch_commit(bt->ob);
}

static void store_batch_free(struct blob_batch *b)
{
	struct store_batch *bt = (struct store_batch *)b;

	if (!bt)
		return;
	bt->s->o->batch_free(bt->ob);
	codec_enc_free(bt->enc);
	free(bt->items);
	free(bt);
}

static void store_free(struct blob_backend *b)
{
	struct store *s = (struct store *)b;

	if (!s)
		return;
	s->o->free(s->o);
	free(s);
}

int blob_store_new(struct blob_backend **out, struct blob_objstore *o, int compress)
{
	struct store *s = calloc(1, sizeof(*s));

	*out = NULL;
	if (!s) {
		o->free(o);
		return ck_error(CK_ENOMEM, "blob: out of memory");
	}
	s->o = o;
	s->compress = compress;
	s->base.name = o->name;
	s->base.async_put = o->async_put;
	s->base.batch_begin = store_batch_begin;
	s->base.batch_put_fd = store_batch_put_fd;
	s->base.batch_commit = store_batch_commit;
	s->base.batch_free = store_batch_free;
	s->base.exists = store_exists;
	s->base.open = store_open;
	s->base.read = store_read;
	s->base.remove = store_remove;
	s->base.foreach = store_foreach;
	s->base.clean_tmp = store_clean_tmp;
	s->base.free = store_free;
	*out = &s->base;
	return 0;
}

void blob_instance_id(char *out, const char *id)
{
	char host[64] = "";
	size_t n = 0;

	if (!id || !*id) {
		if (gethostname(host, sizeof(host) - 1) < 0)
			host[0] = 0;
		host[sizeof(host) - 1] = 0;
		for (char *p = host; *p; p++)
			if (*p == '.') {
				*p = 0; /* the short name */
				break;
			}
		id = host;
	}
	for (const char *p = id; *p && n < 40; p++)
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '_' || *p == '-')
			out[n++] = *p;
	out[n] = 0;
	if (id == host)
		snprintf(out + n, 64 - n, "%s%ld", n ? "-" : "", (long)getpid());
	else if (n == 0)
		snprintf(out, 64, "%ld", (long)getpid());
}

int blob_open(struct blob_backend **out, const struct blob_config *cfg)
{
	struct blob_objstore *o = NULL;
	int err;

	*out = NULL;
	if (!cfg->url || !*cfg->url)
		return ck_error(CK_EINVALID, "blob store: no directory or s3:// URL given");
	if (strncmp(cfg->url, "s3://", 5) == 0) {
		struct blob_s3_options opt = {
		    .url = cfg->url,
		    .endpoint = cfg->s3_endpoint,
		    .region = cfg->s3_region,
		    .instance = cfg->instance,
		    .tmp_dir = cfg->tmp_dir,
		};
		err = blob_s3_objstore_open(&o, &opt);
	} else if (strstr(cfg->url, "://")) {
		return ck_error(CK_EINVALID,
				"blob store: %s: not a directory or an s3://BUCKET/PREFIX URL",
				cfg->url);
	} else {
		err = blob_fs_objstore_open(&o, cfg->url, cfg->instance);
	}
	if (err < 0)
		return err;
	return blob_store_new(out, o, cfg->compress);
}
