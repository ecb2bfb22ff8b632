/*
 * sig.h: finding a 4-byte zip signature in a buffer, for the scanners that
 * pass over tensor bytes looking for one (zip_scan.c's data descriptors,
 * items.c's end records).
 */
#ifndef CK_SIG_H
#define CK_SIG_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* The first place the 4 bytes sig stand in p[0..n), or NULL. glibc's
 * memmem goes at about 2.5 GB/s over tensor bytes (a tenth of an upload's
 * CPU); four shifted byte compares, 16 positions at a time, go several
 * times faster. */
static inline const uint8_t *sig_find(const uint8_t *p, size_t n, const uint8_t sig[4])
{
	size_t i = 0;
#ifdef __SSE2__
	const __m128i c0 = _mm_set1_epi8((char)sig[0]), c1 = _mm_set1_epi8((char)sig[1]),
		      c2 = _mm_set1_epi8((char)sig[2]), c3 = _mm_set1_epi8((char)sig[3]);

	for (; i + 19 <= n; i += 16) { /* positions i..i+15, bytes up to i+18 */
		__m128i m = _mm_and_si128(
		    _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(p + i)), c0),
		    _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(p + i + 1)), c1));
		m = _mm_and_si128(
		    m, _mm_and_si128(
			   _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(p + i + 2)), c2),
			   _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(p + i + 3)), c3)));
		int bits = _mm_movemask_epi8(m);
		if (bits)
			return p + i + __builtin_ctz((unsigned)bits);
	}
#endif
	return memmem(p + i, n - i, sig, 4);
}

#endif
