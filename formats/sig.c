/*
 * sig.c: sig_find (sig.h).
 *
 * glibc's memmem went at about 2.5 GB/s over tensor bytes; four shifted
 * byte compares 16 positions at a time about 3 times faster; a pair of
 * compares on the signature's first two bytes, 64 positions at a time,
 * faster again (tensor bytes hold "PK" at about 1 position in 65,536, so
 * the check of the other two bytes almost never runs). The AVX2 variant is
 * chosen at run time.
 */
#include "sig.h"

#include <string.h>
#ifdef __x86_64__
#include <immintrin.h>
#endif

/* Positions from i on, one by one. */
static const uint8_t *tail(const uint8_t *p, size_t n, size_t i, const uint8_t sig[4])
{
	return n - i >= 4 ? memmem(p + i, n - i, sig, 4) : NULL;
}

/* The first position of mask m (bit k: position i + k) where all 4 bytes
 * match, or NULL. */
static inline const uint8_t *confirm(const uint8_t *p, size_t i, uint64_t m, const uint8_t sig[4])
{
	while (m) {
		size_t k = i + (size_t)__builtin_ctzll(m);
		if (p[k + 2] == sig[2] && p[k + 3] == sig[3])
			return p + k;
		m &= m - 1;
	}
	return NULL;
}

#ifdef __x86_64__
__attribute__((target("avx2"))) static const uint8_t *find_avx2(const uint8_t *p, size_t n,
								const uint8_t sig[4])
{
	const __m256i a = _mm256_set1_epi8((char)sig[0]), b = _mm256_set1_epi8((char)sig[1]);
	size_t i = 0;

	for (; i + 67 <= n; i += 64) { /* positions i..i+63, bytes up to i+66 */
		__m256i x0 = _mm256_loadu_si256((const __m256i *)(p + i));
		__m256i y0 = _mm256_loadu_si256((const __m256i *)(p + i + 1));
		__m256i x1 = _mm256_loadu_si256((const __m256i *)(p + i + 32));
		__m256i y1 = _mm256_loadu_si256((const __m256i *)(p + i + 33));
		__m256i m0 = _mm256_and_si256(_mm256_cmpeq_epi8(x0, a), _mm256_cmpeq_epi8(y0, b));
		__m256i m1 = _mm256_and_si256(_mm256_cmpeq_epi8(x1, a), _mm256_cmpeq_epi8(y1, b));
		if (_mm256_testz_si256(_mm256_or_si256(m0, m1), _mm256_or_si256(m0, m1)))
			continue;
		uint64_t m = (uint32_t)_mm256_movemask_epi8(m0) |
			     (uint64_t)(uint32_t)_mm256_movemask_epi8(m1) << 32;
		const uint8_t *hit = confirm(p, i, m, sig);
		if (hit)
			return hit;
	}
	return tail(p, n, i, sig);
}

static const uint8_t *find_sse2(const uint8_t *p, size_t n, const uint8_t sig[4])
{
	const __m128i a = _mm_set1_epi8((char)sig[0]), b = _mm_set1_epi8((char)sig[1]);
	size_t i = 0;

	for (; i + 35 <= n; i += 32) { /* positions i..i+31, bytes up to i+34 */
		__m128i m0 =
		    _mm_and_si128(_mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(p + i)), a),
				  _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(p + i + 1)), b));
		__m128i m1 = _mm_and_si128(
		    _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(p + i + 16)), a),
		    _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(p + i + 17)), b));
		uint64_t m = (uint32_t)_mm_movemask_epi8(m0) |
			     (uint64_t)(uint32_t)_mm_movemask_epi8(m1) << 16;
		if (!m)
			continue;
		const uint8_t *hit = confirm(p, i, m, sig);
		if (hit)
			return hit;
	}
	return tail(p, n, i, sig);
}

const uint8_t *sig_find(const uint8_t *p, size_t n, const uint8_t sig[4])
{
	static int avx2 = -1; /* races write the same value */

	if (avx2 < 0) {
		__builtin_cpu_init();
		avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
	}
	return avx2 ? find_avx2(p, n, sig) : find_sse2(p, n, sig);
}

const uint8_t *sig_find_variant(int avx2, const uint8_t *p, size_t n, const uint8_t sig[4])
{
	__builtin_cpu_init();
	return avx2 && __builtin_cpu_supports("avx2") ? find_avx2(p, n, sig) : find_sse2(p, n, sig);
}
#else
const uint8_t *sig_find(const uint8_t *p, size_t n, const uint8_t sig[4])
{
	return tail(p, n, 0, sig);
}

const uint8_t *sig_find_variant(int avx2, const uint8_t *p, size_t n, const uint8_t sig[4])
{
	return tail(p, n, 0, sig);
}
#endif
