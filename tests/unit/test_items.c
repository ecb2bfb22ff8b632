/*
 * test_items.c: files of several torch.save archives one after another
 * (torch.distributed.checkpoint's .distcp files; formats/items.c). Real
 * torch files of 1.13 and 2.x back to back, with bytes items between them
 * that hold the zip signatures too, are found at their offsets with the
 * same storages as each file parsed alone; a file of nothing but false
 * signatures gives no archive, in linear time; an archive cut short is
 * passed over; told where record payloads lie, the pass finds the same
 * archives without looking inside them, and a whole archive hidden in a
 * payload's bytes is not taken for one.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../common/err.h"
#include "../../formats/checkpoint.h"
#include "check_main.h"

static void append(uint8_t **buf, size_t *n, const void *p, size_t len)
{
	*buf = realloc(*buf, *n + len);
	ck_assert_ptr_nonnull(*buf);
	memcpy(*buf + *n, p, len);
	*n += len;
}

static const char *const files[] = {
    "tests/data/torch/valid/cnn_state_dict.pt",
    "tests/data/torch/valid/general_checkpoint.pt",
    "tests/data/compat/torch2/tensor_2d.pt",
};
#define NFILES (sizeof(files) / sizeof(files[0]))

START_TEST(test_items_finds_each_archive_at_its_offset)
{
	static const char junk[] = "bytes item PK\003\004 and PK\005\006 in it";
	uint8_t *all = NULL, *f[NFILES];
	size_t n = 0, len[NFILES], at[NFILES];

	for (size_t i = 0; i < NFILES; i++) {
		f[i] = read_test_file(files[i], &len[i]);
		if (i)
			append(&all, &n, junk, sizeof(junk));
		at[i] = n;
		append(&all, &n, f[i], len[i]);
	}
	append(&all, &n, junk, sizeof(junk));
	struct ck_input in = {.mem = all, .fd = -1, .size = n};
	struct fmt_item *v = NULL;
	size_t nv = 0;
	ck_assert_int_eq(fmt_read_items(&v, &nv, &in, NULL), 0);
	ck_assert_uint_eq(nv, NFILES);
	for (size_t i = 0; i < NFILES; i++) {
		struct ck_input one = {.mem = f[i], .fd = -1, .size = len[i]};
		struct fmt_ckpt *alone = NULL;
		ck_assert_uint_eq(v[i].off, at[i]);
		ck_assert_uint_eq(v[i].size, len[i]);
		ck_assert_int_eq(fmt_read(&alone, &one, NULL), 0);
		ck_assert_uint_eq(v[i].ck->nstorages, alone->nstorages);
		ck_assert_uint_eq(v[i].ck->ntensors, alone->ntensors);
		for (size_t k = 0; k < alone->nstorages; k++) {
			ck_assert_uint_eq(v[i].ck->storages[k].file_off,
					  alone->storages[k].file_off);
			ck_assert_uint_eq(v[i].ck->storages[k].nbytes, alone->storages[k].nbytes);
		}
		fmt_ckpt_free(alone);
		free(f[i]);
	}
	fmt_items_free(v, nv);
	free(all);
}
END_TEST

START_TEST(test_items_passes_over_false_signatures_in_linear_time)
{
	/* 4 MiB of local and end signatures, none closing an archive */
	size_t n = 4 << 20;
	uint8_t *b = malloc(n);
	ck_assert_ptr_nonnull(b);
	for (size_t i = 0; i + 4 <= n; i += 8) {
		memcpy(b + i, "PK\003\004", 4);
		memcpy(b + i + 4, "PK\005\006", 4);
	}
	struct ck_input in = {.mem = b, .fd = -1, .size = n};
	struct fmt_item *v = NULL;
	size_t nv = 1;
	clock_t t0 = clock();
	ck_assert_int_eq(fmt_read_items(&v, &nv, &in, NULL), 0);
	ck_assert_uint_eq(nv, 0);
	/* quadratic would be hours; linear is well under a few seconds even
	 * under a sanitizer */
	ck_assert_msg((double)(clock() - t0) / CLOCKS_PER_SEC < 60, "took too long");
	fmt_items_free(v, nv);
	free(b);
}
END_TEST

START_TEST(test_items_passes_over_an_archive_cut_short)
{
	size_t len, n = 0;
	uint8_t *f = read_test_file(files[0], &len), *all = NULL;

	append(&all, &n, f, len / 2); /* its end record is gone */
	size_t second = n;
	append(&all, &n, f, len);
	struct ck_input in = {.mem = all, .fd = -1, .size = n};
	struct fmt_item *v = NULL;
	size_t nv = 0;
	ck_assert_int_eq(fmt_read_items(&v, &nv, &in, NULL), 0);
	ck_assert_uint_eq(nv, 1);
	ck_assert_uint_eq(v[0].off, second);
	fmt_items_free(v, nv);
	free(all);
	free(f);
}
END_TEST

/* The payload spans of every storage of the archives v found. */
static struct fmt_span *payload_spans(size_t *n, const struct fmt_item *v, size_t nv)
{
	struct fmt_span *sp = NULL;

	*n = 0;
	for (size_t i = 0; i < nv; i++)
		for (size_t k = 0; k < v[i].ck->nstorages; k++) {
			sp = realloc(sp, (*n + 1) * sizeof(*sp));
			ck_assert_ptr_nonnull(sp);
			sp[*n].off = v[i].off + v[i].ck->storages[k].file_off;
			sp[*n].len = v[i].ck->storages[k].nbytes;
			(*n)++;
		}
	return sp;
}

START_TEST(test_items_told_the_payloads_finds_the_same_archives_without_reading_them)
{
	static const char junk[] = "bytes item PK\003\004 and PK\005\006 in it";
	uint8_t *all = NULL, *f[NFILES];
	size_t n = 0, len[NFILES];

	for (size_t i = 0; i < NFILES; i++) {
		f[i] = read_test_file(files[i], &len[i]);
		append(&all, &n, junk, sizeof(junk));
		append(&all, &n, f[i], len[i]);
	}
	struct ck_input in = {.mem = all, .fd = -1, .size = n};
	struct fmt_item *v = NULL, *w = NULL;
	size_t nv = 0, nw = 0, nsp = 0;
	ck_assert_int_eq(fmt_read_items(&v, &nv, &in, NULL), 0);
	ck_assert_uint_eq(nv, NFILES);
	struct fmt_span *sp = payload_spans(&nsp, v, nv);
	ck_assert_uint_gt(nsp, 4);
	/* the payloads' bytes overwritten with end signatures: never read */
	uint8_t *masked = malloc(n);
	ck_assert_ptr_nonnull(masked);
	memcpy(masked, all, n);
	for (size_t i = 0; i < nsp; i++)
		for (uint64_t o = sp[i].off; o < sp[i].off + sp[i].len; o++)
			masked[o] = (uint8_t) "PK\005\006"[(o - sp[i].off) % 4];
	struct ck_input min = {.mem = masked, .fd = -1, .size = n};
	ck_assert_int_eq(fmt_read_items_past(&w, &nw, &min, NULL, sp, nsp), 0);
	ck_assert_uint_eq(nw, nv);
	for (size_t i = 0; i < nv; i++) {
		ck_assert_uint_eq(w[i].off, v[i].off);
		ck_assert_uint_eq(w[i].size, v[i].size);
		ck_assert_uint_eq(w[i].ck->nstorages, v[i].ck->nstorages);
	}
	fmt_items_free(w, nw);
	free(masked);
	free(sp);
	fmt_items_free(v, nv);
	for (size_t i = 0; i < NFILES; i++)
		free(f[i]);
	free(all);
}
END_TEST

START_TEST(test_items_does_not_take_an_archive_inside_a_payload_for_one)
{
	size_t len, n = 0;
	uint8_t *f = read_test_file(files[2], &len), *all = NULL;

	/* a "payload" of 64 bytes, a whole archive, 64 bytes: told it is one
	 * record's bytes, the pass finds no archive in it; not told, it does */
	uint8_t pad[64];
	memset(pad, 0x5a, sizeof(pad));
	append(&all, &n, pad, sizeof(pad));
	append(&all, &n, f, len);
	append(&all, &n, pad, sizeof(pad));
	struct ck_input in = {.mem = all, .fd = -1, .size = n};
	struct fmt_span sp = {16, n - 32};
	struct fmt_item *v = NULL;
	size_t nv = 0;
	ck_assert_int_eq(fmt_read_items(&v, &nv, &in, NULL), 0);
	ck_assert_uint_eq(nv, 1);
	fmt_items_free(v, nv);
	ck_assert_int_eq(fmt_read_items_past(&v, &nv, &in, NULL, &sp, 1), 0);
	ck_assert_uint_eq(nv, 0);
	fmt_items_free(v, nv);
	free(all);
	free(f);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("items");
	TCase *tc = tcase_create("items");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_items_finds_each_archive_at_its_offset);
	tcase_add_test(tc, test_items_passes_over_false_signatures_in_linear_time);
	tcase_add_test(tc, test_items_passes_over_an_archive_cut_short);
	tcase_add_test(tc,
		       test_items_told_the_payloads_finds_the_same_archives_without_reading_them);
	tcase_add_test(tc, test_items_does_not_take_an_archive_inside_a_payload_for_one);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
