/*
 * test_err.c: the error vocabulary's message: formatting the current message
 * into a new one (formats/writers.c once passed ck_errmsg() to ck_error, and
 * vsnprintf then read the buffer it wrote), prefixing, saving and restoring.
 */
#include <check.h>
#include <string.h>

#include "../../common/err.h"
#include "check_main.h"

START_TEST(test_err_a_message_may_quote_the_current_one)
{
	ck_error(CK_EINVALID, "negative size -3 in dimension %d", 1);
	ck_assert_int_eq(ck_error(CK_EINVALID, "tensor %s: %s", "w", ck_errmsg()), CK_EINVALID);
	ck_assert_str_eq(ck_errmsg(), "tensor w: negative size -3 in dimension 1");
}
END_TEST

START_TEST(test_err_prefix_keeps_the_message_after_it)
{
	ck_error(CK_ECORRUPT, "bad dims '[1,'");
	ck_assert_int_eq(ck_error_prefix(CK_ECORRUPT, "checkpoint %d: ", 7), CK_ECORRUPT);
	ck_assert_str_eq(ck_errmsg(), "checkpoint 7: bad dims '[1,'");
	/* the prefix may itself quote the message */
	ck_error_prefix(CK_ECORRUPT, "%.10s|", ck_errmsg());
	ck_assert_str_eq(ck_errmsg(), "checkpoint|checkpoint 7: bad dims '[1,'");
}
END_TEST

START_TEST(test_err_prefix_of_a_full_message_stays_terminated)
{
	char long_msg[2000];

	memset(long_msg, 'x', sizeof(long_msg) - 1);
	long_msg[sizeof(long_msg) - 1] = 0;
	ck_error(CK_EIO, "%s", long_msg);
	ck_error_prefix(CK_EIO, "where: ");
	ck_assert_uint_eq(strlen(ck_errmsg()), 1023);
	ck_assert(!strncmp(ck_errmsg(), "where: xxx", 10));
}
END_TEST

START_TEST(test_err_save_and_restore_survive_other_errors)
{
	struct ck_error_state st;

	ck_error(CK_ENOSPC, "disk full writing blob ab12");
	ck_assert_int_eq(ck_error_save(&st, CK_ENOSPC), CK_ENOSPC);
	ck_error(CK_EIO, "cleanup failed too");
	ck_assert_int_eq(ck_error_restore(&st), CK_ENOSPC);
	ck_assert_str_eq(ck_errmsg(), "disk full writing blob ab12");
	ck_assert_str_eq(ck_err_name(CK_EUNAVAIL), "unavailable");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("err");
	TCase *tc = tcase_create("err");

	tcase_add_test(tc, test_err_a_message_may_quote_the_current_one);
	tcase_add_test(tc, test_err_prefix_keeps_the_message_after_it);
	tcase_add_test(tc, test_err_prefix_of_a_full_message_stays_terminated);
	tcase_add_test(tc, test_err_save_and_restore_survive_other_errors);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
