/*
 * codec_bench.c: the blob codec (storage/codec.c) against plain zstd -1 on
 * the same bytes: ratio, compression and decompression speed, as ratios.
 *
 *   codec_bench                      synthetic weights (normal, std 0.02),
 *                                    float32 and bfloat16, 64 MiB each
 *   codec_bench FILE DTYPE [OFFSET]  the raw bytes of FILE from OFFSET as
 *                                    DTYPE (float32, bfloat16, float16, ...)
 *   codec_bench FILE DTYPE OFFSET BASE
 *                                    the same, and as deltas (difference and
 *                                    XOR) against BASE's bytes from OFFSET:
 *                                    the same tensors one epoch earlier
 *
 * Build: cc -std=c11 -O2 -D_GNU_SOURCE -o build/codec_bench bench/codec_bench.c
 *        storage/codec.c -lzstd -lz -lm (plus common/err.c)
 */
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zstd.h>

#include "../common/err.h"
#include "../storage/blob.h"
#include "../storage/codec.h"

#define REPS 5

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng = 88172645463325252ull;

static double uniform(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
}

static double normal(void)
{
	return sqrt(-2.0 * log(uniform())) * cos(6.283185307179586 * uniform());
}

static uint16_t to_bf16(float f)
{
	uint32_t u;

	memcpy(&u, &f, 4);
	u += 0x7fff + ((u >> 16) & 1); /* round to nearest even */
	return (uint16_t)(u >> 16);
}

static int bench(const char *label, const uint8_t *data, size_t n, enum dtype dt)
{
	int in = memfd_create("in", 0), out = memfd_create("out", 0), codec = 0, err;
	uint64_t stored = 0;
	struct codec_enc *e = NULL;
	struct codec_reader *r = NULL;
	uint8_t *back = malloc(n), *z = malloc(ZSTD_compressBound(n));
	double t0, t_enc, t_dec, t_z, t_zd;
	size_t zn = 0;

	if (in < 0 || out < 0 || !back || !z || write(in, data, n) != (ssize_t)n)
		return 1;
	/* touch the buffers first: page faults are not what is measured */
	memset(back, 0, n);
	memset(z, 0, ZSTD_compressBound(n));
	if ((err = codec_enc_new(&e)) < 0)
		return 1;
	/* warm the page cache and allocator */
	codec_encode_fd(&codec, &stored, e, out, in, 0, n, dt);

	/* each figure is the best of REPS runs: this is a shared machine */
	t_enc = 1e9;
	for (int k = 0; k < REPS && err == 0; k++) {
		t0 = now();
		err = codec_encode_fd(&codec, &stored, e, out, in, 0, n, dt);
		t_enc = fmin(t_enc, now() - t0);
	}
	if (err < 0) {
		fprintf(stderr, "encode: %s\n", ck_errmsg());
		return 1;
	}
	t_dec = 0;
	if (codec != CODEC_RAW) {
		if (codec_reader_open_fd(&r, out) < 0)
			return 1;
		t_dec = 1e9;
		for (int k = 0; k < REPS && err == 0; k++) {
			t0 = now();
			err = codec_reader_read(r, back, n, 0);
			t_dec = fmin(t_dec, now() - t0);
		}
		if (err < 0 || memcmp(back, data, n) != 0) {
			fprintf(stderr, "decode mismatch: %s\n", ck_errmsg());
			return 1;
		}
	}

	t_z = t_zd = 1e9;
	for (int k = 0; k < REPS; k++) {
		t0 = now();
		zn = ZSTD_compress(z, ZSTD_compressBound(n), data, n, 1);
		t_z = fmin(t_z, now() - t0);
		t0 = now();
		ZSTD_decompress(back, n, z, zn);
		t_zd = fmin(t_zd, now() - t0);
	}

	double mb = (double)n / 1e6;
	printf("%-10s %6.1f MB  codec %-6s ratio %.4f  enc %6.0f MB/s  dec %6.0f MB/s\n", label, mb,
	       blob_codec_name(codec), (double)stored / (double)n, mb / t_enc,
	       t_dec > 0 ? mb / t_dec : 0.0);
	printf("%-10s %6s     zstd -1       ratio %.4f  enc %6.0f MB/s  dec %6.0f MB/s\n", "", "",
	       (double)zn / (double)n, mb / t_z, mb / t_zd);
	printf(
	    "%-10s vs zstd -1: ratio x%.3f, compression speed x%.2f, decompression speed x%.2f\n",
	    "", ((double)stored / (double)n) / ((double)zn / (double)n), t_z / t_enc,
	    t_dec > 0 ? t_zd / t_dec : 0.0);
	codec_reader_free(r);
	codec_enc_free(e);
	free(back);
	free(z);
	close(in);
	close(out);
	return 0;
}

static int read_base(void *arg, void *buf, size_t n, uint64_t off)
{
	memcpy(buf, (const uint8_t *)arg + off, n);
	return 0;
}

/* Ratio and speed of deltas of data against base (n bytes each). */
static int bench_delta(const uint8_t *data, const uint8_t *base, size_t n, enum dtype dt)
{
	static const char *const kinds[] = {"", "xor", "sub"};
	int in = memfd_create("in", 0), out = memfd_create("out", 0), codec = 0, err = 0;
	struct codec_enc *e = NULL;
	uint8_t *back = malloc(n);

	if (in < 0 || out < 0 || !back || write(in, data, n) != (ssize_t)n || codec_enc_new(&e) < 0)
		return 1;
	for (int kind = CODEC_DELTA_XOR; kind <= CODEC_DELTA_SUB; kind++) {
		struct codec_base b = {read_base, (void *)base, n, {{0}}, NULL, 0};
		struct codec_reader *r = NULL;
		uint64_t stored = 0;
		double t0 = now(), t_enc, t_dec;

		ftruncate(out, 0);
		err = codec_encode_delta_fd(&codec, &stored, e, out, in, 0, n, dt, &b, kind);
		t_enc = now() - t0;
		if (err < 0 || codec != CODEC_DELTA) {
			printf("delta %-4s does not pay (%s)\n", kinds[kind],
			       err < 0 ? ck_errmsg() : "");
			continue;
		}
		if (codec_reader_open_fd(&r, out) < 0)
			return 1;
		codec_reader_set_base(r, read_base, (void *)base);
		t0 = now();
		err = codec_reader_read(r, back, n, 0);
		t_dec = now() - t0;
		if (err < 0 || memcmp(back, data, n) != 0) {
			fprintf(stderr, "delta decode mismatch: %s\n", ck_errmsg());
			return 1;
		}
		printf("delta %-4s ratio %.4f  enc %6.0f MB/s  dec %6.0f MB/s\n", kinds[kind],
		       (double)stored / (double)n, (double)n / 1e6 / t_enc,
		       (double)n / 1e6 / t_dec);
		codec_reader_free(r);
	}
	codec_enc_free(e);
	free(back);
	close(in);
	close(out);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 3) {
		int fd = open(argv[1], O_RDONLY);
		struct stat st;
		long off = argc > 3 ? atol(argv[3]) : 0;
		enum dtype dt = DT_INVALID;
		static const struct {
			const char *name;
			enum dtype dt;
		} names[] = {{"float32", DT_FLOAT32},
			     {"bfloat16", DT_BFLOAT16},
			     {"float16", DT_FLOAT16},
			     {"float64", DT_FLOAT64},
			     {"bytes", DT_INVALID}};
		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			if (strcmp(names[i].name, argv[2]) == 0)
				dt = names[i].dt;
		if (fd < 0 || fstat(fd, &st) < 0 || off < 0 || off >= st.st_size) {
			perror(argv[1]);
			return 1;
		}
		size_t n = (size_t)(st.st_size - off);
		uint8_t *buf = malloc(n);
		if (!buf || pread(fd, buf, n, off) != (ssize_t)n)
			return 1;
		int rc = bench(argv[2], buf, n, dt);
		if (argc > 4) {
			int bfd = open(argv[4], O_RDONLY);
			uint8_t *base = malloc(n);
			if (bfd < 0 || !base || pread(bfd, base, n, off) != (ssize_t)n) {
				perror(argv[4]);
				return 1;
			}
			rc |= bench_delta(buf, base, n, dt);
			free(base);
			close(bfd);
		}
		free(buf);
		close(fd);
		return rc;
	}

	size_t count = 16u << 20; /* elements */
	float *f = malloc(count * 4);
	uint16_t *b = malloc(count * 2);
	if (!f || !b)
		return 1;
	for (size_t i = 0; i < count; i++) {
		f[i] = (float)(normal() * 0.02);
		b[i] = to_bf16(f[i]);
	}
	printf("synthetic weights: normal, std 0.02\n");
	int rc = bench("float32", (uint8_t *)f, count * 4, DT_FLOAT32);
	rc |= bench("bfloat16", (uint8_t *)b, count * 2, DT_BFLOAT16);
	free(f);
	free(b);
	return rc;
}
