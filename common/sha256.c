/*
 * sha256.c: SHA-256 (FIPS 180-4) on the SHA extensions (see sha256.h).
 *
 * The block function is the usual one for these instructions: the state
 * as two registers (ABEF, CDGH), four message words per register, each
 * group of four rounds two sha256rnds2, the schedule by sha256msg1/msg2.
 * blocks2 runs two such chains interleaved instruction by instruction, so
 * each one's rounds fill the other's latency.
 */
#include "sha256.h"

#include <string.h>

#include <cpuid.h>
#include <immintrin.h>

#define NI __attribute__((target("sha,sse4.1,ssse3")))

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

int sha256_ni(void)
{
	static int known = -1; /* threads racing here compute the same answer */
	unsigned a, b, c, d;
	int v = __atomic_load_n(&known, __ATOMIC_RELAXED);

	if (v >= 0)
		return v;
	int sse41 = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_SSE4_1) && (c & bit_SSSE3);
	int sha = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_SHA);
	v = sse41 && sha;
	__atomic_store_n(&known, v, __ATOMIC_RELAXED);
	return v;
}

/* The state words into the (ABEF, CDGH) registers, and back. */
NI static inline void load_state(const uint32_t s[8], __m128i *abef, __m128i *cdgh)
{
	__m128i t = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&s[0]), 0xB1);
	__m128i u = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&s[4]), 0x1B);

	*abef = _mm_alignr_epi8(t, u, 8);
	*cdgh = _mm_blend_epi16(u, t, 0xF0);
}

NI static inline void store_state(uint32_t s[8], __m128i abef, __m128i cdgh)
{
	__m128i t = _mm_shuffle_epi32(abef, 0x1B);
	__m128i u = _mm_shuffle_epi32(cdgh, 0xB1);

	_mm_storeu_si128((__m128i *)&s[0], _mm_blend_epi16(t, u, 0xF0));
	_mm_storeu_si128((__m128i *)&s[4], _mm_alignr_epi8(u, t, 8));
}

#define BSWAP_MASK _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL)

/* The next four message words: w[i] from w[i-4..i-1] (i >= 4). */
NI static inline __m128i schedule(__m128i w0, __m128i w1, __m128i w2, __m128i w3)
{
	__m128i t = _mm_sha256msg1_epu32(w0, w1);

	t = _mm_add_epi32(t, _mm_alignr_epi8(w3, w2, 4));
	return _mm_sha256msg2_epu32(t, w3);
}

NI static void blocks1(uint32_t st[8], const uint8_t *p, size_t n)
{
	const __m128i mask = BSWAP_MASK;
	__m128i s0, s1;

	load_state(st, &s0, &s1);
	for (; n > 0; n--, p += 64) {
		__m128i a0 = s0, a1 = s1, w[4];
#pragma GCC unroll 16
		for (int i = 0; i < 16; i++) {
			if (i < 4)
				w[i] = _mm_shuffle_epi8(
				    _mm_loadu_si128((const __m128i *)(p + 16 * i)), mask);
			else
				w[i & 3] = schedule(w[i & 3], w[(i + 1) & 3], w[(i + 2) & 3],
						    w[(i + 3) & 3]);
			__m128i m =
			    _mm_add_epi32(w[i & 3], _mm_loadu_si128((const __m128i *)&K[4 * i]));
			s1 = _mm_sha256rnds2_epu32(s1, s0, m);
			s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(m, 0x0E));
		}
		s0 = _mm_add_epi32(s0, a0);
		s1 = _mm_add_epi32(s1, a1);
	}
	store_state(st, s0, s1);
}

/* n blocks of pa into sa and n blocks of pb into sb, interleaved. */
NI static void blocks2(uint32_t sa[8], const uint8_t *pa, uint32_t sb[8], const uint8_t *pb,
		       size_t n)
{
	const __m128i mask = BSWAP_MASK;
	__m128i s0, s1, t0, t1;

	load_state(sa, &s0, &s1);
	load_state(sb, &t0, &t1);
	for (; n > 0; n--, pa += 64, pb += 64) {
		__m128i a0 = s0, a1 = s1, b0 = t0, b1 = t1, w[4], v[4];
#pragma GCC unroll 16
		for (int i = 0; i < 16; i++) {
			if (i < 4) {
				w[i] = _mm_shuffle_epi8(
				    _mm_loadu_si128((const __m128i *)(pa + 16 * i)), mask);
				v[i] = _mm_shuffle_epi8(
				    _mm_loadu_si128((const __m128i *)(pb + 16 * i)), mask);
			} else {
				w[i & 3] = schedule(w[i & 3], w[(i + 1) & 3], w[(i + 2) & 3],
						    w[(i + 3) & 3]);
				v[i & 3] = schedule(v[i & 3], v[(i + 1) & 3], v[(i + 2) & 3],
						    v[(i + 3) & 3]);
			}
			__m128i k = _mm_loadu_si128((const __m128i *)&K[4 * i]);
			__m128i m = _mm_add_epi32(w[i & 3], k), q = _mm_add_epi32(v[i & 3], k);
			s1 = _mm_sha256rnds2_epu32(s1, s0, m);
			t1 = _mm_sha256rnds2_epu32(t1, t0, q);
			s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(m, 0x0E));
			t0 = _mm_sha256rnds2_epu32(t0, t1, _mm_shuffle_epi32(q, 0x0E));
		}
		s0 = _mm_add_epi32(s0, a0);
		s1 = _mm_add_epi32(s1, a1);
		t0 = _mm_add_epi32(t0, b0);
		t1 = _mm_add_epi32(t1, b1);
	}
	store_state(sa, s0, s1);
	store_state(sb, t0, t1);
}

void sha256_init(struct sha256 *c)
{
	static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
				       0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

	memcpy(c->s, iv, sizeof(iv));
	c->len = 0;
}

/* Completes c's buffered block from *p (when c has one begun and *n
 * bytes are enough; otherwise buffers them all): afterwards c's next
 * byte starts a block, or *n is 0. Does not count the bytes in c->len. */
static void top_up(struct sha256 *c, const uint8_t **p, size_t *n)
{
	size_t k = (size_t)(c->len % 64), t = 64 - k;

	if (k == 0)
		return;
	if (*n < t) {
		memcpy(c->buf + k, *p, *n);
		*p += *n;
		*n = 0;
		return;
	}
	memcpy(c->buf + k, *p, t);
	blocks1(c->s, c->buf, 1);
	*p += t;
	*n -= t;
}

/* Hashes the whole blocks of (p, n) into c and buffers the rest; c's next
 * byte starts a block. */
static void body(struct sha256 *c, const uint8_t *p, size_t n)
{
	if (n >= 64)
		blocks1(c->s, p, n / 64);
	memcpy(c->buf, p + (n & ~(size_t)63), n & 63);
}

void sha256_update(struct sha256 *c, const void *data, size_t n)
{
	const uint8_t *p = data;
	size_t m = n;

	top_up(c, &p, &m);
	if (m > 0)
		body(c, p, m);
	c->len += n;
}

void sha256_update2(struct sha256 *a, struct sha256 *b, const void *data, size_t n)
{
	const uint8_t *pa = data, *pb = data;
	size_t na = n, nb = n;

	top_up(a, &pa, &na);
	top_up(b, &pb, &nb);
	size_t k = (na < nb ? na : nb) / 64;
	if (k > 0) {
		blocks2(a->s, pa, b->s, pb, k);
		pa += 64 * k, na -= 64 * k;
		pb += 64 * k, nb -= 64 * k;
	}
	if (na > 0)
		body(a, pa, na);
	if (nb > 0)
		body(b, pb, nb);
	a->len += n;
	b->len += n;
}

void sha256_final(struct sha256 *c, uint8_t out[32])
{
	size_t k = (size_t)(c->len % 64);
	uint64_t bits = c->len * 8;

	c->buf[k++] = 0x80;
	if (k > 56) {
		memset(c->buf + k, 0, 64 - k);
		blocks1(c->s, c->buf, 1);
		k = 0;
	}
	memset(c->buf + k, 0, 56 - k);
	for (int i = 0; i < 8; i++)
		c->buf[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
	blocks1(c->s, c->buf, 1);
	for (int i = 0; i < 8; i++) {
		out[4 * i] = (uint8_t)(c->s[i] >> 24);
		out[4 * i + 1] = (uint8_t)(c->s[i] >> 16);
		out[4 * i + 2] = (uint8_t)(c->s[i] >> 8);
		out[4 * i + 3] = (uint8_t)c->s[i];
	}
}
