/*
 * codec.c: byte planes + zstd in independent chunks (the container format is
 * described in codec.h).
 *
 * Why planes: in trained weights the exponent bits of neighbouring elements
 * take few values (they compress well with zstd's Huffman-coded literals),
 * while the low mantissa bits are close to random (zstd cannot win there and
 * only costs time). Splitting bytes into planes lets each be compressed, or
 * stored raw, on its own merits (ZipNN, Hershcovitch et al. 2024).
 *
 * Speed: the encoder remembers per plane whether zstd paid in the previous
 * chunk; a plane that did not is stored raw without trying for the next few
 * chunks, so random mantissa bytes cost a copy, not a compression attempt.
 */
#include "codec.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* for ZSTD_c_literalCompressionMode; applied only when the library takes it */
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>

#include "../common/err.h"
#include "../common/hash.h"
#include "blob.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "codec.c assumes a little-endian host"
#endif

#define MAGIC	   "CKZ\1"
#define MAX_CHUNK  (16u << 20)
#define MAX_PLANES 8
#define RAW_FLAG   0x80000000u
#define ZSTD_LEVEL 1
/* A plane that did not pay is stored raw, untried, for this many chunks. */
#define SKIP_CHUNKS 8

/* Element size and float-ness, keyed on the enum, so the codec does not
 * depend on formats/tensor.c. */
static int float_elem_size(enum dtype dt, int *transform)
{
	*transform = 0;
	switch (dt) {
	case DT_FLOAT64: *transform = 1; return 8;
	case DT_FLOAT32: *transform = 1; return 4;
	case DT_BFLOAT16: *transform = 1; return 2;
	case DT_FLOAT16: return 2;
	case DT_FLOAT8_E4M3FN:
	case DT_FLOAT8_E5M2:
	case DT_FLOAT8_E4M3FNUZ:
	case DT_FLOAT8_E5M2FNUZ: return 1;
	default: return 0;
	}
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static uint32_t crc(const void *p, size_t n)
{
	return crc32_update(0, p, n);
}

static size_t entry_size(int planes)
{
	return 12 + 4 * (size_t)planes;
}

static int io_error(int e, const char *what)
{
	if (e == ENOSPC || e == EDQUOT)
		return ck_error(CK_ENOSPC, "blob store: out of disk space writing %s", what);
	return ck_error(CK_EIO, "blob store: writing %s: %s", what, strerror(e));
}

static int pwrite_all(int fd, const void *buf, size_t n, uint64_t off)
{
	const uint8_t *p = buf;

	while (n > 0) {
		ssize_t w = pwrite(fd, p, n, (off_t)off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return io_error(errno, "a compressed blob");
		}
		p += w;
		n -= (size_t)w;
		off += (uint64_t)w;
	}
	return 0;
}

/* Reads exactly n bytes; CK_ECORRUPT when the file ends first. */
static int pread_all(int fd, void *buf, size_t n, uint64_t off, const char *what)
{
	uint8_t *p = buf;

	while (n > 0) {
		ssize_t r = pread(fd, p, n, (off_t)off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return ck_error(CK_EIO, "%s: read at offset %llu: %s", what,
					(unsigned long long)off, strerror(errno));
		}
		if (r == 0)
			return ck_error(CK_ECORRUPT, "%s: file ends at offset %llu", what,
					(unsigned long long)off);
		p += r;
		n -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

/* ---- byte planes ---- */

/* Splits m elements of E bytes into E planes of m bytes each. */
static void planes_split(uint8_t *dst, const uint8_t *src, size_t m, int E, int transform)
{
	if (E == 4 && transform) {
		uint8_t *p0 = dst, *p1 = dst + m, *p2 = dst + 2 * m, *p3 = dst + 3 * m;
		for (size_t i = 0; i < m; i++) {
			uint32_t v;
			memcpy(&v, src + 4 * i, 4);
			uint32_t top = v >> 16;
			top = ((top << 1) | (top >> 15)) & 0xffff;
			p0[i] = (uint8_t)v;
			p1[i] = (uint8_t)(v >> 8);
			p2[i] = (uint8_t)top;
			p3[i] = (uint8_t)(top >> 8);
		}
		return;
	}
	if (E == 2) {
		uint8_t *p0 = dst, *p1 = dst + m;
		for (size_t i = 0; i < m; i++) {
			uint16_t v;
			memcpy(&v, src + 2 * i, 2);
			if (transform)
				v = (uint16_t)((v << 1) | (v >> 15));
			p0[i] = (uint8_t)v;
			p1[i] = (uint8_t)(v >> 8);
		}
		return;
	}
	for (size_t i = 0; i < m; i++) {
		const uint8_t *s = src + (size_t)E * i;
		for (int p = 0; p < E - 2; p++)
			dst[(size_t)p * m + i] = s[p];
		uint16_t top = (uint16_t)(s[E - 2] | s[E - 1] << 8);
		if (transform)
			top = (uint16_t)((top << 1) | (top >> 15));
		dst[(size_t)(E - 2) * m + i] = (uint8_t)top;
		dst[(size_t)(E - 1) * m + i] = (uint8_t)(top >> 8);
	}
}

/* The inverse of planes_split. */
static void planes_merge(uint8_t *dst, const uint8_t *src, size_t m, int E, int transform)
{
	if (E == 4 && transform) {
		const uint8_t *p0 = src, *p1 = src + m, *p2 = src + 2 * m, *p3 = src + 3 * m;
		for (size_t i = 0; i < m; i++) {
			uint32_t top = (uint32_t)p2[i] | (uint32_t)p3[i] << 8;
			top = ((top >> 1) | (top << 15)) & 0xffff;
			uint32_t v = (uint32_t)p0[i] | (uint32_t)p1[i] << 8 | top << 16;
			memcpy(dst + 4 * i, &v, 4);
		}
		return;
	}
	if (E == 2) {
		const uint8_t *p0 = src, *p1 = src + m;
		for (size_t i = 0; i < m; i++) {
			uint16_t v = (uint16_t)(p0[i] | p1[i] << 8);
			if (transform)
				v = (uint16_t)((v >> 1) | (v << 15));
			memcpy(dst + 2 * i, &v, 2);
		}
		return;
	}
	for (size_t i = 0; i < m; i++) {
		uint8_t *d = dst + (size_t)E * i;
		for (int p = 0; p < E - 2; p++)
			d[p] = src[(size_t)p * m + i];
		uint16_t top =
		    (uint16_t)(src[(size_t)(E - 2) * m + i] | src[(size_t)(E - 1) * m + i] << 8);
		if (transform)
			top = (uint16_t)((top >> 1) | (top << 15));
		d[E - 2] = (uint8_t)top;
		d[E - 1] = (uint8_t)(top >> 8);
	}
}

/* ---- deltas ---- */

/* One width of delta_apply: T an unsigned type of BITS bits. */
#define DELTA_LOOP(T, BITS)                                                                        \
	for (size_t i = 0; i < m; i++) {                                                           \
		T x, y, d;                                                                         \
		memcpy(&x, v + sizeof(T) * i, sizeof(T));                                          \
		memcpy(&y, b + sizeof(T) * i, sizeof(T));                                          \
		if (undo) {                                                                        \
			d = (T)((T)((T)(x >> 1) ^ (T)(0u - (T)(x & 1u))) + y);                     \
		} else {                                                                           \
			d = (T)(x - y);                                                            \
			d = (T)((T)(d << 1) ^ (T)(0u - (T)(d >> (BITS - 1))));                     \
		}                                                                                  \
		memcpy(v + sizeof(T) * i, &d, sizeof(T));                                          \
	}

/* v[i] (m elements of E bytes) becomes its delta from b[i] of the kind, or
 * with undo, the element again from that delta. */
static void delta_apply(uint8_t *v, const uint8_t *b, size_t m, int E, int kind, int undo)
{
	if (kind == CODEC_DELTA_XOR) {
		for (size_t i = 0; i < m * (size_t)E; i++)
			v[i] ^= b[i];
		return;
	}
	switch (E) {
	case 2: DELTA_LOOP(uint16_t, 16) break;
	case 4: DELTA_LOOP(uint32_t, 32) break;
	default: DELTA_LOOP(uint64_t, 64) break;
	}
}

#undef DELTA_LOOP

static size_t chain_ext_size(int nchain)
{
	return nchain ? 8 + 32 * (size_t)nchain : 0;
}

/* ---- encoder ---- */

struct codec_enc {
	ZSTD_CCtx *cctx;  /* zstd -1, for plain zstd */
	ZSTD_CCtx *plane; /* tuned for byte planes */
	uint8_t *in;	  /* one raw chunk */
	uint8_t *planes;  /* the chunk split into planes */
	uint8_t *out;	  /* the encoded chunk */
	uint8_t *base;	  /* a delta's base chunk (made on the first delta) */
	size_t out_cap;
	int skip[MAX_PLANES]; /* chunks left to store plane p raw untried */
};

int codec_enc_new(struct codec_enc **out)
{
	struct codec_enc *e = calloc(1, sizeof(*e));

	*out = NULL;
	if (!e)
		return ck_error(CK_ENOMEM, "codec: out of memory");
	e->out_cap = ZSTD_compressBound(CODEC_CHUNK_SIZE) + 64 * MAX_PLANES;
	e->cctx = ZSTD_createCCtx();
	e->plane = ZSTD_createCCtx();
	e->in = malloc(CODEC_CHUNK_SIZE);
	e->planes = malloc(CODEC_CHUNK_SIZE);
	e->out = malloc(e->out_cap);
	if (!e->cctx || !e->plane || !e->in || !e->planes || !e->out) {
		codec_enc_free(e);
		return ck_error(CK_ENOMEM, "codec: out of memory");
	}
	ZSTD_CCtx_setParameter(e->cctx, ZSTD_c_compressionLevel, ZSTD_LEVEL);
	ZSTD_CCtx_setParameter(e->cctx, ZSTD_c_checksumFlag, 1);
	/* A byte plane is a string of nearly independent symbols: its gain is
	 * in Huffman-coded literals, not matches. Long minimum matches and a
	 * tiny hash table make zstd a near Huffman-only coder: on exponent
	 * planes 3-4x faster than level 1, decoding 2x faster, and smaller. */
	ZSTD_CCtx_setParameter(e->plane, ZSTD_c_checksumFlag, 1);
	if (ZSTD_isError(ZSTD_CCtx_setParameter(e->plane, ZSTD_c_compressionLevel, -1)) ||
	    ZSTD_isError(
		ZSTD_CCtx_setParameter(e->plane, ZSTD_c_literalCompressionMode, ZSTD_ps_enable)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(e->plane, ZSTD_c_minMatch, 7)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(e->plane, ZSTD_c_hashLog, 6)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(e->plane, ZSTD_c_targetLength, 64))) {
		ZSTD_CCtx_reset(e->plane, ZSTD_reset_parameters);
		ZSTD_CCtx_setParameter(e->plane, ZSTD_c_compressionLevel, ZSTD_LEVEL);
		ZSTD_CCtx_setParameter(e->plane, ZSTD_c_checksumFlag, 1);
	}
	*out = e;
	return 0;
}

void codec_enc_free(struct codec_enc *e)
{
	if (!e)
		return;
	ZSTD_freeCCtx(e->cctx);
	ZSTD_freeCCtx(e->plane);
	free(e->in);
	free(e->planes);
	free(e->out);
	free(e->base);
	free(e);
}

static int pays(size_t stored, size_t raw)
{
	return stored < raw - raw / 32; /* below ~97% */
}

/* The bytes at the start of a blob's first chunk whose delta and own
 * encoding decide whether a delta is made: an eighth of the chunk, so a
 * delta that does not pay (most of a training run's tensors against the
 * last epoch's, when every weight moved) costs an eighth of a chunk twice
 * encoded and never the whole chunk (a DCP save of 537 MB spent 0.2
 * CPU-seconds on whole-chunk trials, bench/RESULTS.md). */
#define DELTA_TRIAL (128u << 10)

/* Whether a delta of `delta` bytes is worth storing instead of the `whole`
 * bytes of the blob's own encoding: only when it saves a sixteenth. A delta
 * costs more than its size: it is encoded and read 2-4x slower than a whole
 * blob (its base is decoded with it, through the base's own chain), and it
 * spends a step of the chain. Measured: float32 weights shifted by a
 * constant (x + 2 against x + 1, as bench/dcp_bench.py's saves are) give a
 * delta 0.991 of the whole encoding, which cost their upload 2.2
 * CPU-seconds per 537 MB to save 0.9%: now stored whole. The store of
 * examples/train_digits.py's 8 epochs (`BENCH_ONLY=run make bench`) is
 * 0.6994 of raw with any smaller delta kept, 0.7001 with this rule, 0.7091
 * with a tenth. */
static int delta_pays(size_t delta, size_t whole)
{
	return delta < whole - whole / 16;
}

/* Encodes n raw bytes (e->in) as E planes into e->out; lens[p] get the
 * table's length words. Returns the encoded size in *len. A delta's planes
 * have runs of zero bytes (elements that did not change), which zstd's
 * matches catch and its literals alone do not: they are compressed with the
 * plain zstd -1 context (1.5-2.5% smaller on a training run's epochs, see
 * bench/RESULTS.md). */
static int encode_chunk(size_t *len, uint32_t *lens, struct codec_enc *e, size_t n, int E,
			int transform, int trial, int delta)
{
	size_t m = n / (size_t)E, pos = 0;
	const uint8_t *src = e->in;

	if (E > 1) {
		planes_split(e->planes, e->in, m, E, transform);
		src = e->planes;
	}
	for (int p = 0; p < E; p++) {
		const uint8_t *plane = src + (size_t)p * m;
		size_t z = 0;

		if (trial || e->skip[p] == 0) {
			z = ZSTD_compress2(E > 1 && !delta ? e->plane : e->cctx, e->out + pos,
					   e->out_cap - pos, plane, m);
			if (ZSTD_isError(z))
				return ck_error(CK_EIO, "codec: zstd: %s", ZSTD_getErrorName(z));
			if (pays(z, m)) {
				lens[p] = (uint32_t)z;
				pos += z;
				e->skip[p] = 0;
				continue;
			}
			e->skip[p] = SKIP_CHUNKS;
		} else {
			e->skip[p]--;
		}
		memcpy(e->out + pos, plane, m);
		lens[p] = (uint32_t)m | RAW_FLAG;
		pos += m;
	}
	*len = pos;
	return 0;
}

/* codec_encode_fd, or with base (not NULL) codec_encode_delta_fd. */
static int encode(int *codec, uint64_t *stored_size, struct codec_enc *e, int out_fd, int in_fd,
		  uint64_t in_off, uint64_t raw_size, enum dtype hint,
		  const struct codec_base *base, int kind)
{
	int transform = 0, E = float_elem_size(hint, &transform), nchain = 0, err;
	uint64_t nchunks, table_off, data_off, done = 0;
	uint8_t hdr[CODEC_HEADER_SIZE + 8 + 32 * CODEC_MAX_CHAIN], ent[12 + 4 * MAX_PLANES];
	uint32_t lens[MAX_PLANES];
	size_t ext;

	*codec = CODEC_RAW;
	*stored_size = raw_size;
	if (E < 2 || raw_size % (uint64_t)E != 0) {
		E = 1;
		transform = 0;
	}
	if (base) {
		nchain = base->nchain + 1;
		if (E < 2 || base->raw_size != raw_size || nchain > CODEC_MAX_CHAIN ||
		    (kind != CODEC_DELTA_XOR && kind != CODEC_DELTA_SUB))
			return 0;
		transform = 0;
		if (!e->base && !(e->base = malloc(CODEC_CHUNK_SIZE)))
			return ck_error(CK_ENOMEM, "codec: out of memory");
	}
	if (raw_size == 0)
		return 0;
	nchunks = (raw_size + CODEC_CHUNK_SIZE - 1) / CODEC_CHUNK_SIZE;
	if (nchunks > UINT32_MAX)
		return 0; /* 4 PiB: not worth a format of its own */
	ext = chain_ext_size(nchain);
	table_off = CODEC_HEADER_SIZE + ext;
	data_off = table_off + nchunks * entry_size(E);
	memset(e->skip, 0, sizeof(e->skip));

	for (uint64_t ci = 0; ci < nchunks; ci++) {
		size_t n = (size_t)(raw_size - done < CODEC_CHUNK_SIZE ? raw_size - done
								       : CODEC_CHUNK_SIZE);
		size_t len = 0;

		if ((err = pread_all(in_fd, e->in, n, in_off + done, "blob source")) < 0)
			return err;
		if (base && ci == 0) {
			/* the start of the first chunk decides: a delta only when
			 * it is a sixteenth smaller than that sample's own
			 * encoding (delta_pays) */
			size_t tn = n < DELTA_TRIAL ? n : DELTA_TRIAL, whole = 0, dl = 0;
			int t;
			float_elem_size(hint, &t);
			tn -= tn % (size_t)E;
			if ((err = encode_chunk(&whole, lens, e, tn, E, t, 1, 0)) < 0 ||
			    (err = base->read(base->arg, e->base, tn, 0)) < 0)
				return err;
			delta_apply(e->in, e->base, tn / (size_t)E, E, kind, 0);
			err = encode_chunk(&dl, lens, e, tn, E, transform, 1, 1);
			delta_apply(e->in, e->base, tn / (size_t)E, E, kind, 1);
			memset(e->skip, 0, sizeof(e->skip));
			if (err < 0)
				return err;
			if (!delta_pays(dl, whole))
				return 0;
		}
		if (base) {
			if ((err = base->read(base->arg, e->base, n, done)) < 0)
				return err;
			delta_apply(e->in, e->base, n / (size_t)E, E, kind, 0);
		}
		if ((err = encode_chunk(&len, lens, e, n, E, transform, ci == 0, base != NULL)) < 0)
			return err;
		/* The first chunk is the sample: if it does not pay, store raw. */
		if (ci == 0 && !pays(len, n))
			return 0;
		put64(ent, data_off);
		for (int p = 0; p < E; p++)
			put32(ent + 8 + 4 * p, lens[p]);
		put32(ent + 8 + 4 * E, crc(ent, 8 + 4 * (size_t)E));
		if ((err = pwrite_all(out_fd, e->out, len, data_off)) < 0)
			return err;
		if ((err = pwrite_all(out_fd, ent, entry_size(E), table_off)) < 0)
			return err;
		table_off += entry_size(E);
		data_off += len;
		done += n;
	}
	if (!pays(data_off, raw_size))
		return 0;

	memcpy(hdr, MAGIC, 4);
	hdr[4] = base ? CODEC_DELTA : E == 1 ? CODEC_ZSTD : CODEC_PLANES;
	hdr[5] = (uint8_t)E;
	hdr[6] = (uint8_t)transform;
	hdr[7] = (uint8_t)(base ? kind : 0);
	put32(hdr + 8, CODEC_CHUNK_SIZE);
	put32(hdr + 12, (uint32_t)nchunks);
	put64(hdr + 16, raw_size);
	put32(hdr + 24, 0);
	put32(hdr + 28, crc(hdr, 28));
	if (base) {
		uint8_t *x = hdr + CODEC_HEADER_SIZE;
		memset(x, 0, 4);
		x[0] = (uint8_t)nchain;
		memcpy(x + 4, base->hash.b, 32);
		for (int i = 0; i < base->nchain; i++)
			memcpy(x + 36 + 32 * i, base->chain[i].b, 32);
		put32(x + ext - 4, crc(x, ext - 4));
	}
	if ((err = pwrite_all(out_fd, hdr, CODEC_HEADER_SIZE + ext, 0)) < 0)
		return err;
	*codec = hdr[4];
	*stored_size = data_off;
	return 0;
}

int codec_encode_fd(int *codec, uint64_t *stored_size, struct codec_enc *e, int out_fd, int in_fd,
		    uint64_t in_off, uint64_t raw_size, enum dtype hint)
{
	return encode(codec, stored_size, e, out_fd, in_fd, in_off, raw_size, hint, NULL, 0);
}

int codec_encode_delta_fd(int *codec, uint64_t *stored_size, struct codec_enc *e, int out_fd,
			  int in_fd, uint64_t in_off, uint64_t raw_size, enum dtype hint,
			  const struct codec_base *base, int kind)
{
	return encode(codec, stored_size, e, out_fd, in_fd, in_off, raw_size, hint, base, kind);
}

/* ---- reader ---- */

struct codec_reader {
	codec_read_fn read;
	void *arg;
	uint64_t file_size;
	uint64_t raw_size;
	uint32_t chunk_size;
	uint32_t nchunks;
	int codec, E, transform;
	int kind, nchain;		    /* a delta's (CODEC_DELTA) */
	struct hash chain[CODEC_MAX_CHAIN]; /* its base first */
	uint64_t table_off;		    /* where the chunk table starts */
	codec_read_fn base_read;	    /* the base's raw bytes */
	void *base_arg;
	uint8_t *base; /* one chunk of them */
	ZSTD_DCtx *dctx;
	uint8_t *comp; /* one chunk's stored bytes */
	size_t comp_cap;
	uint8_t *planes; /* one chunk's planes (E > 1) */
	uint8_t *cache;	 /* the last chunk decoded for a partial read */
	int64_t cached;	 /* its index, -1 when none */
};

/* A delta's kind and chain (codec.h), after the header. */
static int chain_read(struct codec_reader *r)
{
	uint8_t x[8 + 32 * CODEC_MAX_CHAIN];
	size_t ext;
	int err;

	if (r->kind != CODEC_DELTA_XOR && r->kind != CODEC_DELTA_SUB)
		return ck_error(CK_ECORRUPT, "codec: unknown delta kind %d (offset 7)", r->kind);
	if (r->transform)
		return ck_error(CK_ECORRUPT, "codec: delta with transform %d (offset 6)",
				r->transform);
	if (r->file_size < CODEC_HEADER_SIZE + 40)
		return ck_error(CK_ECORRUPT,
				"codec: delta container without its chain (offset 32)");
	if ((err = r->read(r->arg, x, 4, CODEC_HEADER_SIZE)) < 0)
		return err;
	if (x[0] < 1 || x[0] > CODEC_MAX_CHAIN || x[1] || x[2] || x[3])
		return ck_error(CK_ECORRUPT, "codec: delta chain of length %u (offset 32)", x[0]);
	r->nchain = x[0];
	ext = chain_ext_size(r->nchain);
	if (CODEC_HEADER_SIZE + ext > r->file_size)
		return ck_error(CK_ECORRUPT, "codec: delta chain past end of file (offset 32)");
	if ((err = r->read(r->arg, x, ext, CODEC_HEADER_SIZE)) < 0)
		return err;
	if (get32(x + ext - 4) != crc(x, ext - 4))
		return ck_error(CK_ECORRUPT, "codec: delta chain checksum mismatch (offset %zu)",
				CODEC_HEADER_SIZE + ext - 4);
	for (int i = 0; i < r->nchain; i++)
		memcpy(r->chain[i].b, x + 4 + 32 * i, 32);
	r->table_off = CODEC_HEADER_SIZE + ext;
	return 0;
}

/* codec_reader_open_fd's callback: arg is the fd. */
static int read_fd(void *arg, void *buf, size_t n, uint64_t off)
{
	return pread_all((int)(intptr_t)arg, buf, n, off, "codec container");
}

int codec_reader_open_fd(struct codec_reader **out, int fd)
{
	off_t end = lseek(fd, 0, SEEK_END);

	*out = NULL;
	if (end < 0)
		return ck_error(CK_EIO, "codec: size of container: %s", strerror(errno));
	return codec_reader_open(out, read_fd, (void *)(intptr_t)fd, (uint64_t)end);
}

int codec_reader_open(struct codec_reader **out, codec_read_fn read, void *arg, uint64_t size)
{
	struct codec_reader *r = NULL;
	uint8_t hdr[CODEC_HEADER_SIZE];
	int err;

	*out = NULL;
	if (size < CODEC_HEADER_SIZE)
		return ck_error(CK_ECORRUPT,
				"codec: container of %llu bytes is shorter than its header",
				(unsigned long long)size);
	if ((err = read(arg, hdr, sizeof(hdr), 0)) < 0)
		return err;
	if (memcmp(hdr, MAGIC, 4) != 0)
		return ck_error(CK_ECORRUPT, "codec: bad magic at offset 0");
	if (get32(hdr + 28) != crc(hdr, 28))
		return ck_error(CK_ECORRUPT, "codec: header checksum mismatch (offset 28)");

	r = calloc(1, sizeof(*r));
	if (!r)
		return ck_error(CK_ENOMEM, "codec: out of memory");
	r->read = read;
	r->arg = arg;
	r->file_size = size;
	r->codec = hdr[4];
	r->E = hdr[5];
	r->transform = hdr[6];
	r->kind = hdr[7];
	r->chunk_size = get32(hdr + 8);
	r->nchunks = get32(hdr + 12);
	r->raw_size = get64(hdr + 16);
	r->cached = -1;
	r->table_off = CODEC_HEADER_SIZE;

	if (r->codec == CODEC_ZSTD) {
		if (r->E != 1 || r->transform != 0) {
			err = ck_error(CK_ECORRUPT,
				       "codec: zstd container with %d planes (offset 5)", r->E);
			goto out;
		}
	} else if (r->codec == CODEC_PLANES || r->codec == CODEC_DELTA) {
		if ((r->E != 2 && r->E != 4 && r->E != 8) || r->transform > 1) {
			err = ck_error(CK_ECORRUPT, "codec: bad plane count %d (offset 5)", r->E);
			goto out;
		}
		if (r->codec == CODEC_DELTA && (err = chain_read(r)) < 0)
			goto out;
	} else {
		err = ck_error(CK_ECORRUPT, "codec: unknown codec %d (offset 4)", r->codec);
		goto out;
	}
	if (r->chunk_size == 0 || r->chunk_size > MAX_CHUNK ||
	    r->chunk_size % (uint32_t)r->E != 0) {
		err = ck_error(CK_ECORRUPT, "codec: bad chunk size %u (offset 8)", r->chunk_size);
		goto out;
	}
	if (r->raw_size % (uint64_t)r->E != 0 ||
	    (r->raw_size + r->chunk_size - 1) / r->chunk_size != r->nchunks ||
	    r->raw_size > UINT64_MAX - r->chunk_size) {
		err =
		    ck_error(CK_ECORRUPT, "codec: raw size %llu does not fit %u chunks (offset 12)",
			     (unsigned long long)r->raw_size, r->nchunks);
		goto out;
	}
	if (r->table_off + (uint64_t)r->nchunks * entry_size(r->E) > r->file_size) {
		err = ck_error(CK_ECORRUPT,
			       "codec: chunk table of %u entries past end of file (%llu bytes)",
			       r->nchunks, (unsigned long long)r->file_size);
		goto out;
	}
	r->dctx = ZSTD_createDCtx();
	if (!r->dctx) {
		err = ck_error(CK_ENOMEM, "codec: out of memory");
		goto out;
	}
	*out = r;
	return 0;
out:
	codec_reader_free(r);
	return err;
}

void codec_reader_free(struct codec_reader *r)
{
	if (!r)
		return;
	ZSTD_freeDCtx(r->dctx);
	free(r->comp);
	free(r->planes);
	free(r->cache);
	free(r->base);
	free(r);
}

uint64_t codec_reader_size(const struct codec_reader *r)
{
	return r->raw_size;
}

int codec_reader_codec(const struct codec_reader *r)
{
	return r->codec;
}

int codec_reader_chain(const struct codec_reader *r, struct hash *chain)
{
	if (chain)
		memcpy(chain, r->chain, sizeof(r->chain[0]) * (size_t)r->nchain);
	return r->codec == CODEC_DELTA ? r->nchain : 0;
}

void codec_reader_set_base(struct codec_reader *r, codec_read_fn read, void *arg)
{
	r->base_read = read;
	r->base_arg = arg;
}

/* Decodes chunk ci (n raw bytes) into dst. */
static int decode_chunk(struct codec_reader *r, uint8_t *dst, uint32_t ci, size_t n)
{
	uint8_t ent[12 + 4 * MAX_PLANES];
	size_t esz = entry_size(r->E), m = n / (size_t)r->E, total = 0, pos = 0;
	uint64_t eoff = r->table_off + (uint64_t)ci * esz, doff;
	uint8_t *pl;
	int err;

	if ((err = r->read(r->arg, ent, esz, eoff)) < 0)
		return err;
	if (get32(ent + esz - 4) != crc(ent, esz - 4))
		return ck_error(CK_ECORRUPT,
				"codec: chunk %u: table entry checksum mismatch (offset %llu)", ci,
				(unsigned long long)eoff);
	doff = get64(ent);
	for (int p = 0; p < r->E; p++) {
		uint32_t w = get32(ent + 8 + 4 * p), len = w & ~RAW_FLAG;
		if ((w & RAW_FLAG) ? len != m : (len == 0 || len > ZSTD_compressBound(m)))
			return ck_error(CK_ECORRUPT,
					"codec: chunk %u plane %d: bad length %u (offset %llu)", ci,
					p, len, (unsigned long long)(eoff + 8 + 4 * p));
		total += len;
	}
	if (doff < r->table_off + (uint64_t)r->nchunks * esz || doff > r->file_size ||
	    total > r->file_size - doff)
		return ck_error(CK_ECORRUPT,
				"codec: chunk %u: data at %llu+%zu outside the file (offset %llu)",
				ci, (unsigned long long)doff, total, (unsigned long long)eoff);
	if (total > r->comp_cap) {
		uint8_t *c = realloc(r->comp, total);
		if (!c)
			return ck_error(CK_ENOMEM, "codec: out of memory");
		r->comp = c;
		r->comp_cap = total;
	}
	if ((err = r->read(r->arg, r->comp, total, doff)) < 0)
		return err;
	if (r->E > 1 && !r->planes && !(r->planes = malloc(r->chunk_size)))
		return ck_error(CK_ENOMEM, "codec: out of memory");
	pl = r->E > 1 ? r->planes : dst;
	for (int p = 0; p < r->E; p++) {
		uint32_t w = get32(ent + 8 + 4 * p), len = w & ~RAW_FLAG;
		uint8_t *d = pl + (size_t)p * m;
		if (w & RAW_FLAG) {
			memcpy(d, r->comp + pos, m);
		} else {
			size_t z = ZSTD_decompressDCtx(r->dctx, d, m, r->comp + pos, len);
			if (ZSTD_isError(z) || z != m)
				return ck_error(
				    CK_ECORRUPT, "codec: chunk %u plane %d at offset %llu: %s", ci,
				    p, (unsigned long long)(doff + pos),
				    ZSTD_isError(z) ? ZSTD_getErrorName(z) : "short frame");
		}
		pos += len;
	}
	if (r->E > 1)
		planes_merge(dst, r->planes, m, r->E, r->transform);
	if (r->codec == CODEC_DELTA) {
		if (!r->base_read)
			return ck_error(CK_ECORRUPT, "codec: a delta read without its base");
		if (!r->base && !(r->base = malloc(r->chunk_size)))
			return ck_error(CK_ENOMEM, "codec: out of memory");
		if ((err = r->base_read(r->base_arg, r->base, n, (uint64_t)ci * r->chunk_size)) < 0)
			return err;
		delta_apply(dst, r->base, m, r->E, r->kind, 1);
	}
	return 0;
}

int codec_reader_read(struct codec_reader *r, void *buf, size_t n, uint64_t off)
{
	uint8_t *d = buf;
	int err;

	if (off > r->raw_size || n > r->raw_size - off)
		return ck_error(CK_ECORRUPT,
				"codec: read of %zu bytes at %llu past the end (%llu bytes)", n,
				(unsigned long long)off, (unsigned long long)r->raw_size);
	while (n > 0) {
		uint32_t ci = (uint32_t)(off / r->chunk_size);
		uint64_t start = (uint64_t)ci * r->chunk_size;
		size_t clen = (size_t)(r->raw_size - start < r->chunk_size ? r->raw_size - start
									   : r->chunk_size);
		size_t within = (size_t)(off - start);
		size_t take = clen - within < n ? clen - within : n;

		if (within == 0 && take == clen && r->cached != (int64_t)ci) {
			if ((err = decode_chunk(r, d, ci, clen)) < 0)
				return err;
		} else {
			if (r->cached != (int64_t)ci) {
				if (!r->cache && !(r->cache = malloc(r->chunk_size)))
					return ck_error(CK_ENOMEM, "codec: out of memory");
				r->cached = -1;
				if ((err = decode_chunk(r, r->cache, ci, clen)) < 0)
					return err;
				r->cached = ci;
			}
			memcpy(d, r->cache + within, take);
		}
		d += take;
		off += take;
		n -= take;
	}
	return 0;
}
