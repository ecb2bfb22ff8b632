/*
 * test_zip_scan.c: the streaming record hasher must find every stored
 * record of real torch files, whatever the chunking of the stream, with the
 * same hashes as hashing the parsed storages from the file; without
 * hashing, it must tell where each payload begins and ends (the upload's
 * writer splits the stream there); and an input read through extents
 * (formats/input.h) must read the bytes of the file they stand for.
 */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/err.h"
#include "../../formats/checkpoint.h"
#include "../../formats/input.h"
#include "../../formats/sig.h"
#include "../../formats/zip_scan.h"
#include "check_main.h"

/* Feeds b[0..n) to s in chunks of `chunk` bytes (0: uneven ones, up to
 * most); with a partner, through zip_scan_feed2, and then checks that the
 * partner's hash is the whole stream's. */
static void feed_with(struct zip_scan *s, struct hasher *partner, const uint8_t *b, size_t n,
		      size_t chunk, size_t most)
{
	for (size_t off = 0, k = 1; off < n; k++) {
		size_t take = chunk ? chunk : (k * 7919) % most + 1;
		if (take > n - off)
			take = n - off;
		if (partner)
			zip_scan_feed2(s, partner, b + off, take);
		else
			zip_scan_feed(s, b + off, take);
		off += take;
	}
	if (partner) {
		struct hash want, got;
		hash_buf(&want, NULL, b, n);
		hasher_final(partner, &got, NULL);
		ck_assert_msg(!memcmp(got.b, want.b, 32), "the partner's hash, chunks of %zu",
			      chunk);
	}
}

/* Scanning with a partner (zip_scan_feed2): 0 without, 1 with. */
static int with_partner;

/* Scans path in chunks of `chunk` bytes (0: varying) and checks every
 * storage; returns how many storages the scanner had. */
static size_t check_file(const char *path, size_t chunk)
{
	size_t n, hits = 0;
	uint8_t *b = read_test_file(path, &n);
	struct ck_input in = {b, -1, n, 0, NULL, 0};
	struct fmt_ckpt *ck = NULL;
	struct zip_scan *s = NULL;

	ck_assert_int_eq(fmt_read(&ck, &in, NULL), 0);
	ck_assert_int_eq(zip_scan_new(&s, 0), 0);
	struct hasher *partner = with_partner ? hasher_new_sha256() : NULL;
	feed_with(s, partner, b, n, chunk, 4099);
	hasher_free(partner);
	for (size_t i = 0; i < ck->nstorages; i++) {
		struct hash want, got;
		uint32_t wcrc, gcrc;
		hash_buf(&want, &wcrc, b + ck->storages[i].file_off, ck->storages[i].nbytes);
		if (zip_scan_lookup(s, ck->storages[i].file_off, ck->storages[i].nbytes, &got,
				    &gcrc) == 0) {
			ck_assert_mem_eq(got.b, want.b, 32);
			ck_assert_uint_eq(gcrc, wcrc);
			hits++;
		}
	}
	zip_scan_free(s);
	fmt_ckpt_free(ck);
	free(b);
	return hits;
}

/* The payloads a scanner without hashing reports. */
struct payloads {
	uint64_t begin[4096], end[4096];
	size_t nb, ne;
	uint64_t fed; /* bytes fed so far, when end was called */
	int late;     /* an end more than 24 bytes before the bytes fed */
};

static void on_begin(void *arg, const char *name, size_t name_len, uint64_t off, unsigned method)
{
	struct payloads *p = arg;

	ck_assert_uint_eq(p->nb, p->ne); /* one at a time */
	if (p->nb < 4096)
		p->begin[p->nb++] = off;
}

static void on_end(void *arg, uint64_t end)
{
	struct payloads *p = arg;

	ck_assert_uint_eq(p->nb, p->ne + 1);
	p->end[p->ne++] = end;
}

/* Scans b without hashing in chunks of `chunk` (0: uneven ones) and
 * checks that every storage of ck is exactly one reported payload. */
static void check_payloads(const uint8_t *b, size_t n, const struct fmt_ckpt *ck, size_t chunk)
{
	struct payloads *p = calloc(1, sizeof(*p));
	struct zip_scan *s = NULL;
	struct hash h;
	uint32_t crc;

	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(zip_scan_new(&s, ZIP_SCAN_NO_HASH), 0);
	zip_scan_on_payload(s, on_begin, on_end, p);
	for (size_t off = 0, k = 1; off < n; k++) {
		size_t take = chunk ? chunk : (k * 7919) % 4099 + 1;
		if (take > n - off)
			take = n - off;
		size_t ne = p->ne;
		zip_scan_feed(s, b + off, take);
		off += take;
		for (size_t i = ne; i < p->ne; i++) /* within 24 bytes of what was fed */
			ck_assert_uint_le(off - p->end[i], off < 24 ? off : (uint64_t)take + 24);
	}
	for (size_t i = 0; i < ck->nstorages; i++) {
		uint64_t o = ck->storages[i].file_off, len = ck->storages[i].nbytes;
		size_t k = 0;
		while (k < p->ne && p->begin[k] != o)
			k++;
		ck_assert_msg(k < p->ne, "storage %zu at %llu: no payload begins there", i,
			      (unsigned long long)o);
		ck_assert_uint_eq(p->end[k], o + len);
	}
	/* nothing hashed */
	if (ck->nstorages)
		ck_assert_int_eq(
		    zip_scan_lookup(s, ck->storages[0].file_off, ck->storages[0].nbytes, &h, &crc),
		    CK_ENOTFOUND);
	zip_scan_free(s);
	free(p);
}

/* Calls fn on every zip-format torch file of the test data that parses; how
 * many there were. */
static size_t each_torch_file(void (*fn)(const char *path, const uint8_t *b, size_t n,
					 const struct fmt_ckpt *ck))
{
	const char *dirs[] = {"tests/data/torch/valid", "tests/data/compat/torch2"};
	size_t files = 0;

	for (size_t d = 0; d < 2; d++) {
		DIR *dir = opendir(dirs[d]);
		struct dirent *e;
		ck_assert_msg(dir != NULL, "no %s (tests run from the repo root)", dirs[d]);
		while ((e = readdir(dir))) {
			char path[512];
			size_t len = strlen(e->d_name), n;
			if (len < 3 || strcmp(e->d_name + len - 3, ".pt") ||
			    strstr(e->d_name, "legacy") || strstr(e->d_name, "broken"))
				continue;
			snprintf(path, sizeof(path), "%s/%s", dirs[d], e->d_name);
			uint8_t *b = read_test_file(path, &n);
			struct ck_input in = {b, -1, n, 0, NULL, 0};
			struct fmt_ckpt *ck = NULL;
			if (fmt_read(&ck, &in, NULL) == 0) {
				fn(path, b, n, ck);
				files++;
			}
			fmt_ckpt_free(ck);
			free(b);
		}
		closedir(dir);
	}
	return files;
}

static void payloads_at_three_chunkings(const char *path, const uint8_t *b, size_t n,
					const struct fmt_ckpt *ck)
{
	(void)path;
	check_payloads(b, n, ck, 1);
	check_payloads(b, n, ck, 0);
	check_payloads(b, n, ck, 1 << 20);
}

START_TEST(test_zip_scan_finds_every_payload_without_hashing)
{
	ck_assert_uint_gt(each_torch_file(payloads_at_three_chunkings), 10);
}
END_TEST

/* A file whose ranges live in other files reads as the whole file. */
START_TEST(test_input_reads_through_extents)
{
	enum { N = 10000 };
	uint8_t *all = malloc(N), *got = malloc(N);
	struct ck_extent x[3] = {{100, 1000, -1}, {1100, 50, -1}, {5000, 4000, -1}};
	int spool = open("/tmp", O_TMPFILE | O_RDWR, 0600);

	ck_assert_int_ge(spool, 0);
	for (size_t i = 0; i < N; i++)
		all[i] = (uint8_t)(i * 7 + i / 251);
	/* the spool holds what no extent holds; each extent its range */
	ck_assert_int_eq(pwrite(spool, all, 100, 0), 100);
	ck_assert_int_eq(pwrite(spool, all + 1150, 5000 - 1150, 1150), 5000 - 1150);
	ck_assert_int_eq(pwrite(spool, all + 9000, N - 9000, 9000), N - 9000);
	for (int k = 0; k < 3; k++) {
		x[k].fd = open("/tmp", O_TMPFILE | O_RDWR, 0600);
		ck_assert_int_ge(x[k].fd, 0);
		ck_assert_int_eq(pwrite(x[k].fd, all + x[k].off, x[k].len, 0), (ssize_t)x[k].len);
	}
	struct ck_input in = {NULL, spool, N, 0, x, 3};
	for (uint64_t off = 0; off < N; off += 97)
		for (size_t n = 1; off + n <= N; n = n * 3 + 1) {
			memset(got, 0, n);
			ck_assert_int_eq(ck_input_read(&in, got, n, off, "test"), 0);
			ck_assert_mem_eq(got, all + off, n);
		}
	/* a view of a part, as a DCP item's */
	struct ck_input sub = {NULL, spool, 6000, 1050, x, 3};
	ck_assert_int_eq(ck_input_read(&sub, got, 6000, 0, "test"), 0);
	ck_assert_mem_eq(got, all + 1050, 6000);
	ck_assert_int_eq(ck_input_read(&in, got, 2, N - 1, "test"), CK_ECORRUPT);
	for (int k = 0; k < 3; k++)
		close(x[k].fd);
	close(spool);
	free(all);
	free(got);
}
END_TEST

/* every storage is found, whatever the chunking */
static void storages_at_three_chunkings(const char *path, const uint8_t *b, size_t n,
					const struct fmt_ckpt *ck)
{
	(void)b;
	(void)n;
	ck_assert_msg(check_file(path, 1) == ck->nstorages, "%s: byte by byte", path);
	ck_assert_msg(check_file(path, 0) == ck->nstorages, "%s: uneven chunks", path);
	ck_assert_msg(check_file(path, 1 << 20) == ck->nstorages, "%s: 1 MiB chunks", path);
}

START_TEST(test_zip_scan_hashes_every_record_of_torch_files)
{
	ck_assert_uint_gt(each_torch_file(storages_at_three_chunkings), 10);
}
END_TEST

/* The same with the whole file's hash beside (one pass for both, as an
 * upload hashes), on the SHA extensions and through OpenSSL. */
START_TEST(test_zip_scan_hashes_records_and_the_file_in_one_pass)
{
	with_partner = 1;
	ck_assert_uint_gt(each_torch_file(storages_at_three_chunkings), 10);
	hash_force_openssl(1);
	ck_assert_uint_gt(each_torch_file(storages_at_three_chunkings), 10);
	hash_force_openssl(0);
	with_partner = 0;
}
END_TEST

/* Files read into one buffer, one after another (from `gap` bytes of
 * filler before the second on): *n bytes. */
static uint8_t *concat_files(const char *const *paths, size_t np, size_t gap, size_t *n)
{
	uint8_t *all = NULL;

	*n = 0;
	for (size_t i = 0; i < np; i++) {
		size_t m, pad = i ? gap : 0;
		uint8_t *b = read_test_file(paths[i], &m);
		all = realloc(all, *n + pad + m);
		ck_assert_ptr_nonnull(all);
		memset(all + *n, 0x5a, pad);
		memcpy(all + *n + pad, b, m);
		*n += pad + m;
		free(b);
	}
	return all;
}

/* Scans b in chunks of `chunk` (0: uneven ones), with or without the
 * file's hash beside, and checks each storage of each archive
 * fmt_read_items finds in it -> how many the scanner hashed, of *total. */
static size_t check_items(const uint8_t *b, size_t n, size_t chunk, int partner_on, size_t *total)
{
	struct ck_input in = {b, -1, n, 0, NULL, 0};
	struct fmt_item *items = NULL;
	struct zip_scan *s = NULL;
	size_t ni = 0, hits = 0;

	ck_assert_int_eq(fmt_read_items(&items, &ni, &in, NULL), 0);
	ck_assert_int_eq(zip_scan_new(&s, 0), 0);
	struct hasher *partner = partner_on ? hasher_new_sha256() : NULL;
	feed_with(s, partner, b, n, chunk, 4099);
	hasher_free(partner);
	*total = 0;
	for (size_t i = 0; i < ni; i++)
		for (size_t k = 0; k < items[i].ck->nstorages; k++) {
			const struct fmt_storage *st = &items[i].ck->storages[k];
			uint64_t off = items[i].off + st->file_off;
			struct hash want, got;
			uint32_t wcrc, gcrc;
			hash_buf(&want, &wcrc, b + off, st->nbytes);
			(*total)++;
			if (zip_scan_lookup(s, off, st->nbytes, &got, &gcrc) == 0) {
				ck_assert_mem_eq(got.b, want.b, 32);
				ck_assert_uint_eq(gcrc, wcrc);
				hits++;
			}
		}
	zip_scan_free(s);
	fmt_items_free(items, ni);
	return hits;
}

/* Archives one after another, as torch.distributed.checkpoint writes a
 * .distcp file (a torch.save zip per item): the scanner passes each
 * central directory and end record and hashes every storage of every
 * archive at its offset in the stream, the file's hash beside or not, at
 * three chunkings (DCP files torch wrote, and torch test files with and
 * without zip64 end records). Bytes between archives that begin no header
 * stop it: what it hashed before still holds, nothing after is claimed. */
START_TEST(test_zip_scan_follows_archives_one_after_another)
{
	const char *const dcp[] = {"tests/data/dcp/small/__0_0.distcp",
				   "tests/data/dcp/small/__0_1.distcp",
				   "tests/data/dcp/small/__0_2.distcp"};
	const char *const pt[] = {"tests/data/torch/valid/cnn_state_dict.pt",
				  "tests/data/compat/torch2/checkpoint.pt",
				  "tests/data/torch/valid/general_checkpoint.pt"};
	const char *const *sets[] = {dcp, pt};
	const size_t chunks[] = {1, 0, 1 << 20};

	for (size_t set = 0; set < 2; set++) {
		size_t n, total = 0, hits;
		uint8_t *b = concat_files(sets[set], 3, 0, &n);
		for (size_t c = 0; c < 3; c++)
			for (int partner = 0; partner < 2; partner++) {
				hits = check_items(b, n, chunks[c], partner, &total);
				ck_assert_uint_ge(total, 2);
				ck_assert_msg(hits == total,
					      "set %zu, chunk %zu, partner %d: %zu of %zu", set,
					      chunks[c], partner, hits, total);
			}
		free(b);
		/* filler between the archives: only the first one's */
		b = concat_files(sets[set], 3, 7, &n);
		size_t first_n;
		uint8_t *first = read_test_file(sets[set][0], &first_n);
		size_t first_total = 0,
		       first_hits = check_items(first, first_n, 0, 0, &first_total);
		hits = check_items(b, n, 0, 1, &total);
		ck_assert_uint_eq(first_hits, first_total);
		ck_assert_uint_eq(hits, first_total);
		ck_assert_uint_gt(total, first_total);
		free(first);
		free(b);
	}
}
END_TEST

START_TEST(test_zip_scan_stops_quietly_on_garbage)
{
	uint8_t junk[4096];
	struct zip_scan *s = NULL;
	struct hash h;
	uint32_t crc;

	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 131 + 7);
	memcpy(junk, "PK\3\4", 4); /* a header whose sizes are nonsense */
	junk[18] = junk[19] = junk[20] = junk[21] = 0xff;
	ck_assert_int_eq(zip_scan_new(&s, 0), 0);
	zip_scan_feed(s, junk, sizeof(junk));
	ck_assert_int_eq(zip_scan_lookup(s, 30, 4096, &h, &crc), CK_ENOTFOUND);
	zip_scan_free(s);
}
END_TEST

/* A record of unknown size (flag 8) whose payload holds descriptor
 * signatures followed by wrong sizes, at every alignment: the scanner ends
 * the record at the real descriptor only, however the bytes are cut. */
START_TEST(test_zip_scan_ends_a_record_at_its_descriptor_only)
{
	enum { PAY = 700 };
	static const char name[] = "archive/data/0";
	const size_t nl = sizeof(name) - 1;
	uint8_t z[30 + sizeof(name) + PAY + 16 + 30];
	uint8_t *pay = z + 30 + nl;
	size_t n = 0;

	memset(z, 0, sizeof(z));
	memcpy(z, "PK\3\4", 4);
	z[4] = 20;
	z[6] = 8; /* sizes in a descriptor after the data */
	z[26] = (uint8_t)nl;
	memcpy(z + 30, name, nl);
	for (size_t i = 0; i < PAY; i++)
		pay[i] = (uint8_t)(i * 37 + 11);
	for (size_t at = 0; at + 16 <= PAY; at += 37) /* false descriptors */
		memcpy(pay + at, "PK\7\10\0\0\0\0\1\0\0\0\1\0\0\0", 16);
	memcpy(pay + PAY - 3, "PK\7", 3); /* and a truncated one at the end */
	n = 30 + nl + PAY;
	memcpy(z + n, "PK\7\10", 4);
	z[n + 8] = z[n + 12] = PAY & 0xff;
	z[n + 9] = z[n + 13] = PAY >> 8;
	n += 16;
	memcpy(z + n, "PK\1\2", 4); /* the central directory begins */
	n += 30;

	struct hash want;
	uint32_t wcrc;
	hash_buf(&want, &wcrc, pay, PAY);
	for (size_t chunk = 0; chunk < 48; chunk++) {
		struct zip_scan *s = NULL;
		struct hash got;
		uint32_t gcrc;
		/* from 24 on, with the file's hash beside (feed_with checks it) */
		struct hasher *partner = chunk >= 24 ? hasher_new_sha256() : NULL;
		ck_assert_int_eq(zip_scan_new(&s, 0), 0);
		feed_with(s, partner, z, n, chunk % 24, 61);
		hasher_free(partner);
		ck_assert_msg(zip_scan_lookup(s, 30 + nl, PAY, &got, &gcrc) == 0, "chunk %zu",
			      chunk);
		ck_assert_mem_eq(got.b, want.b, 32);
		ck_assert_uint_eq(gcrc, wcrc);
		zip_scan_free(s);
	}
	/* one feed of it all */
	struct zip_scan *s = NULL;
	struct hash got;
	uint32_t gcrc;
	ck_assert_int_eq(zip_scan_new(&s, 0), 0);
	zip_scan_feed(s, z, n);
	ck_assert_int_eq(zip_scan_lookup(s, 30 + nl, PAY, &got, &gcrc), 0);
	ck_assert_mem_eq(got.b, want.b, 32);
	zip_scan_free(s);
}
END_TEST

/* sig_find against a plain search: every position of a signature in
 * buffers of every length around the 32- and 64-byte steps of its vector loops, with
 * near misses (3 of 4 bytes) before it and a signature cut by the end. */
START_TEST(test_sig_find_agrees_with_a_plain_search)
{
	static const uint8_t sig[4] = {'P', 'K', 7, 8};
	uint8_t b[200];

	for (size_t n = 0; n <= sizeof(b); n++) {
		for (size_t at = 0; at <= n + 2 && at < sizeof(b); at++) {
			memset(b, 'P', sizeof(b));
			for (size_t i = 0; i + 3 < at; i += 5)
				memcpy(b + i, "PK\x07", 3); /* near misses */
			for (size_t k = 0; k < 4 && at + k < sizeof(b); k++)
				b[at + k] = sig[k];
			const uint8_t *want = NULL;
			for (size_t i = 0; i + 4 <= n && !want; i++)
				if (!memcmp(b + i, sig, 4))
					want = b + i;
			ck_assert_ptr_eq(sig_find(b, n, sig), want);
			ck_assert_ptr_eq(sig_find_variant(0, b, n, sig), want);
			ck_assert_ptr_eq(sig_find_variant(1, b, n, sig), want);
		}
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("zip_scan");
	TCase *tc = tcase_create("zip_scan");

	tcase_add_test(tc, test_zip_scan_hashes_every_record_of_torch_files);
	tcase_add_test(tc, test_zip_scan_hashes_records_and_the_file_in_one_pass);
	tcase_add_test(tc, test_zip_scan_stops_quietly_on_garbage);
	tcase_add_test(tc, test_zip_scan_follows_archives_one_after_another);
	tcase_add_test(tc, test_zip_scan_ends_a_record_at_its_descriptor_only);
	tcase_add_test(tc, test_sig_find_agrees_with_a_plain_search);
	tcase_add_test(tc, test_zip_scan_finds_every_payload_without_hashing);
	tcase_add_test(tc, test_input_reads_through_extents);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
