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
#include "../../formats/zip_scan.h"
#include "check_main.h"

/* Readers take their memory from the process's budget through one meter
 * per reader. */
static struct fmt_meter meter;

static int open_mem(struct zip_reader **z, struct ck_input *in, const uint8_t *b, size_t n)
{
	*in = (struct ck_input){.mem = b, .fd = -1, .size = n};
	if (meter.budget)
		fmt_meter_end(&meter); /* the previous reader's memory */
	fmt_meter_begin(&meter, NULL);
	return zip_reader_open(z, in, 1000, &meter);
}

START_TEST(test_zip_lists_records_with_their_data_offsets)
{
	size_t n, len;
	uint8_t *b = read_test_file("tests/data/torch/valid/tied.pt", &n), *data;
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
	zip_entry_buf_free(z, data, len);
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
	uint8_t *b = read_test_file("tests/data/torch/valid/deflated_pkl.pt", &n), *data;
	struct ck_input in;
	struct zip_reader *z;
	const struct zip_entry *e;

	ck_assert_int_eq(open_mem(&z, &in, b, n), 0);
	e = zip_entry_find(z, "tied/data.pkl");
	ck_assert_int_eq(e->method, ZIP_METHOD_DEFLATED);
	ck_assert_int_eq(zip_entry_read(&data, &len, z, e, 1 << 20), 0);
	ck_assert_uint_eq(len, e->uncomp_size);
	ck_assert_uint_eq(data[len - 1], '.');
	zip_entry_buf_free(z, data, len);
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
	uint8_t *b = read_test_file("tests/data/torch/valid/tied.pt", &n);
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
	uint8_t *b = read_test_file("tests/data/torch/valid/tied.pt", &n);
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
	uint8_t *b = read_test_file("tests/data/torch/valid/tied.pt", &n), *data;
	struct ck_input in;
	struct zip_reader *z;
	const struct zip_entry *e;

	ck_assert_int_eq(open_mem(&z, &in, b, n), 0);
	e = zip_entry_find(z, "tied/data.pkl");
	b[e->data_off + 5] ^= 1;
	ck_assert_int_eq(zip_entry_read(&data, &len, z, e, 1 << 20), CK_ECORRUPT);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "CRC"));
	zip_reader_free(z);
	ck_assert_int_eq(zip_reader_open(&z, &in, 2, &meter), CK_ETOOBIG);
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

/* A zip of n empty stored records whose names are name_len bytes long. */
static uint8_t *many_records(size_t n, size_t name_len, size_t *len)
{
	size_t per = 30 + name_len, cen = 46 + name_len, total = n * (per + cen) + 22, p = 0;
	uint8_t *b = calloc(1, total);
	char *name = malloc(name_len + 1);

	ck_assert_ptr_nonnull(b);
	for (size_t pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < n; i++) {
			snprintf(name, name_len + 1, "a/data/%0*zu", (int)name_len - 7, i);
			if (pass == 0) {
				put32(b + p, 0x04034b50);
				b[p + 4] = 20;
				b[p + 26] = (uint8_t)name_len;
				b[p + 27] = (uint8_t)(name_len >> 8);
				memcpy(b + p + 30, name, name_len);
				p += per;
			} else {
				put32(b + p, 0x02014b50);
				b[p + 4] = b[p + 6] = 20;
				b[p + 28] = (uint8_t)name_len;
				b[p + 29] = (uint8_t)(name_len >> 8);
				put32(b + p + 42, (uint32_t)(i * per));
				memcpy(b + p + 46, name, name_len);
				p += cen;
			}
		}
	put32(b + p, 0x06054b50);
	b[p + 8] = b[p + 10] = (uint8_t)n;
	b[p + 9] = b[p + 11] = (uint8_t)(n >> 8);
	put32(b + p + 12, (uint32_t)(n * cen));
	put32(b + p + 16, (uint32_t)(n * per));
	free(name);
	*len = total;
	return b;
}

START_TEST(test_zip_takes_its_directory_from_the_memory_budget)
{
	/* 20,000 records with 200-byte names: ~6 MB of directory in memory */
	size_t n;
	uint8_t *b = many_records(20000, 200, &n);
	struct ck_input in = {.mem = b, .fd = -1, .size = n};
	struct fmt_budget small;
	struct fmt_meter m;
	struct zip_reader *z = NULL;

	fmt_budget_init(&small, 2u << 20, 2u << 20);
	fmt_meter_begin(&m, &small);
	ck_assert_int_eq(zip_reader_open(&z, &in, 100000, &m), CK_ETOOBIG);
	ck_assert_ptr_null(z);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "zip"));
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "per-upload memory budget"));
	ck_assert_uint_le(fmt_budget_peak(&small), 2u << 20);
	fmt_meter_end(&m);
	ck_assert_uint_eq(fmt_budget_used(&small), 0);
	/* within 40 MiB it reads, and gives it all back */
	fmt_budget_init(&small, 40u << 20, 40u << 20);
	fmt_meter_begin(&m, &small);
	ck_assert_msg(zip_reader_open(&z, &in, 100000, &m) == 0, "%s", ck_errmsg());
	ck_assert_uint_eq(zip_entry_count(z), 20000);
	ck_assert_ptr_nonnull(zip_entry_find(z, zip_entry_at(z, 19999)->name));
	ck_assert_uint_gt(fmt_budget_used(&small), 20000 * 200);
	zip_reader_free(z);
	fmt_meter_end(&m);
	ck_assert_uint_eq(fmt_budget_used(&small), 0);
	free(b);
}
END_TEST

START_TEST(test_zip_scan_keeps_at_most_65536_record_hashes)
{
	/* 70,000 empty records, all hashed (min_record 0): the scanner keeps
	 * the first 65,536 and stops, its memory bounded whatever the upload */
	size_t n, name_len = 20, per = 30 + name_len;
	uint8_t *b = many_records(70000, name_len, &n);
	struct zip_scan *s = NULL;
	struct hash h;
	uint32_t crc;

	ck_assert_int_eq(zip_scan_new(&s, 0), 0);
	for (size_t off = 0; off < n; off += 4096)
		zip_scan_feed(s, b + off, n - off < 4096 ? n - off : 4096);
	ck_assert_int_eq(zip_scan_lookup(s, 0 * per + per, 0, &h, &crc), 0);
	ck_assert_int_eq(zip_scan_lookup(s, 65535 * per + per, 0, &h, &crc), 0);
	ck_assert_int_eq(zip_scan_lookup(s, 65536 * per + per, 0, &h, &crc), CK_ENOTFOUND);
	ck_assert_int_eq(zip_scan_lookup(s, 69999 * per + per, 0, &h, &crc), CK_ENOTFOUND);
	zip_scan_free(s);
	free(b);
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
	tcase_add_test(tc, test_zip_takes_its_directory_from_the_memory_budget);
	tcase_add_test(tc, test_zip_scan_keeps_at_most_65536_record_hashes);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
