/*
 * vec.c: growing an array one element at a time (vec.h).
 */
#include "vec.h"

#include <stdint.h>
#include <stdlib.h>

void *vec_grow(void *p, size_t *cap, size_t n, size_t size, size_t first)
{
	size_t want;
	void *q;

	if (n < *cap)
		return p;
	want = *cap ? *cap * 2 : first;
	if (want <= n || want > SIZE_MAX / size)
		return NULL;
	if (!(q = realloc(p, want * size)))
		return NULL;
	*cap = want;
	return q;
}
