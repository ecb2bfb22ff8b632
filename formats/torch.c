/*
 * torch.c: PyTorch zip checkpoints (torch.save since 1.6) -> fmt_ckpt.
 *
 * The file is a zip whose entries share one top folder (any name, usually the
 * file's stem or "archive"): <top>/data.pkl is the pickled object, and each
 * tensor storage is a stored record <top>/data/<key>. The pickle references a
 * storage by a persistent id ('storage', <storage class>, key, location,
 * numel): numel counts elements of the class's dtype (FloatStorage...), or
 * bytes for UntypedStorage, whose dtype then comes from _rebuild_tensor_v3's
 * dtype argument. torch 2.x adds <top>/byteorder, .format_version,
 * .storage_alignment, .data/serialization_id and version: plain records that
 * stay in the skeleton.
 *
 * Tensors are found by walking the pickle graph (pickle.h) from the top, with
 * JSON Pointer paths through dicts, lists and tuples; inside a pickled
 * nn.Module they are named as state_dict() names them. The walk is bounded in
 * depth (max_depth) and in visits, since the graph may share nodes or be cyclic.
 *
 * Memory: everything comes from the upload's meter (budget.h) and is charged
 * before it is taken: the zip directory, data.pkl's bytes (given back once
 * the pickle is run: the graph holds copies), the graph, the walk's buffers
 * (parse region) and the checkpoint returned (result region, handed to it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "checkpoint.h"
#include "pickle.h"
#include "zip.h"

#define PATH_MAX_BYTES 65536
#define NO_STORAGE     SIZE_MAX

struct tspec {
	enum dtype dtype;
	int ndim;
	int64_t shape[TENSOR_MAX_NDIM];
	int64_t strides[TENSOR_MAX_NDIM];
	uint64_t offset;
	size_t storage;
};

struct ctx {
	const struct ck_input *in;
	const struct fmt_limits *lim;
	struct fmt_meter *m; /* every allocation below is charged to it */
	struct zip_reader *zr;
	char *prefix; /* "<top>/" */
	size_t *storage_of_entry;
	int *untyped;	/* per storage: 1 when saved as UntypedStorage */
	int *dtype_set; /* per storage: dtype fixed by a tensor (untyped) */
	size_t stcap, tcap;
	struct fmt_ckpt *ck;
	char *path;
	size_t plen, pcap;
	char *dotted; /* module name prefix ("layer1.0.") */
	size_t dlen, dcap;
	uint64_t visits, max_visits;
};

static int bad(const char *what, const char *path)
{
	return ck_error(CK_ECORRUPT, "torch: %s at %s in data.pkl", what, *path ? path : "/");
}

/* ---- growable buffers ---- */

static int buf_reserve(struct ctx *c, char **b, size_t *cap, size_t need)
{
	char *p;
	size_t ncap;

	if (need <= *cap)
		return 0;
	if (need > PATH_MAX_BYTES)
		return ck_error(CK_ETOOBIG, "torch: a tensor path is longer than %d bytes",
				PATH_MAX_BYTES);
	ncap = *cap ? *cap : 256;
	while (ncap < need)
		ncap *= 2;
	if (!(p = fmt_grow(c->m, FMT_PARSE, *b, *cap, ncap, "torch: tensor path")))
		return c->m->err;
	*b = p;
	*cap = ncap;
	return 0;
}

/* Appends "/" and s[0..n) escaped per RFC 6901 to the path. */
static int path_push(struct ctx *c, const char *s, size_t n)
{
	int err;

	if ((err = buf_reserve(c, &c->path, &c->pcap, c->plen + 2 * n + 2)) < 0)
		return err;
	c->path[c->plen++] = '/';
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '~') {
			c->path[c->plen++] = '~';
			c->path[c->plen++] = '0';
		} else if (s[i] == '/') {
			c->path[c->plen++] = '~';
			c->path[c->plen++] = '1';
		} else {
			c->path[c->plen++] = s[i];
		}
	}
	c->path[c->plen] = '\0';
	return 0;
}

static void path_pop(struct ctx *c, size_t to)
{
	c->plen = to;
	c->path[to] = '\0';
}

/* A dict key as a path segment: str as is, int in decimal, else Python's
 * spelling of None/True/False/floats; other keys by the entry's index. */
static int path_push_key(struct ctx *c, const struct pickle_value *k, size_t index)
{
	char tmp[64];

	switch (k->kind) {
	case PICKLE_STR: return path_push(c, k->u.s.p, k->u.s.len);
	case PICKLE_INT: snprintf(tmp, sizeof(tmp), "%lld", (long long)k->u.i); break;
	case PICKLE_BOOL: snprintf(tmp, sizeof(tmp), "%s", k->u.b ? "True" : "False"); break;
	case PICKLE_NONE: snprintf(tmp, sizeof(tmp), "None"); break;
	case PICKLE_FLOAT: snprintf(tmp, sizeof(tmp), "%.17g", k->u.f); break;
	default: snprintf(tmp, sizeof(tmp), "%zu", index); break;
	}
	return path_push(c, tmp, strlen(tmp));
}

/* ---- small graph helpers ---- */

static const struct pickle_dict *as_dict(const struct pickle_value *v)
{
	if (!v)
		return NULL;
	if (v->kind == PICKLE_DICT)
		return &v->u.dict;
	if (v->kind == PICKLE_OBJECT &&
	    pickle_is_global(v->u.obj.callable, "collections", "OrderedDict"))
		return &v->u.obj.dict;
	return NULL;
}

static const struct pickle_value *dict_get(const struct pickle_dict *d, const char *key)
{
	size_t n = strlen(key);

	/* the last one wins, as in Python */
	for (size_t i = d->n; i-- > 0;) {
		const struct pickle_value *k = d->keys[i];
		if (k->kind == PICKLE_STR && k->u.s.len == n && !memcmp(k->u.s.p, key, n))
			return d->vals[i];
	}
	return NULL;
}

static int is_seq(const struct pickle_value *v)
{
	return v && (v->kind == PICKLE_TUPLE || v->kind == PICKLE_LIST);
}

/* ---- storages ---- */

static enum dtype dtype_from_global(const struct pickle_value *g)
{
	static const struct {
		const char *alias;
		enum dtype dt;
	} aliases[] = {
	    {"float", DT_FLOAT32},    {"double", DT_FLOAT64},	  {"half", DT_FLOAT16},
	    {"long", DT_INT64},	      {"int", DT_INT32},	  {"short", DT_INT16},
	    {"cfloat", DT_COMPLEX64}, {"cdouble", DT_COMPLEX128}, {"chalf", DT_COMPLEX32},
	};
	enum dtype dt;

	if (!g || g->kind != PICKLE_GLOBAL || strcmp(g->u.global.module, "torch"))
		return DT_INVALID;
	dt = dtype_from_name(g->u.global.name);
	for (size_t i = 0; dt == DT_INVALID && i < sizeof(aliases) / sizeof(aliases[0]); i++)
		if (!strcmp(aliases[i].alias, g->u.global.name))
			dt = aliases[i].dt;
	return dt;
}

/* Resolves a persistent id to a storage index, adding the storage on first
 * sight. */
static int resolve_storage(size_t *out, struct ctx *c, const struct pickle_value *pid)
{
	const struct pickle_value *const *it;
	const struct zip_entry *e;
	const struct pickle_value *cls;
	struct fmt_storage *st;
	struct fmt_ckpt *ck = c->ck;
	char *name = NULL;
	enum dtype dt;
	int untyped, err;
	size_t esize, idx, name_size;
	uint64_t numel;

	if (pid->kind != PICKLE_TUPLE || pid->u.seq.n < 5)
		return bad(
		    "a persistent id that is not a ('storage', type, key, location, numel) tuple",
		    c->path);
	it = (const struct pickle_value *const *)pid->u.seq.items;
	if (it[0]->kind != PICKLE_STR || strcmp(it[0]->u.s.p, "storage") ||
	    it[1]->kind != PICKLE_GLOBAL || it[2]->kind != PICKLE_STR ||
	    it[4]->kind != PICKLE_INT || it[4]->u.i < 0)
		return bad(
		    "a persistent id that is not a ('storage', type, key, location, numel) tuple",
		    c->path);
	cls = it[1];
	name_size = strlen(c->prefix) + 5 + it[2]->u.s.len + 1;
	if (!(name = fmt_alloc(c->m, FMT_PARSE, 1, name_size, "torch: storage record name")))
		return c->m->err;
	sprintf(name, "%sdata/%s", c->prefix, it[2]->u.s.p);
	e = strlen(name) == strlen(c->prefix) + 5 + it[2]->u.s.len ? zip_entry_find(c->zr, name)
								   : NULL;
	if (!e) {
		err = ck_error(CK_ECORRUPT,
			       "torch: data.pkl refers to storage record %s (at %s), which is not "
			       "in the zip",
			       name, *c->path ? c->path : "/");
		goto out;
	}
	idx = zip_entry_index(c->zr, e);
	if (c->storage_of_entry[idx] != NO_STORAGE) {
		*out = c->storage_of_entry[idx];
		err = 0;
		goto out;
	}
	untyped = !strcmp(cls->u.global.name, "UntypedStorage");
	dt = untyped ? DT_UINT8 : dtype_from_storage_class(cls->u.global.name);
	if (dt == DT_INVALID || strncmp(cls->u.global.module, "torch", 5)) {
		err = ck_error(CK_ECORRUPT,
			       "torch: storage record %s has an unknown storage type %s.%s", name,
			       cls->u.global.module, cls->u.global.name);
		goto out;
	}
	if (e->method != ZIP_METHOD_STORED) {
		err =
		    ck_error(CK_EFORMAT,
			     "torch: storage record %s is compressed (zip method %u); ckptd reads "
			     "stored storage records only, as torch.save writes them",
			     name, e->method);
		goto out;
	}
	esize = untyped ? 1 : dtype_size(dt);
	numel = (uint64_t)it[4]->u.i;
	if (numel > e->comp_size / esize || numel * esize != e->comp_size) {
		err = ck_error(
		    CK_ECORRUPT,
		    "torch: storage record %s at offset %llu holds %llu bytes, but data.pkl "
		    "declares %llu elements of %zu bytes",
		    name, (unsigned long long)e->data_off, (unsigned long long)e->comp_size,
		    (unsigned long long)numel, esize);
		goto out;
	}
	if (ck->nstorages == c->stcap) {
		size_t ncap = c->stcap ? c->stcap * 2 : 16;
		void *p;

		if (!(p = fmt_grow(c->m, FMT_RESULT, ck->storages, c->stcap * sizeof(*ck->storages),
				   ncap * sizeof(*ck->storages), "torch: storages"))) {
			err = c->m->err;
			goto out;
		}
		ck->storages = p;
		if (!(p = fmt_grow(c->m, FMT_PARSE, c->untyped, c->stcap * sizeof(int),
				   ncap * sizeof(int), "torch: storages"))) {
			err = c->m->err;
			goto out;
		}
		c->untyped = p;
		if (!(p = fmt_grow(c->m, FMT_PARSE, c->dtype_set, c->stcap * sizeof(int),
				   ncap * sizeof(int), "torch: storages"))) {
			err = c->m->err;
			goto out;
		}
		c->dtype_set = p;
		c->stcap = ncap;
	}
	st = &ck->storages[ck->nstorages];
	memset(st, 0, sizeof(*st));
	if (!(st->key = fmt_strndup(c->m, FMT_RESULT, it[2]->u.s.p, strlen(it[2]->u.s.p),
				    "torch: storages"))) {
		err = c->m->err;
		goto out;
	}
	st->dtype = dt;
	st->file_off = e->data_off;
	st->nbytes = e->comp_size;
	st->zip_crc = e->crc;
	c->untyped[ck->nstorages] = untyped;
	c->dtype_set[ck->nstorages] = !untyped;
	*out = c->storage_of_entry[idx] = ck->nstorages++;
	err = 0;
out:
	fmt_free(c->m, FMT_PARSE, name, name_size);
	return err;
}

/* ---- tensors ---- */

static int int_tuple(int64_t *out, int *n, const struct pickle_value *v)
{
	if (!is_seq(v) || v->u.seq.n > TENSOR_MAX_NDIM)
		return -1;
	for (size_t i = 0; i < v->u.seq.n; i++) {
		if (v->u.seq.items[i]->kind != PICKLE_INT)
			return -1;
		out[i] = v->u.seq.items[i]->u.i;
	}
	*n = (int)v->u.seq.n;
	return 0;
}

static int rebuild(struct tspec *t, struct ctx *c, const struct pickle_value *fn,
		   const struct pickle_value *args, int depth);

/* 1 and *t when v is a tensor torch rebuilds, 0 when it is not, or an error. */
static int as_tensor(struct tspec *t, struct ctx *c, const struct pickle_value *v, int depth)
{
	if (!v || v->kind != PICKLE_OBJECT || v->u.obj.call != PICKLE_CALL_REDUCE)
		return 0;
	return rebuild(t, c, v->u.obj.callable, v->u.obj.args, depth);
}

static int rebuild(struct tspec *t, struct ctx *c, const struct pickle_value *fn,
		   const struct pickle_value *args, int depth)
{
	const struct pickle_value *const *a;
	int nd_shape, nd_stride, err, v3;
	uint64_t ext;
	size_t esize;
	struct fmt_storage *st;

	if (!fn || fn->kind != PICKLE_GLOBAL)
		return 0;
	if ((uint64_t)depth > c->lim->max_depth)
		return ck_error(CK_ETOOBIG, "torch: objects nested deeper than %llu at %s",
				(unsigned long long)c->lim->max_depth, c->path);
	if (!strcmp(fn->u.global.module, "torch._utils") &&
	    (!strcmp(fn->u.global.name, "_rebuild_parameter") ||
	     !strcmp(fn->u.global.name, "_rebuild_parameter_with_state"))) {
		if (!args || args->kind != PICKLE_TUPLE || args->u.seq.n < 1)
			return bad("a malformed _rebuild_parameter call", c->path);
		err = as_tensor(t, c, args->u.seq.items[0], depth + 1);
		if (err == 0)
			return bad("_rebuild_parameter of something that is not a tensor", c->path);
		return err;
	}
	if (pickle_is_global(fn, "torch._tensor", "_rebuild_from_type_v2") ||
	    pickle_is_global(fn, "torch._tensor", "_rebuild_from_type")) {
		if (!args || args->kind != PICKLE_TUPLE || args->u.seq.n < 3)
			return bad("a malformed _rebuild_from_type_v2 call", c->path);
		return rebuild(t, c, args->u.seq.items[0], args->u.seq.items[2], depth + 1);
	}
	if (strcmp(fn->u.global.module, "torch._utils"))
		return 0;
	v3 = !strcmp(fn->u.global.name, "_rebuild_tensor_v3");
	if (!v3 && strcmp(fn->u.global.name, "_rebuild_tensor_v2") &&
	    strcmp(fn->u.global.name, "_rebuild_tensor"))
		return 0;

	if (!args || args->kind != PICKLE_TUPLE || args->u.seq.n < (v3 ? 7u : 4u))
		return bad("a malformed tensor rebuild call", c->path);
	a = (const struct pickle_value *const *)args->u.seq.items;
	if (a[0]->kind != PICKLE_PERSID)
		return bad("a tensor whose storage is not a persistent id", c->path);
	if ((err = resolve_storage(&t->storage, c, a[0]->u.pid)) < 0)
		return err;
	st = &c->ck->storages[t->storage];
	if (a[1]->kind != PICKLE_INT || a[1]->u.i < 0)
		return bad("a tensor with a bad storage offset", c->path);
	t->offset = (uint64_t)a[1]->u.i;
	if (int_tuple(t->shape, &nd_shape, a[2]) < 0 ||
	    int_tuple(t->strides, &nd_stride, a[3]) < 0 || nd_shape != nd_stride)
		return bad("a tensor with a bad size or stride tuple", c->path);
	t->ndim = nd_shape;
	t->dtype = st->dtype;
	if (v3) {
		enum dtype dt = dtype_from_global(a[6]);

		if (dt == DT_INVALID)
			return bad("a _rebuild_tensor_v3 call with an unknown dtype", c->path);
		t->dtype = dt;
		if (c->untyped[t->storage] && !c->dtype_set[t->storage]) {
			if (st->nbytes % dtype_size(dt))
				return ck_error(
				    CK_ECORRUPT,
				    "torch: storage record %sdata/%s holds %llu bytes, not a "
				    "multiple of %s's %zu",
				    c->prefix, st->key, (unsigned long long)st->nbytes,
				    dtype_name(dt), dtype_size(dt));
			st->dtype = dt;
			c->dtype_set[t->storage] = 1;
		}
	}
	if (tensor_extent(&ext, t->ndim, t->shape, t->strides, t->offset) < 0)
		return bad("a tensor with negative or overflowing sizes, strides or offset",
			   c->path);
	esize = dtype_size(t->dtype);
	if (ext > st->nbytes / esize)
		return ck_error(
		    CK_ECORRUPT,
		    "torch: tensor %s needs %llu elements of %s from offset %llu, but its "
		    "storage record %sdata/%s holds %llu bytes",
		    *c->path ? c->path : "/", (unsigned long long)ext, dtype_name(t->dtype),
		    (unsigned long long)t->offset, c->prefix, st->key,
		    (unsigned long long)st->nbytes);
	return 1;
}

static int emit(struct ctx *c, const struct tspec *t, const char *path)
{
	struct fmt_ckpt *ck = c->ck;
	struct fmt_tensor *ft;
	size_t plen = strlen(path);

	if (ck->ntensors >= c->lim->max_tensors)
		return ck_error(CK_ETOOBIG, "torch: more than %llu tensors",
				(unsigned long long)c->lim->max_tensors);
	if (ck->ntensors == c->tcap) {
		size_t ncap = c->tcap ? c->tcap * 2 : 16;
		void *p = fmt_grow(c->m, FMT_RESULT, ck->tensors, c->tcap * sizeof(*ck->tensors),
				   ncap * sizeof(*ck->tensors), "torch: tensors");
		if (!p)
			return c->m->err;
		ck->tensors = p;
		c->tcap = ncap;
	}
	ft = &ck->tensors[ck->ntensors];
	memset(ft, 0, sizeof(*ft));
	ck->ntensors++; /* freed with the checkpoint even when incomplete */
	if (!(ft->path = fmt_strndup(c->m, FMT_RESULT, path, plen, "torch: tensor paths")))
		return c->m->err;
	if (t->ndim && (!(ft->shape = fmt_alloc(c->m, FMT_RESULT, (size_t)t->ndim, sizeof(int64_t),
						"torch: tensors")) ||
			!(ft->strides = fmt_alloc(c->m, FMT_RESULT, (size_t)t->ndim,
						  sizeof(int64_t), "torch: tensors"))))
		return c->m->err;
	if (t->ndim) {
		memcpy(ft->shape, t->shape, (size_t)t->ndim * sizeof(int64_t));
		memcpy(ft->strides, t->strides, (size_t)t->ndim * sizeof(int64_t));
	}
	ft->ndim = t->ndim;
	ft->dtype = t->dtype;
	ft->offset = t->offset;
	ft->storage = t->storage;
	return 0;
}

/* ---- the walk ---- */

static int walk(struct ctx *c, const struct pickle_value *v, int depth, int named);

static int walk_dict(struct ctx *c, const struct pickle_dict *d, int depth, int named)
{
	size_t mark = c->plen;
	int err;

	for (size_t i = 0; i < d->n; i++) {
		if ((err = path_push_key(c, d->keys[i], i)) < 0)
			return err;
		err = walk(c, d->vals[i], depth + 1, named);
		path_pop(c, mark);
		if (err < 0)
			return err;
	}
	return 0;
}

static int walk_seq(struct ctx *c, const struct pickle_seq *s, int depth, int named)
{
	size_t mark = c->plen;
	char tmp[32];
	int err;

	for (size_t i = 0; i < s->n; i++) {
		snprintf(tmp, sizeof(tmp), "%zu", i);
		if ((err = path_push(c, tmp, strlen(tmp))) < 0)
			return err;
		err = walk(c, s->items[i], depth + 1, named);
		path_pop(c, mark);
		if (err < 0)
			return err;
	}
	return 0;
}

static const struct pickle_dict *module_state(const struct pickle_value *v)
{
	const struct pickle_dict *st;

	if (!v || v->kind != PICKLE_OBJECT || !(st = as_dict(v->u.obj.state)))
		return NULL;
	if (as_dict(dict_get(st, "_parameters")) && as_dict(dict_get(st, "_modules")))
		return st;
	return NULL;
}

static int in_name_set(const struct pickle_value *set, const struct pickle_value *name)
{
	/* protocol 2 has no set opcodes: a set is builtins.set([...]) */
	if (set && set->kind == PICKLE_OBJECT &&
	    (pickle_is_global(set->u.obj.callable, "builtins", "set") ||
	     pickle_is_global(set->u.obj.callable, "__builtin__", "set")) &&
	    set->u.obj.args && set->u.obj.args->kind == PICKLE_TUPLE &&
	    set->u.obj.args->u.seq.n == 1)
		set = set->u.obj.args->u.seq.items[0];
	if (!set || (set->kind != PICKLE_SET && set->kind != PICKLE_FROZENSET &&
		     set->kind != PICKLE_LIST && set->kind != PICKLE_TUPLE))
		return 0;
	for (size_t i = 0; i < set->u.seq.n; i++) {
		const struct pickle_value *s = set->u.seq.items[i];
		if (s->kind == PICKLE_STR && s->u.s.len == name->u.s.len &&
		    !memcmp(s->u.s.p, name->u.s.p, s->u.s.len))
			return 1;
	}
	return 0;
}

/* Names a module's parameters, buffers and submodules as state_dict() does:
 * the dotted name (c->dotted) becomes one path segment. */
static int walk_module(struct ctx *c, const struct pickle_dict *st, int depth)
{
	static const char *const groups[] = {"_parameters", "_buffers"};
	const struct pickle_value *skip = dict_get(st, "_non_persistent_buffers_set");
	const struct pickle_dict *mods = as_dict(dict_get(st, "_modules"));
	size_t dmark = c->dlen, pmark = c->plen;
	int err = 0;

	if ((uint64_t)depth > c->lim->max_depth)
		return ck_error(CK_ETOOBIG, "torch: modules nested deeper than %llu",
				(unsigned long long)c->lim->max_depth);
	for (int g = 0; g < 2; g++) {
		const struct pickle_dict *d = as_dict(dict_get(st, groups[g]));

		for (size_t i = 0; d && i < d->n; i++) {
			const struct pickle_value *k = d->keys[i];
			struct tspec t;

			if (k->kind != PICKLE_STR || d->vals[i]->kind == PICKLE_NONE)
				continue;
			if (g == 1 && in_name_set(skip, k))
				continue;
			if (++c->visits > c->max_visits)
				return ck_error(CK_ETOOBIG,
						"torch: object graph too large to walk");
			if ((err = as_tensor(&t, c, d->vals[i], depth + 1)) <= 0) {
				if (err < 0)
					return err;
				continue;
			}
			if ((err = buf_reserve(c, &c->dotted, &c->dcap, c->dlen + k->u.s.len + 1)) <
			    0)
				return err;
			memcpy(c->dotted + c->dlen, k->u.s.p, k->u.s.len);
			err = path_push(c, c->dotted, c->dlen + k->u.s.len);
			if (!err)
				err = emit(c, &t, c->path);
			path_pop(c, pmark);
			if (err < 0)
				return err;
		}
	}
	for (size_t i = 0; mods && i < mods->n; i++) {
		const struct pickle_value *k = mods->keys[i];
		const struct pickle_dict *sub = module_state(mods->vals[i]);

		if (k->kind != PICKLE_STR || !sub)
			continue;
		if ((err = buf_reserve(c, &c->dotted, &c->dcap, c->dlen + k->u.s.len + 2)) < 0)
			return err;
		memcpy(c->dotted + c->dlen, k->u.s.p, k->u.s.len);
		c->dlen += k->u.s.len;
		c->dotted[c->dlen++] = '.';
		err = walk_module(c, sub, depth + 1);
		c->dlen = dmark;
		if (err < 0)
			return err;
	}
	return 0;
}

/* Walks v at the current path. named = 0 registers storages but names no
 * tensor (parts of an object whose names would be ambiguous). */
static int walk(struct ctx *c, const struct pickle_value *v, int depth, int named)
{
	const struct pickle_dict *d;
	struct tspec t;
	int err;

	if ((uint64_t)depth > c->lim->max_depth)
		return ck_error(CK_ETOOBIG, "torch: objects nested deeper than %llu in data.pkl",
				(unsigned long long)c->lim->max_depth);
	if (++c->visits > c->max_visits)
		return ck_error(CK_ETOOBIG,
				"torch: data.pkl's object graph is too large to walk (more than "
				"%llu visits)",
				(unsigned long long)c->max_visits);
	switch (v->kind) {
	case PICKLE_DICT: return walk_dict(c, &v->u.dict, depth, named);
	case PICKLE_LIST:
	case PICKLE_TUPLE: return walk_seq(c, &v->u.seq, depth, named);
	case PICKLE_SET:
	case PICKLE_FROZENSET: return walk_seq(c, &v->u.seq, depth, 0);
	case PICKLE_PERSID: {
		size_t idx;
		return resolve_storage(&idx, c, v->u.pid);
	}
	case PICKLE_OBJECT: break;
	default: return 0;
	}
	if ((err = as_tensor(&t, c, v, depth)) != 0)
		return err < 0 ? err : named ? emit(c, &t, c->path) : 0;
	if ((d = module_state(v)) != NULL) {
		size_t dmark = c->dlen;

		if (named) {
			c->dlen = 0;
			err = walk_module(c, d, depth + 1);
			c->dlen = dmark;
			if (err < 0)
				return err;
		}
		/* storages of tensors state_dict() leaves out */
		return walk_dict(c, d, depth, 0);
	}
	{
		const struct pickle_value *st = v->u.obj.state;
		int has_parts =
		    v->u.obj.dict.n || v->u.obj.list.n || (st && st->kind != PICKLE_NONE);

		if ((err = walk_dict(c, &v->u.obj.dict, depth, named)) < 0 ||
		    (err = walk_seq(c, &v->u.obj.list, depth, named)) < 0)
			return err;
		if (st && (d = as_dict(st)) != NULL) {
			if ((err = walk_dict(c, d, depth, named)) < 0)
				return err;
		} else if (st && st->kind == PICKLE_TUPLE && st->u.seq.n == 2) {
			/* (state, slotstate) */
			for (int i = 0; i < 2; i++)
				if ((d = as_dict(st->u.seq.items[i])) &&
				    (err = walk_dict(c, d, depth, named)) < 0)
					return err;
		} else if (st && (err = walk(c, st, depth + 1, 0)) < 0) {
			return err;
		}
		if (v->u.obj.args &&
		    (err = walk(c, v->u.obj.args, depth + 1, named && !has_parts)) < 0)
			return err;
		if (v->u.obj.kwargs && (err = walk(c, v->u.obj.kwargs, depth + 1, 0)) < 0)
			return err;
	}
	return 0;
}

/* ---- epoch, step, loss ---- */

static double half_to_double(uint16_t h)
{
	int e = (h >> 10) & 0x1f, m = h & 0x3ff;
	double v;

	if (e == 0)
		v = m * (1.0 / (1 << 24));
	else if (e == 31)
		v = m ? __builtin_nan("") : __builtin_inf();
	else
		v = (1.0 + m / 1024.0) *
		    (e >= 15 ? (double)(1 << (e - 15)) : 1.0 / (1 << (15 - e)));
	return (h & 0x8000) ? -v : v;
}

static int tensor_scalar(double *out, struct ctx *c, const struct tspec *t)
{
	const struct fmt_storage *st = &c->ck->storages[t->storage];
	size_t es = dtype_size(t->dtype);
	uint8_t b[8];
	int err;

	if (t->ndim != 0 || es > 8 ||
	    (t->dtype != DT_FLOAT32 && t->dtype != DT_FLOAT64 && t->dtype != DT_FLOAT16 &&
	     t->dtype != DT_BFLOAT16))
		return 0;
	if ((err = ck_input_read(c->in, b, es, st->file_off + t->offset * es, "loss tensor")) < 0)
		return err;
	if (t->dtype == DT_FLOAT64) {
		uint64_t u = 0;
		double d;
		for (int i = 7; i >= 0; i--)
			u = u << 8 | b[i];
		memcpy(&d, &u, 8);
		*out = d;
	} else if (t->dtype == DT_FLOAT32 || t->dtype == DT_BFLOAT16) {
		uint32_t u = t->dtype == DT_FLOAT32
				 ? (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
				       (uint32_t)b[3] << 24
				 : ((uint32_t)b[0] | (uint32_t)b[1] << 8) << 16;
		float f;
		memcpy(&f, &u, 4);
		*out = f;
	} else {
		*out = half_to_double((uint16_t)(b[0] | b[1] << 8));
	}
	return 1;
}

static int read_meta(struct ctx *c, const struct pickle_value *root)
{
	const struct pickle_dict *d = as_dict(root);
	const struct pickle_value *v;
	static const char *const losses[] = {"loss", "val_loss"};
	struct fmt_ckpt *ck = c->ck;
	int err;

	if (!d)
		return 0;
	if ((v = dict_get(d, "epoch")) && v->kind == PICKLE_INT) {
		ck->has_epoch = 1;
		ck->epoch = v->u.i;
	}
	if (((v = dict_get(d, "step")) && v->kind == PICKLE_INT) ||
	    ((v = dict_get(d, "global_step")) && v->kind == PICKLE_INT)) {
		ck->has_step = 1;
		ck->step = v->u.i;
	}
	for (int i = 0; i < 2 && !ck->has_loss; i++) {
		struct tspec t;

		if (!(v = dict_get(d, losses[i])))
			continue;
		if (v->kind == PICKLE_FLOAT || v->kind == PICKLE_INT) {
			ck->has_loss = 1;
			ck->loss = v->kind == PICKLE_FLOAT ? v->u.f : (double)v->u.i;
		} else if ((err = as_tensor(&t, c, v, 0)) > 0) {
			if ((err = tensor_scalar(&ck->loss, c, &t)) < 0)
				return err;
			ck->has_loss = err;
		} else if (err < 0) {
			return err;
		}
	}
	return 0;
}

/* ---- entry point ---- */

static int cmp_storage(const void *a, const void *b)
{
	const struct fmt_storage *x = a, *y = b;
	return x->file_off < y->file_off ? -1 : x->file_off > y->file_off;
}

/* qsort has no context argument in C11: the table being sorted, per thread */
static _Thread_local const struct fmt_tensor *sort_tensors;

static int cmp_path(const void *a, const void *b)
{
	return strcmp(sort_tensors[*(const size_t *)a].path, sort_tensors[*(const size_t *)b].path);
}

int torch_zip_read(struct fmt_ckpt **out, const struct ck_input *in, const struct fmt_limits *lim)
{
	struct ctx c;
	struct fmt_meter meter;
	struct fmt_limits def;
	const struct zip_entry *e, *pkl_e;
	uint8_t *pkl = NULL, *bo = NULL;
	size_t pkl_len = 0, bo_len = 0, n = 0, nentries = 0;
	struct pickle_arena *arena = NULL;
	struct pickle_value *root;
	struct pickle_limits pl;
	uint64_t *old_off = NULL;
	size_t *order = NULL;
	int err;

	*out = NULL;
	if (!lim) {
		fmt_limits_default(&def);
		lim = &def;
	}
	fmt_meter_begin(&meter, lim->budget);
	memset(&c, 0, sizeof(c));
	c.in = in;
	c.lim = lim;
	c.m = &meter;
	if (!(c.ck = fmt_alloc(c.m, FMT_RESULT, 1, sizeof(*c.ck), "torch: checkpoint"))) {
		err = meter.err;
		goto out;
	}
	c.ck->kind = FMT_TORCH_ZIP;
	if ((err = buf_reserve(&c, &c.path, &c.pcap, 1)) < 0)
		goto out;
	c.path[0] = '\0';

	if ((err = zip_reader_open(&c.zr, in, lim->max_records, c.m)) < 0)
		goto out;
	nentries = zip_entry_count(c.zr);
	if (zip_entry_count(c.zr) == 0) {
		err = ck_error(CK_EFORMAT, "torch: an empty zip file is not a PyTorch checkpoint");
		goto out;
	}
	e = zip_entry_at(c.zr, 0);
	{
		const char *slash = strchr(e->name, '/');

		if (!slash) {
			err = ck_error(CK_EFORMAT,
				       "torch: zip record %s is not in a top folder: not a PyTorch "
				       "checkpoint (torch.save)",
				       e->name);
			goto out;
		}
		n = (size_t)(slash - e->name) + 1;
		if (!(c.prefix = fmt_alloc(c.m, FMT_PARSE, 1, n + 16, "torch: record names"))) {
			err = meter.err;
			goto out;
		}
		memcpy(c.prefix, e->name, n);
		c.prefix[n] = '\0';
	}
	strcpy(c.prefix + n, "data.pkl");
	pkl_e = zip_entry_find(c.zr, c.prefix);
	if (!pkl_e) {
		err = ck_error(
		    CK_EFORMAT,
		    "torch: the zip has no %s record: not a PyTorch checkpoint (torch.save)",
		    c.prefix);
		goto out;
	}
	strcpy(c.prefix + n, "byteorder");
	if ((e = zip_entry_find(c.zr, c.prefix)) != NULL) {
		if ((err = zip_entry_read(&bo, &bo_len, c.zr, e, 16)) < 0)
			goto out;
		if (bo_len == 3 && !memcmp(bo, "big", 3)) {
			err = ck_error(CK_EFORMAT,
				       "torch: a big-endian checkpoint (byteorder \"big\") is not "
				       "supported; load and re-save it on a little-endian machine");
			goto out;
		}
		if (bo_len != 6 || memcmp(bo, "little", 6)) {
			err = ck_error(CK_ECORRUPT,
				       "torch: record %s at offset %llu is neither "
				       "\"little\" nor \"big\"",
				       c.prefix, (unsigned long long)e->data_off);
			goto out;
		}
	}
	c.prefix[n] = '\0';

	if ((err = zip_entry_read(&pkl, &pkl_len, c.zr, pkl_e, lim->max_pickle_bytes)) < 0)
		goto out;
	pl.max_ops = lim->max_pickle_ops;
	pl.max_memo = lim->max_memo;
	pl.max_marks = lim->max_depth;
	pl.max_stack = 1u << 22;
	if (!(arena = pickle_arena_new(c.m)) ||
	    (err = pickle_vm_run(&root, arena, pkl, pkl_len, &pl)) < 0) {
		char msg[1024];
		if (!arena)
			err = meter.err;
		snprintf(msg, sizeof(msg), "%s", ck_errmsg());
		err = ck_error(err, "torch: %sdata.pkl: %s", c.prefix, msg);
		goto out;
	}
	/* the graph holds copies of every string: the bytes can go */
	zip_entry_buf_free(c.zr, pkl, pkl_len);
	pkl = NULL;

	if (!(c.storage_of_entry =
		  fmt_alloc(c.m, FMT_PARSE, nentries, sizeof(size_t), "torch: storages"))) {
		err = meter.err;
		goto out;
	}
	for (size_t i = 0; i < nentries; i++)
		c.storage_of_entry[i] = NO_STORAGE;
	c.max_visits = 16 * (uint64_t)pkl_len + (1u << 20);
	if ((err = walk(&c, root, 0, 1)) < 0 || (err = read_meta(&c, root)) < 0)
		goto out;

	/* storages in file order; tensors follow through their old offsets */
	if (c.ck->nstorages > 1) {
		if (!(old_off = fmt_alloc(c.m, FMT_PARSE, c.ck->nstorages, sizeof(uint64_t),
					  "torch: storages"))) {
			err = meter.err;
			goto out;
		}
		for (size_t i = 0; i < c.ck->nstorages; i++)
			old_off[i] = c.ck->storages[i].file_off;
		qsort(c.ck->storages, c.ck->nstorages, sizeof(*c.ck->storages), cmp_storage);
		for (size_t i = 0; i < c.ck->ntensors; i++) {
			uint64_t off = old_off[c.ck->tensors[i].storage];
			size_t lo = 0, hi = c.ck->nstorages;
			while (lo < hi) {
				size_t mid = lo + (hi - lo) / 2;
				if (c.ck->storages[mid].file_off < off)
					lo = mid + 1;
				else
					hi = mid;
			}
			c.ck->tensors[i].storage = lo;
		}
	}
	if (c.ck->ntensors > 1) {
		if (!(order = fmt_alloc(c.m, FMT_PARSE, c.ck->ntensors, sizeof(size_t),
					"torch: tensors"))) {
			err = meter.err;
			goto out;
		}
		for (size_t i = 0; i < c.ck->ntensors; i++)
			order[i] = i;
		sort_tensors = c.ck->tensors;
		qsort(order, c.ck->ntensors, sizeof(size_t), cmp_path);
		for (size_t i = 1; i < c.ck->ntensors; i++)
			if (!strcmp(c.ck->tensors[order[i]].path,
				    c.ck->tensors[order[i - 1]].path)) {
				err = ck_error(CK_ECORRUPT, "torch: two tensors have the path %s",
					       c.ck->tensors[order[i]].path);
				goto out;
			}
	}
	fmt_ckpt_keep(c.ck, c.m);
	*out = c.ck;
	c.ck = NULL;
	err = 0;
out:
	/* everything but the checkpoint (handed over by fmt_ckpt_keep, or
	 * given back here on failure) goes with the meter's parse region */
	pickle_arena_free(arena);
	zip_reader_free(c.zr);
	fmt_meter_end(&meter);
	return err;
}
