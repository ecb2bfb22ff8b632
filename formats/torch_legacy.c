/*
 * torch_legacy.c: PyTorch's legacy checkpoints -> fmt_ckpt: what torch.save
 * wrote before 1.6, and still writes with _use_new_zipfile_serialization=False.
 *
 * The file is five pickles, then the storages' bytes, one after the other
 * (torch/serialization.py, _legacy_save and _legacy_load):
 *   1. the magic number 0x1950a86a20f9469cfc6c;
 *   2. the protocol version, 1001;
 *   3. sys_info, a dict (torch's loader reads it and ignores it; so does this
 *      one: torch writes the storages little-endian whatever the machine);
 *   4. the object, in which a storage is the persistent id ('storage',
 *      <storage class>, root key, location, numel, view metadata): numel
 *      counts elements of the class's dtype (bytes for UntypedStorage); the
 *      view metadata is None, or (view key, offset, size), in elements, for a
 *      part of the root storage (torch before 1.0 saved views of storages);
 *   5. the list of the root keys, in the order of the storages that follow
 *      (torch sorts them as strings);
 * then, for each key of the list, the storage's element count (8 bytes,
 * little-endian) and count * element size bytes: its data.
 *
 * A storage of ckptd is a storage's data alone, without the count before it,
 * so that the same tensor bytes saved in a zip checkpoint are the same blob.
 * Everything else (the pickles, the key list, the counts, any bytes after the
 * last storage, which torch ignores) is the skeleton. A tensor on a view is
 * reported on its root storage, its offset counted from the root's first
 * element (the view's offset plus its own), so that every output holds the
 * values torch.load gives.
 *
 * What is checked, each failure naming what and its byte offset (422): every
 * storage the object refers to is in the key list, and every key of the list
 * is referred to, once; all references to a key declare the same storage
 * class and numel; each count equals that numel, and its bytes are in the
 * file; a view lies inside its root. Nothing is allocated from a size read in
 * the file before that size is checked against the file's (the pickles are
 * found by scanning their opcodes: pickle_scan_end). A file whose first
 * pickle is not the magic number is not a torch file (415), and neither is
 * the tar format of the first torch releases, which ckptd does not read.
 *
 * Memory: as torch.c, from the upload's meter (budget.h); each pickle's bytes
 * are given back once it has run, its graph stays until the parse ends.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "checkpoint.h"
#include "le.h"
#include "pickle.h"
#include "torch_walk.h"

#define NO_STORAGE SIZE_MAX

/* 0x1950a86a20f9469cfc6c, little-endian, as pickle's LONG1 holds it */
static const uint8_t legacy_magic[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9,
					 0x20, 0x6a, 0xa8, 0x50, 0x19};
#define LEGACY_PROTOCOL_VERSION 1001

/* One key of the storage key list. */
struct key_entry {
	const char *key; /* borrowed from the key list's graph */
	size_t len;
	size_t pos;			/* its place in the list: the storages' file order */
	size_t storage;			/* index in the checkpoint, or NO_STORAGE while unused */
	uint64_t numel;			/* as the first reference declares it */
	size_t esize;			/* bytes of one of those elements */
	const struct pickle_value *cls; /* the first reference's storage class */
};

struct lctx {
	struct torch_walk w;
	struct key_entry *keys; /* sorted by key */
	size_t nkeys;
	uint64_t keys_off; /* where the key list's pickle starts */
	struct pickle_arena *arena;
	struct pickle_limits pl;
	char src[64]; /* "the pickle at offset N" */
};

static int key_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	int r = memcmp(a, b, alen < blen ? alen : blen);

	return r ? r : alen < blen ? -1 : alen > blen;
}

static int cmp_entry(const void *x, const void *y)
{
	const struct key_entry *a = x, *b = y;
	return key_cmp(a->key, a->len, b->key, b->len);
}

static struct key_entry *find_key(struct lctx *c, const char *key, size_t len)
{
	size_t lo = 0, hi = c->nkeys;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int r = key_cmp(c->keys[mid].key, c->keys[mid].len, key, len);

		if (r == 0)
			return &c->keys[mid];
		if (r < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static int same_global(const struct pickle_value *a, const struct pickle_value *b)
{
	return !strcmp(a->u.global.module, b->u.global.module) &&
	       !strcmp(a->u.global.name, b->u.global.name);
}

static const char *at(const struct torch_walk *w)
{
	return *w->path ? w->path : "/";
}

/* The resolver (torch_walk.h): a persistent id names a key of the list;
 * its storage is added on first sight, its file offset set later
 * (place_storages), when every storage's size is known. */
static int resolve_storage(struct torch_ref *out, struct torch_walk *w,
			   const struct pickle_value *pid)
{
	struct lctx *c = w->arg;
	struct key_entry *k;
	struct torch_pid p;
	const struct fmt_storage *st;
	enum dtype dt;
	int untyped, err;
	size_t esize;

	/* ('module', class, source file, source): the class of a pickled
	 * nn.Module with its source code, which torch checks on load */
	if (pid->kind == PICKLE_TUPLE && pid->u.seq.n >= 1 &&
	    pid->u.seq.items[0]->kind == PICKLE_STR &&
	    !strcmp(pid->u.seq.items[0]->u.s.p, "module"))
		return 0;
	if ((err = torch_walk_pid(&p, w, pid)) < 0)
		return err;
	if (!(k = find_key(c, p.key, p.keylen)))
		return ck_error(CK_ECORRUPT,
				"torch: storage %s (at %s in %s) is not in the storage key list at "
				"offset %llu",
				p.key, at(w), w->src, (unsigned long long)c->keys_off);
	untyped = !strcmp(p.cls->u.global.name, "UntypedStorage");
	dt = untyped ? DT_UINT8 : dtype_from_storage_class(p.cls->u.global.name);
	if (dt == DT_INVALID || strncmp(p.cls->u.global.module, "torch", 5))
		return ck_error(CK_ECORRUPT,
				"torch: storage %s (at %s in %s) has an unknown storage type %s.%s",
				p.key, at(w), w->src, p.cls->u.global.module, p.cls->u.global.name);
	esize = untyped ? 1 : dtype_size(dt);
	if (k->storage == NO_STORAGE) {
		if (p.numel > w->in->size / esize)
			return ck_error(CK_ECORRUPT,
					"torch: storage %s (at %s in %s) declares %llu elements of "
					"%zu bytes, more than the whole file (%llu bytes)",
					p.key, at(w), w->src, (unsigned long long)p.numel, esize,
					(unsigned long long)w->in->size);
		if ((err = torch_walk_add_storage(&k->storage, w, p.key, p.keylen, dt, untyped, 0,
						  p.numel * esize, 0)) < 0)
			return err;
		k->numel = p.numel;
		k->esize = esize;
		k->cls = p.cls;
	} else if (p.numel != k->numel || (p.numel && !same_global(p.cls, k->cls))) {
		/* torch refuses to save two types on one storage, but one of no
		 * bytes has no data to disagree about */
		return ck_error(CK_ECORRUPT,
				"torch: storage %s is declared as %llu elements of %s.%s at %s in "
				"%s, but as %llu elements of %s.%s before",
				p.key, (unsigned long long)p.numel, p.cls->u.global.module,
				p.cls->u.global.name, at(w), w->src, (unsigned long long)k->numel,
				k->cls->u.global.module, k->cls->u.global.name);
	}
	st = &w->ck->storages[k->storage];
	out->storage = k->storage;
	out->dtype = same_global(p.cls, k->cls) ? st->dtype : dt;
	out->view_off = 0;
	out->view_bytes = st->nbytes;
	if (p.view && p.view->kind != PICKLE_NONE) {
		const struct pickle_value *const *v = NULL;
		uint64_t voff, vsize;

		/* only a tuple's value has u.seq (pickle.h) */
		if (p.view->kind == PICKLE_TUPLE && p.view->u.seq.n == 3)
			v = (const struct pickle_value *const *)p.view->u.seq.items;
		if (!v || v[0]->kind != PICKLE_STR || v[1]->kind != PICKLE_INT || v[1]->u.i < 0 ||
		    v[2]->kind != PICKLE_INT || v[2]->u.i < 0)
			return ck_error(CK_ECORRUPT,
					"torch: storage %s (at %s in %s) has view metadata that is "
					"not a (key, offset, size) tuple",
					p.key, at(w), w->src);
		voff = (uint64_t)v[1]->u.i;
		vsize = (uint64_t)v[2]->u.i;
		if (voff > p.numel || vsize > p.numel - voff)
			return ck_error(CK_ECORRUPT,
					"torch: view %s (at %s in %s) is elements %llu to %llu of "
					"storage %s, which has %llu",
					v[0]->u.s.p, at(w), w->src, (unsigned long long)voff,
					(unsigned long long)(voff + vsize), p.key,
					(unsigned long long)p.numel);
		out->view_off = voff * esize;
		out->view_bytes = vsize * esize;
	}
	return 1;
}

/* Runs the pickle at *off, then moves *off past it. what names it in
 * messages ("magic number"). */
static int run_pickle(struct pickle_value **out, uint64_t *off, struct lctx *c, const char *what)
{
	struct torch_walk *w = &c->w;
	uint64_t end;
	uint8_t *buf = NULL;
	size_t len = 0, used = 0;
	int err;

	if ((err = pickle_scan_end(&end, w->in, *off, w->lim->max_pickle_bytes, w->m)) < 0)
		return ck_error_prefix(err, "torch (%s pickle): ", what);
	len = (size_t)(end - *off);
	if (!(buf = fmt_alloc(w->m, FMT_PARSE, 1, len, "torch: pickle bytes")))
		return w->m->err;
	if ((err = ck_input_read(w->in, buf, len, *off, "pickle")) < 0)
		goto out;
	if ((err = pickle_vm_run_used(out, &used, c->arena, buf, len, &c->pl)) < 0) {
		err = ck_error_prefix(err,
				      "torch: the %s pickle at offset %llu (offsets below count "
				      "from there): ",
				      what, (unsigned long long)*off);
		goto out;
	}
	if (used != len) {
		/* the scan and the VM read opcodes alike: this is ckptd's fault */
		err = ck_error(CK_EIO,
			       "torch: the %s pickle at offset %llu: the scan found %zu bytes, the "
			       "VM stopped after %zu",
			       what, (unsigned long long)*off, len, used);
		goto out;
	}
	*off = end;
out:
	/* the graph holds copies of every string: the bytes can go */
	fmt_free(w->m, FMT_PARSE, buf, len);
	return err;
}

/* 1 when the file's first bytes are (a prefix of) the magic number pickled
 * as torch.save writes it, protocol 2 to 5. */
static int starts_like_magic(const struct ck_input *in)
{
	uint8_t want[32], got[32];
	size_t n = 0, have;

	if (ck_input_read(in, got, 2, 0, "file header") < 0 || got[0] != 0x80 || got[1] < 2 ||
	    got[1] > 5)
		return 0;
	want[n++] = 0x80;
	want[n++] = got[1];
	if (got[1] >= 4) { /* a FRAME of the 13 bytes that follow */
		want[n++] = 0x95;
		want[n++] = 13;
		memset(want + n, 0, 7);
		n += 7;
	}
	want[n++] = 0x8a;
	want[n++] = 10;
	memcpy(want + n, legacy_magic, 10);
	n += 10;
	want[n++] = '.';
	have = in->size < n ? (size_t)in->size : n;
	return ck_input_read(in, got, have, 0, "file header") == 0 && !memcmp(got, want, have);
}

/* The magic number, protocol version and sys_info pickles; *off moves past
 * them. */
static int read_preamble(uint64_t *off, struct lctx *c)
{
	struct pickle_value *v;
	int err;

	if ((err = run_pickle(&v, off, c, "magic number")) < 0) {
		if (err != CK_ECORRUPT || starts_like_magic(c->w.in))
			return err;
		return ck_error_prefix(CK_EFORMAT,
				       "not a checkpoint format ckptd reads (it reads " FMT_READS
				       "): the file starts like a pickle, but not like a legacy "
				       "torch file: ");
	}
	if (v->kind != PICKLE_BIGINT || v->u.s.len != sizeof(legacy_magic) ||
	    memcmp(v->u.s.p, legacy_magic, sizeof(legacy_magic)))
		return ck_error(CK_EFORMAT,
				"not a checkpoint format ckptd reads (it reads " FMT_READS
				"): a pickle whose first value is not torch's magic number "
				"(0x1950a86a20f9469cfc6c), so not a legacy torch file");
	if ((err = run_pickle(&v, off, c, "protocol version")) < 0)
		return err;
	if (v->kind != PICKLE_INT)
		return ck_error(
		    CK_ECORRUPT,
		    "torch: the protocol version pickle (ending at offset %llu) holds a "
		    "%s, not an int",
		    (unsigned long long)*off, pickle_kind_name(v->kind));
	if (v->u.i != LEGACY_PROTOCOL_VERSION)
		return ck_error(
		    CK_EFORMAT,
		    "torch: legacy protocol version %lld (ending at offset %llu) is not "
		    "the %d that ckptd reads",
		    (long long)v->u.i, (unsigned long long)*off, LEGACY_PROTOCOL_VERSION);
	return run_pickle(&v, off, c, "sys_info");
}

/* The storage key list pickle at *off: c->keys, sorted. */
static int read_key_list(const struct pickle_value **list, uint64_t *off, struct lctx *c)
{
	struct torch_walk *w = &c->w;
	struct pickle_value *v;
	int err;

	c->keys_off = *off;
	if ((err = run_pickle(&v, off, c, "storage key list")) < 0)
		return err;
	if (v->kind != PICKLE_LIST && v->kind != PICKLE_TUPLE)
		return ck_error(CK_ECORRUPT,
				"torch: the storage key list at offset %llu is a %s, not a list",
				(unsigned long long)c->keys_off, pickle_kind_name(v->kind));
	if (v->u.seq.n > w->lim->max_records)
		return ck_error(CK_ETOOBIG,
				"torch: the storage key list at offset %llu names %zu storages, "
				"more than %llu",
				(unsigned long long)c->keys_off, v->u.seq.n,
				(unsigned long long)w->lim->max_records);
	if (v->u.seq.n && !(c->keys = fmt_alloc(w->m, FMT_PARSE, v->u.seq.n, sizeof(*c->keys),
						"torch: storages")))
		return w->m->err;
	for (size_t i = 0; i < v->u.seq.n; i++) {
		const struct pickle_value *k = v->u.seq.items[i];

		if (k->kind != PICKLE_STR)
			return ck_error(CK_ECORRUPT,
					"torch: item %zu of the storage key list at offset %llu is "
					"a %s, not a str",
					i, (unsigned long long)c->keys_off,
					pickle_kind_name(k->kind));
		c->keys[i] = (struct key_entry){
		    .key = k->u.s.p, .len = k->u.s.len, .pos = i, .storage = NO_STORAGE};
	}
	c->nkeys = v->u.seq.n;
	if (c->nkeys) /* qsort wants a table, even of nothing */
		qsort(c->keys, c->nkeys, sizeof(*c->keys), cmp_entry);
	for (size_t i = 1; i < c->nkeys; i++)
		if (!cmp_entry(&c->keys[i - 1], &c->keys[i]))
			return ck_error(CK_ECORRUPT,
					"torch: the storage key list at offset %llu names storage "
					"%s twice",
					(unsigned long long)c->keys_off, c->keys[i].key);
	*list = v;
	return 0;
}

/* Sets each storage's file offset: from off, for each key of the list, an
 * 8-byte count then the data. */
static int place_storages(struct lctx *c, const struct pickle_value *list, uint64_t off)
{
	struct torch_walk *w = &c->w;
	const uint64_t size = w->in->size;
	int err;

	for (size_t i = 0; i < list->u.seq.n; i++) {
		const struct pickle_value *kv = list->u.seq.items[i];
		struct key_entry *k = find_key(c, kv->u.s.p, kv->u.s.len);
		struct fmt_storage *st;
		uint8_t b[8];
		uint64_t count;
		char what[96];

		if (k->storage == NO_STORAGE)
			return ck_error(CK_ECORRUPT,
					"torch: the storage key list at offset %llu names storage "
					"%s, which %s does not use",
					(unsigned long long)c->keys_off, k->key, w->src);
		snprintf(what, sizeof(what), "the element count of storage %.40s", k->key);
		if ((err = ck_input_read(w->in, b, 8, off, what)) < 0)
			return ck_error_prefix(err, "torch: ");
		count = le64(b);
		if (count != k->numel)
			return ck_error(CK_ECORRUPT,
					"torch: storage %s at offset %llu holds %llu elements, but "
					"%s declares %llu",
					k->key, (unsigned long long)off, (unsigned long long)count,
					w->src, (unsigned long long)k->numel);
		off += 8;
		st = &w->ck->storages[k->storage];
		if (st->nbytes > size - off)
			return ck_error(
			    CK_ECORRUPT,
			    "torch: storage %s's %llu bytes at offset %llu run past the "
			    "end of the file (%llu bytes): the file is truncated",
			    k->key, (unsigned long long)st->nbytes, (unsigned long long)off,
			    (unsigned long long)size);
		st->file_off = off;
		off += st->nbytes;
	}
	return 0;
}

int torch_legacy_read(struct fmt_ckpt **out, const struct ck_input *in,
		      const struct fmt_limits *lim)
{
	struct lctx c;
	struct torch_walk *w = &c.w;
	struct fmt_meter meter;
	struct fmt_limits def;
	struct pickle_value *root;
	const struct pickle_value *list = NULL;
	uint64_t off = 0, obj_off;
	int err;

	*out = NULL;
	if (!lim) {
		fmt_limits_default(&def);
		lim = &def;
	}
	fmt_meter_begin(&meter, lim->budget);
	memset(&c, 0, sizeof(c));
	w->in = in;
	w->lim = lim;
	w->m = &meter;
	w->src = c.src;
	w->st_prefix = "storage ";
	w->resolve = resolve_storage;
	w->arg = &c;
	c.pl.max_ops = lim->max_pickle_ops;
	c.pl.max_memo = lim->max_memo;
	c.pl.max_marks = lim->max_depth;
	c.pl.max_stack = 1u << 22;
	snprintf(c.src, sizeof(c.src), "the pickle");
	if ((err = torch_walk_begin(w, FMT_TORCH_LEGACY)) < 0)
		goto out;
	if (!(c.arena = pickle_arena_new(w->m))) {
		err = meter.err;
		goto out;
	}
	if ((err = read_preamble(&off, &c)) < 0)
		goto out;
	obj_off = off;
	snprintf(c.src, sizeof(c.src), "the pickle at offset %llu", (unsigned long long)obj_off);
	if ((err = run_pickle(&root, &off, &c, "object")) < 0 ||
	    (err = read_key_list(&list, &off, &c)) < 0)
		goto out;
	w->max_visits = 16 * (c.keys_off - obj_off) + (1u << 20);
	if ((err = torch_walk_run(w, root)) < 0 || (err = place_storages(&c, list, off)) < 0 ||
	    (err = torch_walk_meta(w, root)) < 0 || (err = torch_walk_finish(out, w)) < 0)
		goto out;
	err = 0;
out:
	/* everything but the checkpoint goes with the meter's parse region */
	pickle_arena_free(c.arena);
	fmt_meter_end(&meter);
	return err;
}
