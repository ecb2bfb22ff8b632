/*
 * safetensors.c: the safetensors reader (safetensors_read, checkpoint.h).
 *
 * Format: u64 little-endian N, then N bytes of UTF-8 JSON (an object, maybe
 * padded with trailing spaces), then the data area. Each key other than
 * "__metadata__" (an optional string -> string map) names a tensor:
 *   {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}
 * offsets relative to the data area. Validation follows the reference
 * implementation (huggingface/safetensors): N within the limit and the file;
 * no duplicate keys; end - begin == numel * dtype size; sorted by offsets the
 * tensors cover the data area exactly, from 0 to the end of the file.
 *
 * Each tensor becomes one storage (the bytes it owns) and one contiguous
 * tensor on it, named "/" + its name with JSON Pointer escapes.
 *
 * Memory (budget.h): the header is never held as text; jansson reads it
 * through a callback, 64 KiB at a time, and every block jansson allocates
 * while it parses comes from the upload's meter (its parse region), charged
 * before it is taken, through allocation hooks (json_set_alloc_funcs) that
 * this file installs for the process before main runs. The hooks use the
 * meter only while a thread parses a header (a thread-local pointer is set);
 * otherwise they are plain malloc and free, so the rest of the process's
 * jansson use is unchanged. A header whose JSON tree does not fit the budget
 * (a 96 MB __metadata__ map, 200,000 tensors) is refused with CK_ETOOBIG
 * before the allocation that would go over.
 */
#include "checkpoint.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"

#define DEFAULT_MAX_HEADER (100u << 20)
#define HDR_CHUNK	   65536
#define JSON_WHAT	   "safetensors: header (offset 8) parsed as JSON"

/* ---- jansson's allocations, from the meter while a header is parsed ---- */

static _Thread_local struct fmt_meter *json_meter;

/* Each block starts with its size, which fmt_free needs and jansson's free
 * does not give; 16 bytes keep the block aligned for any type. */
#define JSON_HDR 16

static void *json_hook_malloc(size_t n)
{
	struct fmt_meter *m = json_meter;
	unsigned char *p;

	if (!m)
		return malloc(n);
	if (n > SIZE_MAX - JSON_HDR || !(p = fmt_alloc(m, FMT_PARSE, 1, n + JSON_HDR, JSON_WHAT)))
		return NULL;
	memcpy(p, &n, sizeof(n));
	return p + JSON_HDR;
}

/* While a meter is set, jansson frees only what it allocated during the
 * parse (the header's tree, its lexer's buffers): blocks from the meter. */
static void json_hook_free(void *p)
{
	struct fmt_meter *m = json_meter;
	size_t n;

	if (!m) {
		free(p);
		return;
	}
	if (!p)
		return;
	memcpy(&n, (unsigned char *)p - JSON_HDR, sizeof(n));
	fmt_free(m, FMT_PARSE, (unsigned char *)p - JSON_HDR, n + JSON_HDR);
}

/* Before main: jansson wants its allocator set before its first use. */
__attribute__((constructor)) static void json_hooks_install(void)
{
	json_set_alloc_funcs(json_hook_malloc, json_hook_free);
}

/* jansson's input: the header, read from the upload a chunk at a time. */
struct hdr_stream {
	const struct ck_input *in;
	uint64_t off, end; /* next byte to read; end of the header */
	uint8_t *buf;	   /* HDR_CHUNK bytes */
	size_t have, pos;
	int err;
};

static size_t hdr_read(void *buffer, size_t buflen, void *data)
{
	struct hdr_stream *h = data;
	size_t n;

	if (h->pos == h->have) {
		uint64_t left = h->end - h->off;

		if (left == 0)
			return 0;
		n = left < HDR_CHUNK ? (size_t)left : HDR_CHUNK;
		if ((h->err = ck_input_read(h->in, h->buf, n, h->off, "safetensors header")) < 0)
			return (size_t)-1;
		h->off += n;
		h->have = n;
		h->pos = 0;
	}
	n = h->have - h->pos < buflen ? h->have - h->pos : buflen;
	memcpy(buffer, h->buf + h->pos, n);
	h->pos += n;
	return n;
}

static const struct {
	const char *name;
	enum dtype dt;
} st_dtypes[] = {
    {"F64", DT_FLOAT64},
    {"F32", DT_FLOAT32},
    {"F16", DT_FLOAT16},
    {"BF16", DT_BFLOAT16},
    {"F8_E4M3", DT_FLOAT8_E4M3FN},
    {"F8_E5M2", DT_FLOAT8_E5M2},
    {"I64", DT_INT64},
    {"I32", DT_INT32},
    {"I16", DT_INT16},
    {"I8", DT_INT8},
    {"U8", DT_UINT8},
    {"U16", DT_UINT16},
    {"U32", DT_UINT32},
    {"U64", DT_UINT64},
    {"BOOL", DT_BOOL},
    {"C64", DT_COMPLEX64},
};

static const size_t st_sizes[] = {8, 4, 2, 2, 1, 1, 8, 4, 2, 1, 1, 2, 4, 8, 1, 8};

/* One header entry, before sorting. */
struct ent {
	const char *name; /* borrowed from the JSON */
	json_t *shape;	  /* borrowed from the JSON: checked by parse_entry */
	enum dtype dt;
	int ndim;
	uint64_t begin, end;
	size_t seq; /* position in the header, to keep its order among ties */
};

static int cmp_ent(const void *a, const void *b)
{
	const struct ent *x = a, *y = b;

	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* A JSON integer in [0, 2^62]; json_integer_value is signed 64-bit. */
static int get_uint(uint64_t *out, json_t *j)
{
	json_int_t v;

	if (!json_is_integer(j))
		return -1;
	v = json_integer_value(j);
	if (v < 0 || (uint64_t)v > ((uint64_t)1 << 62))
		return -1;
	*out = (uint64_t)v;
	return 0;
}

static int parse_entry(struct ent *e, const char *name, json_t *v, uint64_t hdr_off,
		       uint64_t data_base)
{
	json_t *dt = json_object_get(v, "dtype"), *shape = json_object_get(v, "shape");
	json_t *offs = json_object_get(v, "data_offsets");
	uint64_t numel, vol = 1, esz = 0;
	size_t i, n;
	int zero = 0;

	e->name = name;
	if (!json_is_object(v))
		return ck_error(CK_ECORRUPT,
				"safetensors: header (offset %" PRIu64
				") entry \"%s\" is not an object",
				hdr_off, name);
	if (!json_is_string(dt))
		return ck_error(CK_ECORRUPT,
				"safetensors: header (offset %" PRIu64
				") tensor \"%s\" has no dtype",
				hdr_off, name);
	e->dt = DT_INVALID;
	for (i = 0; i < sizeof(st_dtypes) / sizeof(st_dtypes[0]); i++)
		if (strcmp(json_string_value(dt), st_dtypes[i].name) == 0) {
			e->dt = st_dtypes[i].dt;
			esz = st_sizes[i];
		}
	if (e->dt == DT_INVALID)
		return ck_error(CK_ECORRUPT,
				"safetensors: header (offset %" PRIu64
				") tensor \"%s\" has unknown dtype \"%.32s\"",
				hdr_off, name, json_string_value(dt));
	if (!json_is_array(shape) || (n = json_array_size(shape)) > TENSOR_MAX_NDIM)
		return ck_error(CK_ECORRUPT,
				"safetensors: header (offset %" PRIu64
				") tensor \"%s\" has no valid shape (a list of at most %d sizes)",
				hdr_off, name, TENSOR_MAX_NDIM);
	e->ndim = (int)n;
	e->shape = shape;
	for (i = 0; i < n; i++) {
		uint64_t d;

		if (get_uint(&d, json_array_get(shape, i)) < 0)
			return ck_error(
			    CK_ECORRUPT,
			    "safetensors: header (offset %" PRIu64
			    ") tensor \"%s\" has a negative or non-integer size in its shape",
			    hdr_off, name);
		/* The product of max(size, 1) bounds both numel and the
		 * strides, so neither can overflow. */
		if (d > 1 && vol > (((uint64_t)1 << 62) / d))
			return ck_error(CK_ECORRUPT,
					"safetensors: header (offset %" PRIu64
					") tensor \"%s\" has a shape too large for any file",
					hdr_off, name);
		if (d > 1)
			vol *= d;
		if (d == 0)
			zero = 1;
	}
	numel = zero ? 0 : vol;
	if (!json_is_array(offs) || json_array_size(offs) != 2 ||
	    get_uint(&e->begin, json_array_get(offs, 0)) < 0 ||
	    get_uint(&e->end, json_array_get(offs, 1)) < 0 || e->end < e->begin)
		return ck_error(CK_ECORRUPT,
				"safetensors: header (offset %" PRIu64
				") tensor \"%s\" has invalid data_offsets",
				hdr_off, name);
	if (numel > UINT64_MAX / esz || numel * esz != e->end - e->begin)
		return ck_error(CK_ECORRUPT,
				"safetensors: tensor \"%s\" (data at offset %" PRIu64
				") spans %" PRIu64 " bytes but its dtype and shape need %" PRIu64,
				name, data_base + e->begin, e->end - e->begin, numel * esz);
	return 0;
}

/* "/" + name with "~" -> "~0" and "/" -> "~1" (RFC 6901), charged to m. */
static char *pointer(struct fmt_meter *m, const char *name)
{
	size_t n = 1, i;
	const char *p;
	char *out;

	for (p = name; *p; p++)
		n += (*p == '~' || *p == '/') ? 2 : 1;
	if (!(out = fmt_alloc(m, FMT_RESULT, 1, n + 1, "safetensors: tensor paths")))
		return NULL;
	i = 0;
	out[i++] = '/';
	for (p = name; *p; p++) {
		if (*p == '~' || *p == '/') {
			out[i++] = '~';
			out[i++] = *p == '~' ? '0' : '1';
		} else {
			out[i++] = *p;
		}
	}
	out[i] = '\0';
	return out;
}

int safetensors_read(struct fmt_ckpt **out, const struct ck_input *in, const struct fmt_limits *lim)
{
	uint64_t max_hdr =
	    lim && lim->max_header_bytes ? lim->max_header_bytes : DEFAULT_MAX_HEADER;
	uint64_t max_tensors = lim && lim->max_tensors ? lim->max_tensors : UINT64_MAX;
	uint8_t lenbuf[8], first;
	uint64_t n = 0, data_len, pos;
	struct fmt_meter meter;
	struct hdr_stream hs;
	json_t *root = NULL, *val;
	json_error_t jerr;
	const char *key;
	struct ent *ents = NULL;
	struct fmt_ckpt *c = NULL;
	size_t count = 0, i;
	int err, k;

	*out = NULL;
	fmt_meter_begin(&meter, lim ? lim->budget : NULL);
	memset(&hs, 0, sizeof(hs));
	if (in->size < 8)
		return ck_error(CK_ECORRUPT,
				"safetensors: file of %" PRIu64
				" bytes is too short for the 8-byte header length",
				in->size);
	if ((err = ck_input_read(in, lenbuf, 8, 0, "safetensors header length")) < 0)
		return err;
	for (k = 7; k >= 0; k--)
		n = (n << 8) | lenbuf[k];
	if (n > max_hdr)
		return ck_error(CK_ETOOBIG,
				"safetensors: header length %" PRIu64
				" (offset 0) is over the limit of %" PRIu64 " bytes",
				n, max_hdr);
	if (n > in->size - 8)
		return ck_error(CK_ECORRUPT,
				"safetensors: header of %" PRIu64
				" bytes (from offset 8) runs past the end of the file (%" PRIu64
				" bytes)",
				n, in->size);
	if (n < 2)
		return ck_error(CK_ECORRUPT, "safetensors: header at offset 8 is empty");
	if ((err = ck_input_read(in, &first, 1, 8, "safetensors header")) < 0)
		return err;
	if (first != '{')
		return ck_error(CK_ECORRUPT,
				"safetensors: header at offset 8 does not start with '{'");

	hs.in = in;
	hs.off = 8;
	hs.end = 8 + n;
	if (!(hs.buf = fmt_alloc(&meter, FMT_PARSE, 1, HDR_CHUNK, "safetensors: header"))) {
		err = meter.err;
		goto out;
	}
	json_meter = &meter;
	root = json_load_callback(hdr_read, &hs, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		if (hs.err < 0)
			err = hs.err;
		else if (meter.err < 0)
			err = meter.err; /* the budget refused: its message stands */
		else
			/* jansson's position counts the bytes read, the bad one
			 * included */
			err = ck_error(
			    CK_ECORRUPT,
			    "safetensors: header is not valid JSON at offset %" PRIu64 ": %s",
			    8 + (uint64_t)(jerr.position > 0 ? jerr.position - 1 : 0), jerr.text);
		goto out;
	}
	if (!json_is_object(root)) {
		err = ck_error(CK_ECORRUPT, "safetensors: header at offset 8 is not a JSON object");
		goto out;
	}
	data_len = in->size - 8 - n;

	if ((val = json_object_get(root, "__metadata__"))) {
		json_t *mv;
		const char *mk;

		if (!json_is_object(val)) {
			err = ck_error(
			    CK_ECORRUPT,
			    "safetensors: __metadata__ (header at offset 8) is not an object");
			goto out;
		}
		json_object_foreach(val, mk, mv)
		{
			if (!json_is_string(mv)) {
				err = ck_error(CK_ECORRUPT,
					       "safetensors: __metadata__ value \"%s\" (header at "
					       "offset 8) is not a string",
					       mk);
				goto out;
			}
		}
	}
	count = json_object_size(root) - (val ? 1 : 0);
	if (count > max_tensors) {
		err =
		    ck_error(CK_ETOOBIG, "safetensors: %zu tensors are over the limit of %" PRIu64,
			     count, max_tensors);
		goto out;
	}
	if (!(ents = fmt_alloc(&meter, FMT_PARSE, count ? count : 1, sizeof(*ents),
			       "safetensors: tensors"))) {
		err = meter.err;
		goto out;
	}
	i = 0;
	json_object_foreach(root, key, val)
	{
		if (strcmp(key, "__metadata__") == 0)
			continue;
		if ((err = parse_entry(&ents[i], key, val, 8, 8 + n)) < 0)
			goto out;
		ents[i].seq = i;
		i++;
	}
	qsort(ents, count, sizeof(*ents), cmp_ent);
	pos = 0;
	for (i = 0; i < count; i++) {
		if (ents[i].begin != pos) {
			err = ck_error(CK_ECORRUPT,
				       "safetensors: tensor \"%s\" data at offset %" PRIu64
				       " %s the previous tensor's end (offset %" PRIu64 ")",
				       ents[i].name, 8 + n + ents[i].begin,
				       ents[i].begin > pos ? "leaves a gap after" : "overlaps",
				       8 + n + pos);
			goto out;
		}
		pos = ents[i].end;
	}
	if (pos != data_len) {
		err = ck_error(CK_ECORRUPT,
			       "safetensors: tensors end at offset %" PRIu64
			       " but the file is %" PRIu64 " bytes (%s)",
			       8 + n + pos, in->size,
			       pos > data_len ? "truncated" : "trailing bytes");
		goto out;
	}

	if (!(c = fmt_alloc(&meter, FMT_RESULT, 1, sizeof(*c), "safetensors: checkpoint"))) {
		err = meter.err;
		goto out;
	}
	c->kind = FMT_SAFETENSORS;
	if (count && (!(c->storages = fmt_alloc(&meter, FMT_RESULT, count, sizeof(*c->storages),
						"safetensors: tensors")) ||
		      !(c->tensors = fmt_alloc(&meter, FMT_RESULT, count, sizeof(*c->tensors),
					       "safetensors: tensors")))) {
		err = meter.err;
		goto out;
	}
	for (i = 0; i < count; i++) {
		struct fmt_storage *s = &c->storages[i];
		struct fmt_tensor *t = &c->tensors[i];
		const struct ent *e = &ents[i];
		int64_t stride = 1;

		c->nstorages = c->ntensors = i + 1;
		s->dtype = e->dt;
		s->file_off = 8 + n + e->begin;
		s->nbytes = e->end - e->begin;
		t->dtype = e->dt;
		t->ndim = e->ndim;
		t->storage = i;
		if (!(s->key = fmt_strndup(&meter, FMT_RESULT, e->name, strlen(e->name),
					   "safetensors: names")) ||
		    !(t->path = pointer(&meter, e->name)) ||
		    (e->ndim > 0 &&
		     (!(t->shape = fmt_alloc(&meter, FMT_RESULT, (size_t)e->ndim, sizeof(int64_t),
					     "safetensors: tensors")) ||
		      !(t->strides = fmt_alloc(&meter, FMT_RESULT, (size_t)e->ndim, sizeof(int64_t),
					       "safetensors: tensors"))))) {
			err = meter.err;
			goto out;
		}
		for (k = e->ndim - 1; k >= 0; k--) {
			/* parse_entry checked each size: an integer in [0, 2^62] */
			int64_t d =
			    (int64_t)json_integer_value(json_array_get(e->shape, (size_t)k));

			t->shape[k] = d;
			t->strides[k] = stride;
			if (d > 1)
				stride *= d;
		}
	}
	fmt_ckpt_keep(c, &meter);
	*out = c;
	err = 0;
out:
	/* the tree goes back through the hooks, the rest with the meter */
	json_decref(root);
	json_meter = NULL;
	fmt_meter_end(&meter);
	return err;
}
