/*
 * plan_build.h: helpers the writers use to build a plan (see plan.h).
 *
 * Internal to formats/. A builder appends segments in file order. Literal
 * bytes are collected in a pending buffer and become one PLAN_LITERAL segment
 * (one arena chunk) when a RANGE or GATHER segment follows or the plan is
 * finished, so a run of headers costs one segment. Errors are sticky: after a
 * failed append every later call returns the same code, so a writer may append
 * a run of pieces and check once.
 */
#ifndef CK_PLAN_BUILD_H
#define CK_PLAN_BUILD_H

#include <stddef.h>
#include <stdint.h>

#include "plan.h"

struct plan_builder {
	struct plan *p;
	size_t segcap, chunkcap;
	uint8_t *buf; /* pending literal bytes */
	size_t len, cap;
	int err;
};

/* Starts an empty plan. Returns 0 or CK_ENOMEM. */
int plan_builder_init(struct plan_builder *b);

/* Appends n literal bytes (copied). Returns 0 or the sticky error. */
int plan_lit(struct plan_builder *b, const void *data, size_t n);

/* Appends n copies of byte c as literal bytes. */
int plan_lit_fill(struct plan_builder *b, int c, size_t n);

/* Little-endian integers as literal bytes. */
int plan_lit_u16(struct plan_builder *b, uint16_t v);
int plan_lit_u32(struct plan_builder *b, uint32_t v);
int plan_lit_u64(struct plan_builder *b, uint64_t v);

/* Appends bytes [src_off, src_off+len) of storage `storage`; len 0 adds
 * nothing. */
int plan_range(struct plan_builder *b, size_t storage, uint64_t src_off, uint64_t len);

/* Appends the len bytes of view `view` gathered in C order; len 0 adds
 * nothing. */
int plan_gather(struct plan_builder *b, size_t view, uint64_t len);

/* The size of the file so far (segments plus pending literal bytes). */
uint64_t plan_builder_size(const struct plan_builder *b);

/* Flushes pending bytes and hands the plan to *out (the caller's, free with
 * plan_free). On a sticky error frees everything and returns it. The builder
 * is empty afterwards either way. */
int plan_builder_finish(struct plan **out, struct plan_builder *b);

/* Frees whatever the builder holds; safe after finish. */
void plan_builder_abort(struct plan_builder *b);

#endif
