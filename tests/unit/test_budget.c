/*
 * test_budget.c: the parsers' memory budget and regions (formats/budget.c):
 * the per-upload and process-wide caps, what a region hands out, and that
 * every byte comes back.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/err.h"
#include "../../formats/budget.h"
#include "check_main.h"

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)

static int all_zero(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

static void fill(unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(i * 7 + 1);
}

static int filled(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != (unsigned char)(i * 7 + 1))
			return 0;
	return 1;
}

START_TEST(test_budget_refuses_a_charge_over_the_per_upload_cap_naming_it)
{
	struct fmt_budget b;
	struct fmt_meter m;

	fmt_budget_init(&b, 4 * MIB, 100 * MIB);
	fmt_meter_begin(&m, &b);
	ck_assert_int_eq(fmt_meter_charge(&m, 3 * MIB, "first"), 0);
	ck_assert_int_eq(fmt_meter_charge(&m, 2 * MIB, "pickle object graph"), CK_ETOOBIG);
	ck_assert_int_eq(m.err, CK_ETOOBIG);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "pickle object graph: "));
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "4 MiB"));
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "per-upload memory budget"));
	/* nothing was charged by the refusal */
	ck_assert_uint_eq(m.used, 3 * MIB);
	ck_assert_uint_eq(fmt_budget_used(&b), 3 * MIB);
	fmt_meter_end(&m);
	ck_assert_uint_eq(fmt_budget_used(&b), 0);
	ck_assert_uint_eq(fmt_budget_peak(&b), 3 * MIB);
}
END_TEST

START_TEST(test_budget_is_shared_by_every_meter_of_a_process)
{
	struct fmt_budget b;
	struct fmt_meter one, two;

	fmt_budget_init(&b, 4 * MIB, 6 * MIB);
	fmt_meter_begin(&one, &b);
	fmt_meter_begin(&two, &b);
	ck_assert_int_eq(fmt_meter_charge(&one, 4 * MIB, "one"), 0);
	ck_assert_int_eq(fmt_meter_charge(&two, 3 * MIB, "safetensors header"), CK_ETOOBIG);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "6 MiB"));
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "shared by every upload"));
	ck_assert_uint_eq(two.used, 0);
	ck_assert_uint_eq(fmt_budget_used(&b), 4 * MIB);
	fmt_meter_end(&one);
	ck_assert_int_eq(fmt_meter_charge(&two, 3 * MIB, "safetensors header"), 0);
	fmt_meter_end(&two);
	ck_assert_uint_eq(fmt_budget_used(&b), 0);
}
END_TEST

START_TEST(test_region_memory_starts_zeroed_and_keeps_its_contents_when_resized)
{
	struct fmt_budget b;
	struct fmt_meter m;
	unsigned char *p, *q, *r;

	fmt_budget_init(&b, 64 * MIB, 64 * MIB);
	fmt_meter_begin(&m, &b);
	p = fmt_alloc(&m, FMT_PARSE, 100, 1, "test");
	ck_assert(all_zero(p, 100));
	fill(p, 100);
	/* the last small allocation (grown in place) */
	q = fmt_grow(&m, FMT_PARSE, p, 100, 1000, "test");
	ck_assert(filled(q, 100) && all_zero(q + 100, 900));
	/* one that is not the last (moved, its contents with it) */
	r = fmt_alloc(&m, FMT_PARSE, 1, 16, "test");
	fill(r, 16);
	p = fmt_grow(&m, FMT_PARSE, q, 1000, 2000, "test");
	ck_assert(filled(p, 100) && all_zero(p + 100, 1900) && filled(r, 16));
	/* small to big, big to bigger (remapped), back to small */
	fill(p, 2000);
	q = fmt_grow(&m, FMT_PARSE, p, 2000, 100 * KIB, "test");
	ck_assert(filled(q, 2000) && all_zero(q + 2000, 100 * KIB - 2000));
	fill(q, 100 * KIB);
	p = fmt_grow(&m, FMT_PARSE, q, 100 * KIB, 3 * MIB, "test");
	ck_assert(filled(p, 100 * KIB) && all_zero(p + 100 * KIB, 3 * MIB - 100 * KIB));
	q = fmt_grow(&m, FMT_PARSE, p, 3 * MIB, 1000, "test");
	ck_assert(filled(q, 1000));
	/* a shrunk big block grown again shows zeros, not its old bytes */
	p = fmt_grow(&m, FMT_PARSE, fmt_alloc(&m, FMT_PARSE, 1, 200 * KIB, "test"), 200 * KIB,
		     200 * KIB, "test");
	fill(p, 200 * KIB);
	p = fmt_grow(&m, FMT_PARSE, p, 200 * KIB, 150 * KIB, "test");
	p = fmt_grow(&m, FMT_PARSE, p, 150 * KIB, 200 * KIB, "test");
	ck_assert(filled(p, 150 * KIB) && all_zero(p + 150 * KIB, 50 * KIB));
	/* strings */
	ck_assert_str_eq(fmt_strndup(&m, FMT_RESULT, "abcdef", 3, "test"), "abc");
	fmt_meter_end(&m);
	ck_assert_uint_eq(fmt_budget_used(&b), 0);
}
END_TEST

START_TEST(test_region_gives_a_big_allocation_back_when_freed)
{
	struct fmt_budget b;
	struct fmt_meter m;
	void *p;
	uint64_t before;

	fmt_budget_init(&b, 64 * MIB, 64 * MIB);
	fmt_meter_begin(&m, &b);
	ck_assert_ptr_nonnull(fmt_alloc(&m, FMT_PARSE, 1, 10, "test"));
	before = m.used;
	p = fmt_alloc(&m, FMT_PARSE, 8, MIB, "test");
	ck_assert_ptr_nonnull(p);
	memset(p, 1, 8 * MIB);
	ck_assert_uint_ge(m.used - before, 8 * MIB);
	ck_assert_uint_le(m.used - before, 8 * MIB + 8 * KIB);
	fmt_free(&m, FMT_PARSE, p, 8 * MIB);
	ck_assert_uint_eq(m.used, before);
	ck_assert_uint_eq(fmt_budget_used(&b), before);
	fmt_meter_end(&m);
	ck_assert_uint_eq(fmt_budget_used(&b), 0);
}
END_TEST

START_TEST(test_region_refuses_an_allocation_over_the_budget_before_taking_it)
{
	struct fmt_budget b;
	struct fmt_meter m;
	void *p;

	fmt_budget_init(&b, 4 * MIB, 4 * MIB);
	fmt_meter_begin(&m, &b);
	p = fmt_alloc(&m, FMT_PARSE, 1, 3 * MIB, "test");
	ck_assert_ptr_nonnull(p);
	ck_assert_ptr_null(fmt_alloc(&m, FMT_PARSE, 1, 2 * MIB, "zip central directory"));
	ck_assert_int_eq(m.err, CK_ETOOBIG);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "zip central directory"));
	ck_assert_ptr_null(fmt_grow(&m, FMT_PARSE, p, 3 * MIB, 5 * MIB, "test"));
	ck_assert_ptr_null(fmt_alloc(&m, FMT_PARSE, SIZE_MAX / 2, 4, "test")); /* overflow */
	ck_assert_uint_le(m.used, 3 * MIB + 8 * KIB);
	ck_assert_uint_eq(fmt_budget_peak(&b), m.used);
	fmt_meter_end(&m);
	ck_assert_uint_eq(fmt_budget_used(&b), 0);
}
END_TEST

START_TEST(test_a_handed_over_result_stays_charged_until_released)
{
	struct fmt_budget b;
	struct fmt_meter m;
	struct fmt_region kept;
	char *s;
	uint64_t result;

	fmt_budget_init(&b, 64 * MIB, 64 * MIB);
	fmt_meter_begin(&m, &b);
	ck_assert_ptr_nonnull(fmt_alloc(&m, FMT_PARSE, 1, 5 * MIB, "test"));
	s = fmt_strndup(&m, FMT_RESULT, "kept", 4, "test");
	ck_assert_ptr_nonnull(fmt_alloc(&m, FMT_RESULT, 1, MIB, "test"));
	result = m.result.bytes;
	ck_assert_uint_ge(result, MIB);
	fmt_meter_hand_over(&kept, &m);
	fmt_meter_end(&m);
	ck_assert_uint_eq(fmt_budget_used(&b), result);
	ck_assert_str_eq(s, "kept");
	fmt_region_release(&kept, &b);
	ck_assert_uint_eq(fmt_budget_used(&b), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("budget");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_budget_refuses_a_charge_over_the_per_upload_cap_naming_it);
	tcase_add_test(tc, test_budget_is_shared_by_every_meter_of_a_process);
	tcase_add_test(tc, test_region_memory_starts_zeroed_and_keeps_its_contents_when_resized);
	tcase_add_test(tc, test_region_gives_a_big_allocation_back_when_freed);
	tcase_add_test(tc, test_region_refuses_an_allocation_over_the_budget_before_taking_it);
	tcase_add_test(tc, test_a_handed_over_result_stays_charged_until_released);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
