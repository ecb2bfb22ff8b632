/*
 * plan.c: plans (plan.h) and the builder the writers use (plan_build.h).
 *
 * A plan owns its segment array and an arena of literal chunks; each
 * PLAN_LITERAL segment points into one chunk. Nothing here knows any file
 * format.
 */
#include "plan_build.h"

#include <stdlib.h>
#include <string.h>

#include "../common/err.h"

void plan_free(struct plan *p)
{
	size_t i;

	if (!p)
		return;
	for (i = 0; i < p->nchunks; i++)
		free(p->chunks[i]);
	free(p->chunks);
	free(p->segs);
	free(p);
}

int plan_builder_init(struct plan_builder *b)
{
	memset(b, 0, sizeof(*b));
	b->p = calloc(1, sizeof(*b->p));
	if (!b->p)
		return b->err = ck_error(CK_ENOMEM, "plan: out of memory");
	return 0;
}

static int push_seg(struct plan_builder *b, const struct plan_seg *s)
{
	struct plan *p = b->p;

	if (p->nsegs == b->segcap) {
		size_t ncap = b->segcap ? b->segcap * 2 : 16;
		struct plan_seg *n = realloc(p->segs, ncap * sizeof(*n));
		if (!n)
			return b->err = ck_error(CK_ENOMEM, "plan: out of memory");
		p->segs = n;
		b->segcap = ncap;
	}
	p->segs[p->nsegs++] = *s;
	p->total += s->len;
	return 0;
}

/* Turns the pending literal bytes into one chunk and one segment. */
static int flush(struct plan_builder *b)
{
	struct plan *p = b->p;
	struct plan_seg s;

	if (b->err)
		return b->err;
	if (b->len == 0)
		return 0;
	if (p->nchunks == b->chunkcap) {
		size_t ncap = b->chunkcap ? b->chunkcap * 2 : 8;
		uint8_t **n = realloc(p->chunks, ncap * sizeof(*n));
		if (!n)
			return b->err = ck_error(CK_ENOMEM, "plan: out of memory");
		p->chunks = n;
		b->chunkcap = ncap;
	}
	memset(&s, 0, sizeof(s));
	s.kind = PLAN_LITERAL;
	s.len = b->len;
	s.lit = b->buf;
	if (push_seg(b, &s) < 0)
		return b->err;
	p->chunks[p->nchunks++] = b->buf;
	b->buf = NULL;
	b->len = b->cap = 0;
	return 0;
}

int plan_lit(struct plan_builder *b, const void *data, size_t n)
{
	if (b->err)
		return b->err;
	if (n == 0)
		return 0;
	if (n > SIZE_MAX / 2 - b->len)
		return b->err = ck_error(CK_ENOMEM, "plan: literal too large");
	if (b->len + n > b->cap) {
		size_t ncap = b->cap ? b->cap : 256;
		uint8_t *nb;
		while (ncap < b->len + n)
			ncap *= 2;
		nb = realloc(b->buf, ncap);
		if (!nb)
			return b->err = ck_error(CK_ENOMEM, "plan: out of memory");
		b->buf = nb;
		b->cap = ncap;
	}
	if (data)
		memcpy(b->buf + b->len, data, n);
	b->len += n;
	return 0;
}

int plan_lit_fill(struct plan_builder *b, int c, size_t n)
{
	if (plan_lit(b, NULL, n) < 0)
		return b->err;
	memset(b->buf + b->len - n, c, n);
	return 0;
}

int plan_lit_u16(struct plan_builder *b, uint16_t v)
{
	uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
	return plan_lit(b, x, 2);
}

int plan_lit_u32(struct plan_builder *b, uint32_t v)
{
	uint8_t x[4];
	int i;

	for (i = 0; i < 4; i++)
		x[i] = (uint8_t)(v >> (8 * i));
	return plan_lit(b, x, 4);
}

int plan_lit_u64(struct plan_builder *b, uint64_t v)
{
	uint8_t x[8];
	int i;

	for (i = 0; i < 8; i++)
		x[i] = (uint8_t)(v >> (8 * i));
	return plan_lit(b, x, 8);
}

int plan_range(struct plan_builder *b, size_t storage, uint64_t src_off, uint64_t len)
{
	struct plan_seg s;

	if (flush(b) < 0)
		return b->err;
	if (len == 0)
		return 0;
	memset(&s, 0, sizeof(s));
	s.kind = PLAN_RANGE;
	s.len = len;
	s.storage = storage;
	s.src_off = src_off;
	return push_seg(b, &s);
}

int plan_gather(struct plan_builder *b, size_t view, uint64_t len)
{
	struct plan_seg s;

	if (flush(b) < 0)
		return b->err;
	if (len == 0)
		return 0;
	memset(&s, 0, sizeof(s));
	s.kind = PLAN_GATHER;
	s.len = len;
	s.view = view;
	return push_seg(b, &s);
}

uint64_t plan_builder_size(const struct plan_builder *b)
{
	return (b->p ? b->p->total : 0) + b->len;
}

int plan_builder_finish(struct plan **out, struct plan_builder *b)
{
	int err;

	*out = NULL;
	flush(b);
	if ((err = b->err) < 0) {
		plan_builder_abort(b);
		return err;
	}
	*out = b->p;
	b->p = NULL;
	plan_builder_abort(b);
	return 0;
}

void plan_builder_abort(struct plan_builder *b)
{
	plan_free(b->p);
	free(b->buf);
	memset(b, 0, sizeof(*b));
}
