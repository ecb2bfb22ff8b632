/*
 * checkpoints.c: upload, list, read, patch, delete and download checkpoints
 * (SPEC 3).
 *
 * /file rebuilds the upload from the index's layout: the skeleton blob and
 * the storage blobs interleaved in file order, each blob checked as it
 * streams (see "/file" below): a damaged store never serves a file that
 * looks complete.
 */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "../common/hash.h"
#include "../storage/readahead.h"
#include "internal.h"

int h_upload(struct resp *out, struct app *app, struct req *r)
{
	json_t *ck = NULL;
	char loc[400];
	int64_t id;
	int err;

	const char *staged = req_query(r, "staged");
	if (staged && (!strcmp(staged, "1") || !strcmp(staged, "true"))) {
		if ((err = ingest_staged_open(&ck, &id, app, r)) < 0)
			return err;
	} else {
		if ((err = upload_thin_missing(out, r)) != 0)
			return err < 0 ? err : 0;
		if ((err = ingest_upload(&ck, &id, app, r)) < 0)
			return err;
	}
	snprintf(loc, sizeof(loc), "/api/v1/models/%s/checkpoints/%" PRId64, r->params[0], id);
	resp_header(out, "Location", loc);
	return json_reply(out, 201, ck);
}

int h_list(struct resp *out, struct app *app, struct req *r)
{
	struct index_list_query q = {0};
	struct index_checkpoint_list *l = NULL;
	const char *v;
	json_t *res;
	int err;

	q.model = r->params[0];
	q.limit = 1000;
	if ((err = name_check("model", q.model)) < 0)
		return err;
	if ((v = req_query(r, "run")) && (err = name_check("run", v)) < 0)
		return err;
	q.run = v;
	q.tag = req_query(r, "tag");
	if ((v = req_query(r, "epoch"))) {
		if ((err = parse_i64(&q.epoch, "epoch", v)) < 0)
			return err;
		q.has_epoch = 1;
	}
	if ((v = req_query(r, "limit")) && (err = parse_i64(&q.limit, "limit", v)) < 0)
		return err;
	if ((v = req_query(r, "offset")) && (err = parse_i64(&q.offset, "offset", v)) < 0)
		return err;
	if (q.limit < 0 || q.limit > 100000 || q.offset < 0)
		return ck_error(CK_EINVALID, "limit must be 0 to 100000 and offset at least 0");
	q.order = req_query(r, "order");
	if (q.order) {
		const char *o = q.order[0] == '-' ? q.order + 1 : q.order;
		if (!strncmp(o, "metric.", 7) && (err = name_check("metric", o + 7)) < 0)
			return err;
	}
	if ((err = store_list(&l, app->store, &q)) < 0)
		return err;
	res = render_checkpoint_list(l);
	index_checkpoint_list_free(l);
	return res ? json_reply(out, 200, res) : ck_error(CK_ENOMEM, "out of memory");
}

/* ---- the JSON cache ---- */

#define JCACHE_SLOTS 1024

struct jslot {
	int64_t id;
	uint64_t gen;
	char *json;
	size_t len;
};

struct json_cache {
	pthread_mutex_t lock;
	struct jslot slots[JCACHE_SLOTS];
};

int json_cache_new(struct json_cache **out)
{
	struct json_cache *c = calloc(1, sizeof(*c));

	if (!c)
		return ck_error(CK_ENOMEM, "out of memory");
	pthread_mutex_init(&c->lock, NULL);
	*out = c;
	return 0;
}

void json_cache_free(struct json_cache *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < JCACHE_SLOTS; i++)
		free(c->slots[i].json);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* A copy of id's JSON rendered at generation gen into out (1), or 0. */
static int json_cache_get(struct resp *out, struct json_cache *c, int64_t id, uint64_t gen)
{
	struct jslot *e = &c->slots[(uint64_t)id % JCACHE_SLOTS];
	char *copy = NULL;
	size_t len = 0;

	pthread_mutex_lock(&c->lock);
	if (e->json && e->id == id && e->gen == gen && (copy = malloc(e->len + 1))) {
		memcpy(copy, e->json, e->len + 1);
		len = e->len;
	}
	pthread_mutex_unlock(&c->lock);
	if (!copy)
		return 0;
	out->status = 200;
	out->body = copy;
	out->body_len = len;
	out->content_type = "application/json";
	return 1;
}

static void json_cache_put(struct json_cache *c, int64_t id, uint64_t gen, const char *json,
			   size_t len)
{
	struct jslot *e = &c->slots[(uint64_t)id % JCACHE_SLOTS];
	char *copy = malloc(len + 1);

	if (!copy)
		return;
	memcpy(copy, json, len + 1);
	pthread_mutex_lock(&c->lock);
	if (!e->json || e->gen <= gen) { /* never replace a newer rendering */
		free(e->json);
		*e = (struct jslot){id, gen, copy, len};
		copy = NULL;
	}
	pthread_mutex_unlock(&c->lock);
	free(copy);
}

/* The checkpoint's JSON; with_tensors adds its tensor list. */
static int checkpoint_json(json_t **out, struct app *app, int64_t id, int with_tensors)
{
	struct index_checkpoint *c = NULL;
	struct tview v;
	json_t *o = NULL, *a;
	int err;

	memset(&v, 0, sizeof(v));
	if ((err = store_checkpoint(&c, app->store, id)) < 0 ||
	    (with_tensors && (err = tview_load(&v, app, id)) < 0))
		goto out;
	if (!(o = render_checkpoint(c)) || (with_tensors && !(a = render_tensors(v.t)))) {
		err = ck_error(CK_ENOMEM, "out of memory");
		goto out;
	}
	/* an assembled tensor (a DCP checkpoint's) is no stored blob: its
	 * chunks are, and it says how many */
	for (size_t i = 0; with_tensors && v.comp && i < v.t->ntensors; i++) {
		const struct tview_comp *k = v.comp[v.t->tensors[i].storage];
		json_t *e = json_array_get(a, i);
		if (k && e) {
			json_object_set_new(e, "blob", json_null());
			json_object_del(e, "refs");
			json_object_set_new(e, "pieces", json_integer((json_int_t)k->n));
		}
	}
	if (with_tensors)
		json_object_set_new(o, "tensors", a);
	if (with_tensors && index_format_multi(c->format)) { /* SPEC 3.2 */
		struct index_file_list *fl = NULL;
		json_t *f = NULL;
		if ((err = store_files(&fl, app->store, id)) < 0)
			goto out;
		f = render_files(fl);
		index_file_list_free(fl);
		if (!f) {
			err = ck_error(CK_ENOMEM, "out of memory");
			goto out;
		}
		json_object_set_new(o, "files", f);
	}
	*out = o;
	o = NULL;
out:
	json_decref(o);
	index_checkpoint_free(c);
	tview_free(&v);
	return err;
}

int h_get(struct resp *out, struct app *app, struct req *r)
{
	uint64_t gen;
	int64_t id;
	json_t *ck;
	int err;

	/* The generation is read first: a change committed after it makes a
	 * rendering stored under it stale only for requests that read the
	 * older generation, never for later ones. */
	if ((err = store_generation(&gen, app->store)) < 0 || (err = resolve_ref(&id, app, r)) < 0)
		return err;
	if (json_cache_get(out, app->jcache, id, gen))
		return 0;
	if ((err = checkpoint_json(&ck, app, id, 1)) < 0 || (err = json_reply(out, 200, ck)) < 0)
		return err;
	json_cache_put(app->jcache, id, gen, out->body, out->body_len);
	return 0;
}

/* A PATCH body into p (pointing into body and into names/tags, arrays the
 * caller provides, big enough for the body's object sizes). Every value is
 * checked as an upload's would be; the merged metrics' count is checked by
 * the index. */
static int patch_parse(struct index_patch *p, struct index_metric *set, const char **remove,
		       const char **tags, const json_t *body)
{
	const char *key;
	json_t *v;
	int err;

	memset(p, 0, sizeof(*p));
	p->set = set;
	p->remove = remove;
	p->tags = tags;
	if (!json_is_object(body))
		return ck_error(CK_EINVALID, "the body must be a JSON object with any of loss, "
					     "metrics, tags, pinned");
	json_object_foreach((json_t *)body, key, v)
	{
		if (!strcmp(key, "loss")) {
			if (!json_is_number(v) && !json_is_null(v))
				return ck_error(CK_EINVALID, "loss must be a number or null");
			p->has_loss = 1;
			p->loss_null = json_is_null(v);
			p->loss = json_number_value(v);
			if (!p->loss_null && !isfinite(p->loss))
				return ck_error(CK_EINVALID, "loss must be a finite number");
		} else if (!strcmp(key, "metrics")) {
			const char *mk;
			json_t *mv;
			if (!json_is_object(v))
				return ck_error(CK_EINVALID,
						"metrics must be an object of numbers");
			if (json_object_size(v) > INDEX_MAX_METRICS)
				return ck_error(
				    CK_EINVALID,
				    "a PATCH sets at most %d metrics (a checkpoint keeps "
				    "at most %d)",
				    INDEX_MAX_METRICS, INDEX_MAX_METRICS);
			json_object_foreach(v, mk, mv)
			{
				if ((err = name_check("metric", mk)) < 0)
					return err;
				if (json_is_null(mv)) {
					remove[p->nremove++] = mk;
					continue;
				}
				if (!json_is_number(mv) || !isfinite(json_number_value(mv)))
					return ck_error(CK_EINVALID,
							"metric '%s' must be a finite number (or "
							"null to remove it)",
							mk);
				snprintf(set[p->nset].name, sizeof(set[p->nset].name), "%s", mk);
				set[p->nset++].value = json_number_value(mv);
			}
		} else if (!strcmp(key, "tags")) {
			size_t i;
			json_t *t;
			if (!json_is_array(v) || json_array_size(v) > INDEX_MAX_TAGS)
				return ck_error(CK_EINVALID,
						"tags must be an array of at most %d strings",
						INDEX_MAX_TAGS);
			json_array_foreach(v, i, t)
			{
				const char *s = json_string_value(t);
				if (!s)
					return ck_error(CK_EINVALID, "each tag must be a string");
				if ((err = tag_check(s)) < 0)
					return err;
				tags[p->ntags++] = s;
			}
			p->has_tags = 1;
		} else if (!strcmp(key, "pinned")) {
			if (!json_is_boolean(v))
				return ck_error(CK_EINVALID, "pinned must be true or false");
			p->has_pinned = 1;
			p->pinned = json_is_true(v);
		} else {
			return ck_error(CK_EINVALID,
					"'%s' cannot be changed: PATCH takes loss, metrics, tags, "
					"pinned",
					key);
		}
	}
	return 0;
}

int h_patch(struct resp *out, struct app *app, struct req *r)
{
	struct index_patch p;
	struct index_metric *set = NULL;
	const char **remove = NULL, **tags = NULL;
	json_error_t jerr;
	json_t *body = NULL, *ck = NULL;
	int64_t id;
	int err;

	if ((err = resolve_ref(&id, app, r)) < 0)
		return err;
	body = json_loadb(r->body ? r->body : "", r->body_len, JSON_REJECT_DUPLICATES, &jerr);
	if (!body)
		return ck_error(CK_EINVALID, "the body is not JSON: %s at position %d", jerr.text,
				jerr.position);
	set = calloc(INDEX_MAX_METRICS, sizeof(*set));
	remove = calloc(INDEX_MAX_METRICS, sizeof(*remove));
	tags = calloc(INDEX_MAX_TAGS, sizeof(*tags));
	if (!set || !remove || !tags) {
		err = ck_error(CK_ENOMEM, "out of memory");
		goto out;
	}
	if ((err = patch_parse(&p, set, remove, tags, body)) < 0 ||
	    (err = store_patch(app->store, id, &p)) < 0 ||
	    (err = checkpoint_json(&ck, app, id, 0)) < 0)
		goto out;
	err = json_reply(out, 200, ck);
out:
	free(set);
	free(remove);
	free(tags);
	json_decref(body);
	return err;
}

int h_delete(struct resp *out, struct app *app, struct req *r)
{
	int64_t id;
	int err;

	if ((err = resolve_ref(&id, app, r)) < 0 ||
	    (err = store_delete(app->store, r->params[0], id)) < 0)
		return err;
	out->status = 204;
	return 0;
}

/* ---- /file ---- */

/* Every blob a download reads is checked before the download completes.
 * Read in order from its start (a plain download: storages whole, the
 * skeleton's pieces one after another), a blob's CRC-32 is taken as it
 * streams and compared with the index when its last byte is read; on a
 * mismatch the connection is cut, so a damaged file never arrives looking
 * complete. A blob first met anywhere else (a Range response) is checked
 * whole against its SHA-256 before any of its bytes go out. */
struct blob_check {
	struct hash blob;
	uint64_t next; /* raw offset the running CRC has reached */
	uint32_t crc;
	int verified;
};

struct file_gen {
	struct app *app;
	struct index_layout *l;
	struct store_hold *hold; /* the layout's blobs, held against deletes */
	struct blob_reader *rd;
	struct hash rd_blob;
	struct readahead *ra; /* a whole file read from its start */
	int ra_tried;
	int ranged;
	struct blob_check *checks;
	size_t nchecks;
};

void file_gen_ranged(void *ctx)
{
	((struct file_gen *)ctx)->ranged = 1;
}

void file_gen_free(void *ctx)
{
	struct file_gen *g = ctx;

	readahead_stop(g->ra);
	blob_reader_close(g->rd);
	store_hold_end(g->hold);
	index_layout_free(g->l);
	free(g->checks);
	free(g);
}

static struct blob_check *check_of(struct file_gen *g, const struct hash *h, int create)
{
	for (size_t i = 0; i < g->nchecks; i++)
		if (!memcmp(g->checks[i].blob.b, h->b, 32))
			return &g->checks[i];
	if (!create)
		return NULL;
	struct blob_check *v = realloc(g->checks, (g->nchecks + 1) * sizeof(*v));
	if (!v)
		return NULL;
	g->checks = v;
	v = &g->checks[g->nchecks++];
	memset(v, 0, sizeof(*v));
	v->blob = *h;
	v->crc = 0;
	return v;
}

/* g->rd on blob h, opened unless it is already. */
static int open_rd(struct file_gen *g, const struct hash *h)
{
	int err;

	if (g->rd && !memcmp(g->rd_blob.b, h->b, 32))
		return 0;
	blob_reader_close(g->rd);
	g->rd = NULL;
	if ((err = store_hold_renew(g->hold)) < 0 ||
	    (err = store_blob_open(&g->rd, g->app->store, h)) < 0)
		return err;
	g->rd_blob = *h;
	return 0;
}

/* Before part p's bytes from blob offset src go out: their blob's check,
 * which verifies the whole blob first when it cannot follow the bytes. */
static int part_check_begin(struct blob_check **out, struct file_gen *g,
			    const struct index_layout_part *p, uint64_t src)
{
	struct blob_check *c = check_of(g, &p->blob, 0);
	int err;

	if (!c && !g->ranged && src == 0 && !(c = check_of(g, &p->blob, 1)))
		return ck_error(CK_ENOMEM, "out of memory");
	if (!c || (!c->verified && c->next != src)) {
		/* met out of order: check the whole blob first */
		if ((err = open_rd(g, &p->blob)) < 0 ||
		    (err = blob_reader_verify(g->rd, &p->blob)) < 0)
			return err;
		if (!c && !(c = check_of(g, &p->blob, 1)))
			return ck_error(CK_ENOMEM, "out of memory");
		c->verified = 1;
	}
	*out = c;
	return 0;
}

/* The m bytes that follow in c's blob, as they go out. */
static int part_check_bytes(struct blob_check *c, const struct index_layout_part *p,
			    const uint8_t *data, size_t m)
{
	if (c->verified)
		return 0;
	c->crc = crc32_update(c->crc, data, m);
	c->next += m;
	if (c->next == p->blob_size) {
		if (c->crc != p->blob_crc) {
			char hex[65];
			hash_to_hex(hex, &p->blob);
			return ck_error(CK_ECORRUPT,
					"stored blob %s does not match its CRC-32: the store is "
					"damaged (run 'ckptd verify')",
					hex);
		}
		c->verified = 1;
	}
	return 0;
}

/* The next bytes from the readahead, checked part by part. */
static long ra_read(struct file_gen *g, uint64_t pos, uint8_t *buf, size_t n)
{
	const struct index_layout *l = g->l;
	long got;
	int err;

	if ((err = store_hold_renew(g->hold)) < 0)
		return err;
	if ((got = readahead_read(g->ra, buf, n)) < 0)
		return got;
	for (size_t done = 0; done < (size_t)got;) {
		const struct index_layout_part *p = &l->parts[index_layout_part_at(l, pos + done)];
		uint64_t in_part = pos + done - p->file_off;
		size_t m = (size_t)got - done;
		struct blob_check *c;
		if (m > p->size - in_part)
			m = (size_t)(p->size - in_part);
		if ((err = part_check_begin(&c, g, p, p->src_off + in_part)) < 0 ||
		    (err = part_check_bytes(c, p, buf + done, m)) < 0)
			return err;
		done += m;
	}
	return got;
}

long file_gen_read(void *ctx, uint64_t pos, uint8_t *buf, size_t n)
{
	struct file_gen *g = ctx;
	const struct index_layout *l = g->l;
	size_t done = 0;
	long err;

	/* a whole file from its start: read ahead on worker threads, unless
	 * its blobs are raw local files, read faster here straight into the
	 * response's buffer (a readahead copies each byte once more, from its
	 * slot: a warm 1 GB download took 0.53 s against 0.67 s with it) */
	if (!g->ra_tried && !g->ranged && pos == 0) {
		g->ra_tried = 1;
		if (!store_layout_local_raw(g->app->store, l, 0) &&
		    (err = readahead_start(&g->ra, g->app->store, l, 0)) < 0)
			goto fail;
	}
	if (g->ra && readahead_pos(g->ra) != pos) { /* it went elsewhere after all */
		readahead_stop(g->ra);
		g->ra = NULL;
	}
	if (g->ra) {
		long got = ra_read(g, pos, buf, n);
		if (got >= 0)
			return got;
		err = got;
		goto fail;
	}
	while (done < n && pos + done < l->size) {
		uint64_t at = pos + done;
		const struct index_layout_part *p = &l->parts[index_layout_part_at(l, at)];
		uint64_t in_part = at - p->file_off;
		size_t m = n - done;
		struct blob_check *c;
		if (m > p->size - in_part)
			m = (size_t)(p->size - in_part);
		if ((err = open_rd(g, &p->blob)) < 0 ||
		    (err = part_check_begin(&c, g, p, p->src_off + in_part)) < 0 ||
		    (err = blob_reader_read(g->rd, buf + done, m, p->src_off + in_part)) < 0 ||
		    (err = part_check_bytes(c, p, buf + done, m)) < 0)
			goto fail;
		done += m;
	}
	return (long)done;
fail:
	fprintf(stderr, "ckptd: download of checkpoint %" PRId64 " stopped: %s\n", l->id,
		ck_errmsg());
	return err;
}

/* Whether ref names one checkpoint for good (an id) rather than whichever
 * is best or latest now. */
static int ref_is_id(const char *ref)
{
	return *ref && strspn(ref, "0123456789") == strlen(ref);
}

int hold_blobs(struct store_hold **out, struct app *app, int64_t id, const struct hash *blobs,
	       size_t nblobs)
{
	struct hash *h = calloc(nblobs + 1, sizeof(*h));
	struct index_checkpoint *c = NULL;
	size_t n = 0;
	int err;

	if (!h)
		return ck_error(CK_ENOMEM, "out of memory");
	for (size_t i = 0; i < nblobs; i++) {
		size_t k;
		for (k = 0; k < n; k++)
			if (!memcmp(h[k].b, blobs[i].b, 32))
				break;
		if (k == n)
			h[n++] = blobs[i];
	}
	err = store_hold(out, app->store, h, n);
	free(h);
	if (err < 0)
		return err;
	if ((err = store_checkpoint(&c, app->store, id)) < 0) {
		store_hold_end(*out);
		*out = NULL;
		return err;
	}
	index_checkpoint_free(c);
	return 0;
}

int file_gen_new(struct file_gen **out, struct app *app, struct index_layout *l, int64_t hold_id)
{
	struct file_gen *g = calloc(1, sizeof(*g));
	int err = 0;

	*out = NULL;
	if (!g) {
		index_layout_free(l);
		return ck_error(CK_ENOMEM, "out of memory");
	}
	g->app = app;
	g->l = l;
	if (hold_id >= 0) {
		struct hash *h = calloc(l->nparts + 1, sizeof(*h));
		for (size_t i = 0; h && i < l->nparts; i++)
			h[i] = l->parts[i].blob;
		err = h ? hold_blobs(&g->hold, app, hold_id, h, l->nparts)
			: ck_error(CK_ENOMEM, "out of memory");
		free(h);
		if (err < 0) {
			file_gen_free(g);
			return err;
		}
	}
	*out = g;
	return 0;
}

/* Serves layout l (taken over) of checkpoint row id as a download named
 * fname: ETag (its SHA-256), Content-Disposition, caching as ref allows,
 * 304 on a matching If-None-Match, HEAD and Range through the generator. */
static int serve_layout(struct resp *out, struct app *app, struct req *r, struct index_layout *l,
			int64_t id, const char *fname)
{
	struct file_gen *g = NULL;
	char etag[70], hex[65], disp[400];
	const char *inm;
	int err;

	hash_to_hex(hex, &l->sha256);
	snprintf(etag, sizeof(etag), "\"%s\"", hex);
	snprintf(disp, sizeof(disp), "attachment; filename=\"%s\"", fname);
	resp_header(out, "ETag", etag);
	resp_header(out, "Content-Disposition", disp);
	/* An id names the same bytes forever; best and latest move, so a
	 * cache must ask again (the ETag makes that cheap: 304). */
	resp_header(out, "Cache-Control",
		    ref_is_id(r->params[1]) ? "private, max-age=31536000, immutable" : "no-cache");
	inm = r->header ? r->header(r, "If-None-Match") : NULL;
	if (inm && (strstr(inm, hex) || !strcmp(inm, "*"))) {
		index_layout_free(l);
		out->status = 304;
		return 0;
	}
	if ((err = file_gen_new(&g, app, l, strcmp(r->method, "HEAD") ? id : -1)) < 0)
		return err;
	out->status = 200;
	out->content_type = "application/octet-stream";
	out->gen =
	    (struct resp_gen){g->l->size, file_gen_read, file_gen_free, g, 1, file_gen_ranged};
	return 0;
}

void single_file_name(char *out, size_t n, const char *model, int has_epoch, int64_t epoch,
		      int64_t id, const char *format)
{
	const char *ext = !strcmp(format, "safetensors") ? "safetensors" : "pth";

	if (has_epoch)
		snprintf(out, n, "%s-epoch%" PRId64 ".%s", model, epoch, ext);
	else
		snprintf(out, n, "%s-%" PRId64 ".%s", model, id, ext);
}

int h_file(struct resp *out, struct app *app, struct req *r)
{
	struct index_layout *l = NULL;
	char name[300];
	int64_t id;
	int err;

	if ((err = resolve_ref(&id, app, r)) < 0 || (err = store_layout(&l, app->store, id)) < 0)
		return err;
	if (index_format_multi(l->format)) {
		err = ck_error(CK_ECONFLICT,
			       "checkpoint %" PRId64 " is made of several files: GET "
			       ".../checkpoints/%" PRId64 "/files for their list, .../files/NAME "
			       "for one, .../archive for all as one tar stream",
			       id, id);
		index_layout_free(l);
		return err;
	}
	single_file_name(name, sizeof(name), l->model, l->has_epoch, l->epoch, l->id, l->format);
	checkpoint_id_header(out, id);
	return serve_layout(out, app, r, l, id, name);
}

/* ---- checkpoints of several files (SPEC 3.2) ---- */

int h_file_one(struct resp *out, struct app *app, struct req *r)
{
	struct index_file_list *fl = NULL;
	struct index_layout *l = NULL;
	const char *name = r->params[2];
	char fname[300];
	int64_t id, part = -1;
	int err;

	if ((err = file_name_check(name)) < 0 || (err = resolve_ref(&id, app, r)) < 0 ||
	    (err = store_files(&fl, app->store, id)) < 0)
		goto out;
	for (size_t i = 0; i < fl->nitems; i++)
		if (!strcmp(fl->items[i].name, name))
			part = fl->items[i].part;
	if (!fl->nitems) { /* a single upload: its one file, named as /file names it */
		if ((err = store_layout(&l, app->store, id)) < 0)
			goto out;
		single_file_name(fname, sizeof(fname), l->model, l->has_epoch, l->epoch, l->id,
				 l->format);
		if (strcmp(fname, name)) {
			err = ck_error(CK_ENOTFOUND,
				       "checkpoint %" PRId64 " is one file, named '%s'", id, fname);
			goto out;
		}
		part = id;
	} else if (part < 0) {
		err = ck_error(CK_ENOTFOUND,
			       "checkpoint %" PRId64
			       " has no file '%.300s' (GET .../files lists them)",
			       id, name);
		goto out;
	} else if ((err = store_layout(&l, app->store, part)) < 0) {
		goto out;
	}
	/* the last segment, quotes and backslashes made safe for the header */
	const char *base = strrchr(name, '/');
	snprintf(fname, sizeof(fname), "%s", base ? base + 1 : name);
	for (char *p = fname; *p; p++)
		if (*p == '"' || *p == '\\')
			*p = '_';
	checkpoint_id_header(out, id);
	err = serve_layout(out, app, r, l, part, fname);
	l = NULL;
out:
	index_layout_free(l);
	index_file_list_free(fl);
	return err;
}
