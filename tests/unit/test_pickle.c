/*
 * test_pickle.c: the restricted pickle VM (formats/pickle.c) on hand-built
 * opcode streams: what torch.save emits, and damaged or hostile pickles.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/err.h"
#include "../../formats/pickle.h"
#include "check_main.h"

static const struct pickle_limits lim = {
    .max_ops = 1000000, .max_memo = 1000, .max_marks = 100, .max_stack = 200000};

/* An arena on a budget of its own of per_upload bytes (the previous one's
 * memory given back first). */
static struct fmt_budget budget;
static struct fmt_meter meter;

static struct pickle_arena *arena_new(uint64_t per_upload)
{
	if (meter.budget)
		fmt_meter_end(&meter);
	fmt_budget_init(&budget, per_upload, per_upload);
	fmt_meter_begin(&meter, &budget);
	return pickle_arena_new(&meter);
}

static int run(struct pickle_value **out, struct pickle_arena **a, const void *p, size_t n)
{
	*a = arena_new(64u << 20);
	ck_assert_ptr_nonnull(*a);
	return pickle_vm_run(out, *a, p, n, &lim);
}

#define RUN(v, a, lit) run(&(v), &(a), lit, sizeof(lit) - 1)

START_TEST(test_pickle_builds_a_state_dict_graph)
{
	/* {'w': _rebuild_tensor_v2(pid('storage', FloatStorage, '0', 'cpu', 4), 0, (2, 2), (2, 1))}
	 */
	static const char p[] = "\x80\x02}q\x00X\x01\x00\x00\x00"
				"wq\x01"
				"ctorch._utils\n_rebuild_tensor_v2\nq\x02"
				"((X\x07\x00\x00\x00"
				"storageq\x03"
				"ctorch\nFloatStorage\nq\x04"
				"X\x01\x00\x00\x00"
				"0X\x03\x00\x00\x00"
				"cpuK\x04"
				"tQ"
				"K\x00K\x02K\x02\x86K\x02K\x01\x86\x89"
				"ccollections\nOrderedDict\n)Rtq\x05"
				"Rs.";
	struct pickle_value *v, *t, *args;
	struct pickle_arena *a;

	ck_assert_int_eq(RUN(v, a, p), 0);
	ck_assert_int_eq(v->kind, PICKLE_DICT);
	ck_assert_uint_eq(v->u.dict.n, 1);
	ck_assert_str_eq(v->u.dict.keys[0]->u.s.p, "w");
	t = v->u.dict.vals[0];
	ck_assert_int_eq(t->kind, PICKLE_OBJECT);
	ck_assert(pickle_is_global(t->u.obj.callable, "torch._utils", "_rebuild_tensor_v2"));
	args = t->u.obj.args;
	ck_assert_int_eq(args->kind, PICKLE_TUPLE);
	ck_assert_uint_eq(args->u.seq.n, 6);
	ck_assert_int_eq(args->u.seq.items[0]->kind, PICKLE_PERSID);
	ck_assert_uint_eq(args->u.seq.items[0]->u.pid->u.seq.n, 5);
	ck_assert_int_eq(args->u.seq.items[2]->u.seq.items[1]->u.i, 2);
	ck_assert_int_eq(args->u.seq.items[4]->kind, PICKLE_BOOL);
	ck_assert(
	    pickle_is_global(args->u.seq.items[5]->u.obj.callable, "collections", "OrderedDict"));
	pickle_arena_free(a);
}
END_TEST

START_TEST(test_pickle_reads_ints_floats_and_memo)
{
	/* [1, -2, 300, 2**40, 1.5, -7, 'x', 'x' (memo), True, None] via APPENDS */
	static const char p[] =
	    "\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00]\x94(K\x01J\xfe\xff\xff\xff"
	    "M,\x01\x8a\x06\x00\x00\x00\x00\x00\x01"
	    "G?\xf8\x00\x00\x00\x00\x00\x00"
	    "\x8a\x01\xf9\x8c\x01"
	    "x\x94h\x01\x88Ne.";
	struct pickle_value *v;
	struct pickle_arena *a;

	ck_assert_int_eq(RUN(v, a, p), 0);
	ck_assert_int_eq(v->kind, PICKLE_LIST);
	ck_assert_uint_eq(v->u.seq.n, 10);
	ck_assert_int_eq(v->u.seq.items[0]->u.i, 1);
	ck_assert_int_eq(v->u.seq.items[1]->u.i, -2);
	ck_assert_int_eq(v->u.seq.items[2]->u.i, 300);
	ck_assert_int_eq(v->u.seq.items[3]->u.i, INT64_C(1) << 40);
	ck_assert_double_eq(v->u.seq.items[4]->u.f, 1.5);
	ck_assert_int_eq(v->u.seq.items[5]->u.i, -7);
	ck_assert_ptr_eq(v->u.seq.items[6], v->u.seq.items[7]);
	ck_assert_int_eq(v->u.seq.items[8]->u.b, 1);
	ck_assert_int_eq(v->u.seq.items[9]->kind, PICKLE_NONE);
	pickle_arena_free(a);
}
END_TEST

START_TEST(test_pickle_keeps_unknown_objects_with_their_state)
{
	/* __main__.Net.__new__(Net) with BUILD {'a': 1} (what torch.save(model) emits) */
	static const char p[] = "\x80\x02"
				"c__main__\nNet\n)\x81}X\x01\x00\x00\x00"
				"aK\x01sb.";
	struct pickle_value *v;
	struct pickle_arena *a;

	ck_assert_int_eq(RUN(v, a, p), 0);
	ck_assert_int_eq(v->kind, PICKLE_OBJECT);
	ck_assert_int_eq(v->u.obj.call, PICKLE_CALL_NEWOBJ);
	ck_assert(pickle_is_global(v->u.obj.callable, "__main__", "Net"));
	ck_assert_int_eq(v->u.obj.state->kind, PICKLE_DICT);
	ck_assert_int_eq(v->u.obj.state->u.dict.vals[0]->u.i, 1);
	pickle_arena_free(a);
}
END_TEST

static void expect_err(const char *p, size_t n, int code, const char *needle)
{
	struct pickle_value *v;
	struct pickle_arena *a;
	int err = run(&v, &a, p, n);

	ck_assert_msg(err == code, "expected %d got %d (%s)", code, err, ck_errmsg());
	ck_assert_ptr_null(v);
	ck_assert_msg(strstr(ck_errmsg(), needle) != NULL, "'%s' lacks '%s'", ck_errmsg(), needle);
	pickle_arena_free(a);
}

#define ERR(lit, code, needle) expect_err(lit, sizeof(lit) - 1, code, needle)

START_TEST(test_pickle_rejects_damaged_streams)
{
	ERR("\x80\x02h\x05.", CK_ECORRUPT, "memo index 5");
	ERR("\x80\x02q\x00.", CK_ECORRUPT, "empty stack");
	ERR("\x80\x02K\x01q\xff\x00", CK_ECORRUPT, "unknown opcode");
	ERR("\x80\x02R.", CK_ECORRUPT, "underflow");
	ERR("\x80\x02K\x01(0.", CK_ECORRUPT, "underflow"); /* pop under a mark */
	ERR("\x80\x02]K\x01s.", CK_ECORRUPT, "underflow");
	ERR("\x80\x02X\xff\xff\x00\x00"
	    "ab.",
	    CK_ECORRUPT, "past the end");
	ERR("\x80\x02K\x01", CK_ECORRUPT, "without STOP");
	ERR("\x80\x02.", CK_ECORRUPT, "empty stack");
	ERR("\x80\x02u.", CK_ECORRUPT, "MARK");
	ERR("\x80\x02X\x02\x00\x00\x00\xc3\x28.", CK_ECORRUPT, "UTF-8");
	ERR("\x80\x02K\x01r\xff\xff\x00\x00.", CK_ETOOBIG, "memo index");
	ERR("\x80\x02\x82\x01.", CK_EFORMAT, "extension");
	ERR("\x80\x09.", CK_EFORMAT, "protocol");
	ERR("\x80\x02\x8c\x01"
	    "aK\x01\x93.",
	    CK_ECORRUPT, "STACK_GLOBAL");
}
END_TEST

START_TEST(test_pickle_limits_deep_nesting)
{
	/* 100000 EMPTY_LIST then 99999 APPEND: nested lists, stack depth 100000 */
	size_t n = 100000, len = 2 + 2 * n + 1, p = 0;
	char *b = malloc(len);
	struct pickle_value *v;
	struct pickle_arena *a;
	struct pickle_limits small = lim;

	b[p++] = '\x80';
	b[p++] = 2;
	for (size_t i = 0; i < n; i++)
		b[p++] = ']';
	for (size_t i = 1; i < n; i++)
		b[p++] = 'a';
	b[p++] = '.';
	small.max_stack = 1000;
	a = arena_new(64u << 20);
	ck_assert_int_eq(pickle_vm_run(&v, a, (uint8_t *)b, p, &small), CK_ETOOBIG);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "stack"));
	pickle_arena_free(a);
	/* and MARK nesting */
	memset(b, '(', len);
	a = arena_new(64u << 20);
	ck_assert_int_eq(pickle_vm_run(&v, a, (uint8_t *)b, len, &lim), CK_ETOOBIG);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "MARK"));
	pickle_arena_free(a);
	free(b);
}
END_TEST

START_TEST(test_pickle_limits_opcodes_and_graph_bytes)
{
	struct pickle_limits few = lim;
	struct pickle_value *v;
	struct pickle_arena *a;
	static const char p[] = "\x80\x02]K\x01"
				"aK\x02"
				"aK\x03"
				"a.";
	size_t n = 20000, len = 0;
	char *b = malloc(3 + 3 * n + 1);

	few.max_ops = 4;
	a = arena_new(64u << 20);
	ck_assert_int_eq(pickle_vm_run(&v, a, (const uint8_t *)p, sizeof(p) - 1, &few), CK_ETOOBIG);
	pickle_arena_free(a);
	/* 20,000 ints in a list need more than 300 KiB */
	memcpy(b, "\x80\x02]", 3);
	len = 3;
	for (size_t i = 0; i < n; i++, len += 3)
		memcpy(b + len,
		       "K\x01"
		       "a",
		       3);
	b[len++] = '.';
	a = arena_new(300 << 10);
	ck_assert_int_eq(pickle_vm_run(&v, a, (const uint8_t *)b, len, &lim), CK_ETOOBIG);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "per-upload memory budget"));
	ck_assert_uint_le(fmt_budget_peak(&budget), 300 << 10);
	pickle_arena_free(a);
	a = arena_new(64u << 20);
	ck_assert_int_eq(pickle_vm_run(&v, a, (const uint8_t *)b, len, &lim), 0);
	ck_assert_uint_eq(v->u.seq.n, n);
	pickle_arena_free(a);
	free(b);
}
END_TEST

START_TEST(test_pickle_rejects_a_frame_longer_than_the_pickle)
{
	struct pickle_value *v;
	struct pickle_arena *a;

	/* FRAME claiming 2^63 bytes: refused at once, naming its offset */
	ERR("\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x80N.", CK_ECORRUPT,
	    "FRAME of 9223372036854775808 bytes runs past the end");
	ERR("\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x80N.", CK_ECORRUPT, "offset 2)");
	ck_assert_uint_le(meter.peak, 256 << 10); /* no more than the graph's first chunk */
	/* one byte more than what follows */
	ERR("\x80\x04\x95\x03\x00\x00\x00\x00\x00\x00\x00N.", CK_ECORRUPT, "FRAME of 3 bytes");
	/* a frame of exactly the rest, as protocol 4 writes it */
	ck_assert_int_eq(RUN(v, a, "\x80\x04\x95\x02\x00\x00\x00\x00\x00\x00\x00N."), 0);
	ck_assert_int_eq(v->kind, PICKLE_NONE);
	pickle_arena_free(a);
}
END_TEST

START_TEST(test_pickle_refuses_a_graph_over_its_budget_naming_it)
{
	/* ']' then 1M x ']a': a list of a million empty lists */
	size_t n = 1000000, len = 0;
	char *b = malloc(3 + 2 * n + 1);
	struct pickle_value *v;
	struct pickle_arena *a;
	struct pickle_limits many = lim;

	memcpy(b, "\x80\x02]", 3);
	len = 3;
	for (size_t i = 0; i < n; i++, len += 2)
		memcpy(b + len, "]a", 2);
	b[len++] = '.';
	many.max_ops = 10u << 20;
	a = arena_new(4u << 20);
	ck_assert_int_eq(pickle_vm_run(&v, a, (const uint8_t *)b, len, &many), CK_ETOOBIG);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "pickle object graph"));
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "4 MiB"));
	ck_assert_uint_le(fmt_budget_peak(&budget), 4u << 20);
	pickle_arena_free(a);
	fmt_meter_end(&meter);
	ck_assert_uint_eq(fmt_budget_used(&budget), 0);
	free(b);
}
END_TEST

START_TEST(test_pickle_rejects_every_truncation)
{
	static const char p[] = "\x80\x02}q\x00(X\x01\x00\x00\x00"
				"wq\x01"
				"ctorch\nFloatStorage\n"
				"K\x01\x86X\x01\x00\x00\x00"
				"vG?\xf8\x00\x00\x00\x00\x00\x00u.";

	for (size_t n = 0; n < sizeof(p) - 1; n++) {
		struct pickle_value *v;
		struct pickle_arena *a;
		int err = run(&v, &a, p, n);

		ck_assert_msg(err == CK_ECORRUPT, "cut at %zu: %d", n, err);
		pickle_arena_free(a);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pickle");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_pickle_builds_a_state_dict_graph);
	tcase_add_test(tc, test_pickle_reads_ints_floats_and_memo);
	tcase_add_test(tc, test_pickle_keeps_unknown_objects_with_their_state);
	tcase_add_test(tc, test_pickle_rejects_damaged_streams);
	tcase_add_test(tc, test_pickle_limits_deep_nesting);
	tcase_add_test(tc, test_pickle_limits_opcodes_and_graph_bytes);
	tcase_add_test(tc, test_pickle_rejects_a_frame_longer_than_the_pickle);
	tcase_add_test(tc, test_pickle_refuses_a_graph_over_its_budget_naming_it);
	tcase_add_test(tc, test_pickle_rejects_every_truncation);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
