/*
 * vec.h: growing an array one element at a time.
 */
#ifndef CK_VEC_H
#define CK_VEC_H

#include <stddef.h>

/* An array of n elements of size bytes at p with room for *cap, made to
 * hold one more: p itself when it has room, else p grown (doubling from
 * first) and *cap updated. NULL when out of memory; p is then unchanged
 * and still the caller's. */
void *vec_grow(void *p, size_t *cap, size_t n, size_t size, size_t first);

#endif
