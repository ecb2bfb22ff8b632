/*
 * dcp.c: the tensors a checkpoint serves. A checkpoint of
 * torch.distributed.checkpoint (format "dcp": a .metadata file and the
 * ranks' .distcp files) serves its full, unsharded tensors (SPEC 3.2): each
 * assembled from every rank's chunks as .metadata places them. Any other
 * checkpoint serves the tensors it stores.
 *
 * An assembled tensor is a storage of our own making: a list of pieces,
 * byte ranges of stored storages (a chunk's rows, or the whole chunk when
 * the tensor is split along its first dimension), in the order of the full
 * tensor's bytes. A tensor of one chunk is that chunk's stored tensor
 * itself. Tensors inside non-tensor values (torch 1.13 saves a nested dict
 * as one pickled value) are served under the value's path.
 *
 * The same assembly checks a DCP checkpoint at commit: every chunk's file
 * exists, its range lies inside the file, an archive holding a tensor of
 * the chunk's dtype and shape is there (422 naming what and where).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "../common/err.h"
#include "../formats/dcp.h"
#include "internal.h"

enum { MAX_PIECES = 1 << 22 };

void tview_free(struct tview *v)
{
	if (!v)
		return;
	if (v->comp && v->t)
		for (size_t i = 0; i < v->t->nstorages; i++)
			if (v->comp[i]) {
				free(v->comp[i]->p);
				free(v->comp[i]);
			}
	free(v->comp);
	index_tensors_free(v->t);
	index_tensors_free(v->src);
	memset(v, 0, sizeof(*v));
}

/* ---- reading .metadata ---- */

/* The checkpoint's top-most .metadata file, or NULL. */
static const struct index_file *metadata_file(const struct index_file_list *fl)
{
	const struct index_file *best = NULL;

	for (size_t i = 0; i < fl->nitems; i++) {
		const char *n = fl->items[i].name, *b = strrchr(n, '/');
		if (!strcmp(b ? b + 1 : n, ".metadata") &&
		    (!best || strlen(n) < strlen(best->name)))
			best = &fl->items[i];
	}
	return best;
}

static int read_file(uint8_t **out, struct app *app, const struct index_file *f, uint64_t max)
{
	struct index_layout *l = NULL;
	struct file_gen *g = NULL;
	uint8_t *b;
	uint64_t done = 0;
	int err;

	*out = NULL;
	if (f->size > max)
		return ck_error(CK_ETOOBIG,
				"%s: %" PRIu64 " bytes, more than the %" PRIu64
				" a pickle may have",
				f->name, f->size, max);
	if (!(b = malloc(f->size + 1)))
		return ck_error(CK_ENOMEM, "out of memory");
	if ((err = store_layout(&l, app->store, f->part)) < 0 ||
	    (err = file_gen_new(&g, app, l, -1)) < 0)
		goto out;
	while (done < f->size) {
		long n = file_gen_read(g, done, b + done, (size_t)(f->size - done));
		if (n < 0) {
			err = (int)n;
			goto out;
		}
		if (n == 0) {
			err = ck_error(CK_EIO, "%s ends at %" PRIu64 " of its %" PRIu64 " bytes",
				       f->name, done, f->size);
			goto out;
		}
		done += (uint64_t)n;
	}
	*out = b;
	b = NULL;
out:
	file_gen_free(g);
	free(b);
	return err;
}

/* ---- finding a chunk's stored tensor ---- */

static int path_cmp(const void *a, const void *b)
{
	return strcmp((*(const struct index_tensor_row *const *)a)->path,
		      (*(const struct index_tensor_row *const *)b)->path);
}

/* "/<file, escaped>/<offset>": where the stored tensors of the archive at
 * offset of file are (api/ingest.c names them so). */
static char *item_path(const char *dir, const char *file, uint64_t off)
{
	size_t n = 2 * (strlen(dir) + strlen(file)) + 32, j = 0;
	char *p = malloc(n);

	if (!p)
		return NULL;
	p[j++] = '/';
	for (int k = 0; k < 2; k++)
		for (const char *s = k ? file : dir; *s; s++) {
			if (*s == '~' || *s == '/') {
				p[j++] = '~';
				p[j++] = *s == '~' ? '0' : '1';
			} else {
				p[j++] = *s;
			}
		}
	snprintf(p + j, n - j, "/%" PRIu64, off);
	return p;
}

struct finder {
	struct index_tensor_row **v; /* src's tensors sorted by path */
	size_t n;
};

static const struct index_tensor_row *find(const struct finder *f, const char *path)
{
	struct index_tensor_row key, *kp = &key, **hit;

	key.path = (char *)path;
	hit = bsearch(&kp, f->v, f->n, sizeof(*f->v), path_cmp);
	return hit ? *hit : NULL;
}

/* The first tensor whose path starts with prefix + "/", by its index in
 * the sorted list (n when none). */
static size_t first_below(const struct finder *f, const char *prefix)
{
	size_t lo = 0, hi = f->n, plen = strlen(prefix);

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (strcmp(f->v[mid]->path, prefix) <= 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < f->n && !strncmp(f->v[lo]->path, prefix, plen) && f->v[lo]->path[plen] == '/')
		return lo;
	return f->n;
}

/* ---- building the view ---- */

struct build {
	struct tview *v;
	const struct index_file_list *fl;
	const char *dir; /* the .metadata's folder, "" or "sub/" */
	struct finder f;
	size_t cap_t, cap_s;
	size_t *src_map; /* src storage -> view storage + 1 (stored tensors kept as they are) */
};

static int grow(struct build *b)
{
	struct index_tensors *t = b->v->t;

	if (t->ntensors == b->cap_t) {
		size_t n = b->cap_t ? 2 * b->cap_t : 64;
		void *p = realloc(t->tensors, n * sizeof(*t->tensors));
		if (!p)
			return ck_error(CK_ENOMEM, "out of memory");
		t->tensors = p;
		b->cap_t = n;
	}
	if (t->nstorages == b->cap_s) {
		size_t n = b->cap_s ? 2 * b->cap_s : 64;
		void *p = realloc(t->storages, n * sizeof(*t->storages));
		void *q = realloc(b->v->comp, n * sizeof(*b->v->comp));
		if (p)
			t->storages = p;
		if (q)
			b->v->comp = q;
		if (!p || !q)
			return ck_error(CK_ENOMEM, "out of memory");
		for (size_t i = b->cap_s; i < n; i++)
			b->v->comp[i] = NULL;
		b->cap_s = n;
	}
	return 0;
}

/* A stored tensor served under path: its storage shared with every other
 * tensor of the view on it. */
static int add_stored(struct build *b, const struct index_tensor_row *r, const char *path)
{
	struct index_tensors *t = b->v->t;
	struct index_tensor_row *o;
	int err;

	if ((err = grow(b)) < 0)
		return err;
	if (!b->src_map[r->storage]) {
		t->storages[t->nstorages] = b->v->src->storages[r->storage];
		b->src_map[r->storage] = ++t->nstorages;
	}
	o = &t->tensors[t->ntensors];
	*o = *r;
	o->storage = b->src_map[r->storage] - 1;
	if (!(o->path = strdup(path)))
		return ck_error(CK_ENOMEM, "out of memory");
	t->ntensors++;
	return 0;
}

static const struct index_file *file_named(const struct build *b, const char *name)
{
	char full[2048];

	snprintf(full, sizeof(full), "%s%s", b->dir, name);
	for (size_t i = 0; i < b->fl->nitems; i++)
		if (!strcmp(b->fl->items[i].name, full))
			return &b->fl->items[i];
	return NULL;
}

/* The chunk's range lies in a file the checkpoint has. */
static int check_range(const struct build *b, const char *what, const char *file, uint64_t off,
		       uint64_t len)
{
	const struct index_file *f = file_named(b, file);

	if (!f)
		return ck_error(CK_ECORRUPT,
				".metadata: %s is in file '%s%.200s', which the checkpoint does "
				"not have",
				what, b->dir, file);
	if (off > f->size || len > f->size - off)
		return ck_error(CK_ECORRUPT,
				".metadata: %s is at bytes %" PRIu64 "-%" PRIu64 " of '%s%.200s', "
				"past the file's end (%" PRIu64 " bytes)",
				what, off, off + len, b->dir, file, f->size);
	return 0;
}

static int piece_cmp(const void *a, const void *b)
{
	const struct tview_piece *x = a, *y = b;

	return x->at < y->at ? -1 : x->at > y->at;
}

/* The stored tensor of chunk c of t, checked against what .metadata says. */
static int chunk_tensor(const struct index_tensor_row **out, struct build *b,
			const struct dcp_tensor *t, size_t i)
{
	const struct dcp_chunk *c = &t->chunks[i];
	const struct index_tensor_row *r;
	char what[400], *p;
	int err;

	snprintf(what, sizeof(what), "tensor '%.200s' chunk %zu", t->fqn, i);
	if ((err = check_range(b, what, c->file, c->file_off, c->length)) < 0)
		return err;
	if (!(p = item_path(b->dir, c->file, c->file_off)))
		return ck_error(CK_ENOMEM, "out of memory");
	r = find(&b->f, p);
	free(p);
	if (!r)
		return ck_error(CK_ECORRUPT,
				".metadata: %s: '%s%.200s' holds no tensor saved alone at byte "
				"%" PRIu64,
				what, b->dir, c->file, c->file_off);
	int same = r->dtype == t->dtype && r->ndim == t->ndim;
	for (int d = 0; same && d < t->ndim; d++)
		same = r->shape[d] == c->sizes[d];
	if (!same)
		return ck_error(CK_ECORRUPT,
				".metadata: %s: the tensor at byte %" PRIu64 " of '%s%.200s' is "
				"%s of %d dimensions, not the %s chunk .metadata describes",
				what, c->file_off, b->dir, c->file, dtype_name(r->dtype), r->ndim,
				dtype_name(t->dtype));
	*out = r;
	return 0;
}

/* The pieces of chunk c (stored tensor r) in the full tensor t, appended
 * to *pv: runs as long as both the chunk's place in t and its stored
 * layout are contiguous. */
static int chunk_pieces(struct tview_piece **pv, size_t *np, size_t *cap,
			const struct dcp_tensor *t, const struct dcp_chunk *c,
			const struct index_tensor_row *r, uint64_t esz, uint64_t src_nbytes)
{
	int64_t os[TENSOR_MAX_NDIM];
	uint64_t run = 1, idx[TENSOR_MAX_NDIM] = {0}, count = 1;
	int n = t->ndim, j = n;

	for (int d = n - 1; d >= 0; d--)
		os[d] = d == n - 1 ? 1 : os[d + 1] * t->size[d + 1];
	for (int d = 0; d < n; d++)
		if (c->sizes[d] == 0)
			return 0;
	/* the longest run: dims j.. are contiguous in the stored tensor, and
	 * dims j+1.. are whole in t */
	while (j > 0) {
		int d = j - 1;
		int stored = c->sizes[d] == 1 || r->strides[d] == (int64_t)run;
		int whole = j == n || c->sizes[j] == t->size[j];
		for (int e = j + 1; e < n && whole; e++)
			whole = c->sizes[e] == t->size[e];
		if (!stored || !whole)
			break;
		run *= (uint64_t)c->sizes[d];
		j = d;
	}
	for (int d = 0; d < j; d++)
		count *= (uint64_t)c->sizes[d];
	if (*np + count > MAX_PIECES)
		return ck_error(CK_ETOOBIG,
				"tensor '%.200s' would be assembled from more than %d pieces",
				t->fqn, MAX_PIECES);
	for (uint64_t k = 0; k < count; k++) {
		uint64_t at = 0, src = r->offset;
		for (int d = 0; d < n; d++) {
			uint64_t i = d < j ? idx[d] : 0;
			at += ((uint64_t)c->offsets[d] + i) * (uint64_t)os[d];
			src += i * (uint64_t)r->strides[d];
		}
		if (src * esz + run * esz > src_nbytes)
			return ck_error(CK_ECORRUPT,
					"tensor '%.200s': a chunk's stored view reaches past its "
					"storage",
					t->fqn);
		if (*np == *cap) {
			size_t nc = *cap ? 2 * *cap : 16;
			void *p = realloc(*pv, nc * sizeof(**pv));
			if (!p)
				return ck_error(CK_ENOMEM, "out of memory");
			*pv = p;
			*cap = nc;
		}
		(*pv)[(*np)++] = (struct tview_piece){at * esz, run * esz, r->storage, src * esz};
		for (int d = j - 1; d >= 0; d--) { /* next index in C order */
			if (++idx[d] < (uint64_t)c->sizes[d])
				break;
			idx[d] = 0;
		}
	}
	return 0;
}

/* One tensor of .metadata: the stored chunk itself when there is one, else
 * an assembled storage. */
static int add_dcp_tensor(struct build *b, const struct dcp_tensor *t)
{
	struct index_tensors *v = b->v->t;
	const struct index_tensor_row *r;
	struct tview_piece *pv = NULL;
	size_t np = 0, cap = 0;
	uint64_t esz = dtype_size(t->dtype), numel = 1;
	int err;

	for (int d = 0; d < t->ndim; d++)
		numel *= (uint64_t)t->size[d];
	for (size_t i = 0; i < t->nchunks; i++) {
		if ((err = chunk_tensor(&r, b, t, i)) < 0)
			goto out;
		if (t->nchunks == 1) {
			err = add_stored(b, r, t->path);
			goto out;
		}
		if ((err = chunk_pieces(&pv, &np, &cap, t, &t->chunks[i], r, esz,
					b->v->src->storages[r->storage].nbytes)) < 0)
			goto out;
	}
	qsort(pv, np, sizeof(*pv), piece_cmp);
	/* merge neighbours that continue each other in one storage */
	size_t m = 0;
	uint64_t at = 0;
	for (size_t i = 0; i < np; i++) {
		if (pv[i].at != at) {
			err = ck_error(CK_ECORRUPT, "tensor '%.200s': its chunks do not tile it",
				       t->fqn);
			goto out;
		}
		at += pv[i].len;
		if (m && pv[m - 1].src == pv[i].src &&
		    pv[m - 1].src_off + pv[m - 1].len == pv[i].src_off)
			pv[m - 1].len += pv[i].len;
		else
			pv[m++] = pv[i];
	}
	if (at != numel * esz) {
		err = ck_error(CK_ECORRUPT, "tensor '%.200s': its chunks do not tile it", t->fqn);
		goto out;
	}
	if ((err = grow(b)) < 0)
		goto out;
	struct tview_comp *c = calloc(1, sizeof(*c));
	struct hasher *h = hasher_new();
	struct index_storage_row *s = &v->storages[v->nstorages];
	if (!c || !h || !(v->tensors[v->ntensors].path = strdup(t->path))) {
		free(c);
		hasher_free(h);
		err = ck_error(CK_ENOMEM, "out of memory");
		goto out;
	}
	c->p = pv;
	c->n = m;
	pv = NULL;
	/* the storage's identity: its pieces (blob, range) in order, so that
	 * diff finds a tensor the same when every chunk is */
	memset(s, 0, sizeof(*s));
	c->crc_known = 1;
	for (size_t i = 0; i < c->n; i++) {
		const struct index_storage_row *u = &b->v->src->storages[c->p[i].src];
		uint64_t rng[2] = {c->p[i].src_off, c->p[i].len};
		hasher_update(h, u->blob.b, 32);
		hasher_update(h, rng, sizeof(rng));
		if (c->p[i].src_off == 0 && c->p[i].len == u->nbytes)
			s->crc32 = (uint32_t)crc32_combine(s->crc32, u->crc32, (z_off_t)u->nbytes);
		else
			c->crc_known = 0;
	}
	hasher_final(h, &s->blob, NULL);
	hasher_free(h);
	s->dtype = t->dtype;
	s->nbytes = numel * esz;
	b->v->comp[v->nstorages] = c;
	struct index_tensor_row *o = &v->tensors[v->ntensors];
	o->dtype = t->dtype;
	o->ndim = t->ndim;
	for (int d = t->ndim - 1; d >= 0; d--) {
		o->shape[d] = t->size[d];
		o->strides[d] = d == t->ndim - 1 ? 1 : o->strides[d + 1] * t->size[d + 1];
	}
	o->offset = 0;
	o->storage = v->nstorages++;
	o->nbytes = numel * esz;
	v->ntensors++;
	err = 0;
out:
	free(pv);
	return err;
}

/* The tensors inside a non-tensor value, under its path. */
static int add_bytes(struct build *b, const struct dcp_bytes *x)
{
	char what[400], *p;
	size_t i;
	int err;

	snprintf(what, sizeof(what), "value '%.200s'", x->fqn);
	if ((err = check_range(b, what, x->file, x->file_off, x->length)) < 0)
		return err;
	if (!(p = item_path(b->dir, x->file, x->file_off)))
		return ck_error(CK_ENOMEM, "out of memory");
	size_t plen = strlen(p);
	for (i = first_below(&b->f, p); i < b->f.n; i++) {
		const struct index_tensor_row *r = b->f.v[i];
		if (strncmp(r->path, p, plen) || r->path[plen] != '/')
			break;
		char *path = malloc(strlen(x->path) + strlen(r->path + plen) + 1);
		if (!path) {
			free(p);
			return ck_error(CK_ENOMEM, "out of memory");
		}
		strcpy(path, x->path);
		strcat(path, r->path + plen);
		err = add_stored(b, r, path);
		free(path);
		if (err < 0)
			break;
	}
	free(p);
	return err < 0 ? err : 0;
}

static int build_dcp(struct tview *v, struct app *app, const struct index_file_list *fl,
		     const struct index_file *mf)
{
	struct build b;
	struct dcp_meta *m = NULL;
	uint8_t *buf = NULL;
	char *dir = NULL;
	int err;

	memset(&b, 0, sizeof(b));
	b.v = v;
	b.fl = fl;
	if (!(dir = strdup(mf->name)))
		return ck_error(CK_ENOMEM, "out of memory");
	dir[strlen(dir) - strlen(".metadata")] = '\0';
	b.dir = dir;
	if ((err = read_file(&buf, app, mf, app->limits.max_pickle_bytes)) < 0 ||
	    (err = dcp_meta_read(&m, buf, mf->size, &app->limits)) < 0)
		goto out;
	b.f.n = v->src->ntensors;
	b.f.v = calloc(b.f.n + 1, sizeof(*b.f.v));
	b.src_map = calloc(v->src->nstorages + 1, sizeof(*b.src_map));
	v->t = calloc(1, sizeof(*v->t));
	if (!b.f.v || !b.src_map || !v->t) {
		err = ck_error(CK_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < b.f.n; i++)
		b.f.v[i] = &v->src->tensors[i];
	qsort(b.f.v, b.f.n, sizeof(*b.f.v), path_cmp);
	for (size_t i = 0; i < m->ntensors; i++)
		if ((err = add_dcp_tensor(&b, &m->tensors[i])) < 0)
			goto out;
	for (size_t i = 0; i < m->nbytes; i++)
		if ((err = add_bytes(&b, &m->bytes[i])) < 0)
			goto out;
	err = 0;
out:
	free(b.f.v);
	free(b.src_map);
	dcp_meta_free(m);
	free(buf);
	free(dir);
	return err;
}

/* The tensors of every file of fl, named and numbered as the index names
 * a committed checkpoint's (index_checkpoint_tensors): "/<file>/<path>",
 * each file's storages after the previous file's. A staged checkpoint has
 * no such list yet: its commit check reads its files one by one. */
static int parts_tensors(struct index_tensors **out, struct app *app,
			 const struct index_file_list *fl)
{
	struct index_tensors *all = calloc(1, sizeof(*all)), *t = NULL;
	size_t cap_t = 0, cap_s = 0;
	int err = 0;

	if (!all)
		return ck_error(CK_ENOMEM, "out of memory");
	for (size_t i = 0; i < fl->nitems && !err; i++) {
		if ((err = store_tensors(&t, app->store, fl->items[i].part)) < 0)
			break;
		if (all->ntensors + t->ntensors > cap_t || all->nstorages + t->nstorages > cap_s) {
			size_t nt = 2 * (all->ntensors + t->ntensors) + 16;
			size_t ns = 2 * (all->nstorages + t->nstorages) + 16;
			void *a = realloc(all->tensors, nt * sizeof(*all->tensors));
			if (a)
				all->tensors = a, cap_t = nt;
			void *b = realloc(all->storages, ns * sizeof(*all->storages));
			if (b)
				all->storages = b, cap_s = ns;
			if (!a || !b) {
				err = ck_error(CK_ENOMEM, "out of memory");
				break;
			}
		}
		for (size_t k = 0; k < t->ntensors; k++) {
			struct index_tensor_row *r = &all->tensors[all->ntensors];
			char *pre = item_path("", fl->items[i].name, 0);
			if (!pre) {
				err = ck_error(CK_ENOMEM, "out of memory");
				break;
			}
			*r = t->tensors[k];
			strrchr(pre, '/')[0] = '\0'; /* "/<file>" */
			r->path = malloc(strlen(pre) + strlen(t->tensors[k].path) + 1);
			if (r->path) {
				strcpy(r->path, pre);
				strcat(r->path, t->tensors[k].path);
			}
			free(pre);
			if (!r->path) {
				err = ck_error(CK_ENOMEM, "out of memory");
				break;
			}
			r->storage += all->nstorages;
			all->ntensors++;
		}
		if (t->nstorages) /* a file without storages (.metadata) */
			memcpy(all->storages + all->nstorages, t->storages,
			       t->nstorages * sizeof(*t->storages));
		all->nstorages += t->nstorages;
		index_tensors_free(t);
		t = NULL;
	}
	index_tensors_free(t);
	if (err < 0) {
		index_tensors_free(all);
		return err;
	}
	*out = all;
	return 0;
}

static int load(struct tview *v, struct app *app, int64_t id, int staged)
{
	struct index_file_list *fl = NULL;
	const struct index_file *mf;
	int err;

	memset(v, 0, sizeof(*v));
	if ((err = store_files(&fl, app->store, id)) < 0)
		return err;
	if (!(mf = metadata_file(fl))) {
		index_file_list_free(fl);
		return staged ? 0 : store_tensors(&v->t, app->store, id);
	}
	if ((err = staged ? parts_tensors(&v->src, app, fl)
			  : store_tensors(&v->src, app->store, id)) < 0 ||
	    (err = build_dcp(v, app, fl, mf)) < 0)
		tview_free(v);
	index_file_list_free(fl);
	return err;
}

int tview_load(struct tview *v, struct app *app, int64_t id)
{
	return load(v, app, id, 0);
}

int tview_crc(struct tview *v, struct app *app, size_t s)
{
	struct tview_comp *c = v->comp ? v->comp[s] : NULL;
	struct blob_reader *rd = NULL;
	size_t open = (size_t)-1;
	uint8_t *buf = NULL;
	uLong crc = crc32(0, NULL, 0);
	int err = 0;

	if (!c || c->crc_known)
		return 0;
	if (!(buf = malloc(1 << 20)))
		return ck_error(CK_ENOMEM, "out of memory");
	for (size_t i = 0; i < c->n && !err; i++) {
		const struct tview_piece *p = &c->p[i];
		if (p->src != open) {
			blob_reader_close(rd);
			rd = NULL;
			if ((err = store_blob_open(&rd, app->store,
						   &v->src->storages[p->src].blob)) < 0)
				break;
			open = p->src;
		}
		for (uint64_t done = 0; done < p->len && !err;) {
			size_t n = p->len - done < (1 << 20) ? (size_t)(p->len - done) : (1 << 20);
			if ((err = blob_reader_read(rd, buf, n, p->src_off + done)) < 0)
				break;
			crc = crc32(crc, buf, (uInt)n);
			done += n;
		}
	}
	blob_reader_close(rd);
	free(buf);
	if (err < 0)
		return err;
	v->t->storages[s].crc32 = (uint32_t)crc;
	c->crc_known = 1;
	return 0;
}

int tview_check(struct app *app, int64_t id)
{
	struct tview v;
	int err = load(&v, app, id, 1);

	if (err == 0)
		tview_free(&v);
	return err;
}

int tview_metadata_check(struct app *app, const struct ck_input *in)
{
	struct dcp_meta *m = NULL;
	uint8_t *buf;
	int err;

	if (in->size > app->limits.max_pickle_bytes)
		return ck_error(CK_ETOOBIG,
				".metadata: %" PRIu64
				" bytes, more than the %llu a pickle may have",
				in->size, (unsigned long long)app->limits.max_pickle_bytes);
	if (!(buf = malloc(in->size + 1)))
		return ck_error(CK_ENOMEM, "out of memory");
	if ((err = ck_input_read(in, buf, (size_t)in->size, 0, ".metadata")) == 0 &&
	    (err = dcp_meta_read(&m, buf, (size_t)in->size, &app->limits)) == 0)
		dcp_meta_free(m);
	free(buf);
	if (err == CK_EFORMAT) { /* a top-level .metadata is DCP's, or damaged */
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", ck_errmsg());
		err = ck_error(CK_ECORRUPT,
			       "%s (a file named .metadata is read as "
			       "torch.distributed.checkpoint's)",
			       msg);
	}
	return err;
}
