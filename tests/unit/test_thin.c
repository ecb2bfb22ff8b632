/*
 * test_thin.c: the thin upload frame decoder (api/thin.c) hands over the
 * same literal bytes and references however the stream is cut, and refuses
 * malformed streams saying where.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "../../api/thin.h"
#include "../../common/err.h"
#include "check_main.h"

struct out {
	uint8_t lit[4096];
	size_t nlit;
	struct thin_ref refs[8];
	size_t nrefs;
	int fail_ref; /* return an error from the nth ref (1-based) */
};

static int on_lit(void *arg, const uint8_t *p, size_t n)
{
	struct out *o = arg;

	ck_assert_uint_le(o->nlit + n, sizeof(o->lit));
	memcpy(o->lit + o->nlit, p, n);
	o->nlit += n;
	return 0;
}

static int on_ref(void *arg, const struct thin_ref *r)
{
	struct out *o = arg;

	ck_assert_uint_lt(o->nrefs, 8);
	o->refs[o->nrefs++] = *r;
	if (o->fail_ref && (int)o->nrefs == o->fail_ref)
		return ck_error(CK_EUNAVAIL, "the index is busy");
	return 0;
}

static size_t put(uint8_t *b, char kind, uint64_t len, const void *payload, size_t n)
{
	b[0] = (uint8_t)kind;
	for (int i = 0; i < 8; i++)
		b[1 + i] = (uint8_t)(len >> (8 * i));
	memcpy(b + 9, payload, n);
	return 9 + n;
}

/* L "hello", R 1000 bytes (hash 0x11..), L "", R 5 (0x22..), L "!", E. */
static size_t sample(uint8_t *b)
{
	uint8_t h1[32], h2[32], e[32];
	size_t n = 0;

	memset(h1, 0x11, 32);
	memset(h2, 0x22, 32);
	memset(e, 0xee, 32);
	n += put(b + n, 'L', 5, "hello", 5);
	n += put(b + n, 'R', 1000, h1, 32);
	n += put(b + n, 'L', 0, "", 0);
	n += put(b + n, 'R', 5, h2, 32);
	n += put(b + n, 'L', 1, "!", 1);
	n += put(b + n, 'E', 32, e, 32);
	return n;
}

START_TEST(test_thin_decodes_the_same_however_cut)
{
	uint8_t b[512];
	size_t n = sample(b);

	for (size_t chunk = 1; chunk <= n; chunk++) {
		struct thin t;
		struct out o = {0};
		const struct thin_sink sink = {on_lit, on_ref, &o};
		thin_init(&t);
		for (size_t off = 0; off < n; off += chunk)
			ck_assert_int_eq(
			    thin_feed(&t, b + off, off + chunk > n ? n - off : chunk, &sink), 0);
		ck_assert_int_eq(thin_finish(&t), 0);
		ck_assert_uint_eq(o.nlit, 6);
		ck_assert_mem_eq(o.lit, "hello!", 6);
		ck_assert_uint_eq(o.nrefs, 2);
		ck_assert_uint_eq(o.refs[0].off, 5);
		ck_assert_uint_eq(o.refs[0].len, 1000);
		ck_assert_uint_eq(o.refs[0].h.b[31], 0x11);
		ck_assert_uint_eq(o.refs[1].off, 1005);
		ck_assert_uint_eq(o.refs[1].len, 5);
		ck_assert_uint_eq(o.refs[1].h.b[0], 0x22);
		ck_assert_uint_eq(t.pos, 1011);
		ck_assert_uint_eq(t.end.b[0], 0xee);
		ck_assert_uint_eq(t.nrefs, 2);
		thin_free(&t);
	}
}
END_TEST

/* Feeds b[0..n) whole: the error, or 0 and then thin_finish's. */
static int run(const uint8_t *b, size_t n, struct out *o)
{
	struct thin t;
	const struct thin_sink sink = {on_lit, on_ref, o};
	int err;

	thin_init(&t);
	err = thin_feed(&t, b, n, &sink);
	if (err == 0)
		err = thin_finish(&t);
	thin_free(&t);
	return err;
}

START_TEST(test_thin_refuses_malformed_streams)
{
	uint8_t b[512], c[600];
	size_t n = sample(b);
	struct out o;

	/* each cut short of the end */
	for (size_t k = 0; k < n; k++) {
		memset(&o, 0, sizeof(o));
		ck_assert_int_eq(run(b, k, &o), CK_EINVALID);
		ck_assert_ptr_nonnull(strstr(ck_errmsg(), "E frame"));
	}
	/* an unknown kind, at the frame's offset (the second frame: byte 14) */
	memcpy(c, b, n);
	c[14] = 'X';
	memset(&o, 0, sizeof(o));
	ck_assert_int_eq(run(c, n, &o), CK_EINVALID);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "0x58"));
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "byte 14 "));
	/* bytes after E */
	memcpy(c, b, n);
	c[n] = 'L';
	memset(&o, 0, sizeof(o));
	ck_assert_int_eq(run(c, n + 1, &o), CK_EINVALID);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "after the E frame"));
	/* an E frame of another length */
	memcpy(c, b, n);
	c[n - 41 + 1] = 31;
	memset(&o, 0, sizeof(o));
	ck_assert_int_eq(run(c, n, &o), CK_EINVALID);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "32"));
	/* the sink's error stops the decoding and comes back */
	memset(&o, 0, sizeof(o));
	o.fail_ref = 1;
	ck_assert_int_eq(run(b, n, &o), CK_EUNAVAIL);
	ck_assert_uint_eq(o.nrefs, 1);
	ck_assert_uint_eq(o.nlit, 5);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("thin");
	TCase *tc = tcase_create("thin");

	tcase_add_test(tc, test_thin_decodes_the_same_however_cut);
	tcase_add_test(tc, test_thin_refuses_malformed_streams);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
