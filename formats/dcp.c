/*
 * dcp.c: torch.distributed.checkpoint's .metadata, read by the restricted
 * pickle machine (see dcp.h and docs/dcp-format.md).
 *
 * Every dataclass of the file is "cls.__new__(cls)" then BUILD with its
 * __dict__ (an OBJECT whose state is a dict), but TensorProperties, whose
 * state is a tuple (dtype, layout, requires_grad, memory format,
 * pin_memory), and BytesStorageMetadata, which has no state at all. A
 * torch.Size is "torch.Size(tuple)" (a REDUCE); a dtype is the GLOBAL
 * torch.<name> itself. Classes are recognised by name under any
 * torch.distributed module, so 1.13's and 2.x's files read alike; unknown
 * keys in the states (2.x's storage_meta, version) are passed over.
 */
#include "dcp.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "pickle.h"

enum { DCP_MAX_CHUNKS = 16384 };

/* ---- reading the object graph ---- */

static int is_cls(const struct pickle_value *v, const char *name)
{
	const struct pickle_value *c;

	if (!v || v->kind != PICKLE_OBJECT || !(c = v->u.obj.callable) || c->kind != PICKLE_GLOBAL)
		return 0;
	return !strncmp(c->u.global.module, "torch.distributed.", 18) &&
	       !strcmp(c->u.global.name, name);
}

/* The value under key in an OBJECT's dict state, or NULL. */
static const struct pickle_value *field(const struct pickle_value *obj, const char *key)
{
	const struct pickle_value *st = obj->u.obj.state;

	if (!st || st->kind != PICKLE_DICT)
		return NULL;
	for (size_t i = st->u.dict.n; i-- > 0;) {
		const struct pickle_value *k = st->u.dict.keys[i];
		if (k->kind == PICKLE_STR && !strcmp(k->u.s.p, key))
			return st->u.dict.vals[i];
	}
	return NULL;
}

static int is_none(const struct pickle_value *v)
{
	return !v || v->kind == PICKLE_NONE;
}

/* A torch.Size (or a plain tuple or list) of ints into out[0..*n). */
static int read_size(int64_t *out, int *n, const struct pickle_value *v)
{
	if (v && v->kind == PICKLE_OBJECT && v->u.obj.callable &&
	    pickle_is_global(v->u.obj.callable, "torch", "Size")) {
		const struct pickle_value *a = v->u.obj.args;
		if (!a || a->kind != PICKLE_TUPLE || a->u.seq.n != 1)
			return -1;
		v = a->u.seq.items[0];
	}
	if (!v || (v->kind != PICKLE_TUPLE && v->kind != PICKLE_LIST) ||
	    v->u.seq.n > TENSOR_MAX_NDIM)
		return -1;
	for (size_t i = 0; i < v->u.seq.n; i++) {
		const struct pickle_value *x = v->u.seq.items[i];
		if (x->kind != PICKLE_INT || x->u.i < 0)
			return -1;
		out[i] = x->u.i;
	}
	*n = (int)v->u.seq.n;
	return 0;
}

/* TensorProperties' dtype: its state is a tuple whose first item is the
 * dtype (1.13, 2.x); a dict state with "dtype" is read too. */
static enum dtype read_dtype(const struct pickle_value *props)
{
	const struct pickle_value *st, *d = NULL;

	if (!is_cls(props, "TensorProperties") || !(st = props->u.obj.state))
		return DT_INVALID;
	if (st->kind == PICKLE_TUPLE && st->u.seq.n >= 1)
		d = st->u.seq.items[0];
	else if (st->kind == PICKLE_DICT)
		d = field(props, "dtype");
	if (!d || d->kind != PICKLE_GLOBAL || strcmp(d->u.global.module, "torch"))
		return DT_INVALID;
	return dtype_from_name(d->u.global.name);
}

/* ---- storage_data, sorted for lookups by (fqn, offsets) ---- */

struct entry {
	const char *fqn;
	int noff; /* -1: no offsets (a bytes value) */
	int64_t off[TENSOR_MAX_NDIM];
	const char *file;
	uint64_t file_off, length;
};

static int entry_cmp(const void *pa, const void *pb)
{
	const struct entry *a = pa, *b = pb;
	int c = strcmp(a->fqn, b->fqn);

	if (c)
		return c;
	if (a->noff != b->noff)
		return a->noff < b->noff ? -1 : 1;
	for (int d = 0; d < a->noff; d++)
		if (a->off[d] != b->off[d])
			return a->off[d] < b->off[d] ? -1 : 1;
	return 0;
}

/* A relative_path as DCP writes it: a name in the directory, or a relative
 * path below it; never absolute, never "..". */
static int good_file(const char *f)
{
	const char *p = f;

	if (!*f || *f == '/')
		return 0;
	while (*p) {
		size_t n = strcspn(p, "/");
		if ((n == 2 && !strncmp(p, "..", 2)) || (n == 1 && *p == '.') || n == 0)
			return 0;
		p += n;
		if (*p == '/')
			p++;
	}
	return 1;
}

static int read_entry(struct entry *e, const struct pickle_value *k, const struct pickle_value *v,
		      size_t i)
{
	const struct pickle_value *fqn, *off, *rp, *fo, *len, *tr;

	if (!is_cls(k, "MetadataIndex") || !(fqn = field(k, "fqn")) || fqn->kind != PICKLE_STR)
		return ck_error(CK_ECORRUPT,
				".metadata: storage_data entry %zu: the key is no MetadataIndex "
				"with a fqn",
				i);
	e->fqn = fqn->u.s.p;
	off = field(k, "offset");
	e->noff = -1;
	if (!is_none(off) && read_size(e->off, &e->noff, off) < 0)
		return ck_error(CK_ECORRUPT,
				".metadata: storage_data entry %zu ('%.200s'): offset is no "
				"torch.Size of at most %d counts",
				i, e->fqn, TENSOR_MAX_NDIM);
	if (!is_cls(v, "_StorageInfo") || !(rp = field(v, "relative_path")) ||
	    rp->kind != PICKLE_STR || !(fo = field(v, "offset")) || fo->kind != PICKLE_INT ||
	    fo->u.i < 0 || !(len = field(v, "length")) || len->kind != PICKLE_INT || len->u.i < 0)
		return ck_error(CK_ECORRUPT,
				".metadata: storage_data entry %zu ('%.200s'): the value is no "
				"_StorageInfo with relative_path, offset and length",
				i, e->fqn);
	tr = field(v, "transform_descriptors");
	if (!is_none(tr) &&
	    !((tr->kind == PICKLE_LIST || tr->kind == PICKLE_TUPLE) && tr->u.seq.n == 0))
		return ck_error(CK_EFORMAT,
				".metadata: storage_data entry %zu ('%.200s') is stored through "
				"transforms (torch.distributed.checkpoint extensions), which ckptd "
				"does not read; save without them",
				i, e->fqn);
	if (!good_file(rp->u.s.p))
		return ck_error(CK_ECORRUPT,
				".metadata: storage_data entry %zu ('%.200s'): relative_path "
				"'%.200s' is not a file of the checkpoint",
				i, e->fqn, rp->u.s.p);
	e->file = rp->u.s.p;
	e->file_off = (uint64_t)fo->u.i;
	e->length = (uint64_t)len->u.i;
	return 0;
}

/* ---- paths ---- */

/* Appends s escaped as a JSON Pointer segment ("~" -> "~0", "/" -> "~1"). */
static size_t escape(char *out, const char *s)
{
	size_t j = 0;

	for (; *s; s++) {
		if (*s == '~' || *s == '/') {
			if (out) {
				out[j] = '~';
				out[j + 1] = *s == '~' ? '0' : '1';
			}
			j += 2;
		} else {
			if (out)
				out[j] = *s;
			j++;
		}
	}
	return j;
}

/* The JSON Pointer of key fqn: planner_data's path tuple (str and int
 * segments) when it has one, else "/" + fqn. */
static const char *key_path(struct fmt_meter *m, const struct pickle_value *planner,
			    const char *fqn)
{
	const struct pickle_value *tup = NULL;
	char num[24];
	size_t n = 0;
	char *p;

	if (planner && planner->kind == PICKLE_DICT)
		for (size_t i = planner->u.dict.n; i-- > 0;) {
			const struct pickle_value *k = planner->u.dict.keys[i];
			if (k->kind == PICKLE_STR && !strcmp(k->u.s.p, fqn)) {
				tup = planner->u.dict.vals[i];
				break;
			}
		}
	if (tup && (tup->kind == PICKLE_TUPLE || tup->kind == PICKLE_LIST) && tup->u.seq.n > 0) {
		for (size_t i = 0; i < tup->u.seq.n; i++) {
			const struct pickle_value *s = tup->u.seq.items[i];
			if (s->kind == PICKLE_STR)
				n += 1 + escape(NULL, s->u.s.p);
			else if (s->kind == PICKLE_INT)
				n += 1 + (size_t)snprintf(num, sizeof(num), "%" PRId64, s->u.i);
			else
				goto flat;
		}
		if (!(p = fmt_alloc(m, FMT_RESULT, n + 1, 1, "dcp: paths")))
			return NULL;
		n = 0;
		for (size_t i = 0; i < tup->u.seq.n; i++) {
			const struct pickle_value *s = tup->u.seq.items[i];
			p[n++] = '/';
			if (s->kind == PICKLE_STR)
				n += escape(p + n, s->u.s.p);
			else
				n += (size_t)sprintf(p + n, "%" PRId64, s->u.i);
		}
		p[n] = '\0';
		return p;
	}
flat:
	if (!(p = fmt_alloc(m, FMT_RESULT, escape(NULL, fqn) + 2, 1, "dcp: paths")))
		return NULL;
	p[0] = '/';
	p[1 + escape(p + 1, fqn)] = '\0';
	return p;
}

/* ---- checks ---- */

static void fmt_dims(char *out, size_t cap, const int64_t *v, int n)
{
	size_t used = (size_t)snprintf(out, cap, "[");

	for (int d = 0; d < n && used < cap; d++)
		used += (size_t)snprintf(out + used, cap - used, "%s%" PRId64, d ? ", " : "", v[d]);
	if (used < cap)
		snprintf(out + used, cap - used, "]");
}

static int volume(uint64_t *out, const int64_t *sizes, int n)
{
	uint64_t v = 1;

	for (int d = 0; d < n; d++) {
		if (sizes[d] && v > UINT64_MAX / (uint64_t)sizes[d])
			return -1;
		v *= (uint64_t)sizes[d];
	}
	*out = v;
	return 0;
}

/* Chunks inside the tensor, none overlapping another, covering it all. */
static int check_chunks(const struct dcp_tensor *t)
{
	char a[TENSOR_MAX_NDIM * 22 + 4], b[TENSOR_MAX_NDIM * 22 + 4], s[TENSOR_MAX_NDIM * 22 + 4];
	uint64_t total, covered = 0, v = 0;

	if (volume(&total, t->size, t->ndim) < 0 ||
	    total > UINT64_MAX / (dtype_size(t->dtype) ? dtype_size(t->dtype) : 1))
		return ck_error(CK_ECORRUPT, ".metadata: tensor '%.200s': its size overflows",
				t->fqn);
	fmt_dims(s, sizeof(s), t->size, t->ndim);
	for (size_t i = 0; i < t->nchunks; i++) {
		const struct dcp_chunk *c = &t->chunks[i];
		for (int d = 0; d < t->ndim; d++)
			if (c->offsets[d] > t->size[d] ||
			    c->sizes[d] > t->size[d] - c->offsets[d]) {
				fmt_dims(a, sizeof(a), c->offsets, t->ndim);
				fmt_dims(b, sizeof(b), c->sizes, t->ndim);
				return ck_error(
				    CK_ECORRUPT,
				    ".metadata: tensor '%.200s' (size %s): chunk %zu at "
				    "offsets %s with sizes %s reaches past the tensor in "
				    "dimension %d",
				    t->fqn, s, i, a, b, d);
			}
		volume(&v, c->sizes, t->ndim);
		covered += v;
		if (v == 0)
			continue;
		for (size_t j = 0; j < i; j++) {
			const struct dcp_chunk *o = &t->chunks[j];
			int apart = 0;
			for (int d = 0; d < t->ndim && !apart; d++)
				apart = o->sizes[d] == 0 ||
					c->offsets[d] >= o->offsets[d] + o->sizes[d] ||
					o->offsets[d] >= c->offsets[d] + c->sizes[d];
			if (!apart) {
				fmt_dims(a, sizeof(a), c->offsets, t->ndim);
				fmt_dims(b, sizeof(b), o->offsets, t->ndim);
				return ck_error(
				    CK_ECORRUPT,
				    ".metadata: tensor '%.200s' (size %s): chunk %zu at "
				    "offsets %s overlaps chunk %zu at offsets %s",
				    t->fqn, s, i, a, j, b);
			}
		}
	}
	if (covered != total)
		return ck_error(
		    CK_ECORRUPT,
		    ".metadata: tensor '%.200s' (size %s): its %zu chunks cover %" PRIu64
		    " of its %" PRIu64 " elements: the rest is a hole",
		    t->fqn, s, t->nchunks, covered, total);
	return 0;
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* No key, and no path, twice: sorted copies, neighbours compared. */
static int no_twice(struct fmt_meter *m, const struct dcp_meta *r)
{
	size_t n = r->ntensors + r->nbytes;
	const char **v = fmt_alloc(m, FMT_PARSE, 2 * n + 1, sizeof(*v), "dcp: keys");

	if (!v)
		return m->err;
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < r->ntensors; i++)
			v[i] = pass ? r->tensors[i].path : r->tensors[i].fqn;
		for (size_t i = 0; i < r->nbytes; i++)
			v[r->ntensors + i] = pass ? r->bytes[i].path : r->bytes[i].fqn;
		qsort(v, n, sizeof(*v), str_cmp);
		for (size_t i = 1; i < n; i++)
			if (!strcmp(v[i - 1], v[i]))
				return ck_error(
				    CK_ECORRUPT,
				    pass ? ".metadata: two keys have the same path %.200s "
					   "(planner_data)"
					 : ".metadata: key '%.200s' is in "
					   "state_dict_metadata twice",
				    v[i]);
	}
	return 0;
}

/* ---- entry point ---- */

int dcp_is_metadata_name(const char *name)
{
	const char *slash = strrchr(name, '/');

	return !strcmp(slash ? slash + 1 : name, ".metadata");
}

void dcp_meta_free(struct dcp_meta *m)
{
	struct fmt_region mem;

	if (!m || !m->budget)
		return;
	mem = m->mem; /* m lives in the region: copy it out first */
	fmt_region_release(&mem, m->budget);
}

static int read_tensor(struct dcp_tensor *t, struct fmt_meter *m, const char *fqn,
		       const struct pickle_value *md, const struct entry *ents, size_t nents)
{
	const struct pickle_value *size, *chunks;
	int64_t sz[TENSOR_MAX_NDIM];
	int n;
	int err;

	t->fqn = fqn;
	t->dtype = read_dtype(field(md, "properties"));
	if (t->dtype == DT_INVALID)
		return ck_error(CK_ECORRUPT,
				".metadata: tensor '%.200s': properties name no dtype ckptd knows",
				fqn);
	if (!(size = field(md, "size")) || read_size(sz, &n, size) < 0)
		return ck_error(CK_ECORRUPT,
				".metadata: tensor '%.200s': size is no torch.Size of at most %d "
				"counts",
				fqn, TENSOR_MAX_NDIM);
	t->ndim = n;
	if (!(t->size = fmt_alloc(m, FMT_RESULT, (size_t)n + 1, sizeof(int64_t), "dcp: tensors")))
		return m->err;
	memcpy(t->size, sz, (size_t)n * sizeof(int64_t));
	if (!(chunks = field(md, "chunks")) || chunks->kind != PICKLE_LIST)
		return ck_error(CK_ECORRUPT, ".metadata: tensor '%.200s': chunks is no list", fqn);
	t->nchunks = chunks->u.seq.n;
	if (t->nchunks > DCP_MAX_CHUNKS) /* the overlap check compares every pair */
		return ck_error(CK_ETOOBIG, ".metadata: tensor '%.200s' has more than %d chunks",
				fqn, DCP_MAX_CHUNKS);
	if (!(t->chunks =
		  fmt_alloc(m, FMT_RESULT, t->nchunks + 1, sizeof(*t->chunks), "dcp: chunks")))
		return m->err;
	for (size_t i = 0; i < t->nchunks; i++) {
		const struct pickle_value *c = chunks->u.seq.items[i];
		struct dcp_chunk *ch = &t->chunks[i];
		struct entry key, *e;
		int no, ns;
		if (!(ch->offsets = fmt_alloc(m, FMT_RESULT, 2 * ((size_t)n + 1), sizeof(int64_t),
					      "dcp: chunks")))
			return m->err;
		ch->sizes = ch->offsets + n + 1;
		if (!is_cls(c, "ChunkStorageMetadata") ||
		    read_size(ch->offsets, &no, field(c, "offsets")) < 0 ||
		    read_size(ch->sizes, &ns, field(c, "sizes")) < 0 || no != n || ns != n)
			return ck_error(CK_ECORRUPT,
					".metadata: tensor '%.200s': chunk %zu is no "
					"ChunkStorageMetadata with offsets and sizes of %d counts",
					fqn, i, n);
		memset(&key, 0, sizeof(key));
		key.fqn = fqn;
		key.noff = n;
		memcpy(key.off, ch->offsets, (size_t)n * sizeof(int64_t));
		if (!(e = bsearch(&key, ents, nents, sizeof(*ents), entry_cmp))) {
			char a[TENSOR_MAX_NDIM * 22 + 4];
			fmt_dims(a, sizeof(a), ch->offsets, n);
			return ck_error(CK_ECORRUPT,
					".metadata: tensor '%.200s': chunk %zu at offsets %s has "
					"no storage_data entry: nothing says where its bytes are",
					fqn, i, a);
		}
		ch->file = e->file;
		ch->file_off = e->file_off;
		ch->length = e->length;
	}
	if ((err = check_chunks(t)) < 0)
		return err;
	return 0;
}

int dcp_meta_read(struct dcp_meta **out, const uint8_t *buf, size_t len,
		  const struct fmt_limits *lim)
{
	struct fmt_limits def;
	struct fmt_meter meter;
	struct pickle_arena *arena = NULL;
	struct pickle_value *root;
	struct pickle_limits pl;
	const struct pickle_value *sdm, *sd, *planner;
	struct entry *ents = NULL;
	struct dcp_meta *r = NULL;
	size_t nents = 0;
	int err;

	*out = NULL;
	if (!lim) {
		fmt_limits_default(&def);
		lim = &def;
	}
	if (len > lim->max_pickle_bytes)
		return ck_error(CK_ETOOBIG,
				".metadata: %zu bytes, more than the %llu a pickle may have", len,
				(unsigned long long)lim->max_pickle_bytes);
	fmt_meter_begin(&meter, lim->budget);
	pl.max_ops = lim->max_pickle_ops;
	pl.max_memo = lim->max_memo;
	pl.max_marks = lim->max_depth;
	pl.max_stack = 1u << 22;
	if (!(arena = pickle_arena_new(&meter)) ||
	    (err = pickle_vm_run(&root, arena, buf, len, &pl)) < 0) {
		if (!arena)
			err = meter.err;
		err = ck_error_prefix(err, ".metadata: ");
		goto out;
	}
	if (!is_cls(root, "Metadata") || !(sdm = field(root, "state_dict_metadata")) ||
	    sdm->kind != PICKLE_DICT) {
		err = ck_error(CK_EFORMAT, ".metadata is no torch.distributed.checkpoint Metadata "
					   "with a state_dict_metadata dict");
		goto out;
	}
	if (!(sd = field(root, "storage_data")) || sd->kind != PICKLE_DICT) {
		err = ck_error(CK_ECORRUPT, ".metadata: Metadata has no storage_data dict: "
					    "nothing says where the data is");
		goto out;
	}
	planner = field(root, "planner_data");
	if (sd->u.dict.n > lim->max_tensors * 64 || sdm->u.dict.n > lim->max_tensors) {
		err = ck_error(CK_ETOOBIG, ".metadata: more than %llu keys",
			       (unsigned long long)lim->max_tensors);
		goto out;
	}
	nents = sd->u.dict.n;
	if (!(ents = fmt_alloc(&meter, FMT_PARSE, nents + 1, sizeof(*ents), "dcp: storage_data"))) {
		err = meter.err;
		goto out;
	}
	for (size_t i = 0; i < nents; i++)
		if ((err = read_entry(&ents[i], sd->u.dict.keys[i], sd->u.dict.vals[i], i)) < 0)
			goto out;
	qsort(ents, nents, sizeof(*ents), entry_cmp);
	for (size_t i = 1; i < nents; i++)
		if (!entry_cmp(&ents[i - 1], &ents[i])) {
			err = ck_error(CK_ECORRUPT,
				       ".metadata: storage_data holds key '%.200s' twice at the "
				       "same offsets",
				       ents[i].fqn);
			goto out;
		}

	if (!(r = fmt_alloc(&meter, FMT_RESULT, 1, sizeof(*r), "dcp: metadata")) ||
	    !(r->tensors = fmt_alloc(&meter, FMT_RESULT, sdm->u.dict.n + 1, sizeof(*r->tensors),
				     "dcp: tensors")) ||
	    !(r->bytes = fmt_alloc(&meter, FMT_RESULT, sdm->u.dict.n + 1, sizeof(*r->bytes),
				   "dcp: values"))) {
		err = meter.err;
		goto out;
	}
	for (size_t i = 0; i < sdm->u.dict.n; i++) {
		const struct pickle_value *k = sdm->u.dict.keys[i], *md = sdm->u.dict.vals[i];
		const char *path;
		if (k->kind != PICKLE_STR) {
			err = ck_error(CK_ECORRUPT,
				       ".metadata: state_dict_metadata key %zu is a %s, not a str",
				       i, pickle_kind_name(k->kind));
			goto out;
		}
		if (!(path = key_path(&meter, planner, k->u.s.p))) {
			err = meter.err;
			goto out;
		}
		if (is_cls(md, "TensorStorageMetadata")) {
			struct dcp_tensor *t = &r->tensors[r->ntensors];
			if ((err = read_tensor(t, &meter, k->u.s.p, md, ents, nents)) < 0)
				goto out;
			t->path = path;
			r->ntensors++;
		} else if (is_cls(md, "BytesStorageMetadata")) {
			struct entry key, *e;
			memset(&key, 0, sizeof(key));
			key.fqn = k->u.s.p;
			key.noff = -1;
			if (!(e = bsearch(&key, ents, nents, sizeof(*ents), entry_cmp))) {
				err = ck_error(CK_ECORRUPT,
					       ".metadata: value '%.200s' has no storage_data "
					       "entry: nothing says where its bytes are",
					       k->u.s.p);
				goto out;
			}
			r->bytes[r->nbytes++] =
			    (struct dcp_bytes){k->u.s.p, path, e->file, e->file_off, e->length};
		} else {
			err = ck_error(CK_ECORRUPT,
				       ".metadata: key '%.200s' is described by neither "
				       "TensorStorageMetadata nor BytesStorageMetadata",
				       k->u.s.p);
			goto out;
		}
	}
	if ((err = no_twice(&meter, r)) < 0)
		goto out;
	/* the strings the result points into live in the arena (parse region):
	 * copy them into the result region before it goes */
	for (size_t i = 0; i < r->ntensors; i++) {
		struct dcp_tensor *t = &r->tensors[i];
		if (!(t->fqn =
			  fmt_strndup(&meter, FMT_RESULT, t->fqn, strlen(t->fqn), "dcp: keys"))) {
			err = meter.err;
			goto out;
		}
		for (size_t c = 0; c < t->nchunks; c++)
			if (!(t->chunks[c].file =
				  fmt_strndup(&meter, FMT_RESULT, t->chunks[c].file,
					      strlen(t->chunks[c].file), "dcp: files"))) {
				err = meter.err;
				goto out;
			}
	}
	for (size_t i = 0; i < r->nbytes; i++) {
		struct dcp_bytes *b = &r->bytes[i];
		if (!(b->fqn =
			  fmt_strndup(&meter, FMT_RESULT, b->fqn, strlen(b->fqn), "dcp: keys")) ||
		    !(b->file = fmt_strndup(&meter, FMT_RESULT, b->file, strlen(b->file),
					    "dcp: files"))) {
			err = meter.err;
			goto out;
		}
	}
	r->budget = meter.budget;
	fmt_meter_hand_over(&r->mem, &meter);
	*out = r;
	err = 0;
out:
	pickle_arena_free(arena);
	fmt_meter_end(&meter);
	return err;
}
