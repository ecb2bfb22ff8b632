/*
 * torch_walk.c: the tensors of an unpickled torch object graph, whatever the
 * container (see torch_walk.h).
 *
 * A tensor's storage persistent id goes to the container's resolver, which
 * says which storage of the upload it is and which bytes of it the tensor may
 * use (all of them, or a legacy view's); the tensor's shape, strides and
 * offset are checked against those bytes here. A storage saved as
 * UntypedStorage counts bytes and takes its dtype from the first
 * _rebuild_tensor_v3 tensor on it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "torch_walk.h"

#define PATH_MAX_BYTES 65536

struct tspec {
	enum dtype dtype;
	int ndim;
	int64_t shape[TENSOR_MAX_NDIM];
	int64_t strides[TENSOR_MAX_NDIM];
	uint64_t offset;
	size_t storage;
};

static int bad(struct torch_walk *w, const char *what)
{
	return ck_error(CK_ECORRUPT, "torch: %s at %s in %s", what, *w->path ? w->path : "/",
			w->src);
}

/* ---- growable buffers ---- */

static int buf_reserve(struct torch_walk *w, char **b, size_t *cap, size_t need)
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
	if (!(p = fmt_grow(w->m, FMT_PARSE, *b, *cap, ncap, "torch: tensor path")))
		return w->m->err;
	*b = p;
	*cap = ncap;
	return 0;
}

/* Appends "/" and s[0..n) escaped per RFC 6901 to the path. */
static int path_push(struct torch_walk *w, const char *s, size_t n)
{
	int err;

	if ((err = buf_reserve(w, &w->path, &w->pcap, w->plen + 2 * n + 2)) < 0)
		return err;
	w->path[w->plen++] = '/';
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '~') {
			w->path[w->plen++] = '~';
			w->path[w->plen++] = '0';
		} else if (s[i] == '/') {
			w->path[w->plen++] = '~';
			w->path[w->plen++] = '1';
		} else {
			w->path[w->plen++] = s[i];
		}
	}
	w->path[w->plen] = '\0';
	return 0;
}

static void path_pop(struct torch_walk *w, size_t to)
{
	w->plen = to;
	w->path[to] = '\0';
}

/* A dict key as a path segment: str as is, int in decimal, else Python's
 * spelling of None/True/False/floats; other keys by the entry's index. */
static int path_push_key(struct torch_walk *w, const struct pickle_value *k, size_t index)
{
	char tmp[64];

	switch (k->kind) {
	case PICKLE_STR: return path_push(w, k->u.s.p, k->u.s.len);
	case PICKLE_INT: snprintf(tmp, sizeof(tmp), "%lld", (long long)k->u.i); break;
	case PICKLE_BOOL: snprintf(tmp, sizeof(tmp), "%s", k->u.b ? "True" : "False"); break;
	case PICKLE_NONE: snprintf(tmp, sizeof(tmp), "None"); break;
	case PICKLE_FLOAT: snprintf(tmp, sizeof(tmp), "%.17g", k->u.f); break;
	default: snprintf(tmp, sizeof(tmp), "%zu", index); break;
	}
	return path_push(w, tmp, strlen(tmp));
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

/* Adds the storage's entry and grows the per-storage tables with it. */
int torch_walk_add_storage(size_t *idx, struct torch_walk *w, const char *key, size_t keylen,
			   enum dtype dt, int untyped, uint64_t file_off, uint64_t nbytes,
			   uint32_t zip_crc)
{
	struct fmt_ckpt *ck = w->ck;
	struct fmt_storage *st;

	if (ck->nstorages == w->stcap) {
		size_t ncap = w->stcap ? w->stcap * 2 : 16;
		void *p;

		if (!(p = fmt_grow(w->m, FMT_RESULT, ck->storages, w->stcap * sizeof(*ck->storages),
				   ncap * sizeof(*ck->storages), "torch: storages")))
			return w->m->err;
		ck->storages = p;
		if (!(p = fmt_grow(w->m, FMT_PARSE, w->untyped, w->stcap * sizeof(int),
				   ncap * sizeof(int), "torch: storages")))
			return w->m->err;
		w->untyped = p;
		if (!(p = fmt_grow(w->m, FMT_PARSE, w->dtype_set, w->stcap * sizeof(int),
				   ncap * sizeof(int), "torch: storages")))
			return w->m->err;
		w->dtype_set = p;
		w->stcap = ncap;
	}
	st = &ck->storages[ck->nstorages];
	memset(st, 0, sizeof(*st));
	if (!(st->key = fmt_strndup(w->m, FMT_RESULT, key, keylen, "torch: storages")))
		return w->m->err;
	st->dtype = dt;
	st->file_off = file_off;
	st->nbytes = nbytes;
	st->zip_crc = zip_crc;
	w->untyped[ck->nstorages] = untyped;
	w->dtype_set[ck->nstorages] = !untyped;
	*idx = ck->nstorages++;
	return 0;
}

int torch_walk_pid(struct torch_pid *out, struct torch_walk *w, const struct pickle_value *pid)
{
	const struct pickle_value *const *it;

	if (pid->kind != PICKLE_TUPLE || pid->u.seq.n < 5)
		return bad(w, "a persistent id that is not a ('storage', type, key, location, "
			      "numel) tuple");
	it = (const struct pickle_value *const *)pid->u.seq.items;
	if (it[0]->kind != PICKLE_STR || strcmp(it[0]->u.s.p, "storage") ||
	    it[1]->kind != PICKLE_GLOBAL || it[2]->kind != PICKLE_STR ||
	    it[4]->kind != PICKLE_INT || it[4]->u.i < 0)
		return bad(w, "a persistent id that is not a ('storage', type, key, location, "
			      "numel) tuple");
	out->cls = it[1];
	out->key = it[2]->u.s.p;
	out->keylen = it[2]->u.s.len;
	out->numel = (uint64_t)it[4]->u.i;
	out->view = pid->u.seq.n > 5 ? it[5] : NULL;
	return 0;
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

static int rebuild(struct tspec *t, struct torch_walk *w, const struct pickle_value *fn,
		   const struct pickle_value *args, int depth);

/* 1 and *t when v is a tensor torch rebuilds, 0 when it is not, or an error. */
static int as_tensor(struct tspec *t, struct torch_walk *w, const struct pickle_value *v, int depth)
{
	if (!v || v->kind != PICKLE_OBJECT || v->u.obj.call != PICKLE_CALL_REDUCE)
		return 0;
	return rebuild(t, w, v->u.obj.callable, v->u.obj.args, depth);
}

static int rebuild(struct tspec *t, struct torch_walk *w, const struct pickle_value *fn,
		   const struct pickle_value *args, int depth)
{
	const struct pickle_value *const *a;
	struct torch_ref ref;
	int nd_shape, nd_stride, err, v3;
	uint64_t ext;
	size_t esize;
	struct fmt_storage *st;

	if (!fn || fn->kind != PICKLE_GLOBAL)
		return 0;
	if ((uint64_t)depth > w->lim->max_depth)
		return ck_error(CK_ETOOBIG, "torch: objects nested deeper than %llu at %s",
				(unsigned long long)w->lim->max_depth, w->path);
	if (!strcmp(fn->u.global.module, "torch._utils") &&
	    (!strcmp(fn->u.global.name, "_rebuild_parameter") ||
	     !strcmp(fn->u.global.name, "_rebuild_parameter_with_state"))) {
		if (!args || args->kind != PICKLE_TUPLE || args->u.seq.n < 1)
			return bad(w, "a malformed _rebuild_parameter call");
		err = as_tensor(t, w, args->u.seq.items[0], depth + 1);
		if (err == 0)
			return bad(w, "_rebuild_parameter of something that is not a tensor");
		return err;
	}
	if (pickle_is_global(fn, "torch._tensor", "_rebuild_from_type_v2") ||
	    pickle_is_global(fn, "torch._tensor", "_rebuild_from_type")) {
		if (!args || args->kind != PICKLE_TUPLE || args->u.seq.n < 3)
			return bad(w, "a malformed _rebuild_from_type_v2 call");
		return rebuild(t, w, args->u.seq.items[0], args->u.seq.items[2], depth + 1);
	}
	if (strcmp(fn->u.global.module, "torch._utils"))
		return 0;
	v3 = !strcmp(fn->u.global.name, "_rebuild_tensor_v3");
	if (!v3 && strcmp(fn->u.global.name, "_rebuild_tensor_v2") &&
	    strcmp(fn->u.global.name, "_rebuild_tensor"))
		return 0;

	if (!args || args->kind != PICKLE_TUPLE || args->u.seq.n < (v3 ? 7u : 4u))
		return bad(w, "a malformed tensor rebuild call");
	a = (const struct pickle_value *const *)args->u.seq.items;
	if (a[0]->kind != PICKLE_PERSID)
		return bad(w, "a tensor whose storage is not a persistent id");
	if ((err = w->resolve(&ref, w, a[0]->u.pid)) < 0)
		return err;
	if (err == 0)
		return bad(w, "a tensor whose storage is not a storage persistent id");
	t->storage = ref.storage;
	st = &w->ck->storages[t->storage];
	if (a[1]->kind != PICKLE_INT || a[1]->u.i < 0)
		return bad(w, "a tensor with a bad storage offset");
	t->offset = (uint64_t)a[1]->u.i;
	if (int_tuple(t->shape, &nd_shape, a[2]) < 0 ||
	    int_tuple(t->strides, &nd_stride, a[3]) < 0 || nd_shape != nd_stride)
		return bad(w, "a tensor with a bad size or stride tuple");
	t->ndim = nd_shape;
	t->dtype = ref.dtype;
	if (v3) {
		enum dtype dt = dtype_from_global(a[6]);

		if (dt == DT_INVALID)
			return bad(w, "a _rebuild_tensor_v3 call with an unknown dtype");
		t->dtype = dt;
		if (w->untyped[t->storage] && !w->dtype_set[t->storage]) {
			if (st->nbytes % dtype_size(dt))
				return ck_error(
				    CK_ECORRUPT,
				    "torch: %s%s holds %llu bytes, not a multiple of %s's %zu",
				    w->st_prefix, st->key, (unsigned long long)st->nbytes,
				    dtype_name(dt), dtype_size(dt));
			st->dtype = dt;
			w->dtype_set[t->storage] = 1;
		}
	}
	if (tensor_extent(&ext, t->ndim, t->shape, t->strides, t->offset) < 0)
		return bad(w, "a tensor with negative or overflowing sizes, strides or offset");
	esize = dtype_size(t->dtype);
	if (ref.view_off % esize)
		return ck_error(CK_ECORRUPT,
				"torch: tensor %s is a %s view at byte %llu of %s%s, not a "
				"multiple of %zu bytes",
				*w->path ? w->path : "/", dtype_name(t->dtype),
				(unsigned long long)ref.view_off, w->st_prefix, st->key, esize);
	if (ext > ref.view_bytes / esize) {
		char view[96] = "";

		if (ref.view_off || ref.view_bytes != st->nbytes)
			snprintf(view, sizeof(view), "'s view of %llu bytes at byte %llu",
				 (unsigned long long)ref.view_bytes,
				 (unsigned long long)ref.view_off);
		return ck_error(CK_ECORRUPT,
				"torch: tensor %s needs %llu elements of %s from offset %llu, but "
				"its %s%s%s holds %llu bytes",
				*w->path ? w->path : "/", (unsigned long long)ext,
				dtype_name(t->dtype), (unsigned long long)t->offset, w->st_prefix,
				st->key, view,
				(unsigned long long)(view[0] ? ref.view_bytes : st->nbytes));
	}
	/* from here on the offset counts from the storage's first byte */
	t->offset += ref.view_off / esize;
	return 1;
}

static int emit(struct torch_walk *w, const struct tspec *t, const char *path)
{
	struct fmt_ckpt *ck = w->ck;
	struct fmt_tensor *ft;
	size_t plen = strlen(path);

	if (ck->ntensors >= w->lim->max_tensors)
		return ck_error(CK_ETOOBIG, "torch: more than %llu tensors",
				(unsigned long long)w->lim->max_tensors);
	if (ck->ntensors == w->tcap) {
		size_t ncap = w->tcap ? w->tcap * 2 : 16;
		void *p = fmt_grow(w->m, FMT_RESULT, ck->tensors, w->tcap * sizeof(*ck->tensors),
				   ncap * sizeof(*ck->tensors), "torch: tensors");
		if (!p)
			return w->m->err;
		ck->tensors = p;
		w->tcap = ncap;
	}
	ft = &ck->tensors[ck->ntensors];
	memset(ft, 0, sizeof(*ft));
	ck->ntensors++; /* freed with the checkpoint even when incomplete */
	if (!(ft->path = fmt_strndup(w->m, FMT_RESULT, path, plen, "torch: tensor paths")))
		return w->m->err;
	if (t->ndim && (!(ft->shape = fmt_alloc(w->m, FMT_RESULT, (size_t)t->ndim, sizeof(int64_t),
						"torch: tensors")) ||
			!(ft->strides = fmt_alloc(w->m, FMT_RESULT, (size_t)t->ndim,
						  sizeof(int64_t), "torch: tensors"))))
		return w->m->err;
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

static int walk(struct torch_walk *w, const struct pickle_value *v, int depth, int named);

static int walk_dict(struct torch_walk *w, const struct pickle_dict *d, int depth, int named)
{
	size_t mark = w->plen;
	int err;

	for (size_t i = 0; i < d->n; i++) {
		if ((err = path_push_key(w, d->keys[i], i)) < 0)
			return err;
		err = walk(w, d->vals[i], depth + 1, named);
		path_pop(w, mark);
		if (err < 0)
			return err;
	}
	return 0;
}

static int walk_seq(struct torch_walk *w, const struct pickle_seq *s, int depth, int named)
{
	size_t mark = w->plen;
	char tmp[32];
	int err;

	for (size_t i = 0; i < s->n; i++) {
		snprintf(tmp, sizeof(tmp), "%zu", i);
		if ((err = path_push(w, tmp, strlen(tmp))) < 0)
			return err;
		err = walk(w, s->items[i], depth + 1, named);
		path_pop(w, mark);
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
 * the dotted name (w->dotted) becomes one path segment. */
static int walk_module(struct torch_walk *w, const struct pickle_dict *st, int depth)
{
	static const char *const groups[] = {"_parameters", "_buffers"};
	const struct pickle_value *skip = dict_get(st, "_non_persistent_buffers_set");
	const struct pickle_dict *mods = as_dict(dict_get(st, "_modules"));
	size_t dmark = w->dlen, pmark = w->plen;
	int err = 0;

	if ((uint64_t)depth > w->lim->max_depth)
		return ck_error(CK_ETOOBIG, "torch: modules nested deeper than %llu",
				(unsigned long long)w->lim->max_depth);
	for (int g = 0; g < 2; g++) {
		const struct pickle_dict *d = as_dict(dict_get(st, groups[g]));

		for (size_t i = 0; d && i < d->n; i++) {
			const struct pickle_value *k = d->keys[i];
			struct tspec t;

			if (k->kind != PICKLE_STR || d->vals[i]->kind == PICKLE_NONE)
				continue;
			if (g == 1 && in_name_set(skip, k))
				continue;
			if (++w->visits > w->max_visits)
				return ck_error(CK_ETOOBIG,
						"torch: object graph too large to walk");
			if ((err = as_tensor(&t, w, d->vals[i], depth + 1)) <= 0) {
				if (err < 0)
					return err;
				continue;
			}
			if ((err = buf_reserve(w, &w->dotted, &w->dcap, w->dlen + k->u.s.len + 1)) <
			    0)
				return err;
			memcpy(w->dotted + w->dlen, k->u.s.p, k->u.s.len);
			err = path_push(w, w->dotted, w->dlen + k->u.s.len);
			if (!err)
				err = emit(w, &t, w->path);
			path_pop(w, pmark);
			if (err < 0)
				return err;
		}
	}
	for (size_t i = 0; mods && i < mods->n; i++) {
		const struct pickle_value *k = mods->keys[i];
		const struct pickle_dict *sub = module_state(mods->vals[i]);

		if (k->kind != PICKLE_STR || !sub)
			continue;
		if ((err = buf_reserve(w, &w->dotted, &w->dcap, w->dlen + k->u.s.len + 2)) < 0)
			return err;
		memcpy(w->dotted + w->dlen, k->u.s.p, k->u.s.len);
		w->dlen += k->u.s.len;
		w->dotted[w->dlen++] = '.';
		err = walk_module(w, sub, depth + 1);
		w->dlen = dmark;
		if (err < 0)
			return err;
	}
	return 0;
}

/* Walks v at the current path. named = 0 registers storages but names no
 * tensor (parts of an object whose names would be ambiguous). */
static int walk(struct torch_walk *w, const struct pickle_value *v, int depth, int named)
{
	const struct pickle_dict *d;
	struct tspec t;
	int err;

	if ((uint64_t)depth > w->lim->max_depth)
		return ck_error(CK_ETOOBIG, "torch: objects nested deeper than %llu in %s",
				(unsigned long long)w->lim->max_depth, w->src);
	if (++w->visits > w->max_visits)
		return ck_error(CK_ETOOBIG,
				"torch: %s's object graph is too large to walk (more than "
				"%llu visits)",
				w->src, (unsigned long long)w->max_visits);
	switch (v->kind) {
	case PICKLE_DICT: return walk_dict(w, &v->u.dict, depth, named);
	case PICKLE_LIST:
	case PICKLE_TUPLE: return walk_seq(w, &v->u.seq, depth, named);
	case PICKLE_SET:
	case PICKLE_FROZENSET: return walk_seq(w, &v->u.seq, depth, 0);
	case PICKLE_PERSID: {
		struct torch_ref ref;
		err = w->resolve(&ref, w, v->u.pid);
		return err < 0 ? err : 0;
	}
	case PICKLE_OBJECT: break;
	default: return 0;
	}
	if ((err = as_tensor(&t, w, v, depth)) != 0)
		return err < 0 ? err : named ? emit(w, &t, w->path) : 0;
	if ((d = module_state(v)) != NULL) {
		size_t dmark = w->dlen;

		if (named) {
			w->dlen = 0;
			err = walk_module(w, d, depth + 1);
			w->dlen = dmark;
			if (err < 0)
				return err;
		}
		/* storages of tensors state_dict() leaves out */
		return walk_dict(w, d, depth, 0);
	}
	{
		const struct pickle_value *st = v->u.obj.state;
		int has_parts =
		    v->u.obj.dict.n || v->u.obj.list.n || (st && st->kind != PICKLE_NONE);

		if ((err = walk_dict(w, &v->u.obj.dict, depth, named)) < 0 ||
		    (err = walk_seq(w, &v->u.obj.list, depth, named)) < 0)
			return err;
		if (st && (d = as_dict(st)) != NULL) {
			if ((err = walk_dict(w, d, depth, named)) < 0)
				return err;
		} else if (st && st->kind == PICKLE_TUPLE && st->u.seq.n == 2) {
			/* (state, slotstate) */
			for (int i = 0; i < 2; i++)
				if ((d = as_dict(st->u.seq.items[i])) &&
				    (err = walk_dict(w, d, depth, named)) < 0)
					return err;
		} else if (st && (err = walk(w, st, depth + 1, 0)) < 0) {
			return err;
		}
		if (v->u.obj.args &&
		    (err = walk(w, v->u.obj.args, depth + 1, named && !has_parts)) < 0)
			return err;
		if (v->u.obj.kwargs && (err = walk(w, v->u.obj.kwargs, depth + 1, 0)) < 0)
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

static int tensor_scalar(double *out, struct torch_walk *w, const struct tspec *t)
{
	const struct fmt_storage *st = &w->ck->storages[t->storage];
	size_t es = dtype_size(t->dtype);
	uint8_t b[8];
	int err;

	if (t->ndim != 0 || es > 8 ||
	    (t->dtype != DT_FLOAT32 && t->dtype != DT_FLOAT64 && t->dtype != DT_FLOAT16 &&
	     t->dtype != DT_BFLOAT16))
		return 0;
	if ((err = ck_input_read(w->in, b, es, st->file_off + t->offset * es, "loss tensor")) < 0)
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

static int read_meta(struct torch_walk *w, const struct pickle_value *root)
{
	const struct pickle_dict *d = as_dict(root);
	const struct pickle_value *v;
	static const char *const losses[] = {"loss", "val_loss"};
	struct fmt_ckpt *ck = w->ck;
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
		} else if ((err = as_tensor(&t, w, v, 0)) > 0) {
			if ((err = tensor_scalar(&ck->loss, w, &t)) < 0)
				return err;
			ck->has_loss = err;
		} else if (err < 0) {
			return err;
		}
	}
	return 0;
}

/* ---- entry points ---- */

int torch_walk_begin(struct torch_walk *w, enum fmt_kind kind)
{
	int err;

	if (!(w->ck = fmt_alloc(w->m, FMT_RESULT, 1, sizeof(*w->ck), "torch: checkpoint")))
		return w->m->err;
	w->ck->kind = kind;
	if ((err = buf_reserve(w, &w->path, &w->pcap, 1)) < 0)
		return err;
	w->path[0] = '\0';
	w->plen = 0;
	return 0;
}

int torch_walk_run(struct torch_walk *w, const struct pickle_value *root)
{
	return walk(w, root, 0, 1);
}

int torch_walk_meta(struct torch_walk *w, const struct pickle_value *root)
{
	return read_meta(w, root);
}

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

int torch_walk_finish(struct fmt_ckpt **out, struct torch_walk *w)
{
	struct fmt_ckpt *ck = w->ck;
	uint64_t *old_off;
	size_t *order;

	/* storages in file order; tensors follow through their old offsets */
	if (ck->nstorages > 1) {
		if (!(old_off = fmt_alloc(w->m, FMT_PARSE, ck->nstorages, sizeof(uint64_t),
					  "torch: storages")))
			return w->m->err;
		for (size_t i = 0; i < ck->nstorages; i++)
			old_off[i] = ck->storages[i].file_off;
		qsort(ck->storages, ck->nstorages, sizeof(*ck->storages), cmp_storage);
		for (size_t i = 0; i < ck->ntensors; i++) {
			uint64_t off = old_off[ck->tensors[i].storage];
			size_t lo = 0, hi = ck->nstorages;
			while (lo < hi) {
				size_t mid = lo + (hi - lo) / 2;
				if (ck->storages[mid].file_off < off)
					lo = mid + 1;
				else
					hi = mid;
			}
			ck->tensors[i].storage = lo;
		}
	}
	if (ck->ntensors > 1) {
		if (!(order = fmt_alloc(w->m, FMT_PARSE, ck->ntensors, sizeof(size_t),
					"torch: tensors")))
			return w->m->err;
		for (size_t i = 0; i < ck->ntensors; i++)
			order[i] = i;
		sort_tensors = ck->tensors;
		qsort(order, ck->ntensors, sizeof(size_t), cmp_path);
		for (size_t i = 1; i < ck->ntensors; i++)
			if (!strcmp(ck->tensors[order[i]].path, ck->tensors[order[i - 1]].path))
				return ck_error(CK_ECORRUPT, "torch: two tensors have the path %s",
						ck->tensors[order[i]].path);
	}
	fmt_ckpt_keep(ck, w->m);
	*out = ck;
	w->ck = NULL;
	return 0;
}
