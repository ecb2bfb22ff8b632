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
 * Tensors are found by walking the pickle graph (torch_walk.h, shared with
 * the legacy format's reader) from the top; this file resolves each storage
 * persistent id to its record.
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
#include "torch_walk.h"
#include "zip.h"

#define NO_STORAGE SIZE_MAX

struct zctx {
	struct torch_walk w;
	struct zip_reader *zr;
	char *prefix;		  /* "<top>/" */
	size_t *storage_of_entry; /* per zip entry: its storage, or NO_STORAGE */
};

/* The resolver (torch_walk.h): a persistent id names the record
 * <top>/data/<key>, added as a storage on first sight. */
static int resolve_storage(struct torch_ref *out, struct torch_walk *w,
			   const struct pickle_value *pid)
{
	struct zctx *c = w->arg;
	const struct zip_entry *e;
	struct torch_pid p;
	char *name = NULL;
	enum dtype dt;
	int untyped, err;
	size_t esize, idx, name_size;

	if ((err = torch_walk_pid(&p, w, pid)) < 0)
		return err;
	name_size = strlen(c->prefix) + 5 + p.keylen + 1;
	if (!(name = fmt_alloc(w->m, FMT_PARSE, 1, name_size, "torch: storage record name")))
		return w->m->err;
	sprintf(name, "%sdata/%s", c->prefix, p.key);
	e = strlen(name) == strlen(c->prefix) + 5 + p.keylen ? zip_entry_find(c->zr, name) : NULL;
	if (!e) {
		err = ck_error(CK_ECORRUPT,
			       "torch: data.pkl refers to storage record %s (at %s), which is not "
			       "in the zip",
			       name, *w->path ? w->path : "/");
		goto out;
	}
	idx = zip_entry_index(c->zr, e);
	if (c->storage_of_entry[idx] != NO_STORAGE)
		goto found;
	untyped = !strcmp(p.cls->u.global.name, "UntypedStorage");
	dt = untyped ? DT_UINT8 : dtype_from_storage_class(p.cls->u.global.name);
	if (dt == DT_INVALID || strncmp(p.cls->u.global.module, "torch", 5)) {
		err = ck_error(CK_ECORRUPT,
			       "torch: storage record %s has an unknown storage type %s.%s", name,
			       p.cls->u.global.module, p.cls->u.global.name);
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
	if (p.numel > e->comp_size / esize || p.numel * esize != e->comp_size) {
		err = ck_error(
		    CK_ECORRUPT,
		    "torch: storage record %s at offset %llu holds %llu bytes, but data.pkl "
		    "declares %llu elements of %zu bytes",
		    name, (unsigned long long)e->data_off, (unsigned long long)e->comp_size,
		    (unsigned long long)p.numel, esize);
		goto out;
	}
	if ((err = torch_walk_add_storage(&c->storage_of_entry[idx], w, p.key, p.keylen, dt,
					  untyped, e->data_off, e->comp_size, e->crc)) < 0)
		goto out;
found:
	out->storage = c->storage_of_entry[idx];
	out->dtype = w->ck->storages[out->storage].dtype;
	out->view_off = 0;
	out->view_bytes = w->ck->storages[out->storage].nbytes;
	err = 1;
out:
	fmt_free(w->m, FMT_PARSE, name, name_size);
	return err;
}

/* ---- entry point ---- */

int torch_zip_read(struct fmt_ckpt **out, const struct ck_input *in, const struct fmt_limits *lim)
{
	struct zctx c;
	struct torch_walk *w = &c.w;
	struct fmt_meter meter;
	struct fmt_limits def;
	const struct zip_entry *e, *pkl_e;
	uint8_t *pkl = NULL, *bo = NULL;
	size_t pkl_len = 0, bo_len = 0, n = 0, nentries = 0;
	struct pickle_arena *arena = NULL;
	struct pickle_value *root;
	struct pickle_limits pl;
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
	w->src = "data.pkl";
	w->resolve = resolve_storage;
	w->arg = &c;
	if ((err = torch_walk_begin(w, FMT_TORCH_ZIP)) < 0)
		goto out;

	if ((err = zip_reader_open(&c.zr, in, lim->max_records, w->m)) < 0)
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
		if (!(c.prefix = fmt_alloc(w->m, FMT_PARSE, 1, n + 16, "torch: record names"))) {
			err = meter.err;
			goto out;
		}
		memcpy(c.prefix, e->name, n);
		c.prefix[n] = '\0';
	}
	{
		/* storages are named "storage record <top>/data/<key>" in messages */
		char *sp = fmt_alloc(w->m, FMT_PARSE, 1, n + 32, "torch: record names");

		if (!sp) {
			err = meter.err;
			goto out;
		}
		snprintf(sp, n + 32, "storage record %sdata/", c.prefix);
		w->st_prefix = sp;
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
	if (!(arena = pickle_arena_new(w->m)) ||
	    (err = pickle_vm_run(&root, arena, pkl, pkl_len, &pl)) < 0) {
		if (!arena)
			err = meter.err;
		err = ck_error_prefix(err, "torch: %sdata.pkl: ", c.prefix);
		goto out;
	}
	/* the graph holds copies of every string: the bytes can go */
	zip_entry_buf_free(c.zr, pkl, pkl_len);
	pkl = NULL;

	if (!(c.storage_of_entry =
		  fmt_alloc(w->m, FMT_PARSE, nentries, sizeof(size_t), "torch: storages"))) {
		err = meter.err;
		goto out;
	}
	for (size_t i = 0; i < nentries; i++)
		c.storage_of_entry[i] = NO_STORAGE;
	w->max_visits = 16 * (uint64_t)pkl_len + (1u << 20);
	if ((err = torch_walk_run(w, root)) < 0 || (err = torch_walk_meta(w, root)) < 0 ||
	    (err = torch_walk_finish(out, w)) < 0)
		goto out;
	err = 0;
out:
	/* everything but the checkpoint (handed over by torch_walk_finish, or
	 * given back here on failure) goes with the meter's parse region */
	pickle_arena_free(arena);
	zip_reader_free(c.zr);
	fmt_meter_end(&meter);
	return err;
}

int torch_zip_storage_name(const char *name, size_t len)
{
	const char *slash = memchr(name, '/', len);
	size_t top, rest;

	if (!slash || slash == name)
		return 0;
	top = (size_t)(slash - name) + 1;
	rest = len - top;
	return rest > 5 && !memcmp(name + top, "data/", 5) &&
	       !memchr(name + top + 5, '/', rest - 5);
}
