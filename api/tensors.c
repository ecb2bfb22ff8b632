/*
 * tensors.c: the outputs that open a checkpoint (SPEC 3): a new state_dict
 * file (pth or safetensors) of any subset of tensors, one tensor as .npy or
 * raw bytes, and the per-tensor diff of two checkpoints.
 *
 * Outputs are plans (formats/plan.h): literal headers the writer made, and
 * ranges or strided gathers of stored storages, streamed from the blobs as
 * the client reads. Nothing is assembled whole in memory, and a Range
 * request of a generated file works like one of an upload.
 */
#include <fnmatch.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "../formats/plan.h"
#include "internal.h"

/* ---- streaming a plan ---- */

struct plan_gen {
	struct app *app;
	struct store_hold *hold; /* the storages' blobs, held against deletes */
	struct plan *plan;
	struct tview view;	 /* owns the geometry views point into */
	struct index_tensors *t; /* view.t */
	struct plan_view *views; /* one per output tensor */
	char **names;		 /* the views' names (owned) */
	size_t nviews;
	size_t *storage_map;	/* plan storage index -> t->storages index */
	struct blob_reader *rd; /* the current storage's reader */
	size_t rd_storage;
	uint8_t *verified; /* per plan storage: its blob was checked */
	struct hasher *sh; /* streaming check of a whole-storage segment */
	size_t sh_storage;
	uint64_t sh_pos;
	int sh_active;
	int ranged;   /* a Range response: check storages before serving them */
	uint8_t *win; /* gather cache: a window of one storage */
	size_t win_storage;
	uint64_t win_off, win_len;
	/* assembled storages (api/dcp.c): their pieces' stored storages */
	struct blob_reader *crd; /* the reader of view.src's storage crd_u */
	size_t crd_u;
	uint8_t *src_verified; /* per view.src storage */
	struct hasher *csh;    /* streaming check of a piece that is a whole storage */
	size_t csh_u;
	uint64_t csh_pos;
	int csh_active;
};

enum { WIN = 1 << 20 };

static void plan_gen_ranged(void *ctx)
{
	((struct plan_gen *)ctx)->ranged = 1;
}

static void plan_gen_free(void *ctx)
{
	struct plan_gen *g = ctx;

	if (!g)
		return;
	blob_reader_close(g->rd);
	store_hold_end(g->hold);
	plan_free(g->plan);
	blob_reader_close(g->crd);
	free(g->src_verified);
	hasher_free(g->csh);
	tview_free(&g->view);
	for (size_t i = 0; i < g->nviews; i++)
		free(g->names[i]);
	free(g->names);
	free(g->views);
	free(g->storage_map);
	free(g->verified);
	hasher_free(g->sh);
	free(g->win);
	free(g);
}

/* The assembled storage behind plan storage s, or NULL. */
static const struct tview_comp *comp_of(const struct plan_gen *g, size_t s)
{
	return g->view.comp ? g->view.comp[g->storage_map[s]] : NULL;
}

static int open_storage(struct plan_gen *g, size_t s)
{
	int err;

	if (g->rd && g->rd_storage == s)
		return 0;
	blob_reader_close(g->rd);
	g->rd = NULL;
	const struct hash *h = &g->t->storages[g->storage_map[s]].blob;
	if ((err = store_hold_renew(g->hold)) < 0 ||
	    (err = store_blob_open(&g->rd, g->app->store, h)) < 0)
		return err;
	g->rd_storage = s;
	return 0;
}

/* A storage is checked against its SHA-256 before any of its bytes go out,
 * unless it is streamed whole and in order (then see range_read). */
static int verify_storage(struct plan_gen *g, size_t s)
{
	int err;

	if (g->verified[s] || comp_of(g, s))
		return 0; /* an assembled storage's pieces are checked as they are read */
	if ((err = open_storage(g, s)) < 0 ||
	    (err = blob_reader_verify(g->rd, &g->t->storages[g->storage_map[s]].blob)) < 0)
		return err;
	g->verified[s] = 1;
	return 0;
}

/* Reads n bytes at in of piece p: its stored storage is checked against
 * its SHA-256 before any of its bytes go out, or hashed as it streams when
 * the piece is the whole storage read in order (as range_read does). */
static int piece_read(struct plan_gen *g, const struct tview_piece *p, uint64_t in, uint8_t *out,
		      size_t n)
{
	const struct index_storage_row *row = &g->view.src->storages[p->src];
	int whole = p->src_off == 0 && p->len == row->nbytes, err;

	if (!g->crd || g->crd_u != p->src) {
		blob_reader_close(g->crd);
		g->crd = NULL;
		if ((err = store_hold_renew(g->hold)) < 0 ||
		    (err = store_blob_open(&g->crd, g->app->store, &row->blob)) < 0)
			return err;
		g->crd_u = p->src;
	}
	if (!g->src_verified[p->src]) {
		if (whole && in == 0 && !g->csh_active && !g->ranged) {
			g->csh_active = 1;
			g->csh_u = p->src;
			g->csh_pos = 0;
		}
		if (!(g->csh_active && g->csh_u == p->src && g->csh_pos == in && whole)) {
			if ((err = blob_reader_verify(g->crd, &row->blob)) < 0)
				return err;
			g->src_verified[p->src] = 1;
		}
	}
	if ((err = blob_reader_read(g->crd, out, n, p->src_off + in)) < 0)
		return err;
	if (!g->src_verified[p->src] && g->csh_active && g->csh_u == p->src) {
		hasher_update(g->csh, out, n);
		g->csh_pos += n;
		if (g->csh_pos == p->len) {
			struct hash got;
			g->csh_active = 0;
			hasher_final(g->csh, &got, NULL);
			if (memcmp(got.b, row->blob.b, 32))
				return ck_error(CK_ECORRUPT,
						"a stored storage does not match its SHA-256: the "
						"store is damaged (run 'ckptd verify')");
			g->src_verified[p->src] = 1;
		}
	}
	return 0;
}

/* Reads n bytes at off of assembled storage c. */
static int comp_read(struct plan_gen *g, const struct tview_comp *c, uint64_t off, uint8_t *out,
		     size_t n)
{
	size_t lo = 0, hi = c->n;
	int err;

	while (hi - lo > 1) { /* the last piece starting at or before off */
		size_t mid = (lo + hi) / 2;
		if (c->p[mid].at <= off)
			lo = mid;
		else
			hi = mid;
	}
	for (; n > 0 && lo < c->n; lo++) {
		const struct tview_piece *p = &c->p[lo];
		uint64_t in = off - p->at;
		size_t m = n < p->len - in ? n : (size_t)(p->len - in);
		if ((err = piece_read(g, p, in, out, m)) < 0)
			return err;
		out += m;
		off += m;
		n -= m;
	}
	return n ? ck_error(CK_EIO, "an assembled tensor ends early") : 0;
}

/* Reads part of a RANGE segment. A segment that is a whole storage, read
 * from its start onwards, is hashed as it streams and checked when its last
 * byte is read (a mismatch stops the download: the client sees it cut);
 * any other read of an unchecked storage checks the whole blob first. */
static int range_read(struct plan_gen *g, const struct plan_seg *sg, uint64_t in_seg, uint8_t *out,
		      size_t m)
{
	size_t s = sg->storage;
	const struct index_storage_row *row = &g->t->storages[g->storage_map[s]];
	int whole = sg->src_off == 0 && sg->len == row->nbytes, err;
	const struct tview_comp *c = comp_of(g, s);

	if (c)
		return comp_read(g, c, sg->src_off + in_seg, out, m);
	if (!g->verified[s]) {
		if (whole && in_seg == 0 && !g->sh_active && !g->ranged) {
			g->sh_active = 1;
			g->sh_storage = s;
			g->sh_pos = 0;
		}
		if (!(g->sh_active && g->sh_storage == s && g->sh_pos == in_seg && whole)) {
			if ((err = verify_storage(g, s)) < 0)
				return err;
		}
	}
	if ((err = open_storage(g, s)) < 0 ||
	    (err = blob_reader_read(g->rd, out, m, sg->src_off + in_seg)) < 0)
		return err;
	if (!g->verified[s] && g->sh_active && g->sh_storage == s) {
		hasher_update(g->sh, out, m);
		g->sh_pos += m;
		if (g->sh_pos == sg->len) {
			struct hash got;
			g->sh_active = 0;
			hasher_final(g->sh, &got, NULL);
			if (memcmp(got.b, row->blob.b, 32))
				return ck_error(CK_ECORRUPT,
						"a stored storage does not match its SHA-256: the "
						"store is damaged (run 'ckptd verify')");
			g->verified[s] = 1;
		}
	}
	return 0;
}

/* Reads n bytes at off of storage s through the window cache. */
static int win_read(struct plan_gen *g, size_t s, uint64_t off, uint8_t *out, size_t n)
{
	int err;

	if (!g->win || g->win_storage != s || off < g->win_off ||
	    off + n > g->win_off + g->win_len) {
		uint64_t size;
		const struct tview_comp *c = comp_of(g, s);
		if (!c && (err = open_storage(g, s)) < 0)
			return err;
		if (!g->win && !(g->win = malloc(WIN)))
			return ck_error(CK_ENOMEM, "out of memory");
		size = c ? g->t->storages[g->storage_map[s]].nbytes : blob_reader_size(g->rd);
		if (off + n > size)
			return ck_error(CK_ECORRUPT, "a tensor view reaches past its storage");
		g->win_off = off;
		g->win_len = size - off < WIN ? size - off : WIN;
		g->win_storage = (size_t)-1;
		if ((err = c ? comp_read(g, c, off, g->win, (size_t)g->win_len)
			     : blob_reader_read(g->rd, g->win, (size_t)g->win_len, off)) < 0)
			return err;
		g->win_storage = s;
	}
	memcpy(out, g->win + (off - g->win_off), n);
	return 0;
}

/* Fills out[0..n) with bytes [pos, pos+n) of view v's elements in C order. */
static int gather(struct plan_gen *g, const struct plan_view *v, uint64_t pos, uint8_t *out,
		  size_t n)
{
	size_t esz = dtype_size(v->dtype);
	uint64_t idx[TENSOR_MAX_NDIM];
	int err;

	if (esz == 0)
		return ck_error(CK_EIO, "unknown element size");
	while (n > 0) {
		uint64_t e = pos / esz, within = pos % esz, rest = e, off = v->offset;
		for (int d = v->ndim - 1; d >= 0; d--) {
			uint64_t dim = (uint64_t)v->shape[d];
			idx[d] = dim ? rest % dim : 0;
			rest = dim ? rest / dim : 0;
			off += idx[d] * (uint64_t)v->strides[d];
		}
		size_t take = esz - within < n ? esz - within : n;
		uint8_t elem[16];
		if ((err = win_read(g, v->storage, off * esz, elem, esz)) < 0)
			return err;
		memcpy(out, elem + within, take);
		out += take;
		n -= take;
		pos += take;
	}
	return 0;
}

static long plan_gen_read(void *ctx, uint64_t pos, uint8_t *buf, size_t n)
{
	struct plan_gen *g = ctx;
	const struct plan *p = g->plan;
	size_t i = 0, done = 0;
	uint64_t seg_start = 0;
	int err = 0;

	if (pos >= p->total)
		return 0;
	/* find the segment holding pos: segments are few (a handful per
	 * tensor), so a walk from the start is cheap next to the I/O */
	while (i < p->nsegs && seg_start + p->segs[i].len <= pos) {
		seg_start += p->segs[i].len;
		i++;
	}
	while (done < n && i < p->nsegs) {
		const struct plan_seg *s = &p->segs[i];
		uint64_t in_seg = pos + done - seg_start;
		size_t m = n - done;
		if (m > s->len - in_seg)
			m = (size_t)(s->len - in_seg);
		switch (s->kind) {
		case PLAN_LITERAL: memcpy(buf + done, s->lit + in_seg, m); break;
		case PLAN_RANGE:
			if ((err = range_read(g, s, in_seg, buf + done, m)) < 0)
				goto fail;
			break;
		case PLAN_GATHER:
			if ((err = verify_storage(g, g->views[s->view].storage)) < 0 ||
			    (err = gather(g, &g->views[s->view], in_seg, buf + done, m)) < 0)
				goto fail;
			break;
		}
		done += m;
		if (in_seg + m == s->len) {
			seg_start += s->len;
			i++;
		}
	}
	return (long)done;
fail:
	fprintf(stderr, "ckptd: generated download stopped: %s\n", ck_errmsg());
	return err;
}

/* Holds the blobs of the storages g's plan reads (g->storage_map[0..n)). */
static int plan_hold(struct plan_gen *g, const struct req *r, int64_t id, size_t n)
{
	struct hash *h;
	int err;

	if (!strcmp(r->method, "HEAD"))
		return 0;
	size_t m = 0, k = 0;
	for (size_t i = 0; i < n; i++)
		m += comp_of(g, i) ? comp_of(g, i)->n : 1;
	if (!(h = calloc(m + 1, sizeof(*h))))
		return ck_error(CK_ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		const struct tview_comp *c = comp_of(g, i);
		for (size_t j = 0; c && j < c->n; j++) /* an assembled one: its pieces' */
			h[k++] = g->view.src->storages[c->p[j].src].blob;
		if (!c)
			h[k++] = g->t->storages[g->storage_map[i]].blob;
	}
	err = hold_blobs(&g->hold, g->app, id, h, k);
	free(h);
	return err;
}

/* Loads the tensors checkpoint id serves into g (api/dcp.c). */
static int gen_load(struct plan_gen *g, struct app *app, int64_t id)
{
	int err = tview_load(&g->view, app, id);

	if (err < 0)
		return err;
	g->t = g->view.t;
	if (g->view.src && (!(g->src_verified = calloc(g->view.src->nstorages + 1, 1)) ||
			    !(g->csh = hasher_new())))
		return ck_error(CK_ENOMEM, "out of memory");
	return 0;
}

/* Makes g (now owned by out) the response body. */
static void plan_serve(struct resp *out, struct plan_gen *g)
{
	out->status = 200;
	out->content_type = "application/octet-stream";
	out->gen =
	    (struct resp_gen){g->plan->total, plan_gen_read, plan_gen_free, g, 1, plan_gen_ranged};
}

/* ---- choosing tensors ---- */

/* Decodes one JSON Pointer segment (~1 -> /, ~0 -> ~) into out. */
static void unescape_segment(char *out, const char *in, size_t n)
{
	size_t j = 0;

	for (size_t i = 0; i < n; i++) {
		if (in[i] == '~' && i + 1 < n && (in[i + 1] == '0' || in[i + 1] == '1')) {
			out[j++] = in[i + 1] == '1' ? '/' : '~';
			i++;
		} else {
			out[j++] = in[i];
		}
	}
	out[j] = '\0';
}

/* 1 when path lies below root ("" = the top): then *rest is the part after
 * "root/". */
static int below(const char *path, const char *root, const char **rest)
{
	size_t n = strlen(root);

	if (strncmp(path, root, n) || path[n] != '/' || !path[n + 1])
		return 0;
	*rest = path + n + 1;
	return 1;
}

/* 1 when every tensor below root sits directly in it (a flat dict) and
 * there is at least one. */
static int flat_root(const struct index_tensors *t, const char *root)
{
	size_t found = 0;
	const char *rest;

	for (size_t i = 0; i < t->ntensors; i++)
		if (below(t->tensors[i].path, root, &rest)) {
			if (strchr(rest, '/'))
				return 0;
			found++;
		}
	return found > 0;
}

static int default_root(const char **root, const struct index_tensors *t)
{
	static const char *const tries[] = {"", "/state_dict", "/model_state_dict", "/model"};
	char cands[512];
	size_t used = 0;

	for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++)
		if (flat_root(t, tries[i])) {
			*root = tries[i];
			return 0;
		}
	/* name the top-level entries that hold tensors */
	cands[0] = '\0';
	for (size_t i = 0; i < t->ntensors && used < sizeof(cands) - 140; i++) {
		const char *p = t->tensors[i].path, *slash = strchr(p + 1, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		char seg[130];
		if (n > 128)
			continue;
		memcpy(seg, p, n);
		seg[n] = '\0';
		if (strstr(cands, seg) && (strstr(cands, seg)[n] == ',' || !strstr(cands, seg)[n]))
			continue;
		used += (size_t)snprintf(cands + used, sizeof(cands) - used, "%s%s",
					 used ? ", " : "", seg);
	}
	return ck_error(CK_ECORRUPT,
			"this checkpoint is not a flat dict of tensors, and none of /state_dict, "
			"/model_state_dict, /model is: pass root= with one of: %s",
			cands[0] ? cands : "(no tensors)");
}

static int key_match(const char *keys, const char *name)
{
	char glob[1024];
	const char *p = keys;

	if (!keys || !*keys)
		return 1;
	while (*p) {
		size_t n = strcspn(p, ",");
		if (n > 0 && n < sizeof(glob)) {
			memcpy(glob, p, n);
			glob[n] = '\0';
			if (fnmatch(glob, name, 0) == 0)
				return 1;
		}
		p += n;
		if (*p == ',')
			p++;
	}
	return 0;
}

/* Builds g->views of the tensors below root whose names (decoded below
 * root) match keys, and g->storage_map of the storages they use; *pst
 * (caller frees) describes those storages in plan order. */
static int choose(struct plan_gen *g, struct plan_storage **pst, size_t *nst, const char *root,
		  const char *keys)
{
	struct index_tensors *t = g->t;
	size_t *map = calloc(t->nstorages + 1, sizeof(*map)); /* t idx -> plan idx + 1 */
	struct plan_storage *st = calloc(t->nstorages + 1, sizeof(*st));
	int err = 0;

	g->names = calloc(t->ntensors + 1, sizeof(*g->names));
	g->views = calloc(t->ntensors + 1, sizeof(*g->views));
	g->storage_map = calloc(t->nstorages + 1, sizeof(*g->storage_map));
	g->verified = calloc(t->nstorages + 1, 1);
	g->sh = hasher_new();
	*nst = 0;
	if (!map || !g->names || !st || !g->views || !g->storage_map || !g->verified || !g->sh) {
		err = ck_error(CK_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < t->ntensors; i++) {
		const struct index_tensor_row *r = &t->tensors[i];
		const char *rest;
		if (!below(r->path, root, &rest))
			continue;
		char *name = malloc(strlen(rest) + 1);
		if (!name) {
			err = ck_error(CK_ENOMEM, "out of memory");
			goto out;
		}
		/* decode segment by segment; deeper paths keep '/' between them */
		char *w = name;
		const char *s = rest;
		for (;;) {
			size_t n = strcspn(s, "/");
			unescape_segment(w, s, n);
			w += strlen(w);
			if (!s[n])
				break;
			*w++ = '/';
			s += n + 1;
		}
		if (!key_match(keys, name)) {
			free(name);
			continue;
		}
		if (!map[r->storage]) {
			const struct index_storage_row *sr = &t->storages[r->storage];
			st[*nst] = (struct plan_storage){sr->dtype, sr->nbytes, sr->crc32};
			g->storage_map[*nst] = r->storage;
			map[r->storage] = ++*nst;
		}
		g->names[g->nviews] = name;
		g->views[g->nviews] = (struct plan_view){
		    name, r->dtype, r->ndim, r->shape, r->strides, r->offset, map[r->storage] - 1};
		g->nviews++;
	}
	*pst = st;
	st = NULL;
out:
	free(st);
	free(map);
	return err;
}

static void set_disposition(struct resp *out, const char *model, int64_t id,
			    const struct index_checkpoint *ck, const char *what, const char *ext)
{
	char disp[512];

	if (ck->has_epoch)
		snprintf(disp, sizeof(disp), "attachment; filename=\"%s-epoch%" PRId64 "%s.%s\"",
			 model, ck->epoch, what, ext);
	else
		snprintf(disp, sizeof(disp), "attachment; filename=\"%s-%" PRId64 "%s.%s\"", model,
			 id, what, ext);
	resp_header(out, "Content-Disposition", disp);
}

int h_state_dict(struct resp *out, struct app *app, struct req *r)
{
	const char *root = req_query(r, "root"), *keys = req_query(r, "keys");
	const char *format = req_query(r, "format");
	struct plan_gen *g = NULL;
	struct plan_storage *st = NULL;
	size_t nst = 0;
	struct index_checkpoint *ck = NULL;
	int64_t id;
	int err, st_fmt;

	if (!format || !strcmp(format, "pth") || !strcmp(format, "pt"))
		st_fmt = 0;
	else if (!strcmp(format, "safetensors"))
		st_fmt = 1;
	else
		return ck_error(CK_EINVALID, "format must be pth or safetensors, not '%.32s'",
				format);
	if (root && *root && root[0] != '/')
		return ck_error(CK_EINVALID, "root must be a JSON Pointer such as "
					     "/model_state_dict");
	if (root && !strcmp(root, "/"))
		root = "";
	if ((err = resolve_ref(&id, app, r)) < 0)
		return err;
	if (!(g = calloc(1, sizeof(*g))))
		return ck_error(CK_ENOMEM, "out of memory");
	g->app = app;
	if ((err = gen_load(g, app, id)) < 0)
		goto out;
	if (!root && (err = default_root(&root, g->t)) < 0)
		goto out;
	if ((err = choose(g, &st, &nst, root, keys)) < 0)
		goto out;
	if (g->nviews == 0) {
		err = ck_error(CK_ENOTFOUND, "no tensor below root '%s'%s%s", root,
			       keys ? " matches keys=" : "", keys ? keys : "");
		goto out;
	}
	for (size_t i = 0; !st_fmt && i < nst; i++) /* zip records carry their CRC-32 */
		if (comp_of(g, i)) {
			if ((err = tview_crc(&g->view, app, g->storage_map[i])) < 0)
				goto out;
			st[i].crc32 = g->t->storages[g->storage_map[i]].crc32;
		}
	err = st_fmt ? plan_safetensors(&g->plan, g->views, g->nviews, st, nst)
		     : plan_torch_zip(&g->plan, g->views, g->nviews, st, nst, "archive");
	if (err < 0 || (err = store_checkpoint(&ck, app->store, id)) < 0 ||
	    (err = plan_hold(g, r, id, nst)) < 0)
		goto out;
	set_disposition(out, r->params[0], id, ck, "-state_dict", st_fmt ? "safetensors" : "pth");
	checkpoint_id_header(out, id);
	plan_serve(out, g);
	g = NULL;
out:
	index_checkpoint_free(ck);
	free(st);
	plan_gen_free(g);
	return err;
}

/* ---- one tensor ---- */

static int is_contiguous(const struct plan_view *v)
{
	int64_t expect = 1;

	for (int d = v->ndim - 1; d >= 0; d--) {
		if (v->shape[d] != 1 && v->strides[d] != expect)
			return 0;
		expect *= v->shape[d];
	}
	return 1;
}

/* A plan of the view's elements in C order, nothing else. */
static int plan_raw(struct plan **out, const struct plan_view *v)
{
	struct plan *p = calloc(1, sizeof(*p));
	uint64_t numel;
	int err;

	if (!p)
		return ck_error(CK_ENOMEM, "out of memory");
	if ((err = tensor_numel(&numel, v->ndim, v->shape)) < 0) {
		free(p);
		return err;
	}
	p->total = numel * dtype_size(v->dtype);
	if (p->total > 0) {
		if (!(p->segs = calloc(1, sizeof(*p->segs)))) {
			free(p);
			return ck_error(CK_ENOMEM, "out of memory");
		}
		p->nsegs = 1;
		p->segs[0].len = p->total;
		if (is_contiguous(v)) {
			p->segs[0].kind = PLAN_RANGE;
			p->segs[0].storage = v->storage;
			p->segs[0].src_off = v->offset * dtype_size(v->dtype);
		} else {
			p->segs[0].kind = PLAN_GATHER;
			p->segs[0].view = 0;
		}
	}
	*out = p;
	return 0;
}

int h_tensor(struct resp *out, struct app *app, struct req *r)
{
	const char *format = req_query(r, "format");
	struct plan_gen *g = NULL;
	struct plan_storage st;
	char *want = NULL, shape[TENSOR_MAX_NDIM * 21 + 3];
	int64_t id;
	int err, raw;
	size_t i, used = 0;

	if (!format || !strcmp(format, "npy"))
		raw = 0;
	else if (!strcmp(format, "raw"))
		raw = 1;
	else
		return ck_error(CK_EINVALID, "format must be npy or raw, not '%.32s'", format);
	if ((err = resolve_ref(&id, app, r)) < 0)
		return err;
	if (!(g = calloc(1, sizeof(*g))) || !(want = malloc(strlen(r->params[2]) + 2))) {
		free(g);
		return ck_error(CK_ENOMEM, "out of memory");
	}
	want[0] = '/';
	strcpy(want + 1, r->params[2]);
	g->app = app;
	if ((err = gen_load(g, app, id)) < 0)
		goto out;
	for (i = 0; i < g->t->ntensors; i++)
		if (!strcmp(g->t->tensors[i].path, want))
			break;
	if (i == g->t->ntensors) {
		err = ck_error(CK_ENOTFOUND,
			       "checkpoint %" PRId64 " has no tensor at %s (GET the checkpoint "
			       "to see its tensor paths)",
			       id, want);
		goto out;
	}
	const struct index_tensor_row *t = &g->t->tensors[i];
	const struct index_storage_row *sr = &g->t->storages[t->storage];
	g->views = calloc(1, sizeof(*g->views));
	g->storage_map = calloc(1, sizeof(*g->storage_map));
	g->verified = calloc(1, 1);
	g->sh = hasher_new();
	if (!g->views || !g->storage_map || !g->verified || !g->sh) {
		err = ck_error(CK_ENOMEM, "out of memory");
		goto out;
	}
	g->views[0] =
	    (struct plan_view){t->path, t->dtype, t->ndim, t->shape, t->strides, t->offset, 0};
	g->storage_map[0] = t->storage;
	st = (struct plan_storage){sr->dtype, sr->nbytes, sr->crc32};
	if (raw)
		err = plan_raw(&g->plan, &g->views[0]);
	else
		err = plan_npy(&g->plan, &g->views[0], &st, 1);
	if (err == CK_EINVALID && !raw)
		err = ck_error(CK_EINVALID, "numpy has no type for %s: ask for format=raw",
			       dtype_name(t->dtype));
	if (err < 0 || (err = plan_hold(g, r, id, 1)) < 0)
		goto out;
	shape[0] = '[';
	used = 1;
	for (int d = 0; d < t->ndim; d++)
		used += (size_t)snprintf(shape + used, sizeof(shape) - used, "%s%" PRId64,
					 d ? "," : "", t->shape[d]);
	snprintf(shape + used, sizeof(shape) - used, "]");
	resp_header(out, "X-Dtype", dtype_name(t->dtype));
	checkpoint_id_header(out, id);
	resp_header(out, "X-Shape", shape);
	plan_serve(out, g);
	g = NULL;
out:
	free(want);
	plan_gen_free(g);
	return err;
}

/* ---- diff ---- */

static int same_tensor(const struct index_tensors *a, const struct index_tensor_row *x,
		       const struct index_tensors *b, const struct index_tensor_row *y)
{
	if (x->dtype != y->dtype || x->ndim != y->ndim || x->offset != y->offset)
		return 0;
	for (int d = 0; d < x->ndim; d++)
		if (x->shape[d] != y->shape[d] || x->strides[d] != y->strides[d])
			return 0;
	return !memcmp(a->storages[x->storage].blob.b, b->storages[y->storage].blob.b, 32);
}

static const struct index_tensor_row *find_path(const struct index_tensors *t, const char *path)
{
	for (size_t i = 0; i < t->ntensors; i++)
		if (!strcmp(t->tensors[i].path, path))
			return &t->tensors[i];
	return NULL;
}

int h_diff(struct resp *out, struct app *app, struct req *r)
{
	struct tview va, vb;
	struct index_tensors *a, *b;
	int64_t ida, idb;
	json_t *list = NULL;
	int64_t n_same = 0, n_changed = 0, n_added = 0, n_removed = 0, changed_bytes = 0;
	int err;

	if ((err = resolve_ref(&ida, app, r)) < 0)
		return err;
	free(r->params[1]);
	r->params[1] = r->params[2];
	r->params[2] = NULL;
	r->nparams = 2;
	if ((err = resolve_ref(&idb, app, r)) < 0)
		return err;
	memset(&vb, 0, sizeof(vb));
	if ((err = tview_load(&va, app, ida)) < 0)
		return err;
	if ((err = tview_load(&vb, app, idb)) < 0)
		goto out;
	a = va.t;
	b = vb.t;
	list = json_array();
	/* Paths are looked up linearly: checkpoints have hundreds of tensors,
	 * not millions, and this keeps the order of a. */
	for (size_t i = 0; i < a->ntensors; i++) {
		const struct index_tensor_row *x = &a->tensors[i], *y = find_path(b, x->path);
		const char *status = !y ? "removed" : same_tensor(a, x, b, y) ? "same" : "changed";
		int64_t bytes = (int64_t)(y ? y->nbytes : x->nbytes);
		if (!y)
			n_removed++;
		else if (status[0] == 's')
			n_same++;
		else {
			n_changed++;
			changed_bytes += bytes;
		}
		json_array_append_new(list, json_pack("{ss ss sI}", "path", x->path, "status",
						      status, "bytes", (json_int_t)bytes));
	}
	for (size_t i = 0; i < b->ntensors; i++)
		if (!find_path(a, b->tensors[i].path)) {
			n_added++;
			json_array_append_new(
			    list, json_pack("{ss ss sI}", "path", b->tensors[i].path, "status",
					    "added", "bytes", (json_int_t)b->tensors[i].nbytes));
		}
	err = json_reply(out, 200,
			 json_pack("{sI sI so s{sI sI sI sI sI}}", "a", (json_int_t)ida, "b",
				   (json_int_t)idb, "tensors", list, "summary", "same",
				   (json_int_t)n_same, "changed", (json_int_t)n_changed, "added",
				   (json_int_t)n_added, "removed", (json_int_t)n_removed,
				   "changed_bytes", (json_int_t)changed_bytes));
	list = NULL;
out:
	json_decref(list);
	tview_free(&va);
	tview_free(&vb);
	return err;
}
