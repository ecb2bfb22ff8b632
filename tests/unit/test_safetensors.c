/*
 * test_safetensors.c: the safetensors reader (formats/safetensors.c).
 *
 * Parser cases are files under tests/data/safetensors/{valid,invalid}/, made
 * by tests/data/safetensors/make.py; tests run from the repository root (as
 * `make unit` runs them) or with CKPTD_TEST_DATA pointing at tests/data.
 */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../common/err.h"
#include "../../formats/checkpoint.h"
#include "check_main.h"

static char *data_path(const char *rel)
{
	const char *base = getenv("CKPTD_TEST_DATA");
	char *p;
	size_t n;

	if (!base)
		base = "tests/data";
	n = strlen(base) + strlen(rel) + 16;
	p = malloc(n);
	ck_assert_ptr_nonnull(p);
	snprintf(p, n, "%s/safetensors/%s", base, rel);
	return p;
}

/* Reads a whole test file into memory. */
static uint8_t *slurp(const char *rel, size_t *len)
{
	char *path = data_path(rel);
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	long n;

	ck_assert_msg(f != NULL, "cannot open %s (run from the repository root)", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	ck_assert_ptr_nonnull(buf);
	ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	free(path);
	*len = (size_t)n;
	return buf;
}

static int read_mem(struct fmt_ckpt **out, const uint8_t *buf, size_t len)
{
	struct ck_input in = {buf, -1, len, 0, NULL, 0};
	return safetensors_read(out, &in, NULL);
}

START_TEST(test_safetensors_reads_tensors_with_offsets_and_strides)
{
	size_t len;
	uint8_t *buf = slurp("valid/simple.safetensors", &len);
	struct fmt_ckpt *c = NULL;

	ck_assert_int_eq(read_mem(&c, buf, len), 0);
	ck_assert_int_eq(c->kind, FMT_SAFETENSORS);
	ck_assert_uint_eq(c->nstorages, 2);
	ck_assert_uint_eq(c->ntensors, 2);
	ck_assert_str_eq(c->tensors[0].path, "/weight");
	ck_assert_int_eq(c->tensors[0].dtype, DT_FLOAT32);
	ck_assert_int_eq(c->tensors[0].ndim, 2);
	ck_assert_int_eq(c->tensors[0].shape[0], 2);
	ck_assert_int_eq(c->tensors[0].shape[1], 3);
	ck_assert_int_eq(c->tensors[0].strides[0], 3);
	ck_assert_int_eq(c->tensors[0].strides[1], 1);
	ck_assert_uint_eq(c->tensors[0].offset, 0);
	ck_assert_str_eq(c->storages[0].key, "weight");
	ck_assert_uint_eq(c->storages[0].file_off, len - 40);
	ck_assert_uint_eq(c->storages[0].nbytes, 24);
	ck_assert_str_eq(c->tensors[1].path, "/steps");
	ck_assert_int_eq(c->tensors[1].dtype, DT_INT64);
	ck_assert_uint_eq(c->tensors[1].storage, 1);
	ck_assert_uint_eq(c->storages[1].file_off, len - 16);
	ck_assert_uint_eq(c->storages[1].nbytes, 16);
	ck_assert_int_eq(c->storages[1].dtype, DT_INT64);
	/* The bytes at file_off are the tensor's. */
	ck_assert_int_eq(buf[c->storages[1].file_off], 0xf9); /* -7 as int64 LE */
	fmt_ckpt_free(c);
	free(buf);
}
END_TEST

START_TEST(test_safetensors_reads_every_dtype)
{
	static const enum dtype want[] = {
	    DT_FLOAT64, DT_FLOAT32, DT_FLOAT16, DT_BFLOAT16,  DT_FLOAT8_E4M3FN, DT_FLOAT8_E5M2,
	    DT_INT64,	DT_INT32,   DT_INT16,	DT_INT8,      DT_UINT8,		DT_UINT16,
	    DT_UINT32,	DT_UINT64,  DT_BOOL,	DT_COMPLEX64,
	};
	static const uint64_t sz[] = {8, 4, 2, 2, 1, 1, 8, 4, 2, 1, 1, 2, 4, 8, 1, 8};
	size_t len, i;
	uint8_t *buf = slurp("valid/all_dtypes.safetensors", &len);
	struct fmt_ckpt *c = NULL;

	ck_assert_int_eq(read_mem(&c, buf, len), 0);
	ck_assert_uint_eq(c->ntensors, 16);
	for (i = 0; i < 16; i++) {
		ck_assert_int_eq(c->tensors[i].dtype, want[i]);
		ck_assert_int_eq(c->storages[i].dtype, want[i]);
		ck_assert_uint_eq(c->storages[i].nbytes, 3 * sz[i]);
		if (i)
			ck_assert_uint_eq(c->storages[i].file_off,
					  c->storages[i - 1].file_off + c->storages[i - 1].nbytes);
	}
	fmt_ckpt_free(c);
	free(buf);
}
END_TEST

START_TEST(test_safetensors_reads_empty_zero_element_and_scalar_tensors)
{
	size_t len;
	uint8_t *buf = slurp("valid/empty.safetensors", &len);
	struct fmt_ckpt *c = NULL;

	ck_assert_int_eq(read_mem(&c, buf, len), 0);
	ck_assert_uint_eq(c->ntensors, 0);
	ck_assert_uint_eq(c->nstorages, 0);
	fmt_ckpt_free(c);
	free(buf);

	buf = slurp("valid/zero_and_scalar.safetensors", &len);
	ck_assert_int_eq(read_mem(&c, buf, len), 0);
	ck_assert_uint_eq(c->ntensors, 2);
	ck_assert_str_eq(c->tensors[0].path, "/none");
	ck_assert_uint_eq(c->storages[0].nbytes, 0);
	ck_assert_int_eq(c->tensors[0].ndim, 2);
	ck_assert_int_eq(c->tensors[0].shape[1], 0);
	ck_assert_str_eq(c->tensors[1].path, "/scalar");
	ck_assert_int_eq(c->tensors[1].ndim, 0);
	ck_assert_ptr_null(c->tensors[1].shape);
	ck_assert_uint_eq(c->storages[1].nbytes, 4);
	ck_assert_uint_eq(c->storages[1].file_off, len - 4);
	fmt_ckpt_free(c);
	free(buf);
}
END_TEST

START_TEST(test_safetensors_escapes_paths_and_orders_by_offset)
{
	size_t len;
	uint8_t *buf = slurp("valid/escaped_out_of_order.safetensors", &len);
	struct fmt_ckpt *c = NULL;

	ck_assert_int_eq(read_mem(&c, buf, len), 0);
	ck_assert_uint_eq(c->ntensors, 2);
	ck_assert_str_eq(c->tensors[0].path, "/a~1b~0c");
	ck_assert_str_eq(c->storages[0].key, "a/b~c");
	ck_assert_str_eq(c->tensors[1].path, "/b");
	ck_assert_uint_lt(c->storages[0].file_off, c->storages[1].file_off);
	fmt_ckpt_free(c);
	free(buf);
}
END_TEST

START_TEST(test_safetensors_reads_from_a_file_descriptor)
{
	char *path = data_path("valid/simple.safetensors");
	int fd = open(path, O_RDONLY);
	struct stat sb;
	struct ck_input in;
	struct fmt_ckpt *c = NULL;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstat(fd, &sb), 0);
	in = (struct ck_input){.mem = NULL, .fd = fd, .size = (uint64_t)sb.st_size};
	ck_assert_int_eq(safetensors_read(&c, &in, NULL), 0);
	ck_assert_uint_eq(c->ntensors, 2);
	fmt_ckpt_free(c);
	close(fd);
	free(path);
}
END_TEST

START_TEST(test_safetensors_rejects_every_invalid_file)
{
	char *dir = data_path("invalid");
	DIR *d = opendir(dir);
	struct dirent *de;
	int seen = 0;

	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d))) {
		char rel[512];
		struct fmt_ckpt *c = (struct fmt_ckpt *)1;
		size_t len;
		uint8_t *buf;
		int rc;

		if (de->d_name[0] == '.')
			continue;
		snprintf(rel, sizeof(rel), "invalid/%s", de->d_name);
		buf = slurp(rel, &len);
		rc = read_mem(&c, buf, len);
		if (strcmp(de->d_name, "huge_header_length.safetensors") == 0)
			ck_assert_msg(rc == CK_ETOOBIG, "%s: got %d", de->d_name, rc);
		else
			ck_assert_msg(rc == CK_ECORRUPT, "%s: got %d (%s)", de->d_name, rc,
				      ck_errmsg());
		ck_assert_ptr_null(c);
		ck_assert_msg(strstr(ck_errmsg(), "offset") || strstr(ck_errmsg(), "bytes") ||
				  strstr(ck_errmsg(), "tensor"),
			      "%s: message does not say where: %s", de->d_name, ck_errmsg());
		free(buf);
		seen++;
	}
	closedir(d);
	free(dir);
	ck_assert_int_ge(seen, 15);
}
END_TEST

START_TEST(test_safetensors_names_the_failing_case)
{
	size_t len;
	uint8_t *buf = slurp("invalid/gap_between_tensors.safetensors", &len);
	struct fmt_ckpt *c = NULL;

	ck_assert_int_eq(read_mem(&c, buf, len), CK_ECORRUPT);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "\"y\""));
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "gap"));
	free(buf);

	buf = slurp("invalid/duplicate_keys.safetensors", &len);
	ck_assert_int_eq(read_mem(&c, buf, len), CK_ECORRUPT);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "duplicate"));
	free(buf);
}
END_TEST

START_TEST(test_safetensors_header_over_the_limit_is_too_big)
{
	size_t len;
	uint8_t *buf = slurp("valid/simple.safetensors", &len);
	struct ck_input in = {buf, -1, len, 0, NULL, 0};
	struct fmt_limits lim;
	struct fmt_ckpt *c = NULL;

	memset(&lim, 0, sizeof(lim));
	lim.max_header_bytes = 16;
	ck_assert_int_eq(safetensors_read(&c, &in, &lim), CK_ETOOBIG);
	ck_assert_ptr_null(c);
	lim.max_header_bytes = 1 << 20;
	lim.max_tensors = 1;
	ck_assert_int_eq(safetensors_read(&c, &in, &lim), CK_ETOOBIG);
	free(buf);
}
END_TEST

START_TEST(test_safetensors_survives_every_truncation_and_bit_flip)
{
	size_t len, cut, i;
	uint8_t *buf = slurp("valid/simple.safetensors", &len);
	struct fmt_ckpt *c = NULL;

	for (cut = 0; cut < len; cut++) {
		ck_assert_int_lt(read_mem(&c, buf, cut), 0);
		ck_assert_ptr_null(c);
	}
	for (i = 0; i < len; i++) {
		int bit;
		for (bit = 0; bit < 8; bit++) {
			buf[i] ^= (uint8_t)(1u << bit);
			if (read_mem(&c, buf, len) == 0)
				fmt_ckpt_free(c);
			c = NULL;
			buf[i] ^= (uint8_t)(1u << bit);
		}
	}
	free(buf);
}
END_TEST

/* ---- memory: hostile headers in the budget ---- */

/* A safetensors file of header h (h_len bytes) and no data. */
static uint8_t *st_file(const char *h, size_t h_len, size_t *len)
{
	uint8_t *b = malloc(8 + h_len);

	ck_assert_ptr_nonnull(b);
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)((uint64_t)h_len >> (8 * i));
	memcpy(b + 8, h, h_len);
	*len = 8 + h_len;
	return b;
}

/* n entries printf'ed from fmt (one %zu, the index) between "{" prefix and
 * suffix "}", comma-separated. */
static char *json_of(const char *prefix, const char *fmt, size_t n, const char *suffix, size_t *len)
{
	size_t cap = strlen(prefix) + strlen(suffix) + n * (strlen(fmt) + 24) + 1, l = 0;
	char *s = malloc(cap);

	ck_assert_ptr_nonnull(s);
	l += (size_t)sprintf(s + l, "%s", prefix);
	for (size_t i = 0; i < n; i++) {
		if (i)
			s[l++] = ',';
		l += (size_t)sprintf(s + l, fmt, i);
	}
	l += (size_t)sprintf(s + l, "%s", suffix);
	*len = l;
	return s;
}

static long status_kb(const char *field)
{
	char line[256];
	FILE *f = fopen("/proc/self/status", "r");
	long kb = -1;

	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, field, strlen(field)))
			kb = strtol(line + strlen(field), NULL, 10);
	fclose(f);
	ck_assert_int_ge(kb, 0);
	return kb;
}

/* The parse's peak RSS bound: the 40 MiB per-upload budget and slack, or
 * more under AddressSanitizer, whose redzones and quarantine are not the
 * parser's memory. */
#if defined(__SANITIZE_ADDRESS__)
#define PARSE_RSS_MIB 160
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PARSE_RSS_MIB 160
#endif
#endif
#ifndef PARSE_RSS_MIB
#define PARSE_RSS_MIB 48
#endif

/* safetensors_read refuses b over the budget, this process's peak RSS
 * growing by less than PARSE_RSS_MIB. */
static void expect_refused_in_budget(const uint8_t *b, size_t len)
{
	struct fmt_ckpt *c = NULL;
	FILE *f = fopen("/proc/self/clear_refs", "w");
	long before;
	int err;

	ck_assert_ptr_nonnull(f);
	fputs("5", f); /* VmHWM := VmRSS */
	fclose(f);
	before = status_kb("VmRSS:");
	err = read_mem(&c, b, len);
	ck_assert_msg(err == CK_ETOOBIG, "got %d (%s)", err, ck_errmsg());
	ck_assert_ptr_null(c);
	ck_assert_msg(strstr(ck_errmsg(), "per-upload memory budget") != NULL, "%s", ck_errmsg());
	ck_assert_msg(strstr(ck_errmsg(), "header (offset 8)") != NULL, "%s", ck_errmsg());
	ck_assert_msg((status_kb("VmHWM:") - before) / 1024 < PARSE_RSS_MIB,
		      "the parse took %ld MiB", (status_kb("VmHWM:") - before) / 1024);
	ck_assert_uint_eq(fmt_budget_used(fmt_budget_process()), 0);
}

START_TEST(test_safetensors_refuses_a_metadata_map_over_the_memory_budget)
{
	/* 8 MB of "k00000000":"" in __metadata__: small on the wire, large as
	 * a JSON tree */
	size_t hl, len;
	char *h = json_of("{\"__metadata__\":{", "\"k%08zu\":\"\"", 560000, "}}", &hl);
	uint8_t *b = st_file(h, hl, &len);

	expect_refused_in_budget(b, len);
	free(b);
	free(h);
}
END_TEST

START_TEST(test_safetensors_refuses_200000_zero_size_tensors_within_the_budget)
{
	size_t hl, len;
	char *h = json_of("{", "\"t%zu\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}",
			  200000, "}", &hl);
	uint8_t *b = st_file(h, hl, &len);

	expect_refused_in_budget(b, len);
	free(b);
	free(h);
}
END_TEST

START_TEST(test_safetensors_reads_a_header_longer_than_its_read_buffer)
{
	/* 3000 tensors of 4 bytes: a ~250 KB header, read 64 KiB at a time */
	size_t n = 3000, hl, len;
	char *h = malloc(n * 96 + 2), *p = h;
	uint8_t *b;
	struct fmt_ckpt *c = NULL;

	p += sprintf(p, "{");
	for (size_t i = 0; i < n; i++)
		p += sprintf(p,
			     "%s\"layer.%zu\":{\"dtype\":\"F32\",\"shape\":[1],"
			     "\"data_offsets\":[%zu,%zu]}",
			     i ? "," : "", i, 4 * i, 4 * i + 4);
	p += sprintf(p, "}");
	hl = (size_t)(p - h);
	ck_assert_uint_gt(hl, 3 * 65536);
	b = st_file(h, hl, &len);
	b = realloc(b, len + 4 * n);
	memset(b + len, 0, 4 * n);
	len += 4 * n;
	ck_assert_msg(read_mem(&c, b, len) == 0, "%s", ck_errmsg());
	ck_assert_uint_eq(c->ntensors, n);
	ck_assert_str_eq(c->tensors[n - 1].path, "/layer.2999");
	ck_assert_uint_eq(c->storages[n - 1].file_off, 8 + hl + 4 * (n - 1));
	ck_assert_uint_gt(fmt_budget_used(fmt_budget_process()), 0);
	fmt_ckpt_free(c);
	ck_assert_uint_eq(fmt_budget_used(fmt_budget_process()), 0);
	/* a syntax error past the first 64 KiB is reported where it is */
	b[8 + 200000] = '#';
	ck_assert_int_eq(read_mem(&c, b, len), CK_ECORRUPT);
	ck_assert_msg(strstr(ck_errmsg(), "not valid JSON at offset 200008:") != NULL, "%s",
		      ck_errmsg());
	ck_assert_uint_eq(fmt_budget_used(fmt_budget_process()), 0);
	free(b);
	free(h);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("safetensors");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_safetensors_reads_tensors_with_offsets_and_strides);
	tcase_add_test(tc, test_safetensors_reads_every_dtype);
	tcase_add_test(tc, test_safetensors_reads_empty_zero_element_and_scalar_tensors);
	tcase_add_test(tc, test_safetensors_escapes_paths_and_orders_by_offset);
	tcase_add_test(tc, test_safetensors_reads_from_a_file_descriptor);
	tcase_add_test(tc, test_safetensors_refuses_a_metadata_map_over_the_memory_budget);
	tcase_add_test(tc, test_safetensors_refuses_200000_zero_size_tensors_within_the_budget);
	tcase_add_test(tc, test_safetensors_reads_a_header_longer_than_its_read_buffer);
	tcase_add_test(tc, test_safetensors_rejects_every_invalid_file);
	tcase_add_test(tc, test_safetensors_names_the_failing_case);
	tcase_add_test(tc, test_safetensors_header_over_the_limit_is_too_big);
	tcase_add_test(tc, test_safetensors_survives_every_truncation_and_bit_flip);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
