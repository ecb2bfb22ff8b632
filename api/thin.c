/*
 * thin.c: the thin upload frame decoder (thin.h).
 */
#include "thin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "../common/vec.h"
#include "../formats/le.h"

void thin_init(struct thin *t)
{
	memset(t, 0, sizeof(*t));
}

void thin_free(struct thin *t)
{
	free(t->refs);
	t->refs = NULL;
	t->nrefs = t->cap = 0;
}

static int frame_error(const struct thin *t, const char *what)
{
	return ck_error(CK_EINVALID, "thin upload: %s (frame at byte %llu of the body)", what,
			(unsigned long long)(t->wire - t->have));
}

/* A complete frame head: what follows it. */
static int head_done(struct thin *t)
{
	uint64_t len = le64(t->head + 1);

	t->kind = t->head[0];
	switch (t->kind) {
	case 'L':
		t->left = len;
		t->st = len ? THIN_LIT : THIN_HEAD;
		break;
	case 'R':
		if (t->nrefs == THIN_MAX_REFS)
			return frame_error(t, "more R frames than this server takes (1048576)");
		if (len > UINT64_MAX - t->pos)
			return frame_error(t, "an R frame longer than any file");
		t->ref_len = len;
		t->st = THIN_HASH;
		break;
	case 'E':
		if (len != 32)
			return frame_error(t, "the E frame's length must be 32");
		t->st = THIN_HASH;
		break;
	default: {
		char msg[96];
		snprintf(msg, sizeof(msg), "frame kind 0x%02x is none of 'L', 'R', 'E'", t->kind);
		return frame_error(t, msg);
	}
	}
	t->have = 0;
	return 0;
}

/* A complete hash payload: an R reference or the end. */
static int hash_done(struct thin *t, const struct thin_sink *sink)
{
	t->have = 0;
	if (t->kind == 'E') {
		memcpy(t->end.b, t->hash, 32);
		t->st = THIN_DONE;
		return 0;
	}
	struct thin_ref *refs = vec_grow(t->refs, &t->cap, t->nrefs, sizeof(*refs), 64);
	if (!refs)
		return ck_error(CK_ENOMEM, "out of memory");
	t->refs = refs;
	struct thin_ref *r = &t->refs[t->nrefs++];
	r->off = t->pos;
	r->len = t->ref_len;
	memcpy(r->h.b, t->hash, 32);
	t->pos += t->ref_len;
	t->st = THIN_HEAD;
	return sink->ref(sink->arg, r);
}

int thin_feed(struct thin *t, const uint8_t *p, size_t n, const struct thin_sink *sink)
{
	int err;

	while (n > 0) {
		size_t take;
		switch (t->st) {
		case THIN_HEAD:
			take = sizeof(t->head) - t->have < n ? sizeof(t->head) - t->have : n;
			memcpy(t->head + t->have, p, take);
			t->have += take;
			t->wire += take;
			if (t->have == sizeof(t->head) && (err = head_done(t)) < 0)
				return err;
			break;
		case THIN_LIT:
			take = t->left < n ? (size_t)t->left : n;
			if (take && (err = sink->lit(sink->arg, p, take)) < 0)
				return err;
			t->left -= take;
			t->pos += take;
			t->wire += take;
			if (t->left == 0)
				t->st = THIN_HEAD;
			break;
		case THIN_HASH:
			take = 32 - t->have < n ? 32 - t->have : n;
			memcpy(t->hash + t->have, p, take);
			t->have += take;
			t->wire += take;
			if (t->have == 32 && (err = hash_done(t, sink)) < 0)
				return err;
			break;
		case THIN_DONE:
		default:
			return ck_error(CK_EINVALID,
					"thin upload: bytes after the E frame (at byte %llu of the "
					"body)",
					(unsigned long long)t->wire);
		}
		p += take;
		n -= take;
	}
	return 0;
}

int thin_finish(const struct thin *t)
{
	if (t->st == THIN_DONE)
		return 0;
	if (t->st == THIN_HEAD && t->have == 0)
		return ck_error(CK_EINVALID,
				"thin upload: the body ends after %llu bytes without its E frame",
				(unsigned long long)t->wire);
	return ck_error(CK_EINVALID,
			"thin upload: the body ends inside a frame (after %llu bytes), without "
			"its E frame",
			(unsigned long long)t->wire);
}
