/*
 * check_main.h: the end of every unit test's main(): run the suite, print
 * Check's summary, exit non-zero when a test failed.
 */
#ifndef CK_CHECK_MAIN_H
#define CK_CHECK_MAIN_H

#include <check.h>

static inline int run_suite(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed != 0;
}

#endif
