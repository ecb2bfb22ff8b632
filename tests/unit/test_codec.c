/*
 * test_codec.c: the blob codec (storage/codec.c): round trips per dtype,
 * raw fallback for incompressible data, the byte-plane ratio on weight-like
 * data, random-access reads, and damaged containers rejected; deltas against
 * a base (both kinds, every float dtype, special values bit for bit, their
 * chain, the cases that make none).
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../common/err.h"
#include "../../storage/blob.h"
#include "../../storage/codec.h"
#include "check_main.h"

static uint64_t rng_state;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static double normal(void)
{
	double u = ((double)(rng() >> 11) + 0.5) / 9007199254740992.0;
	double v = ((double)(rng() >> 11) + 0.5) / 9007199254740992.0;
	return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

static uint16_t to_bf16(float f)
{
	uint32_t u;

	memcpy(&u, &f, 4);
	u += 0x7fff + ((u >> 16) & 1);
	return (uint16_t)(u >> 16);
}

static uint16_t to_f16(float f)
{
	/* good enough for small normal values: no NaN/inf handling needed */
	uint32_t u;
	memcpy(&u, &f, 4);
	uint32_t sign = (u >> 16) & 0x8000;
	int exp = (int)((u >> 23) & 0xff) - 127 + 15;
	uint32_t mant = (u >> 13) & 0x3ff;
	if (exp <= 0)
		return (uint16_t)sign;
	return (uint16_t)(sign | (uint32_t)exp << 10 | mant);
}

/* n bytes of weight-like data of dtype dt. */
static uint8_t *make_weights(size_t n, enum dtype dt)
{
	uint8_t *b = malloc(n);

	ck_assert_ptr_nonnull(b);
	rng_state = 0x9e3779b97f4a7c15ull;
	for (size_t i = 0; i < n;) {
		float f = (float)(normal() * 0.02);
		double d = (double)f;
		uint16_t h;
		switch (dt) {
		case DT_FLOAT32:
			memcpy(b + i, &f, 4);
			i += 4;
			break;
		case DT_FLOAT64:
			memcpy(b + i, &d, 8);
			i += 8;
			break;
		case DT_BFLOAT16:
			h = to_bf16(f);
			memcpy(b + i, &h, 2);
			i += 2;
			break;
		case DT_FLOAT16:
			h = to_f16(f);
			memcpy(b + i, &h, 2);
			i += 2;
			break;
		default:
			b[i] = (uint8_t)(to_bf16(f) >> 8);
			i += 1;
			break;
		}
	}
	return b;
}

static int memfd_with(const void *p, size_t n)
{
	int fd = memfd_create("codec-test", 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, p, n), (ssize_t)n);
	return fd;
}

/* Encodes, checks the codec, reads it all back and at odd offsets. Returns
 * the stored ratio. */
static double round_trip(const uint8_t *data, size_t n, enum dtype dt, int want_codec)
{
	struct codec_enc *e = NULL;
	struct codec_reader *r = NULL;
	int in = memfd_with(data, n), out = memfd_create("out", 0), codec = -1;
	uint64_t stored = 0;
	uint8_t *back = malloc(n + 1);

	ck_assert_ptr_nonnull(back);
	ck_assert_int_eq(codec_enc_new(&e), 0);
	ck_assert_int_eq(codec_encode_fd(&codec, &stored, e, out, in, 0, n, dt), 0);
	ck_assert_int_eq(codec, want_codec);
	if (codec != CODEC_RAW) {
		ck_assert_int_eq(codec_reader_open_fd(&r, out), 0);
		ck_assert_int_eq(codec_reader_codec(r), codec);
		ck_assert_uint_eq(codec_reader_size(r), n);
		ck_assert_int_eq(codec_reader_read(r, back, n, 0), 0);
		ck_assert_int_eq(memcmp(back, data, n), 0);
		/* a range crossing a chunk boundary, and a tiny one */
		if (n > CODEC_CHUNK_SIZE + 100) {
			ck_assert_int_eq(codec_reader_read(r, back, 200, CODEC_CHUNK_SIZE - 100),
					 0);
			ck_assert_int_eq(memcmp(back, data + CODEC_CHUNK_SIZE - 100, 200), 0);
		}
		ck_assert_int_eq(codec_reader_read(r, back, 3, n - 3), 0);
		ck_assert_int_eq(memcmp(back, data + n - 3, 3), 0);
		ck_assert_int_eq(codec_reader_read(r, back, 2, n - 1), CK_ECORRUPT);
		codec_reader_free(r);
	}
	codec_enc_free(e);
	free(back);
	close(in);
	close(out);
	return (double)stored / (double)n;
}

START_TEST(test_codec_round_trips_every_float_dtype)
{
	static const enum dtype dts[] = {DT_FLOAT32, DT_FLOAT64, DT_BFLOAT16, DT_FLOAT16,
					 DT_FLOAT8_E4M3FN};
	for (size_t i = 0; i < sizeof(dts) / sizeof(dts[0]); i++) {
		size_t n = 3 * CODEC_CHUNK_SIZE + 8 * 1000; /* a short last chunk */
		uint8_t *w = make_weights(n, dts[i]);
		int want = dts[i] == DT_FLOAT8_E4M3FN ? CODEC_ZSTD : CODEC_PLANES;
		double ratio = round_trip(w, n, dts[i], want);
		ck_assert_msg(ratio < 1.0, "dtype %d ratio %.3f", dts[i], ratio);
		free(w);
	}
}
END_TEST

START_TEST(test_codec_round_trips_compressible_bytes_as_zstd)
{
	size_t n = 2 * CODEC_CHUNK_SIZE + 12345;
	uint8_t *b = malloc(n);
	ck_assert_ptr_nonnull(b);
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)((i / 7) % 13 + (i % 1000 == 0 ? i >> 10 : 0));
	ck_assert_double_lt(round_trip(b, n, DT_INVALID, CODEC_ZSTD), 0.2);
	/* int64 with a float hint that does not divide: falls back to zstd */
	ck_assert_double_lt(round_trip(b, n - 2, DT_FLOAT32, CODEC_ZSTD), 0.2);
	free(b);
}
END_TEST

START_TEST(test_codec_keeps_random_bytes_raw)
{
	size_t n = CODEC_CHUNK_SIZE + 4096;
	uint8_t *b = malloc(n);
	ck_assert_ptr_nonnull(b);
	rng_state = 12345;
	for (size_t i = 0; i < n; i += 8) {
		uint64_t v = rng();
		memcpy(b + i, &v, n - i < 8 ? n - i : 8);
	}
	ck_assert_double_eq(round_trip(b, n, DT_INVALID, CODEC_RAW), 1.0);
	ck_assert_double_eq(round_trip(b, n, DT_FLOAT32, CODEC_RAW), 1.0);
	free(b);
}
END_TEST

START_TEST(test_codec_byte_planes_pay_on_weight_like_data)
{
	size_t n = 8 * CODEC_CHUNK_SIZE;
	uint8_t *f32 = make_weights(n, DT_FLOAT32), *bf16 = make_weights(n, DT_BFLOAT16);
	double r32 = round_trip(f32, n, DT_FLOAT32, CODEC_PLANES);
	double r16 = round_trip(bf16, n, DT_BFLOAT16, CODEC_PLANES);

	printf("codec ratio on normal(0, 0.02) weights: float32 %.4f, bfloat16 %.4f\n", r32, r16);
	ck_assert_double_lt(r32, 0.90);
	ck_assert_double_lt(r16, 0.75);
	free(f32);
	free(bf16);
}
END_TEST

/* A container of 3 chunks of float32 weights in a memfd. */
static int make_container(uint8_t **data, size_t *n)
{
	struct codec_enc *e = NULL;
	int codec, out = memfd_create("out", 0), in;
	uint64_t stored;

	*n = 2 * CODEC_CHUNK_SIZE + 4000;
	*data = make_weights(*n, DT_FLOAT32);
	in = memfd_with(*data, *n);
	ck_assert_int_eq(codec_enc_new(&e), 0);
	ck_assert_int_eq(codec_encode_fd(&codec, &stored, e, out, in, 0, *n, DT_FLOAT32), 0);
	ck_assert_int_eq(codec, CODEC_PLANES);
	codec_enc_free(e);
	close(in);
	return out;
}

static void flip(int fd, uint64_t off)
{
	uint8_t b;
	ck_assert_int_eq(pread(fd, &b, 1, (off_t)off), 1);
	b ^= 0x5a;
	ck_assert_int_eq(pwrite(fd, &b, 1, (off_t)off), 1);
}

START_TEST(test_codec_rejects_damaged_header)
{
	uint8_t *data;
	size_t n;
	int fd = make_container(&data, &n);
	struct codec_reader *r = NULL;

	flip(fd, 12); /* nchunks */
	ck_assert_int_eq(codec_reader_open_fd(&r, fd), CK_ECORRUPT);
	ck_assert_ptr_null(r);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "offset"));
	ck_assert_int_eq(ftruncate(fd, 10), 0);
	ck_assert_int_eq(codec_reader_open_fd(&r, fd), CK_ECORRUPT);
	free(data);
	close(fd);
}
END_TEST

START_TEST(test_codec_rejects_damaged_chunk_table)
{
	uint8_t *data, buf[64];
	size_t n;
	int fd = make_container(&data, &n);
	struct codec_reader *r = NULL;

	flip(fd, CODEC_HEADER_SIZE + 28 + 2); /* chunk 1's offset */
	ck_assert_int_eq(codec_reader_open_fd(&r, fd), 0);
	/* chunk 0 still reads; chunk 1 is refused, with where */
	ck_assert_int_eq(codec_reader_read(r, buf, sizeof(buf), 0), 0);
	ck_assert_int_eq(memcmp(buf, data, sizeof(buf)), 0);
	ck_assert_int_eq(codec_reader_read(r, buf, sizeof(buf), CODEC_CHUNK_SIZE), CK_ECORRUPT);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "chunk 1"));
	codec_reader_free(r);
	free(data);
	close(fd);
}
END_TEST

START_TEST(test_codec_rejects_damaged_chunk_data)
{
	uint8_t *data, *buf;
	size_t n;
	int fd = make_container(&data, &n);
	struct codec_reader *r = NULL;
	off_t end = lseek(fd, 0, SEEK_END);

	buf = malloc(n);
	ck_assert_ptr_nonnull(buf);
	/* damage every 997th byte of the data: every zstd frame is hit */
	for (off_t o = CODEC_HEADER_SIZE + 3 * 28; o < end; o += 997)
		flip(fd, (uint64_t)o);
	ck_assert_int_eq(codec_reader_open_fd(&r, fd), 0);
	ck_assert_int_eq(codec_reader_read(r, buf, n, 0), CK_ECORRUPT);
	codec_reader_free(r);
	/* a truncated container: the last chunk lies past the end */
	ck_assert_int_eq(ftruncate(fd, end - 100), 0);
	ck_assert_int_eq(codec_reader_open_fd(&r, fd), 0);
	ck_assert_int_eq(codec_reader_read(r, buf, 100, n - 100), CK_ECORRUPT);
	codec_reader_free(r);
	free(buf);
	free(data);
	close(fd);
}
END_TEST

/* A container read through a callback, as an object store's range reads
 * do: reads are counted, and fail with `fail` once `budget` reads are used. */
struct cb_source {
	int fd;
	int reads, budget, fail;
};

static int cb_read(void *arg, void *buf, size_t n, uint64_t off)
{
	struct cb_source *s = arg;

	if (s->reads++ >= s->budget)
		return ck_error(s->fail, "test store: read %d refused", s->reads);
	ck_assert_int_eq(pread(s->fd, buf, n, (off_t)off), (ssize_t)n);
	return 0;
}

START_TEST(test_codec_reads_through_a_callback_and_passes_its_errors_on)
{
	uint8_t *data, *buf;
	size_t n;
	int fd = make_container(&data, &n);
	struct cb_source src = {fd, 0, 1000, CK_EUNAVAIL};
	struct codec_reader *r = NULL;
	off_t end = lseek(fd, 0, SEEK_END);

	buf = malloc(n);
	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(codec_reader_open(&r, cb_read, &src, (uint64_t)end), 0);
	ck_assert_int_eq(codec_reader_read(r, buf, n, 0), 0);
	ck_assert_int_eq(memcmp(buf, data, n), 0);
	/* one chunk: one read of its table entry, one of its planes */
	src.reads = 0;
	ck_assert_int_eq(codec_reader_read(r, buf, 100, CODEC_CHUNK_SIZE + 5), 0);
	ck_assert_int_eq(src.reads, 2);
	ck_assert_int_eq(memcmp(buf, data + CODEC_CHUNK_SIZE + 5, 100), 0);
	/* a store that goes away: its error, not "corrupt" */
	src.budget = 0;
	ck_assert_int_eq(codec_reader_read(r, buf, 100, 0), CK_EUNAVAIL);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "test store"));
	codec_reader_free(r);
	ck_assert_int_eq(codec_reader_open(&r, cb_read, &src, (uint64_t)end), CK_EUNAVAIL);
	ck_assert_ptr_null(r);
	/* a size below the header's is refused before any read */
	src.reads = 0;
	ck_assert_int_eq(codec_reader_open(&r, cb_read, &src, 31), CK_ECORRUPT);
	ck_assert_int_eq(src.reads, 0);
	free(buf);
	free(data);
	close(fd);
}
END_TEST

START_TEST(test_codec_rejects_short_source)
{
	struct codec_enc *e = NULL;
	uint8_t *w = make_weights(4096, DT_FLOAT32);
	int in = memfd_with(w, 4096), out = memfd_create("out", 0), codec;
	uint64_t stored;

	ck_assert_int_eq(codec_enc_new(&e), 0);
	ck_assert_int_eq(codec_encode_fd(&codec, &stored, e, out, in, 0, 8192, DT_FLOAT32),
			 CK_ECORRUPT);
	codec_enc_free(e);
	free(w);
	close(in);
	close(out);
}
END_TEST

/* ---- deltas ---- */

/* The same weights one training step later: each element of base (n bytes
 * of dtype dt, made by make_weights) moved by about 0.1%, and a few special
 * values (NaN, infinities, -0, subnormal) in both, so every bit must come
 * back. */
static uint8_t *make_next(const uint8_t *base, size_t n, enum dtype dt)
{
	uint8_t *b = malloc(n);
	size_t E = dt == DT_FLOAT64 ? 8 : dt == DT_FLOAT32 ? 4 : 2;

	ck_assert_ptr_nonnull(b);
	memcpy(b, base, n);
	for (size_t i = 0; i + E <= n; i += E) {
		double step = 1.0 + normal() * 1e-3;
		if (dt == DT_FLOAT64) {
			double d;
			memcpy(&d, b + i, 8);
			d *= step;
			memcpy(b + i, &d, 8);
		} else if (dt == DT_FLOAT32) {
			float f;
			memcpy(&f, b + i, 4);
			f = (float)(f * step);
			memcpy(b + i, &f, 4);
		} else {
			/* 16-bit: move the bit pattern by -2..2 ulps */
			uint16_t h;
			memcpy(&h, b + i, 2);
			h = (uint16_t)(h + (int)(rng() % 5) - 2);
			memcpy(b + i, &h, 2);
		}
	}
	/* special patterns: all ones (NaN), top bit only (-0), 1 (subnormal),
	 * the sign flipped, in both the base's and the new element's place */
	for (size_t k = 0; k < 4; k++) {
		size_t at = (k * 7919 * E) % (n - E);
		at -= at % E;
		memset(b + at, k == 0 ? 0xff : 0, E);
		if (k == 1)
			b[at + E - 1] = 0x80;
		if (k == 2)
			b[at] = 1;
		if (k == 3)
			b[at + E - 1] = (uint8_t)(base[at + E - 1] ^ 0x80);
	}
	return b;
}

static int read_mem(void *arg, void *buf, size_t n, uint64_t off)
{
	memcpy(buf, (const uint8_t *)arg + off, n);
	return 0;
}

/* Encodes data against base as kind, with the base's own chain of nb
 * hashes; returns the codec and the ratio, and leaves the container in
 * *out_fd (the caller closes it). */
static int delta_encode(double *ratio, int *out_fd, const uint8_t *data, const uint8_t *base,
			size_t n, enum dtype dt, int kind, const struct hash *bchain, int nb)
{
	struct codec_enc *e = NULL;
	struct codec_base b = {read_mem, (void *)base, n, {{0}}, bchain, nb};
	int in = memfd_with(data, n), out = memfd_create("out", 0), codec = -1;
	uint64_t stored = 0;

	memset(b.hash.b, 0xba, sizeof(b.hash.b));
	ck_assert_int_eq(codec_enc_new(&e), 0);
	ck_assert_int_eq(codec_encode_delta_fd(&codec, &stored, e, out, in, 0, n, dt, &b, kind), 0);
	codec_enc_free(e);
	close(in);
	*ratio = (double)stored / (double)n;
	*out_fd = out;
	return codec;
}

START_TEST(test_codec_delta_round_trips_every_float_dtype_bit_for_bit)
{
	static const enum dtype dts[] = {DT_FLOAT32, DT_FLOAT64, DT_BFLOAT16, DT_FLOAT16};
	for (size_t i = 0; i < sizeof(dts) / sizeof(dts[0]); i++) {
		for (int kind = CODEC_DELTA_XOR; kind <= CODEC_DELTA_SUB; kind++) {
			size_t n = 2 * CODEC_CHUNK_SIZE + 8 * 1000; /* a short last chunk */
			uint8_t *base = make_weights(n, dts[i]), *next = make_next(base, n, dts[i]);
			uint8_t *back = malloc(n);
			struct codec_reader *r = NULL;
			struct hash chain[CODEC_MAX_CHAIN];
			double ratio, whole = round_trip(next, n, dts[i], CODEC_PLANES);
			int fd;

			ck_assert_ptr_nonnull(back);
			ck_assert_int_eq(
			    delta_encode(&ratio, &fd, next, base, n, dts[i], kind, NULL, 0),
			    CODEC_DELTA);
			ck_assert_msg(ratio < whole, "dtype %d kind %d: delta %.3f, whole %.3f",
				      dts[i], kind, ratio, whole);
			ck_assert_int_eq(codec_reader_open_fd(&r, fd), 0);
			ck_assert_int_eq(codec_reader_codec(r), CODEC_DELTA);
			ck_assert_int_eq(codec_reader_chain(r, chain), 1);
			ck_assert_uint_eq(chain[0].b[0], 0xba);
			/* without its base a delta is unreadable, never garbage */
			ck_assert_int_eq(codec_reader_read(r, back, 16, 0), CK_ECORRUPT);
			codec_reader_set_base(r, read_mem, base);
			ck_assert_int_eq(codec_reader_read(r, back, n, 0), 0);
			ck_assert_int_eq(memcmp(back, next, n), 0);
			ck_assert_int_eq(codec_reader_read(r, back, 200, CODEC_CHUNK_SIZE - 100),
					 0);
			ck_assert_int_eq(memcmp(back, next + CODEC_CHUNK_SIZE - 100, 200), 0);
			ck_assert_int_eq(codec_reader_read(r, back, 3, n - 3), 0);
			ck_assert_int_eq(memcmp(back, next + n - 3, 3), 0);
			codec_reader_free(r);
			close(fd);
			free(base);
			free(next);
			free(back);
		}
	}
}
END_TEST

START_TEST(test_codec_delta_header_names_the_whole_chain)
{
	size_t n = 64 * 1024;
	uint8_t *base = make_weights(n, DT_FLOAT32), *next = make_next(base, n, DT_FLOAT32);
	struct hash bchain[CODEC_MAX_CHAIN], chain[CODEC_MAX_CHAIN];
	struct codec_reader *r = NULL;
	uint8_t byte;
	double ratio;
	int fd;

	for (int j = 0; j < CODEC_MAX_CHAIN; j++)
		memset(bchain[j].b, 0x10 + j, 32);
	/* a base with a chain of its own: the delta's chain is one longer */
	ck_assert_int_eq(delta_encode(&ratio, &fd, next, base, n, DT_FLOAT32, CODEC_DELTA_SUB,
				      bchain, CODEC_MAX_CHAIN - 1),
			 CODEC_DELTA);
	ck_assert_int_eq(codec_reader_open_fd(&r, fd), 0);
	ck_assert_int_eq(codec_reader_chain(r, chain), CODEC_MAX_CHAIN);
	ck_assert_uint_eq(chain[0].b[0], 0xba);
	for (int j = 1; j < CODEC_MAX_CHAIN; j++)
		ck_assert_int_eq(memcmp(chain[j].b, bchain[j - 1].b, 32), 0);
	codec_reader_free(r);
	/* a damaged chain is caught at open */
	ck_assert_int_eq(pread(fd, &byte, 1, CODEC_HEADER_SIZE + 40), 1);
	byte ^= 1;
	ck_assert_int_eq(pwrite(fd, &byte, 1, CODEC_HEADER_SIZE + 40), 1);
	ck_assert_int_eq(codec_reader_open_fd(&r, fd), CK_ECORRUPT);
	ck_assert_ptr_null(r);
	close(fd);
	free(base);
	free(next);
}
END_TEST

START_TEST(test_codec_delta_made_only_where_it_can_be_and_pays)
{
	size_t n = 64 * 1024;
	uint8_t *base = make_weights(n, DT_FLOAT32), *next = make_next(base, n, DT_FLOAT32);
	uint8_t *other = malloc(n);
	struct hash bchain[CODEC_MAX_CHAIN] = {{{0}}};
	double ratio;
	int fd;

	ck_assert_ptr_nonnull(other);
	/* other weights of the same kind: the base shifted by one element */
	memcpy(other, base + 4, n - 4);
	memcpy(other + n - 4, base, 4);
	/* the chain would be longer than allowed: a key frame instead */
	ck_assert_int_eq(delta_encode(&ratio, &fd, next, base, n, DT_FLOAT32, CODEC_DELTA_SUB,
				      bchain, CODEC_MAX_CHAIN),
			 CODEC_RAW);
	close(fd);
	/* no float type of 2, 4 or 8 bytes */
	ck_assert_int_eq(
	    delta_encode(&ratio, &fd, next, base, n, DT_FLOAT8_E4M3FN, CODEC_DELTA_SUB, NULL, 0),
	    CODEC_RAW);
	close(fd);
	ck_assert_int_eq(
	    delta_encode(&ratio, &fd, next, base, n, DT_INT64, CODEC_DELTA_SUB, NULL, 0),
	    CODEC_RAW);
	close(fd);
	/* against unrelated weights the delta is no smaller than the blob's
	 * own encoding (though smaller than raw) */
	ck_assert_int_eq(
	    delta_encode(&ratio, &fd, next, other, n, DT_FLOAT32, CODEC_DELTA_SUB, NULL, 0),
	    CODEC_RAW);
	close(fd);
	/* a delta smaller by less than a sixteenth is not worth its slower reads:
	 * normal weights one above the base's (x + 2 against x + 1) give a
	 * delta about 1% smaller than the whole encoding */
	for (size_t i = 0; i + 4 <= n; i += 4) {
		double x = normal();
		float f1 = (float)(x + 1.0), f2 = (float)(x + 2.0);
		memcpy(other + i, &f1, 4);
		memcpy(next + i, &f2, 4);
	}
	ck_assert_int_eq(
	    delta_encode(&ratio, &fd, next, other, n, DT_FLOAT32, CODEC_DELTA_SUB, NULL, 0),
	    CODEC_RAW);
	close(fd);
	free(base);
	free(next);
	free(other);
}
END_TEST

static Suite *codec_suite(void)
{
	Suite *s = suite_create("codec");
	TCase *tc = tcase_create("codec");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_codec_round_trips_every_float_dtype);
	tcase_add_test(tc, test_codec_round_trips_compressible_bytes_as_zstd);
	tcase_add_test(tc, test_codec_keeps_random_bytes_raw);
	tcase_add_test(tc, test_codec_byte_planes_pay_on_weight_like_data);
	tcase_add_test(tc, test_codec_rejects_damaged_header);
	tcase_add_test(tc, test_codec_rejects_damaged_chunk_table);
	tcase_add_test(tc, test_codec_rejects_damaged_chunk_data);
	tcase_add_test(tc, test_codec_reads_through_a_callback_and_passes_its_errors_on);
	tcase_add_test(tc, test_codec_rejects_short_source);
	tcase_add_test(tc, test_codec_delta_round_trips_every_float_dtype_bit_for_bit);
	tcase_add_test(tc, test_codec_delta_header_names_the_whole_chain);
	tcase_add_test(tc, test_codec_delta_made_only_where_it_can_be_and_pays);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return run_suite(codec_suite());
}
