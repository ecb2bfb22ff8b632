/*
 * test_zip.c: the zip reader (formats/zip.c) on torch files and on damaged
 * copies of them.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/err.h"
#include "../../formats/zip.h"
#include "check_main.h"

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *b;
	long n;

	ck_assert_msg(f != NULL, "cannot open %s", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	b = malloc((size_t)n);
	ck_assert_uint_eq(fread(b, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return b;
}

static int open_mem(struct zip_reader **z, struct ck_input *in, const uint8_t *b, size_t n)
{
	in->mem = b;
	in->fd = -1;
	in->size = n;
	return zip_reader_open(z, in, 1000);
}

START_TEST(test_zip_lists_records_with_their_data_offsets)
{
	size_t n, len;
	uint8_t *b = slurp("tests/data/torch/valid/tied.pt", &n), *data;
	struct ck_input in;
	struct zip_reader *z;
	const struct zip_entry *e;

	ck_assert_int_eq(open_mem(&z, &in, b, n), 0);
	ck_assert_uint_eq(zip_entry_count(z), 3);
	e = zip_entry_find(z, "tied/data.pkl");
	ck_assert_ptr_nonnull(e);
	ck_assert_uint_eq(e->data_off % 64, 0); /* torch's FB padding */
	ck_assert_uint_eq(e->local_off, 0);
	ck_assert_int_eq(e->method, ZIP_METHOD_STORED);
	ck_assert_ptr_eq(zip_entry_at(z, zip_entry_index(z, e)), e);
	ck_assert_int_eq(zip_entry_read(&data, &len, z, e, 1 << 20), 0);
	ck_assert_uint_eq(len, e->uncomp_size);
	ck_assert_uint_eq(data[0], 0x80);
	free(data);
	ck_assert_int_eq(zip_entry_read(&data, &len, z, e, 10), CK_ETOOBIG);
	e = zip_entry_find(z, "tied/data/0");
	ck_assert_ptr_nonnull(e);
	ck_assert_uint_eq(e->comp_size, 60);
	ck_assert_ptr_null(zip_entry_find(z, "tied/data/1"));
	ck_assert_ptr_null(zip_entry_find(z, "tied/data"));
	zip_reader_free(z);
	free(b);
}
END_TEST

START_TEST(test_zip_inflates_deflated_records)
{
	size_t n, len;
	uint8_t *b = slurp("tests/data/torch/valid/deflated_pkl.pt", &n), *data;
	struct ck_input in;
	struct zip_reader *z;
	const struct zip_entry *e;

	ck_assert_int_eq(open_mem(&z, &in, b, n), 0);
	e = zip_entry_find(z, "tied/data.pkl");
	ck_assert_int_eq(e->method, ZIP_METHOD_DEFLATED);
	ck_assert_int_eq(zip_entry_read(&data, &len, z, e, 1 << 20), 0);
	ck_assert_uint_eq(len, e->uncomp_size);
	ck_assert_uint_eq(data[len - 1], '.');
	free(data);
	zip_reader_free(z);
	free(b);
}
END_TEST

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint8_t *central(uint8_t *b, size_t n, int which)
{
	for (size_t i = 0; i + 4 < n; i++)
		if (b[i] == 'P' && b[i + 1] == 'K' && b[i + 2] == 1 && b[i + 3] == 2 && !which--)
			return b + i;
	ck_abort_msg("no central entry");
	return NULL;
}

START_TEST(test_zip_rejects_entry_past_end)
{
	size_t n;
	uint8_t *b = slurp("tests/data/torch/valid/tied.pt", &n);
	struct ck_input in;
	struct zip_reader *z;

	put32(central(b, n, 2) + 42, (uint32_t)n - 10);
	ck_assert_int_eq(open_mem(&z, &in, b, n), CK_ECORRUPT);
	ck_assert_ptr_null(z);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "offset"));
	free(b);
}
END_TEST

START_TEST(test_zip_rejects_overlapping_entries)
{
	size_t n;
	uint8_t *b = slurp("tests/data/torch/valid/tied.pt", &n);
	struct ck_input in;
	struct zip_reader *z;
	uint8_t *e = central(b, n, 0);

	/* data.pkl claims 100 more bytes: it now runs into the next record */
	put32(e + 20, (e[20] | e[21] << 8) + 100);
	put32(e + 24, (e[24] | e[25] << 8) + 100);
	put32(e + 16, 0);
	ck_assert_int_eq(open_mem(&z, &in, b, n), CK_ECORRUPT);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "overlaps"));
	free(b);
}
END_TEST

START_TEST(test_zip_rejects_crc_mismatch_and_too_many_records)
{
	size_t n, len;
	uint8_t *b = slurp("tests/data/torch/valid/tied.pt", &n), *data;
	struct ck_input in;
	struct zip_reader *z;
	const struct zip_entry *e;

	ck_assert_int_eq(open_mem(&z, &in, b, n), 0);
	e = zip_entry_find(z, "tied/data.pkl");
	b[e->data_off + 5] ^= 1;
	ck_assert_int_eq(zip_entry_read(&data, &len, z, e, 1 << 20), CK_ECORRUPT);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "CRC"));
	zip_reader_free(z);
	ck_assert_int_eq(zip_reader_open(&z, &in, 2), CK_ETOOBIG);
	free(b);
}
END_TEST

START_TEST(test_zip_rejects_non_zip_input)
{
	struct ck_input in;
	struct zip_reader *z;

	ck_assert_int_eq(open_mem(&z, &in, (const uint8_t *)"not a zip file at all, no", 25),
			 CK_EFORMAT);
	ck_assert_int_eq(open_mem(&z, &in, (const uint8_t *)"", 0), CK_EFORMAT);
}
END_TEST

/* A file that opens with a local header but has no end record is a zip cut
 * short: damaged (422), not some other format (415). */
START_TEST(test_zip_calls_a_headed_file_without_end_record_corrupt)
{
	struct ck_input in;
	struct zip_reader *z;

	ck_assert_int_eq(open_mem(&z, &in, (const uint8_t *)"PK\3\4 not really a zip file", 27),
			 CK_ECORRUPT);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "truncated"));
	ck_assert_int_eq(open_mem(&z, &in, (const uint8_t *)"PK\3\4", 4), CK_ECORRUPT);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("zip");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_zip_lists_records_with_their_data_offsets);
	tcase_add_test(tc, test_zip_inflates_deflated_records);
	tcase_add_test(tc, test_zip_rejects_entry_past_end);
	tcase_add_test(tc, test_zip_rejects_overlapping_entries);
	tcase_add_test(tc, test_zip_rejects_crc_mismatch_and_too_many_records);
	tcase_add_test(tc, test_zip_rejects_non_zip_input);
	tcase_add_test(tc, test_zip_calls_a_headed_file_without_end_record_corrupt);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
