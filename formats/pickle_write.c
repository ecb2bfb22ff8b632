/*
 * pickle_write.c: the pickle writer (see pickle_write.h).
 *
 * Opcodes follow CPython's pickle.py at protocol 2, as torch.save's pickler
 * emits them: BININT1/BININT2/BININT for ints that fit, LONG1 otherwise;
 * BINUNICODE for str; BINPUT/LONG_BINPUT and BINGET/LONG_BINGET for the memo;
 * dict items in batches of at most 1000 per MARK ... SETITEMS.
 */
#include "pickle_write.h"

#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "tensor.h"

struct pickle_writer {
	uint8_t *buf;
	size_t len, cap;
	uint32_t memo;
	int err;
};

int pickle_writer_new(struct pickle_writer **out)
{
	*out = calloc(1, sizeof(**out));
	if (!*out)
		return ck_error(CK_ENOMEM, "pickle: out of memory");
	return 0;
}

void pickle_writer_free(struct pickle_writer *w)
{
	if (!w)
		return;
	free(w->buf);
	free(w);
}

static void put(struct pickle_writer *w, const void *data, size_t n)
{
	if (w->err)
		return;
	if (n > SIZE_MAX / 2 - w->len) {
		w->err = ck_error(CK_ENOMEM, "pickle: output too large");
		return;
	}
	if (w->len + n > w->cap) {
		size_t ncap = w->cap ? w->cap : 512;
		uint8_t *nb;
		while (ncap < w->len + n)
			ncap *= 2;
		nb = realloc(w->buf, ncap);
		if (!nb) {
			w->err = ck_error(CK_ENOMEM, "pickle: out of memory");
			return;
		}
		w->buf = nb;
		w->cap = ncap;
	}
	memcpy(w->buf + w->len, data, n);
	w->len += n;
}

static void op(struct pickle_writer *w, uint8_t c)
{
	put(w, &c, 1);
}

static void op_u32(struct pickle_writer *w, uint8_t c, uint32_t v)
{
	uint8_t x[5] = {c, (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
	put(w, x, 5);
}

void pickle_proto(struct pickle_writer *w, int version)
{
	uint8_t x[2] = {0x80, (uint8_t)version};
	put(w, x, 2);
}

void pickle_global(struct pickle_writer *w, const char *module, const char *name)
{
	op(w, 'c');
	put(w, module, strlen(module));
	op(w, '\n');
	put(w, name, strlen(name));
	op(w, '\n');
}

uint32_t pickle_put(struct pickle_writer *w)
{
	uint32_t idx = w->memo++;

	if (idx < 256) {
		uint8_t x[2] = {'q', (uint8_t)idx};
		put(w, x, 2);
	} else {
		op_u32(w, 'r', idx);
	}
	return idx;
}

void pickle_get(struct pickle_writer *w, uint32_t idx)
{
	if (idx < 256) {
		uint8_t x[2] = {'h', (uint8_t)idx};
		put(w, x, 2);
	} else {
		op_u32(w, 'j', idx);
	}
}

void pickle_mark(struct pickle_writer *w)
{
	op(w, '(');
}

void pickle_tuple(struct pickle_writer *w, int n)
{
	static const uint8_t ops[4] = {')', 0x85, 0x86, 0x87};

	if (n >= 0 && n <= 3)
		op(w, ops[n]);
	else
		op(w, 't');
}

void pickle_int(struct pickle_writer *w, int64_t v)
{
	if (v >= 0 && v <= 0xff) {
		uint8_t x[2] = {'K', (uint8_t)v};
		put(w, x, 2);
	} else if (v >= 0 && v <= 0xffff) {
		uint8_t x[3] = {'M', (uint8_t)v, (uint8_t)(v >> 8)};
		put(w, x, 3);
	} else if (v >= INT32_MIN && v <= INT32_MAX) {
		op_u32(w, 'J', (uint32_t)v);
	} else {
		/* LONG1: little-endian two's complement, as few bytes as keep
		 * the sign (CPython's encode_long). */
		uint8_t x[10];
		int n = 8;
		uint64_t u = (uint64_t)v;
		int i;

		for (i = 0; i < 8; i++)
			x[2 + i] = (uint8_t)(u >> (8 * i));
		while (n > 1 && ((x[2 + n - 1] == 0x00 && !(x[2 + n - 2] & 0x80)) ||
				 (x[2 + n - 1] == 0xff && (x[2 + n - 2] & 0x80))))
			n--;
		x[0] = 0x8a;
		x[1] = (uint8_t)n;
		put(w, x, (size_t)(2 + n));
	}
}

void pickle_uint(struct pickle_writer *w, uint64_t v)
{
	if (v <= INT64_MAX) {
		pickle_int(w, (int64_t)v);
	} else {
		uint8_t x[11];
		int i;

		x[0] = 0x8a;
		x[1] = 9;
		for (i = 0; i < 8; i++)
			x[2 + i] = (uint8_t)(v >> (8 * i));
		x[10] = 0;
		put(w, x, sizeof(x));
	}
}

void pickle_unicode(struct pickle_writer *w, const char *s, size_t len)
{
	if (len > UINT32_MAX) {
		if (!w->err)
			w->err = ck_error(CK_EINVALID, "pickle: string too long");
		return;
	}
	op_u32(w, 'X', (uint32_t)len);
	put(w, s, len);
}

void pickle_bool(struct pickle_writer *w, int v)
{
	op(w, v ? 0x88 : 0x89);
}

void pickle_none(struct pickle_writer *w)
{
	op(w, 'N');
}

void pickle_reduce(struct pickle_writer *w)
{
	op(w, 'R');
}

void pickle_binpersid(struct pickle_writer *w)
{
	op(w, 'Q');
}

void pickle_setitems(struct pickle_writer *w)
{
	op(w, 'u');
}

void pickle_stop(struct pickle_writer *w)
{
	op(w, '.');
}

int pickle_writer_finish(uint8_t **out, size_t *outlen, struct pickle_writer *w)
{
	int err = w->err;

	*out = NULL;
	*outlen = 0;
	if (err == 0) {
		*out = w->buf;
		*outlen = w->len;
		w->buf = NULL;
	}
	pickle_writer_free(w);
	return err;
}

#define NOMEMO UINT32_MAX

int pickle_write_state_dict(uint8_t **out, size_t *outlen, const struct plan_view *views,
			    size_t nviews, const struct plan_storage *storages, size_t nstorages,
			    char *const *keys)
{
	struct pickle_writer *w = NULL;
	uint32_t *pid_memo = NULL;
	uint32_t cls_memo[DT__COUNT];
	uint32_t od, rebuild = NOMEMO, s_storage = NOMEMO, s_cpu = NOMEMO;
	size_t i, batch = 0;
	int err, d;

	*out = NULL;
	*outlen = 0;
	for (d = 0; d < DT__COUNT; d++)
		cls_memo[d] = NOMEMO;
	if ((err = pickle_writer_new(&w)) < 0)
		return err;
	pid_memo = malloc((nstorages ? nstorages : 1) * sizeof(*pid_memo));
	if (!pid_memo) {
		err = ck_error(CK_ENOMEM, "pickle: out of memory");
		goto out;
	}
	for (i = 0; i < nstorages; i++)
		pid_memo[i] = NOMEMO;

	pickle_proto(w, 2);
	pickle_global(w, "collections", "OrderedDict");
	od = pickle_put(w);
	pickle_tuple(w, 0);
	pickle_reduce(w);
	pickle_put(w);
	for (i = 0; i < nviews; i++) {
		const struct plan_view *v = &views[i];
		const struct plan_storage *st;
		const char *cls;
		size_t esz;
		int k;

		if (v->storage >= nstorages || !keys[v->storage]) {
			err =
			    ck_error(CK_EINVALID, "pickle: tensor %s refers to storage %zu of %zu",
				     v->name, v->storage, nstorages);
			goto out;
		}
		st = &storages[v->storage];
		if (v->dtype != st->dtype) {
			err = ck_error(CK_EINVALID,
				       "pickle: tensor %s is %s but its storage holds %s", v->name,
				       dtype_name(v->dtype), dtype_name(st->dtype));
			goto out;
		}
		if (st->dtype >= DT_QINT8 && st->dtype <= DT_QUINT2X4) {
			err = ck_error(
			    CK_EINVALID,
			    "tensor %s: quantized tensors (%s) are not written to new torch "
			    "files; fetch the original file instead",
			    v->name, dtype_name(st->dtype));
			goto out;
		}
		cls = dtype_storage_class(st->dtype);
		esz = dtype_size(st->dtype);
		if (!cls || esz == 0 || (int)st->dtype < 0 || st->dtype >= DT__COUNT) {
			err = ck_error(CK_EINVALID,
				       "tensor %s: dtype %s cannot be written to a torch file this "
				       "way; ask for format=safetensors",
				       v->name, dtype_name(st->dtype));
			goto out;
		}
		if (st->nbytes % esz) {
			err = ck_error(CK_EINVALID,
				       "pickle: storage of tensor %s has %llu bytes, not a "
				       "multiple of %zu",
				       v->name, (unsigned long long)st->nbytes, esz);
			goto out;
		}
		if (batch == 0)
			pickle_mark(w);
		pickle_unicode(w, v->name, strlen(v->name));
		pickle_put(w);
		if (rebuild == NOMEMO) {
			pickle_global(w, "torch._utils", "_rebuild_tensor_v2");
			rebuild = pickle_put(w);
		} else {
			pickle_get(w, rebuild);
		}
		pickle_mark(w);
		if (pid_memo[v->storage] == NOMEMO) {
			const char *key = keys[v->storage];

			pickle_mark(w);
			if (s_storage == NOMEMO) {
				pickle_unicode(w, "storage", 7);
				s_storage = pickle_put(w);
			} else {
				pickle_get(w, s_storage);
			}
			if (cls_memo[st->dtype] == NOMEMO) {
				pickle_global(w, "torch", cls);
				cls_memo[st->dtype] = pickle_put(w);
			} else {
				pickle_get(w, cls_memo[st->dtype]);
			}
			pickle_unicode(w, key, strlen(key));
			pickle_put(w);
			if (s_cpu == NOMEMO) {
				pickle_unicode(w, "cpu", 3);
				s_cpu = pickle_put(w);
			} else {
				pickle_get(w, s_cpu);
			}
			pickle_uint(w, st->nbytes / esz);
			pickle_tuple(w, -1);
			pid_memo[v->storage] = pickle_put(w);
		} else {
			pickle_get(w, pid_memo[v->storage]);
		}
		pickle_binpersid(w);
		pickle_uint(w, v->offset);
		if (v->ndim > 3)
			pickle_mark(w);
		for (k = 0; k < v->ndim; k++)
			pickle_int(w, v->shape[k]);
		pickle_tuple(w, v->ndim > 3 ? -1 : v->ndim);
		pickle_put(w);
		if (v->ndim > 3)
			pickle_mark(w);
		for (k = 0; k < v->ndim; k++)
			pickle_int(w, v->strides[k]);
		pickle_tuple(w, v->ndim > 3 ? -1 : v->ndim);
		pickle_put(w);
		pickle_bool(w, 0);
		pickle_get(w, od);
		pickle_tuple(w, 0);
		pickle_reduce(w);
		pickle_put(w);
		pickle_tuple(w, -1);
		pickle_put(w);
		pickle_reduce(w);
		pickle_put(w);
		if (++batch == 1000) {
			pickle_setitems(w);
			batch = 0;
		}
	}
	if (batch)
		pickle_setitems(w);
	pickle_stop(w);
	err = pickle_writer_finish(out, outlen, w);
	w = NULL;
out:
	pickle_writer_free(w);
	free(pid_memo);
	return err;
}
