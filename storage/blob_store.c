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
 * sendfile), then the container, then a delta; a container is decoded by a
 * codec reader that reads the object through the object store's reader
 * (pread on a file, range GETs on S3), so only the chunks a read covers are
 * fetched and decoded. A delta's reader opens its base's reader with it
 * (recursively: at most CODEC_MAX_CHAIN deep).
 *
 * Deltas (an object store with `deltas`): a blob given a delta_base is
 * encoded against it (codec_encode_delta_fd, whose first chunk decides
 * whether the delta is smaller than the blob's own encoding) into a
 * BLOB_FORM_D object; a base that cannot be read, a chain that would grow
 * past CODEC_MAX_CHAIN, a delta that does not pay: the blob is stored whole
 * as without a base.
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
	int nchain;
	struct hash chain[BLOB_MAX_CHAIN];
};

_Static_assert(BLOB_MAX_CHAIN == CODEC_MAX_CHAIN, "blob.h and codec.h agree on chains");

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
	struct blob_reader *of; /* a delta's base */
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
	blob_reader_close(r->of);
	free(r);
}

static const struct blob_reader_ops z_ops = {z_read, z_close};

static int open_at(struct blob_reader **out, struct store *s, const struct hash *h, int raw,
		   int depth);

/* Opens a delta's base (chain[0]) for r, a reader of blob h. A base that is
 * gone makes h unreadable: CK_ECORRUPT, never other bytes. */
static int delta_attach(struct z_reader *r, struct store *s, const struct hash *h, int depth)
{
	struct hash chain[CODEC_MAX_CHAIN];
	char hex[65];
	int err;

	codec_reader_chain(r->cr, chain);
	hash_to_hex(hex, &chain[0]);
	if (depth >= CODEC_MAX_CHAIN)
		return ck_error(CK_ECORRUPT, "delta chain deeper than %d at base %s",
				CODEC_MAX_CHAIN, hex);
	if ((err = open_at(&r->of, s, &chain[0], 1, depth + 1)) < 0) {
		char msg[512];
		snprintf(msg, sizeof(msg), "%s", ck_errmsg());
		return ck_error(
		    err == CK_ENOMEM || err == CK_EUNAVAIL || err == CK_EIO ? err : CK_ECORRUPT,
		    "its delta's base %s cannot be read: %s", hex, msg);
	}
	if (blob_reader_size(r->of) != codec_reader_size(r->cr))
		return ck_error(CK_ECORRUPT, "its delta's base %s holds %llu bytes, not %llu", hex,
				(unsigned long long)blob_reader_size(r->of),
				(unsigned long long)codec_reader_size(r->cr));
	codec_reader_set_base(r->cr, z_read_container, r->of);
	return 0;
}

/* A reader of blob h: its raw object (unless `raw` says it is known to be
 * absent), else its container, else its delta (depth: how many deltas
 * opened this one as their base). */
static int open_at(struct blob_reader **out, struct store *s, const struct hash *h, int raw,
		   int depth)
{
	struct blob_reader *obj = NULL;
	struct z_reader *r;
	int form = BLOB_FORM_Z, err;

	*out = NULL;
	if (raw) {
		err = s->o->open(out, s->o, h, BLOB_FORM_RAW);
		if (err != CK_ENOTFOUND)
			return err < 0 ? blob_context(err, h) : 0;
	}
	err = s->o->open(&obj, s->o, h, BLOB_FORM_Z);
	if (err == CK_ENOTFOUND && s->o->deltas)
		err = s->o->open(&obj, s->o, h, form = BLOB_FORM_D);
	if (err < 0)
		return err == CK_ENOTFOUND ? not_found(h) : blob_context(err, h);
	if (!(r = calloc(1, sizeof(*r)))) {
		blob_reader_close(obj);
		return ck_error(CK_ENOMEM, "blob: out of memory");
	}
	r->obj = obj;
	err = codec_reader_open(&r->cr, z_read_container, obj, blob_reader_size(obj));
	if (err == 0 && (form == BLOB_FORM_D) != (codec_reader_codec(r->cr) == CODEC_DELTA))
		err = ck_error(CK_ECORRUPT, "a %s container stored as a %s",
			       blob_codec_name(codec_reader_codec(r->cr)),
			       form == BLOB_FORM_D ? "delta" : "whole blob");
	if (err == 0 && form == BLOB_FORM_D)
		err = delta_attach(r, s, h, depth);
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

static int open_blob(struct blob_reader **out, struct store *s, const struct hash *h, int raw)
{
	return open_at(out, s, h, raw, 0);
}

static int store_open(struct blob_reader **out, struct blob_backend *b, const struct hash *h)
{
	return open_blob(out, (struct store *)b, h, 1);
}

/* A reader's chain: what a delta's codec reader names, none for a whole
 * blob (its reader is no z_reader, or one of another codec). */
static int reader_chain(struct blob_reader *br, struct hash *chain)
{
	if (br->ops != &z_ops)
		return 0;
	return codec_reader_chain(((struct z_reader *)br)->cr, chain);
}

/* ---- lookups ---- */

/* The chain of blob h stored only as a delta (the caller knows it has
 * neither whole form) into m (nchain, chain), with its stored size. */
static int stat_delta(struct blob_meta *m, struct store *s, const struct hash *h)
{
	struct blob_reader *obj = NULL;
	struct codec_reader *cr = NULL;
	int err;

	if ((err = s->o->open(&obj, s->o, h, BLOB_FORM_D)) < 0)
		return err == CK_ENOTFOUND ? err : blob_context(err, h);
	err = codec_reader_open(&cr, z_read_container, obj, blob_reader_size(obj));
	if (err == 0 && codec_reader_codec(cr) != CODEC_DELTA)
		err = ck_error(CK_ECORRUPT, "a %s container stored as a delta",
			       blob_codec_name(codec_reader_codec(cr)));
	if (err == 0) {
		m->nchain = codec_reader_chain(cr, m->chain);
		m->codec = CODEC_DELTA;
		m->stored_size = blob_reader_size(obj);
	}
	codec_reader_free(cr);
	blob_reader_close(obj);
	return err < 0 ? blob_context(err, h) : 0;
}

/* 0 with the codec and stored size when the blob is stored in a whole form,
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
	if (err == CK_ENOTFOUND && s->o->deltas)
		err = s->o->stat(&size, s->o, h, BLOB_FORM_D);
	if (err == CK_ENOTFOUND)
		return not_found(h);
	return err < 0 ? blob_context(err, h) : 0;
}

static int store_chain(struct blob_backend *b, const struct hash *h, struct hash *chain, int *n)
{
	struct store *s = (struct store *)b;
	struct blob_meta m = {.hash = *h};
	uint64_t size;
	int codec, err;

	*n = 0;
	if ((err = stat_blob(&codec, &size, s, h)) == 0)
		return 0;
	if (err == CK_ENOTFOUND && s->o->deltas)
		err = stat_delta(&m, s, h);
	if (err == CK_ENOTFOUND)
		return not_found(h);
	if (err < 0)
		return err;
	memcpy(chain, m.chain, sizeof(m.chain[0]) * (size_t)m.nchain);
	*n = m.nchain;
	return 0;
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

	for (int form = BLOB_FORM_RAW; form <= (s->o->deltas ? BLOB_FORM_D : BLOB_FORM_Z); form++) {
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

/* Encodes the blob against meta->delta_base into a staged delta object;
 * *codec is CODEC_RAW (and nothing stored) when no delta is made: the base
 * cannot be read (gone meanwhile: the blob is then stored whole), its chain
 * is as long as allowed, or the delta is not smaller. */
static int put_delta(int *codec, uint64_t *stored, struct blob_meta *meta, struct store_batch *bt,
		     int fd, uint64_t off, enum dtype hint)
{
	struct blob_objstore *o = bt->s->o;
	struct blob_reader *br = NULL;
	struct hash bchain[CODEC_MAX_CHAIN];
	int nb, tfd, err;

	*codec = CODEC_RAW;
	if (open_blob(&br, bt->s, meta->delta_base, 1) < 0) {
		ck_error_clear();
		return 0;
	}
	nb = reader_chain(br, bchain);
	if (blob_reader_size(br) != meta->raw_size || nb + 1 > CODEC_MAX_CHAIN) {
		blob_reader_close(br);
		return 0;
	}
	struct codec_base base = {z_read_container,  br,     meta->raw_size,
				  *meta->delta_base, bchain, nb};
	if ((!bt->enc && (err = codec_enc_new(&bt->enc)) < 0) ||
	    (err = o->stage(&tfd, bt->ob, &meta->hash, BLOB_FORM_D)) < 0) {
		blob_reader_close(br);
		return err;
	}
	err = codec_encode_delta_fd(codec, stored, bt->enc, tfd, fd, off, meta->raw_size, hint,
				    &base, CODEC_DELTA_SUB);
	blob_reader_close(br);
	if (err < 0 || *codec != CODEC_DELTA) {
		o->unstage(bt->ob);
		*codec = CODEC_RAW;
		if (err == CK_ENOSPC || err == CK_ENOMEM)
			return err;
		ck_error_clear(); /* the base could not be read: stored whole */
		return 0;
	}
	if ((err = o->put_staged(bt->ob, *stored)) < 0)
		return err;
	meta->chain[0] = *meta->delta_base;
	memcpy(meta->chain + 1, bchain, sizeof(bchain[0]) * (size_t)nb);
	meta->nchain = nb + 1;
	return 0;
}

/* batch_put_fd; with tmp (a file of tmp_open, read from 0), a new raw
 * blob is that file (*taken = 1). */
static int put_fd(struct blob_batch *b, struct blob_meta *meta, int fd, uint64_t off,
		  enum dtype hint, const char *tmp, int *taken)
{
	struct store_batch *bt = (struct store_batch *)b;
	struct store *s = bt->s;
	int codec = CODEC_RAW, err;
	uint64_t stored = meta->raw_size;

	meta->nchain = 0;
	/* The same bytes twice in one batch: stored once. */
	for (size_t i = 0; i < bt->n; i++) {
		const struct put_item *p = &bt->items[i];
		if (memcmp(p->h.b, meta->hash.b, sizeof(meta->hash.b)) == 0 &&
		    !(meta->full_only && p->nchain)) {
			meta->existed = 1;
			meta->codec = p->codec;
			meta->stored_size = p->stored;
			meta->nchain = p->nchain;
			memcpy(meta->chain, p->chain, sizeof(p->chain));
			return 0;
		}
	}
	/* a blob the index does not name is new but for a race or an orphan:
	 * on S3 not worth two HEADs, which were most of a new upload's time
	 * (one thread asks, four PUT: 526 HEADs of 20 ms, 10 s for 1 GB) */
	if (meta->unindexed && s->o->stat_remote) {
		err = CK_ENOTFOUND;
	} else {
		err = stat_blob(&meta->codec, &meta->stored_size, s, &meta->hash);
		if (err == CK_ENOTFOUND && s->o->deltas && !meta->full_only)
			err = stat_delta(meta, s, &meta->hash);
	}
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
	if (s->compress && meta->raw_size > 0 && meta->delta_base && s->o->deltas &&
	    !meta->full_only && (err = put_delta(&codec, &stored, meta, bt, fd, off, hint)) < 0)
		return err;
	if (codec == CODEC_RAW && s->compress && meta->raw_size > 0 &&
	    (err = put_compressed(&codec, &stored, bt, meta, fd, off, hint)) < 0)
		return err;
	if (codec == CODEC_RAW) {
		stored = meta->raw_size;
		if (tmp && s->o->put_tmp) {
			err = s->o->put_tmp(bt->ob, &meta->hash, BLOB_FORM_RAW, tmp, fd,
					    meta->raw_size);
			*taken = err == 0;
		} else {
			err = s->o->put_fd(bt->ob, &meta->hash, BLOB_FORM_RAW, fd, off,
					   meta->raw_size);
		}
		if (err < 0)
			return err;
	}
	it = &bt->items[bt->n++];
	*it = (struct put_item){meta->hash, codec, stored, meta->nchain, {{{0}}}};
	memcpy(it->chain, meta->chain, sizeof(it->chain));
	meta->codec = codec;
	meta->stored_size = stored;
	return 0;
}

static int store_batch_put_fd(struct blob_batch *b, struct blob_meta *meta, int fd, uint64_t off,
			      enum dtype hint)
{
	return put_fd(b, meta, fd, off, hint, NULL, NULL);
}

static int store_batch_put_tmp(struct blob_batch *b, struct blob_meta *meta, const char *name,
			       int fd, int *taken)
{
	*taken = 0;
	return put_fd(b, meta, fd, 0, DT_INVALID, name, taken);
}

static int store_tmp_open(struct blob_backend *b, int *fd, char *name)
{
	struct store *s = (struct store *)b;

	*fd = -1;
	if (!s->base.tmp_files) /* the blob would be a container, or remote */
		return 0;
	return s->o->tmp_open(s->o, fd, name);
}

static void store_tmp_remove(struct blob_backend *b, const char *name)
{
	struct store *s = (struct store *)b;

	if (s->o->tmp_remove)
		s->o->tmp_remove(s->o, name);
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
	s->base.deltas = o->deltas && compress;
	s->base.async_put = o->async_put;
	s->base.stat_remote = o->stat_remote;
	s->base.tmp_files = !compress && o->tmp_open && o->put_tmp;
	s->base.batch_begin = store_batch_begin;
	s->base.batch_put_fd = store_batch_put_fd;
	s->base.tmp_open = store_tmp_open;
	s->base.batch_put_tmp = store_batch_put_tmp;
	s->base.tmp_remove = store_tmp_remove;
	s->base.batch_commit = store_batch_commit;
	s->base.batch_free = store_batch_free;
	s->base.exists = store_exists;
	s->base.chain = store_chain;
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
