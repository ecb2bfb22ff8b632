/*
 * writers.c: the output formats ckptd serves, as plans (plan.h).
 *
 *   plan_torch_zip    a torch.save zip: data.pkl (pickle_write.c), byteorder,
 *                     data/<key> per storage, version; laid out by zip_write.c
 *   plan_safetensors  u64 LE header length N, N bytes of JSON padded with
 *                     spaces to a multiple of 8, then the tensors' bytes in
 *                     the order given, contiguous
 *   plan_npy          numpy format 1.0 (2.0 when the header passes 64 KiB):
 *                     "\x93NUMPY", version, header length, a Python dict
 *                     literal padded with spaces to 64 bytes and ending in
 *                     '\n', then the elements in C order
 *
 * Tensor bytes are never copied: a C-contiguous view is one PLAN_RANGE of its
 * storage, any other view a PLAN_GATHER, a view with no elements nothing.
 */
#include "plan.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "pickle_write.h"
#include "plan_build.h"
#include "tensor.h"
#include "zip_write.h"

/* Checks a view against its storage; *nbytes gets the bytes its elements
 * take, *contig whether they are one C-ordered run of the storage. */
static int check_view(uint64_t *nbytes, int *contig, const struct plan_view *v,
		      const struct plan_storage *storages, size_t nstorages)
{
	uint64_t numel = 1, extent, expect = 1;
	size_t esz = dtype_size(v->dtype);
	int i, err;

	if (v->storage >= nstorages)
		return ck_error(CK_EINVALID, "tensor %s refers to storage %zu of %zu", v->name,
				v->storage, nstorages);
	if (esz == 0)
		return ck_error(CK_EINVALID, "tensor %s has no valid dtype", v->name);
	if (v->ndim < 0 || v->ndim > TENSOR_MAX_NDIM || (v->ndim > 0 && (!v->shape || !v->strides)))
		return ck_error(CK_EINVALID, "tensor %s has %d dimensions", v->name, v->ndim);
	if ((err = tensor_numel(&numel, v->ndim, v->shape)) < 0)
		return ck_error_prefix(err, "tensor %s: ", v->name);
	if ((err = tensor_extent(&extent, v->ndim, v->shape, v->strides, v->offset)) < 0)
		return ck_error_prefix(err, "tensor %s: ", v->name);
	if (extent > UINT64_MAX / esz || extent * esz > storages[v->storage].nbytes)
		return ck_error(CK_EINVALID,
				"tensor %s needs %" PRIu64
				" elements of its storage, which has %" PRIu64 " bytes",
				v->name, extent, storages[v->storage].nbytes);
	*nbytes = numel * esz;
	*contig = 1;
	for (i = v->ndim - 1; i >= 0; i--) {
		if (v->shape[i] != 1 && (uint64_t)v->strides[i] != expect)
			*contig = 0;
		expect *= (uint64_t)v->shape[i];
	}
	return 0;
}

/* Appends view i's elements: a RANGE, a GATHER, or nothing. */
static int add_data(struct plan_builder *b, const struct plan_view *views, size_t i,
		    const struct plan_storage *storages, size_t nstorages)
{
	uint64_t nbytes;
	int contig, err;

	if ((err = check_view(&nbytes, &contig, &views[i], storages, nstorages)) < 0)
		return err;
	if (nbytes == 0)
		return 0;
	if (contig)
		return plan_range(b, views[i].storage, views[i].offset * dtype_size(views[i].dtype),
				  nbytes);
	return plan_gather(b, i, nbytes);
}

/* ---- torch zip ---- */

/* Orders key numbers as torch orders keys: as decimal strings. */
static int cmp_key(const void *a, const void *b)
{
	char x[32], y[32];

	snprintf(x, sizeof(x), "%zu", *(const size_t *)a);
	snprintf(y, sizeof(y), "%zu", *(const size_t *)b);
	return strcmp(x, y);
}

int plan_torch_zip(struct plan **out, const struct plan_view *views, size_t nviews,
		   const struct plan_storage *storages, size_t nstorages, const char *archive_name)
{
	struct plan_builder b;
	struct zip_writer *zw = NULL;
	char **keys = NULL;
	size_t *order = NULL, *knum = NULL, nkeys = 0, i, alen;
	uint8_t *pkl = NULL;
	size_t pkl_len = 0;
	char *name = NULL;
	int err;

	*out = NULL;
	memset(&b, 0, sizeof(b));
	if (!archive_name || !*archive_name)
		archive_name = "archive";
	alen = strlen(archive_name);
	if (strchr(archive_name, '/') || alen > 1024)
		return ck_error(CK_EINVALID, "torch zip: bad archive name \"%s\"", archive_name);
	keys = calloc(nstorages ? nstorages : 1, sizeof(*keys));
	order = calloc(nstorages ? nstorages : 1, sizeof(*order));
	knum = calloc(nstorages ? nstorages : 1, sizeof(*knum));
	name = malloc(alen + 64);
	if (!keys || !order || !knum || !name) {
		err = ck_error(CK_ENOMEM, "torch zip: out of memory");
		goto out;
	}
	/* Keys "0", "1", ... in the order tensors first use a storage. */
	for (i = 0; i < nviews; i++) {
		uint64_t nbytes;
		int contig;
		char buf[32];

		if ((err = check_view(&nbytes, &contig, &views[i], storages, nstorages)) < 0)
			goto out;
		if (keys[views[i].storage])
			continue;
		snprintf(buf, sizeof(buf), "%zu", nkeys);
		if (!(keys[views[i].storage] = strdup(buf))) {
			err = ck_error(CK_ENOMEM, "torch zip: out of memory");
			goto out;
		}
		order[nkeys++] = views[i].storage;
	}
	if ((err = pickle_write_state_dict(&pkl, &pkl_len, views, nviews, storages, nstorages,
					   keys)) < 0)
		goto out;
	/* torch.save writes records sorted by key as strings. */
	for (i = 0; i < nkeys; i++)
		knum[i] = i;
	qsort(knum, nkeys, sizeof(*knum), cmp_key);

	if ((err = plan_builder_init(&b)) < 0)
		goto out;
	if ((err = zip_writer_new(&zw, &b)) < 0)
		goto out;
	snprintf(name, alen + 64, "%s/data.pkl", archive_name);
	if ((err = zip_writer_add_bytes(zw, name, pkl, pkl_len)) < 0)
		goto out;
	snprintf(name, alen + 64, "%s/byteorder", archive_name);
	if ((err = zip_writer_add_bytes(zw, name, "little", 6)) < 0)
		goto out;
	for (i = 0; i < nkeys; i++) {
		size_t si = order[knum[i]];
		const struct plan_storage *st = &storages[si];

		snprintf(name, alen + 64, "%s/data/%s", archive_name, keys[si]);
		if ((err = zip_writer_add_storage(zw, name, si, st->nbytes, st->crc32)) < 0)
			goto out;
	}
	snprintf(name, alen + 64, "%s/version", archive_name);
	if ((err = zip_writer_add_bytes(zw, name, "3\n", 2)) < 0)
		goto out;
	if ((err = zip_writer_finish(zw)) < 0)
		goto out;
	err = plan_builder_finish(out, &b);
out:
	plan_builder_abort(&b);
	zip_writer_free(zw);
	if (keys)
		for (i = 0; i < nstorages; i++)
			free(keys[i]);
	free(keys);
	free(order);
	free(knum);
	free(pkl);
	free(name);
	return err;
}

/* ---- a growing string for headers ---- */

struct sbuf {
	char *s;
	size_t len, cap;
	int err;
};

static void sb_put(struct sbuf *sb, const char *s, size_t n)
{
	if (sb->err)
		return;
	if (sb->len + n + 1 > sb->cap) {
		size_t ncap = sb->cap ? sb->cap : 256;
		char *ns;
		while (ncap < sb->len + n + 1)
			ncap *= 2;
		if (!(ns = realloc(sb->s, ncap))) {
			sb->err = ck_error(CK_ENOMEM, "out of memory");
			return;
		}
		sb->s = ns;
		sb->cap = ncap;
	}
	memcpy(sb->s + sb->len, s, n);
	sb->len += n;
	sb->s[sb->len] = '\0';
}

static void sb_str(struct sbuf *sb, const char *s)
{
	sb_put(sb, s, strlen(s));
}

static void sb_u64(struct sbuf *sb, uint64_t v)
{
	char buf[32];
	sb_put(sb, buf, (size_t)snprintf(buf, sizeof(buf), "%" PRIu64, v));
}

/* A JSON string literal of s (UTF-8 passes through; quotes, backslashes and
 * control characters are escaped). */
static void sb_json_str(struct sbuf *sb, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	sb_put(sb, "\"", 1);
	for (; *p; p++) {
		char esc[8];

		if (*p == '"' || *p == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*p;
			sb_put(sb, esc, 2);
		} else if (*p < 0x20) {
			snprintf(esc, sizeof(esc), "\\u%04x", *p);
			sb_put(sb, esc, 6);
		} else {
			sb_put(sb, (const char *)p, 1);
		}
	}
	sb_put(sb, "\"", 1);
}

/* ---- safetensors ---- */

static const char *st_dtype(enum dtype dt)
{
	switch (dt) {
	case DT_FLOAT64: return "F64";
	case DT_FLOAT32: return "F32";
	case DT_FLOAT16: return "F16";
	case DT_BFLOAT16: return "BF16";
	case DT_FLOAT8_E4M3FN: return "F8_E4M3";
	case DT_FLOAT8_E5M2: return "F8_E5M2";
	case DT_INT64: return "I64";
	case DT_INT32: return "I32";
	case DT_INT16: return "I16";
	case DT_INT8: return "I8";
	case DT_UINT8: return "U8";
	case DT_UINT16: return "U16";
	case DT_UINT32: return "U32";
	case DT_UINT64: return "U64";
	case DT_BOOL: return "BOOL";
	case DT_COMPLEX64: return "C64";
	default: return NULL;
	}
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int plan_safetensors(struct plan **out, const struct plan_view *views, size_t nviews,
		     const struct plan_storage *storages, size_t nstorages)
{
	struct plan_builder b;
	struct sbuf sb = {0};
	const char **names = NULL;
	uint64_t off = 0;
	size_t i;
	int err = 0, k;

	*out = NULL;
	memset(&b, 0, sizeof(b));
	names = malloc((nviews ? nviews : 1) * sizeof(*names));
	if (!names) {
		err = ck_error(CK_ENOMEM, "safetensors: out of memory");
		goto out;
	}
	for (i = 0; i < nviews; i++)
		names[i] = views[i].name;
	qsort(names, nviews, sizeof(*names), cmp_name);
	for (i = 0; i + 1 < nviews; i++)
		if (strcmp(names[i], names[i + 1]) == 0) {
			err = ck_error(CK_EINVALID, "safetensors: two tensors are named \"%s\"",
				       names[i]);
			goto out;
		}
	for (i = 0; i < nviews; i++)
		if (strcmp(views[i].name, "__metadata__") == 0) {
			err = ck_error(CK_EINVALID,
				       "safetensors: a tensor cannot be named __metadata__");
			goto out;
		}

	sb_str(&sb, "{\"__metadata__\":{\"format\":\"pt\"}");
	for (i = 0; i < nviews; i++) {
		const struct plan_view *v = &views[i];
		const char *dt = st_dtype(v->dtype);
		uint64_t nbytes;
		int contig;

		if (!dt) {
			err = ck_error(CK_EINVALID,
				       "tensor %s: safetensors has no dtype for %s; ask for "
				       "format=pth",
				       v->name, dtype_name(v->dtype));
			goto out;
		}
		if ((err = check_view(&nbytes, &contig, v, storages, nstorages)) < 0)
			goto out;
		sb_str(&sb, ",");
		sb_json_str(&sb, v->name);
		sb_str(&sb, ":{\"dtype\":\"");
		sb_str(&sb, dt);
		sb_str(&sb, "\",\"shape\":[");
		for (k = 0; k < v->ndim; k++) {
			if (k)
				sb_str(&sb, ",");
			sb_u64(&sb, (uint64_t)v->shape[k]);
		}
		sb_str(&sb, "],\"data_offsets\":[");
		sb_u64(&sb, off);
		sb_str(&sb, ",");
		sb_u64(&sb, off + nbytes);
		sb_str(&sb, "]}");
		off += nbytes;
	}
	sb_str(&sb, "}");
	while (!sb.err && sb.len % 8)
		sb_str(&sb, " ");
	if ((err = sb.err) < 0)
		goto out;

	if ((err = plan_builder_init(&b)) < 0)
		goto out;
	plan_lit_u64(&b, sb.len);
	plan_lit(&b, sb.s, sb.len);
	for (i = 0; i < nviews; i++)
		if ((err = add_data(&b, views, i, storages, nstorages)) < 0)
			goto out;
	err = plan_builder_finish(out, &b);
out:
	plan_builder_abort(&b);
	free(sb.s);
	free(names);
	return err;
}

/* ---- npy ---- */

static const char *npy_descr(enum dtype dt)
{
	switch (dt) {
	case DT_FLOAT64: return "<f8";
	case DT_FLOAT32: return "<f4";
	case DT_FLOAT16: return "<f2";
	case DT_INT64: return "<i8";
	case DT_INT32: return "<i4";
	case DT_INT16: return "<i2";
	case DT_INT8: return "|i1";
	case DT_UINT8: return "|u1";
	case DT_UINT16: return "<u2";
	case DT_UINT32: return "<u4";
	case DT_UINT64: return "<u8";
	case DT_BOOL: return "|b1";
	case DT_COMPLEX64: return "<c8";
	case DT_COMPLEX128: return "<c16";
	default: return NULL;
	}
}

int plan_npy(struct plan **out, const struct plan_view *view, const struct plan_storage *storages,
	     size_t nstorages)
{
	struct plan_builder b;
	struct sbuf sb = {0};
	const char *descr = npy_descr(view->dtype);
	uint64_t nbytes;
	size_t prefix, total;
	int contig, err, k;

	*out = NULL;
	memset(&b, 0, sizeof(b));
	if (!descr)
		return ck_error(CK_EINVALID,
				"tensor %s: numpy has no type for %s; ask for format=raw",
				view->name, dtype_name(view->dtype));
	if ((err = check_view(&nbytes, &contig, view, storages, nstorages)) < 0)
		return err;
	sb_str(&sb, "{'descr': '");
	sb_str(&sb, descr);
	sb_str(&sb, "', 'fortran_order': False, 'shape': (");
	for (k = 0; k < view->ndim; k++) {
		if (k)
			sb_str(&sb, ", ");
		sb_u64(&sb, (uint64_t)view->shape[k]);
	}
	if (view->ndim == 1)
		sb_str(&sb, ",");
	sb_str(&sb, "), }");
	/* Version 1.0 has a u16 header length, 2.0 a u32. */
	prefix = sb.len + 1 + 10 > 0xFFFF ? 12 : 10;
	total = prefix + sb.len + 1;
	while (!sb.err && total % 64) {
		sb_str(&sb, " ");
		total++;
	}
	sb_str(&sb, "\n");
	if ((err = sb.err) < 0)
		goto out;
	if ((err = plan_builder_init(&b)) < 0)
		goto out;
	plan_lit(&b, "\x93NUMPY", 6);
	if (prefix == 10) {
		plan_lit(&b, "\x01\x00", 2);
		plan_lit_u16(&b, (uint16_t)sb.len);
	} else {
		plan_lit(&b, "\x02\x00", 2);
		plan_lit_u32(&b, (uint32_t)sb.len);
	}
	plan_lit(&b, sb.s, sb.len);
	if ((err = add_data(&b, view, 0, storages, nstorages)) < 0)
		goto out;
	err = plan_builder_finish(out, &b);
out:
	plan_builder_abort(&b);
	free(sb.s);
	return err;
}
