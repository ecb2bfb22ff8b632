/*
 * fuzz_formats.c: libFuzzer entry over fmt_read (zip, pickle, torch zip,
 * legacy torch and safetensors readers) on an in-memory input. Built and run
 * by run.sh.
 *
 * An input that starts with a pickle PROTO opcode is read as a legacy torch
 * file (its magic number pickle first), and is also wrapped as the
 * data.pkl of a small torch zip (CRC 0, i.e. unchecked) holding storage
 * records data/0 (64 bytes) and data/1 (16 bytes), so that mutations reach
 * the pickle VM and the tensor walk instead of stopping at a CRC check.
 *
 * Each input is parsed twice: with the default limits, and on a small memory
 * budget of its own (64 KiB to 2 MiB, from the input's size) so that the
 * refusal of every allocation point is reached. After each parse, and after
 * the checkpoint is freed, the budget must hold exactly what it should: a
 * parse that leaks a charge, or gives back more than it took, traps.
 *
 * Each input is also read as a file of several archives (a .distcp file,
 * formats/items.c), whose archives must lie in order inside it.
 *
 * Each input is also read as a torch.distributed.checkpoint .metadata
 * (formats/dcp.c): what it accepts must hold together (every chunk inside
 * its tensor with a file), and freeing gives every charge back.
 *
 * Every input is also fed to the thin-upload frame decoder (api/thin.c),
 * whole and cut in two at a point the input chooses: both must agree, and
 * the literal bytes and references it hands over must tile the file it
 * stands for, in order.
 *
 * Every input is also opened as a blob codec container (storage/codec.c:
 * planes, zstd, deltas with their chain) and read at its start, across its
 * first chunk boundary and at its end, a delta against a made-up base of
 * its size: a damaged stored blob must be an error, never a crash.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../api/thin.h"
#include "../../common/err.h"
#include "../../common/hash.h"
#include "../../formats/checkpoint.h"
#include "../../formats/dcp.h"
#include "../../formats/zip_scan.h"
#include "../../storage/blob.h"
#include "../../storage/codec.h"

static void run_on(const uint8_t *data, size_t size, struct fmt_budget *budget)
{
	struct ck_input in = {.mem = data, .fd = -1, .size = size};
	struct fmt_limits lim;
	struct fmt_ckpt *c = NULL;
	int err;

	fmt_limits_default(&lim);
	/* smaller limits keep each run fast; the checks are the same */
	lim.max_pickle_ops = 1u << 20;
	lim.max_memo = 1u << 16;
	lim.budget = budget;
	err = fmt_read(&c, &in, &lim);
	/* a failed parse gives everything back; a parsed checkpoint holds
	 * its memory, and no more than the per-upload cap */
	if ((err < 0 && fmt_budget_used(budget) != 0) ||
	    fmt_budget_used(budget) > budget->per_upload)
		__builtin_trap();
	if (err == 0) {
		for (size_t i = 0; i < c->ntensors; i++)
			if (c->tensors[i].storage >= c->nstorages)
				__builtin_trap();
		for (size_t i = 0; i < c->nstorages; i++) {
			const struct fmt_storage *st = &c->storages[i];
			if (st->file_off + st->nbytes > size)
				__builtin_trap();
			/* sorted and apart: /file interleaves them with the skeleton */
			if (i &&
			    st->file_off < c->storages[i - 1].file_off + c->storages[i - 1].nbytes)
				__builtin_trap();
			/* a legacy storage follows its 8-byte element count */
			if (c->kind == FMT_TORCH_LEGACY && st->file_off < 8)
				__builtin_trap();
		}
		/* differential: the streaming record hasher, fed in uneven
		 * chunks with the whole stream's hash beside (one pass, as an
		 * upload hashes), must agree with hashing each parsed storage,
		 * and the partner with hashing the input */
		struct zip_scan *s = NULL;
		struct hasher *whole = hasher_new_sha256();
		if (whole && zip_scan_new(&s, 0) == 0) {
			struct hash all_want, all_got;
			for (size_t off = 0, k = 1; off < size; k++) {
				size_t take = (k * 131 + size) % 997 + 1;
				if (take > size - off)
					take = size - off;
				zip_scan_feed2(s, whole, data + off, take);
				off += take;
			}
			hasher_final(whole, &all_got, NULL);
			hash_buf(&all_want, NULL, data, size);
			if (memcmp(all_got.b, all_want.b, 32))
				__builtin_trap();
			for (size_t i = 0; i < c->nstorages; i++) {
				struct hash want, got;
				uint32_t wcrc, gcrc;
				const struct fmt_storage *st = &c->storages[i];
				if (zip_scan_lookup(s, st->file_off, st->nbytes, &got, &gcrc) != 0)
					continue;
				hash_buf(&want, &wcrc, data + st->file_off, st->nbytes);
				if (memcmp(got.b, want.b, 32) || gcrc != wcrc)
					__builtin_trap();
			}
			zip_scan_free(s);
		}
		hasher_free(whole);
	}
	fmt_ckpt_free(c);
	if (fmt_budget_used(budget) != 0)
		__builtin_trap();
}

/* The same input as a file of several archives (a .distcp file): the
 * archives found lie in order, apart, inside the input, each storage
 * inside its archive, and freeing them gives every charge back. */
static void run_items(const uint8_t *data, size_t size, struct fmt_budget *budget)
{
	struct ck_input in = {.mem = data, .fd = -1, .size = size};
	struct fmt_limits lim;
	struct fmt_item *v = NULL;
	size_t n = 0;

	fmt_limits_default(&lim);
	lim.max_pickle_ops = 1u << 20;
	lim.max_memo = 1u << 16;
	lim.budget = budget;
	if (fmt_read_items(&v, &n, &in, &lim) == CK_ECORRUPT)
		__builtin_trap(); /* never: what does not parse is no archive */
	for (size_t i = 0; i < n; i++) {
		if (v[i].off + v[i].size > size || (i && v[i].off < v[i - 1].off + v[i - 1].size))
			__builtin_trap();
		for (size_t k = 0; k < v[i].ck->nstorages; k++) {
			const struct fmt_storage *st = &v[i].ck->storages[k];
			if (st->file_off + st->nbytes > v[i].size)
				__builtin_trap();
		}
	}
	fmt_items_free(v, n);
	if (fmt_budget_used(budget) != 0)
		__builtin_trap();
}

/* The same input as DCP's .metadata pickle. */
static void run_dcp(const uint8_t *data, size_t size, struct fmt_budget *budget)
{
	struct fmt_limits lim;
	struct dcp_meta *m = NULL;

	fmt_limits_default(&lim);
	lim.max_pickle_ops = 1u << 20;
	lim.max_memo = 1u << 16;
	lim.budget = budget;
	if (dcp_meta_read(&m, data, size, &lim) == 0) {
		for (size_t i = 0; i < m->ntensors; i++) {
			const struct dcp_tensor *t = &m->tensors[i];
			if (!t->path || t->path[0] != '/' || t->ndim > TENSOR_MAX_NDIM)
				__builtin_trap();
			for (size_t c = 0; c < t->nchunks; c++) {
				if (!t->chunks[c].file || !t->chunks[c].file[0])
					__builtin_trap();
				for (int d = 0; d < t->ndim; d++)
					if (t->chunks[c].offsets[d] + t->chunks[c].sizes[d] >
					    t->size[d])
						__builtin_trap();
			}
		}
		dcp_meta_free(m);
	}
	if (fmt_budget_used(budget) != 0)
		__builtin_trap();
}

static void run(const uint8_t *data, size_t size)
{
	struct fmt_budget small;

	run_on(data, size, fmt_budget_process());
	fmt_budget_init(&small, (uint64_t)64 << (10 + size % 6), (uint64_t)4 << 20);
	run_on(data, size, &small);
	run_items(data, size, &small);
	run_dcp(data, size, &small);
}

static uint8_t *put(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++, v >>= 8)
		*p++ = (uint8_t)v;
	return p;
}

static void run_as_data_pkl(const uint8_t *pkl, size_t n)
{
	static const char *const names[] = {"a/data.pkl", "a/data/0", "a/data/1"};
	size_t sizes[] = {n, 64, 16}, off[3], total = 22;
	uint8_t *b, *p;

	for (int i = 0; i < 3; i++)
		total += 30 + 46 + 2 * strlen(names[i]) + sizes[i];
	b = calloc(1, total);
	if (!b)
		return;
	p = b;
	for (int i = 0; i < 3; i++) {
		size_t nl = strlen(names[i]);

		off[i] = (size_t)(p - b);
		p = put(p, 0x04034b50, 4);
		p = put(p, 20, 2);
		p = put(p, 0, 2 + 2 + 4 + 4);
		p = put(p, sizes[i], 4);
		p = put(p, sizes[i], 4);
		p = put(p, nl, 2);
		p = put(p, 0, 2);
		memcpy(p, names[i], nl);
		p += nl;
		if (i == 0)
			memcpy(p, pkl, n);
		p += sizes[i];
	}
	size_t cd = (size_t)(p - b);
	for (int i = 0; i < 3; i++) {
		size_t nl = strlen(names[i]);

		p = put(p, 0x02014b50, 4);
		p = put(p, 20, 2);
		p = put(p, 20, 2);
		p = put(p, 0, 2 + 2 + 4 + 4);
		p = put(p, sizes[i], 4);
		p = put(p, sizes[i], 4);
		p = put(p, nl, 2);
		p = put(p, 0, 2 + 2 + 2 + 2 + 4);
		p = put(p, off[i], 4);
		memcpy(p, names[i], nl);
		p += nl;
	}
	size_t cd_size = (size_t)(p - b) - cd;
	p = put(p, 0x06054b50, 4);
	p = put(p, 0, 4);
	p = put(p, 3, 2);
	p = put(p, 3, 2);
	p = put(p, cd_size, 4);
	p = put(p, cd, 4);
	p = put(p, 0, 2);
	run(b, (size_t)(p - b));
	free(b);
}

struct tiles {
	uint64_t pos; /* bytes handed over so far */
	uint64_t nlit, nrefs;
};

static int tile_lit(void *arg, const uint8_t *p, size_t n)
{
	struct tiles *t = arg;

	if (n == 0)
		__builtin_trap(); /* never an empty hand-over */
	t->pos += n;
	t->nlit += n;
	return 0;
}

static int tile_ref(void *arg, const struct thin_ref *r)
{
	struct tiles *t = arg;

	if (r->off != t->pos)
		__builtin_trap();
	t->pos += r->len;
	t->nrefs++;
	return 0;
}

/* Decodes data as thin frames, in two pieces cut at `cut`. */
static int thin_run(const uint8_t *data, size_t size, size_t cut, struct tiles *tl, struct thin *t)
{
	const struct thin_sink sink = {tile_lit, tile_ref, tl};
	int err;

	thin_init(t);
	err = thin_feed(t, data, cut, &sink);
	if (err == 0)
		err = thin_feed(t, data + cut, size - cut, &sink);
	if (err == 0)
		err = thin_finish(t);
	if (err != 0 && err != CK_EINVALID && err != CK_ENOMEM)
		__builtin_trap();
	if (tl->pos != t->pos || tl->nrefs != t->nrefs)
		__builtin_trap();
	return err;
}

static void run_thin(const uint8_t *data, size_t size)
{
	struct tiles a = {0}, b = {0};
	struct thin ta, tb;
	size_t cut = size ? data[size - 1] % (size + 1) : 0;
	int ea = thin_run(data, size, size, &a, &ta);
	int eb = thin_run(data, size, cut, &b, &tb);

	if (ea != eb || a.pos != b.pos || a.nlit != b.nlit || a.nrefs != b.nrefs)
		__builtin_trap();
	if (ea == 0 && memcmp(ta.end.b, tb.end.b, 32))
		__builtin_trap();
	thin_free(&ta);
	thin_free(&tb);
}

struct mem {
	const uint8_t *p;
	uint64_t n;
};

static int mem_read(void *arg, void *buf, size_t n, uint64_t off)
{
	const struct mem *m = arg;

	if (off > m->n || n > m->n - off)
		return ck_error(CK_ECORRUPT, "read past the end");
	memcpy(buf, m->p + off, n);
	return 0;
}

/* A delta's base: bytes made up from their offset, raw_size of them. */
static int base_read(void *arg, void *buf, size_t n, uint64_t off)
{
	uint64_t size = *(const uint64_t *)arg;
	uint8_t *b = buf;

	if (off > size || n > size - off)
		__builtin_trap(); /* the codec never reads past the size it checked */
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)((off + i) * 131u);
	return 0;
}

static void run_codec(const uint8_t *data, size_t size)
{
	struct mem m = {data, size};
	struct codec_reader *r = NULL;
	struct hash chain[CODEC_MAX_CHAIN];
	uint64_t raw;
	uint8_t *buf;

	if (codec_reader_open(&r, mem_read, &m, size) < 0) {
		ck_error_clear();
		return;
	}
	raw = codec_reader_size(r);
	int nc = codec_reader_chain(r, chain);
	if (nc < 0 || nc > CODEC_MAX_CHAIN || (codec_reader_codec(r) == CODEC_DELTA) != (nc > 0))
		__builtin_trap();
	codec_reader_set_base(r, base_read, &raw);
	buf = malloc(1 << 16);
	if (buf) {
		uint64_t n = raw < (1 << 16) ? raw : (1 << 16);
		codec_reader_read(r, buf, (size_t)n, 0);
		if (raw > CODEC_CHUNK_SIZE + 100)
			codec_reader_read(r, buf, 200, CODEC_CHUNK_SIZE - 100);
		codec_reader_read(r, buf, (size_t)n, raw - n);
		if (codec_reader_read(r, buf, 2, raw) == 0 && raw < UINT64_MAX - 2)
			__builtin_trap(); /* past the end is an error */
		free(buf);
	}
	ck_error_clear();
	codec_reader_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	run_codec(data, size);
	run_thin(data, size);
	run(data, size);
	if (size >= 2 && data[0] == 0x80)
		run_as_data_pkl(data, size);
	return 0;
}
