/*
 * sig.h: finding a 4-byte zip signature in a buffer, for the scanners that
 * pass over tensor bytes looking for one (zip_scan.c's data descriptors,
 * items.c's end records).
 */
#ifndef CK_SIG_H
#define CK_SIG_H

#include <stddef.h>
#include <stdint.h>

/* The first place the 4 bytes sig stand in p[0..n), or NULL. An upload's
 * tensor bytes pass through it twice (the hashing scanner and the writer's,
 * api/upload.c), so it is fast: the first two bytes are compared at 64
 * positions at a time (AVX2 where the CPU has it, else SSE2) and only the
 * rare pairs that match are checked further. */
const uint8_t *sig_find(const uint8_t *p, size_t n, const uint8_t sig[4]);

/* sig_find with its variant chosen (1: AVX2, where the CPU has it; 0: the
 * other), for the tests. */
const uint8_t *sig_find_variant(int avx2, const uint8_t *p, size_t n, const uint8_t sig[4]);

#endif
