/*
 * test_torch_expect.h: what the torch reader tests share (test_torch.c for
 * zip files, test_torch_legacy.c for legacy ones): reading a file, and the
 * text of a parsed checkpoint that tests/data/torch/make_data.py and
 * make_legacy.py write for torch.load's view of the same file
 * (tests/data/torch/expect/<name>.txt).
 */
#ifndef CK_TEST_TORCH_EXPECT_H
#define CK_TEST_TORCH_EXPECT_H

#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/err.h"
#include "../../formats/checkpoint.h"

#define VALID_DIR  "tests/data/torch/valid"
#define EXPECT_DIR "tests/data/torch/expect"
#define COMPAT_DIR "tests/data/compat/torch2"

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *b;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	b = malloc((size_t)n + 1);
	if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
		free(b);
		b = NULL;
	}
	fclose(f);
	if (b)
		b[n] = '\0';
	*len = (size_t)n;
	return b;
}

static int read_mem(struct fmt_ckpt **out, const uint8_t *b, size_t n)
{
	struct ck_input in = {.mem = b, .fd = -1, .size = n};
	struct fmt_limits lim;

	fmt_limits_default(&lim);
	return fmt_read(out, &in, &lim);
}

static void append(char **s, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void append(char **s, size_t *len, const char *fmt, ...)
{
	char tmp[4096];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	*s = realloc(*s, *len + (size_t)n + 1);
	memcpy(*s + *len, tmp, (size_t)n + 1);
	*len += (size_t)n;
}

static void append_dims(char **s, size_t *len, int n, const int64_t *d)
{
	if (n == 0)
		append(s, len, " -");
	for (int i = 0; i < n; i++)
		append(s, len, "%s%lld", i ? "," : " ", (long long)d[i]);
}

/* The same text make_data.py writes for torch.load's view. */
static char *dump(const struct fmt_ckpt *c)
{
	char *s = calloc(1, 1);
	size_t len = 0;

	for (size_t i = 0; i < c->ntensors; i++) {
		const struct fmt_tensor *t = &c->tensors[i];
		size_t share = i;

		if (c->storages[t->storage].nbytes)
			for (size_t j = 0; j < i; j++)
				if (c->tensors[j].storage == t->storage) {
					share = j;
					break;
				}
		append(&s, &len, "t %s %s", t->path, dtype_name(t->dtype));
		append_dims(&s, &len, t->ndim, t->shape);
		append_dims(&s, &len, t->ndim, t->strides);
		append(&s, &len, " %llu %zu\n", (unsigned long long)t->offset, share);
	}
	if (c->has_epoch)
		append(&s, &len, "epoch %lld\n", (long long)c->epoch);
	if (c->has_step)
		append(&s, &len, "step %lld\n", (long long)c->step);
	if (c->has_loss)
		append(&s, &len, "loss %.6g\n", c->loss);
	return s;
}

static void check_storages(const struct fmt_ckpt *c, size_t size)
{
	for (size_t i = 0; i < c->nstorages; i++) {
		ck_assert_uint_le(c->storages[i].file_off + c->storages[i].nbytes, size);
		if (i)
			ck_assert_uint_le(c->storages[i - 1].file_off + c->storages[i - 1].nbytes,
					  c->storages[i].file_off);
		ck_assert_int_ne(c->storages[i].dtype, DT_INVALID);
	}
}

/* Parses file and compares it with expect/<expect_name>.txt; the file must
 * be of kind. */
static void check_against_expect(const char *file, const char *expect_name, enum fmt_kind kind)
{
	char path[512];
	size_t n, elen;
	uint8_t *b = slurp(file, &n), *exp;
	struct fmt_ckpt *c = NULL;
	char *got;
	int err;

	ck_assert_msg(b != NULL, "cannot read %s", file);
	snprintf(path, sizeof(path), "%s/%s.txt", EXPECT_DIR, expect_name);
	exp = slurp(path, &elen);
	ck_assert_msg(exp != NULL, "cannot read %s", path);
	err = read_mem(&c, b, n);
	ck_assert_msg(err == 0, "%s: %s", file, ck_errmsg());
	ck_assert_int_eq(c->kind, kind);
	check_storages(c, n);
	got = dump(c);
	ck_assert_msg(!strcmp(got, (char *)exp), "%s:\n--- got\n%s--- torch.load\n%s", file, got,
		      (char *)exp);
	free(got);
	free(exp);
	fmt_ckpt_free(c);
	free(b);
}

/* fmt_read must refuse b with code, and a message holding needle. */
static void expect_fail(const uint8_t *b, size_t n, int code, const char *needle)
{
	struct fmt_ckpt *c = NULL;
	int err = read_mem(&c, b, n);

	ck_assert_msg(err == code, "expected %d got %d (%s)", code, err, ck_errmsg());
	ck_assert_ptr_null(c);
	if (needle)
		ck_assert_msg(strstr(ck_errmsg(), needle) != NULL, "message '%s' lacks '%s'",
			      ck_errmsg(), needle);
}

static int ends_with(const char *s, const char *suf)
{
	size_t a = strlen(s), b = strlen(suf);
	return a >= b && !strcmp(s + a - b, suf);
}

#endif
