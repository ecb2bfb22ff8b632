/*
 * check_main.h: the end of every unit test's main(): run the suite, print
 * Check's summary, exit non-zero when a test failed; and reading a test
 * file whole.
 */
#ifndef CK_CHECK_MAIN_H
#define CK_CHECK_MAIN_H

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static inline int run_suite(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0;
}

/* The whole file at path (from the repository's root), *n its length; a
 * test fails when it cannot be read. Free with free(). */
static inline uint8_t *read_test_file(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	uint8_t *b;
	long len;

	ck_assert_msg(f != NULL, "cannot open %s (run from the repository root)", path);
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	fseek(f, 0, SEEK_SET);
	b = malloc((size_t)len + 1);
	ck_assert_ptr_nonnull(b);
	ck_assert_uint_eq(fread(b, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	*n = (size_t)len;
	return b;
}

#endif
