/*
 * test_torch_legacy.c: the legacy torch reader (formats/torch_legacy.c: what
 * torch.save wrote before 1.6, and with _use_new_zipfile_serialization=False)
 * against torch.load's view of real files: tests/data/torch/valid/legacy_*.pt
 * (written by tests/data/torch/make_legacy.py with torch 1.13) and the legacy
 * files of tests/data/compat/torch2 (torch 2.x), each compared with
 * tests/data/torch/expect/<name>.txt; its storages are the bytes of the zip
 * format's records; then damaged files (tests/data/torch/invalid/legacy_*.pt),
 * every prefix of a file, limits and the memory budget; and the pickle scanner
 * (pickle_scan_end) against the VM.
 */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/err.h"
#include "../../formats/checkpoint.h"
#include "../../formats/pickle.h"
#include "../../formats/zip.h"

#include "check_main.h"
#include "test_torch_expect.h"

#define INVALID_DIR "tests/data/torch/invalid"

static uint8_t *load(const char *path, size_t *n)
{
	uint8_t *b = slurp(path, n);

	ck_assert_msg(b != NULL, "cannot read %s (tests run from the repo root)", path);
	return b;
}

static struct fmt_ckpt *parse_ok(const uint8_t *b, size_t n, const char *what)
{
	struct fmt_ckpt *c = NULL;
	int err = read_mem(&c, b, n);

	ck_assert_msg(err == 0, "%s: %s", what, ck_errmsg());
	ck_assert_int_eq(c->kind, FMT_TORCH_LEGACY);
	return c;
}

static uint64_t le64_at(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

START_TEST(test_legacy_reads_every_valid_file_as_torch_load_does)
{
	DIR *d = opendir(VALID_DIR);
	struct dirent *de;
	int count = 0;

	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d))) {
		char file[512], name[256];

		if (!ends_with(de->d_name, ".pt") || strncmp(de->d_name, "legacy_", 7))
			continue;
		snprintf(file, sizeof(file), "%s/%s", VALID_DIR, de->d_name);
		snprintf(name, sizeof(name), "%.*s", (int)strlen(de->d_name) - 3, de->d_name);
		check_against_expect(file, name, FMT_TORCH_LEGACY);
		count++;
	}
	closedir(d);
	ck_assert_int_ge(count, 11);
}
END_TEST

START_TEST(test_legacy_reads_the_torch2_compat_legacy_files_as_torch_load_does)
{
	static const char *const names[] = {"simple_legacy", "legacy_shared_storage",
					    "legacy_uncloned_views", "legacy_with_offsets"};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char file[512], expect[256];

		snprintf(file, sizeof(file), "%s/%s.pt", COMPAT_DIR, names[i]);
		snprintf(expect, sizeof(expect), "compat_%s", names[i]);
		check_against_expect(file, expect, FMT_TORCH_LEGACY);
	}
}
END_TEST

START_TEST(test_legacy_storages_are_the_data_after_each_element_count)
{
	size_t n;
	uint8_t *b = load(VALID_DIR "/legacy_small.pt", &n);
	struct fmt_ckpt *c = parse_ok(b, n, "legacy_small.pt");
	float f[3];
	int64_t l[2];

	/* {"w": [1, 2, 3] float32 on key "1", "n": [7, 8] int64 on key "2"} */
	ck_assert_uint_eq(c->nstorages, 2);
	ck_assert_str_eq(c->storages[0].key, "1");
	ck_assert_int_eq(c->storages[0].dtype, DT_FLOAT32);
	ck_assert_uint_eq(c->storages[0].nbytes, 12);
	ck_assert_uint_eq(le64_at(b + c->storages[0].file_off - 8), 3);
	memcpy(f, b + c->storages[0].file_off, 12);
	ck_assert(f[0] == 1.0f && f[1] == 2.0f && f[2] == 3.0f);
	ck_assert_str_eq(c->storages[1].key, "2");
	ck_assert_int_eq(c->storages[1].dtype, DT_INT64);
	ck_assert_uint_eq(c->storages[1].file_off, c->storages[0].file_off + 12 + 8);
	ck_assert_uint_eq(le64_at(b + c->storages[1].file_off - 8), 2);
	memcpy(l, b + c->storages[1].file_off, 16);
	ck_assert(l[0] == 7 && l[1] == 8);
	/* the last storage ends the file; no CRC to check against */
	ck_assert_uint_eq(c->storages[1].file_off + 16, n);
	ck_assert_uint_eq(c->storages[0].zip_crc, 0);
	ck_assert_uint_eq(c->ntensors, 2);
	ck_assert_str_eq(c->tensors[0].path, "/w");
	ck_assert_uint_eq(c->tensors[0].storage, 0);
	ck_assert_str_eq(c->tensors[1].path, "/n");
	ck_assert_uint_eq(c->tensors[1].storage, 1);
	fmt_ckpt_free(c);
	free(b);
}
END_TEST

START_TEST(test_legacy_storage_bytes_equal_the_zip_records_of_the_same_tensors)
{
	/* both files hold torch.arange(100, dtype=float32) and views of it */
	size_t nz, nl;
	uint8_t *z = load(VALID_DIR "/views.pt", &nz), *l = load(VALID_DIR "/legacy_views.pt", &nl);
	struct fmt_ckpt *cz = NULL, *cl = parse_ok(l, nl, "legacy_views.pt");

	ck_assert_int_eq(read_mem(&cz, z, nz), 0);
	ck_assert_int_eq(cz->kind, FMT_TORCH_ZIP);
	ck_assert_uint_eq(cz->nstorages, 1);
	ck_assert_uint_eq(cl->nstorages, 1);
	ck_assert_uint_eq(cl->storages[0].nbytes, 400);
	ck_assert_uint_eq(cz->storages[0].nbytes, 400);
	ck_assert(!memcmp(z + cz->storages[0].file_off, l + cl->storages[0].file_off, 400));
	ck_assert_uint_eq(cl->ntensors, cz->ntensors);
	for (size_t i = 0; i < cl->ntensors; i++) {
		ck_assert_str_eq(cl->tensors[i].path, cz->tensors[i].path);
		ck_assert_uint_eq(cl->tensors[i].offset, cz->tensors[i].offset);
	}
	fmt_ckpt_free(cz);
	fmt_ckpt_free(cl);
	free(z);
	free(l);
}
END_TEST

START_TEST(test_legacy_reads_epoch_step_and_a_0d_loss_tensor)
{
	size_t n;
	uint8_t *b = load(VALID_DIR "/legacy_training_checkpoint.pt", &n);
	struct fmt_ckpt *c = parse_ok(b, n, "legacy_training_checkpoint.pt");

	ck_assert_int_eq(c->has_epoch, 1);
	ck_assert_int_eq(c->epoch, 7);
	ck_assert_int_eq(c->has_step, 1);
	ck_assert_int_eq(c->step, 700);
	ck_assert_int_eq(c->has_loss, 1);
	ck_assert_double_eq(c->loss, 0.375);
	fmt_ckpt_free(c);
	free(b);
}
END_TEST

START_TEST(test_legacy_views_of_a_storage_are_reported_on_the_root)
{
	size_t n;
	uint8_t *b = load(VALID_DIR "/legacy_storage_views.pt", &n);
	struct fmt_ckpt *c = parse_ok(b, n, "legacy_storage_views.pt");
	float f;

	/* root: 12 floats 0..11; /a: view at 2 of 6, offset 1 in it; /b:
	 * view at 8 of 4 */
	ck_assert_uint_eq(c->nstorages, 1);
	ck_assert_uint_eq(c->storages[0].nbytes, 48);
	ck_assert_uint_eq(c->ntensors, 3);
	ck_assert_str_eq(c->tensors[0].path, "/a");
	ck_assert_uint_eq(c->tensors[0].offset, 3);
	memcpy(&f, b + c->storages[0].file_off + 4 * c->tensors[0].offset, 4);
	ck_assert(f == 3.0f);
	ck_assert_str_eq(c->tensors[1].path, "/b");
	ck_assert_uint_eq(c->tensors[1].offset, 8);
	fmt_ckpt_free(c);
	free(b);
}
END_TEST

START_TEST(test_legacy_accepts_bytes_after_the_last_storage_as_torch_does)
{
	size_t n;
	uint8_t *b = load(VALID_DIR "/legacy_small.pt", &n), *more = malloc(n + 5);
	struct fmt_ckpt *c;

	memcpy(more, b, n);
	memcpy(more + n, "junk!", 5);
	c = parse_ok(more, n + 5, "legacy_small.pt + 5 bytes");
	ck_assert_uint_eq(c->nstorages, 2);
	ck_assert_uint_eq(c->storages[1].file_off + c->storages[1].nbytes, n);
	fmt_ckpt_free(c);
	free(more);
	free(b);
}
END_TEST

START_TEST(test_legacy_reads_a_file_without_storages)
{
	/* the preamble of legacy_small.pt (137 bytes), then {} and an empty
	 * key list: torch.save({}, f, _use_new_zipfile_serialization=False) */
	size_t n;
	uint8_t *small = load(VALID_DIR "/legacy_small.pt", &n), b[137 + 12];
	struct fmt_ckpt *c;

	memcpy(b, small, 137);
	memcpy(b + 137, "\x80\x02}q\x00.\x80\x02]q\x00.", 12);
	c = parse_ok(b, sizeof(b), "no storages");
	ck_assert_uint_eq(c->nstorages, 0);
	ck_assert_uint_eq(c->ntensors, 0);
	fmt_ckpt_free(c);
	free(small);
}
END_TEST

/* Each damaged file: the code, and what the message must name. */
static const struct {
	const char *file;
	int code;
	const char *needles[3];
} damaged[] = {
    {"legacy_truncated_storage.pt",
     CK_ECORRUPT,
     {"storage 2's 16 bytes", "offset 430", "truncated"}},
    {"legacy_huge_count.pt",
     CK_ECORRUPT,
     {"storage 2 at offset 422", "4611686018427387904", "declares 2"}},
    {"legacy_count_past_end.pt",
     CK_ECORRUPT,
     {"storage 2 (at /n", "1099511627776 elements", "more than the whole file"}},
    {"legacy_count_mismatch.pt",
     CK_ECORRUPT,
     {"storage 1 at offset 402 holds 4 elements", "declares 3", NULL}},
    {"legacy_key_missing.pt",
     CK_ECORRUPT,
     {"storage 2 (at /n in the pickle at offset 137)", "not in the storage key list at offset 378",
      NULL}},
    {"legacy_key_unused.pt",
     CK_ECORRUPT,
     {"key list at offset 378 names storage 3", "does not use", NULL}},
    {"legacy_key_twice.pt",
     CK_ECORRUPT,
     {"key list at offset 378 names storage 2 twice", NULL, NULL}},
    {"legacy_view_past_root.pt",
     CK_ECORRUPT,
     {"view 9 (at /w", "elements 2 to 4 of storage 1, which has 3", NULL}},
    {"legacy_view_not_a_tuple.pt",
     CK_ECORRUPT,
     {"storage 1 (at /w", "view metadata that is not a (key, offset, size) tuple", NULL}},
    {"legacy_tensor_past_storage.pt",
     CK_ECORRUPT,
     {"tensor /w needs 4 elements", "storage 1 holds 12 bytes", NULL}},
    {"legacy_two_types.pt",
     CK_ECORRUPT,
     {"storage 1 is declared as 3 elements of torch.IntStorage at /v", "torch.FloatStorage", NULL}},
    {"legacy_no_stop.pt",
     CK_ECORRUPT,
     {"pickle at offset 137 ends at offset 179 without STOP", NULL, NULL}},
    {"legacy_bad_magic.pt", CK_EFORMAT, {"not torch's magic number", "PyTorch legacy", NULL}},
};

START_TEST(test_legacy_refuses_each_damaged_file_saying_what_and_where)
{
	for (size_t i = 0; i < sizeof(damaged) / sizeof(damaged[0]); i++) {
		char path[512];
		size_t n;
		uint8_t *b;
		struct fmt_ckpt *c = NULL;
		int err;

		snprintf(path, sizeof(path), "%s/%s", INVALID_DIR, damaged[i].file);
		b = load(path, &n);
		err = read_mem(&c, b, n);
		ck_assert_msg(err == damaged[i].code, "%s: %d %s", damaged[i].file, err,
			      ck_errmsg());
		ck_assert_ptr_null(c);
		for (int k = 0; k < 3 && damaged[i].needles[k]; k++)
			ck_assert_msg(strstr(ck_errmsg(), damaged[i].needles[k]) != NULL,
				      "%s: message '%s' lacks '%s'", damaged[i].file, ck_errmsg(),
				      damaged[i].needles[k]);
		ck_assert_uint_eq(fmt_budget_used(fmt_budget_process()), 0);
		free(b);
	}
}
END_TEST

START_TEST(test_legacy_refuses_every_prefix_of_a_file)
{
	static const char *const files[] = {"legacy_small.pt", "legacy_zero_elements.pt",
					    "legacy_protocol4.pt"};

	for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
		char path[512];
		size_t n;
		uint8_t *b;

		snprintf(path, sizeof(path), "%s/%s", VALID_DIR, files[f]);
		b = load(path, &n);
		fmt_ckpt_free(parse_ok(b, n, files[f]));
		for (size_t len = 0; len < n; len++) {
			struct fmt_ckpt *t = NULL;
			uint8_t *copy = malloc(len ? len : 1);
			int err;

			memcpy(copy, b, len);
			err = read_mem(&t, copy, len);
			ck_assert_msg(err == CK_ECORRUPT || (err == CK_EFORMAT && len < 2),
				      "%s cut at %zu: %d %s", files[f], len, err, ck_errmsg());
			ck_assert_ptr_null(t);
			ck_assert_str_ne(ck_errmsg(), "");
			ck_assert_uint_eq(fmt_budget_used(fmt_budget_process()), 0);
			free(copy);
		}
		free(b);
	}
}
END_TEST

START_TEST(test_legacy_tells_a_pickle_that_is_not_torch_from_a_damaged_one)
{
	/* a pickled empty dict, and a pickle of the int 75: not torch files */
	expect_fail((const uint8_t *)"\x80\x02}q\x00.", 6, CK_EFORMAT, "magic number");
	expect_fail((const uint8_t *)"\x80\x02KK.", 5, CK_EFORMAT, "magic number");
	/* starts like a pickle, then garbage: not a legacy torch file either */
	expect_fail((const uint8_t *)"\x80\x02\xff\xff", 4, CK_EFORMAT, "unknown opcode");
	/* the magic number cut short: a damaged legacy file */
	expect_fail((const uint8_t *)"\x80\x02\x8a\x0a\x6c\xfc\x9c", 7, CK_ECORRUPT,
		    "runs past the end of the file");
}
END_TEST

START_TEST(test_legacy_respects_the_pickle_size_and_storage_count_limits)
{
	size_t n;
	uint8_t *b = load(VALID_DIR "/legacy_small.pt", &n);
	struct ck_input in = {.mem = b, .fd = -1, .size = n};
	struct fmt_limits lim;
	struct fmt_ckpt *c = NULL;

	fmt_limits_default(&lim);
	lim.max_pickle_bytes = 100; /* sys_info is 114 bytes */
	ck_assert_int_eq(fmt_read(&c, &in, &lim), CK_ETOOBIG);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "longer than 100 bytes"));
	fmt_limits_default(&lim);
	lim.max_records = 1;
	ck_assert_int_eq(fmt_read(&c, &in, &lim), CK_ETOOBIG);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "names 2 storages, more than 1"));
	ck_assert_ptr_null(c);
	free(b);
}
END_TEST

START_TEST(test_legacy_refuses_a_pickle_graph_over_the_memory_budget)
{
	/* the preamble of legacy_small.pt (137 bytes), then an object pickle of
	 * 4 million empty lists (8 MB) and an empty key list */
	size_t n, len = 0;
	uint8_t *small = load(VALID_DIR "/legacy_small.pt", &n);
	size_t cap = 137 + 3 + (8u << 20) + 1 + 4;
	uint8_t *b = malloc(cap);
	struct fmt_budget budget;
	struct fmt_limits lim;
	struct fmt_ckpt *c = NULL;
	struct ck_input in;

	memcpy(b, small, 137);
	len = 137;
	memcpy(b + len, "\x80\x02]", 3);
	len += 3;
	for (size_t i = 0; i < (4u << 20); i++, len += 2)
		memcpy(b + len, "]a", 2);
	b[len++] = '.';
	memcpy(b + len, "\x80\x02].", 4);
	len += 4;
	in = (struct ck_input){.mem = b, .fd = -1, .size = len};
	fmt_limits_default(&lim);
	fmt_budget_init(&budget, FMT_BUDGET_PER_UPLOAD, FMT_BUDGET_TOTAL);
	lim.budget = &budget;
	ck_assert_int_eq(fmt_read(&c, &in, &lim), CK_ETOOBIG);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "per-upload memory budget"));
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "object pickle at offset 137"));
	ck_assert_uint_le(fmt_budget_peak(&budget), FMT_BUDGET_PER_UPLOAD);
	ck_assert_uint_eq(fmt_budget_used(&budget), 0);
	free(b);
	free(small);
}
END_TEST

/* pickle_scan_end must stop where the VM stops. */
static void scan_agrees_with_vm(const uint8_t *b, size_t n, uint64_t off, uint64_t want_end,
				const char *what)
{
	struct ck_input in = {.mem = b, .fd = -1, .size = n};
	struct fmt_meter m;
	struct pickle_arena *a;
	struct pickle_value *v;
	struct pickle_limits pl = {1u << 24, 1u << 20, 1000, 1u << 22};
	uint64_t end;
	size_t used = 0;
	int err;

	fmt_meter_begin(&m, NULL);
	err = pickle_scan_end(&end, &in, off, 64u << 20, &m);
	ck_assert_msg(err == 0, "%s: %s", what, ck_errmsg());
	ck_assert_msg(end == want_end, "%s: scan ends at %llu, not %llu", what,
		      (unsigned long long)end, (unsigned long long)want_end);
	a = pickle_arena_new(&m);
	ck_assert_ptr_nonnull(a);
	err = pickle_vm_run_used(&v, &used, a, b + off, n - off, &pl);
	ck_assert_msg(err == 0, "%s: %s", what, ck_errmsg());
	ck_assert_uint_eq(used, end - off);
	pickle_arena_free(a);
	fmt_meter_end(&m);
}

START_TEST(test_pickle_scan_end_finds_the_end_of_every_data_pkl_as_the_vm_does)
{
	const char *dirs[] = {VALID_DIR, COMPAT_DIR};
	int count = 0;

	for (size_t d = 0; d < 2; d++) {
		DIR *dir = opendir(dirs[d]);
		struct dirent *de;

		ck_assert_ptr_nonnull(dir);
		while ((de = readdir(dir))) {
			char path[512];
			size_t n;
			uint8_t *b;
			struct ck_input in;
			struct fmt_meter m;
			struct zip_reader *zr = NULL;

			if (!ends_with(de->d_name, ".pt"))
				continue;
			snprintf(path, sizeof(path), "%s/%s", dirs[d], de->d_name);
			b = load(path, &n);
			in = (struct ck_input){.mem = b, .fd = -1, .size = n};
			fmt_meter_begin(&m, NULL);
			if (n > 4 && b[0] == 'P' && zip_reader_open(&zr, &in, 1000, &m) == 0) {
				for (size_t i = 0; i < zip_entry_count(zr); i++) {
					const struct zip_entry *e = zip_entry_at(zr, i);

					if (ends_with(e->name, "/data.pkl") &&
					    e->method == ZIP_METHOD_STORED) {
						/* the pickle, then the rest of the zip */
						scan_agrees_with_vm(b, n, e->data_off,
								    e->data_off + e->comp_size,
								    path);
						count++;
					}
				}
				zip_reader_free(zr);
			}
			fmt_meter_end(&m);
			free(b);
		}
		closedir(dir);
	}
	ck_assert_int_ge(count, 35);
}
END_TEST

START_TEST(test_pickle_scan_end_knows_the_text_opcodes)
{
	/* protocol 0's text opcodes after a PROTO, then bytes that are no pickle */
	static const char p[] = "\x80\x02(I1\nI01\nL2L\nF1.5\nS'ab'\nVcd\np0\ng0\nPkey\n"
				"ctorch\nFloatStorage\n(iollections\nOrderedDict\n"
				"X\x02\x00\x00\x00hiC\x01x\x8c\x01yT\x01\x00\x00\x00z"
				"\x8d\x01\x00\x00\x00\x00\x00\x00\x00w"
				"J\x01\x02\x03\x04M\x01\x02K\x01G\x3f\xf0\x00\x00\x00\x00\x00\x00"
				"\x8a\x01\x05\x8b\x01\x00\x00\x00\x07q\x01r\x02\x00\x00\x00h\x01j"
				"\x02\x00\x00\x00\x94t.TRAILING";

	scan_agrees_with_vm((const uint8_t *)p, sizeof(p) - 1, 0, sizeof(p) - 1 - 8, "text");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("torch_legacy");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_legacy_reads_every_valid_file_as_torch_load_does);
	tcase_add_test(tc, test_legacy_reads_the_torch2_compat_legacy_files_as_torch_load_does);
	tcase_add_test(tc, test_legacy_storages_are_the_data_after_each_element_count);
	tcase_add_test(tc, test_legacy_storage_bytes_equal_the_zip_records_of_the_same_tensors);
	tcase_add_test(tc, test_legacy_reads_epoch_step_and_a_0d_loss_tensor);
	tcase_add_test(tc, test_legacy_views_of_a_storage_are_reported_on_the_root);
	tcase_add_test(tc, test_legacy_accepts_bytes_after_the_last_storage_as_torch_does);
	tcase_add_test(tc, test_legacy_reads_a_file_without_storages);
	tcase_add_test(tc, test_legacy_refuses_each_damaged_file_saying_what_and_where);
	tcase_add_test(tc, test_legacy_refuses_every_prefix_of_a_file);
	tcase_add_test(tc, test_legacy_tells_a_pickle_that_is_not_torch_from_a_damaged_one);
	tcase_add_test(tc, test_legacy_respects_the_pickle_size_and_storage_count_limits);
	tcase_add_test(tc, test_legacy_refuses_a_pickle_graph_over_the_memory_budget);
	tcase_add_test(tc, test_pickle_scan_end_finds_the_end_of_every_data_pkl_as_the_vm_does);
	tcase_add_test(tc, test_pickle_scan_end_knows_the_text_opcodes);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
