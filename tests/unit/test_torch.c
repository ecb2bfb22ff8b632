/*
 * test_torch.c: the PyTorch zip reader (formats/torch.c, formats/checkpoint.c)
 * against torch.load's view of real files: tests/data/torch/valid (written by
 * tests/data/torch/make_data.py with torch 1.13) and tests/data/compat/torch2
 * (torch 2.x, from tracel-ai/burn: see tests/data/compat/README.md), each
 * compared with tests/data/torch/expect/<name>.txt; then damaged files: every
 * truncation, patched offsets and sizes, bad records. The legacy files
 * (legacy_*.pt) of both folders are test_torch_legacy.c's.
 */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/err.h"
#include "../../formats/checkpoint.h"

#include "check_main.h"
#include "test_torch_expect.h"

START_TEST(test_torch_reads_every_valid_file_as_torch_load_does)
{
	DIR *d = opendir(VALID_DIR);
	struct dirent *de;
	int count = 0;

	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d))) {
		char file[512], name[256];

		if (!ends_with(de->d_name, ".pt") || !strncmp(de->d_name, "legacy_", 7))
			continue;
		snprintf(file, sizeof(file), "%s/%s", VALID_DIR, de->d_name);
		snprintf(name, sizeof(name), "%.*s", (int)strlen(de->d_name) - 3, de->d_name);
		check_against_expect(file, name, FMT_TORCH_ZIP);
		count++;
	}
	closedir(d);
	ck_assert_int_ge(count, 12);
}
END_TEST

START_TEST(test_torch_reads_every_torch2_compat_file_as_torch_load_does)
{
	DIR *d = opendir(COMPAT_DIR);
	struct dirent *de;
	int count = 0;

	ck_assert_msg(d != NULL, "no %s (tests run from the repo root)", COMPAT_DIR);
	while ((de = readdir(d))) {
		char file[512], name[256];
		size_t n;
		uint8_t *b;
		struct fmt_ckpt *c = NULL;
		int err;

		if (!ends_with(de->d_name, ".pt") || strstr(de->d_name, "legacy"))
			continue;
		snprintf(file, sizeof(file), "%s/%s", COMPAT_DIR, de->d_name);
		if (!strcmp(de->d_name, "broken.pt")) {
			b = slurp(file, &n);
			ck_assert_ptr_nonnull(b);
			err = read_mem(&c, b, n);
			ck_assert_msg(err == CK_EFORMAT, "%s: %d %s", file, err, ck_errmsg());
			ck_assert_ptr_null(c);
			free(b);
			continue;
		}
		snprintf(name, sizeof(name), "compat_%.*s", (int)strlen(de->d_name) - 3,
			 de->d_name);
		check_against_expect(file, name, FMT_TORCH_ZIP);
		count++;
	}
	closedir(d);
	ck_assert_int_ge(count, 24);
}
END_TEST

static struct fmt_ckpt *load_valid(const char *name, uint8_t **bytes, size_t *n)
{
	char file[512];
	struct fmt_ckpt *c = NULL;
	int err;

	snprintf(file, sizeof(file), "%s/%s", VALID_DIR, name);
	*bytes = slurp(file, n);
	ck_assert_ptr_nonnull(*bytes);
	err = read_mem(&c, *bytes, *n);
	ck_assert_msg(err == 0, "%s: %s", name, ck_errmsg());
	return c;
}

START_TEST(test_torch_general_checkpoint_with_loss_object_has_no_loss)
{
	uint8_t *b;
	size_t n;
	struct fmt_ckpt *c = load_valid("general_checkpoint.pt", &b, &n);

	ck_assert_int_eq(c->has_epoch, 1);
	ck_assert_int_eq(c->epoch, 5);
	ck_assert_int_eq(c->has_loss, 0);
	ck_assert_int_eq(c->has_step, 0);
	fmt_ckpt_free(c);
	free(b);
}
END_TEST

START_TEST(test_torch_reads_loss_from_a_0d_tensor)
{
	uint8_t *b;
	size_t n;
	struct fmt_ckpt *c = load_valid("loss_tensor.pt", &b, &n);

	ck_assert_int_eq(c->has_loss, 1);
	ck_assert_double_eq(c->loss, 0.25);
	ck_assert_int_eq(c->has_step, 1);
	ck_assert_int_eq(c->step, 1200);
	fmt_ckpt_free(c);
	free(b);
	c = load_valid("loss_bf16.pt", &b, &n);
	ck_assert_int_eq(c->has_loss, 1);
	ck_assert_double_eq(c->loss, 1.5);
	fmt_ckpt_free(c);
	free(b);
}
END_TEST

START_TEST(test_torch_tied_weights_share_one_storage)
{
	uint8_t *b;
	size_t n;
	struct fmt_ckpt *c = load_valid("tied.pt", &b, &n);

	ck_assert_uint_eq(c->ntensors, 2);
	ck_assert_uint_eq(c->nstorages, 1);
	ck_assert_str_eq(c->tensors[0].path, "/emb.weight");
	ck_assert_str_eq(c->tensors[1].path, "/out.weight");
	ck_assert_uint_eq(c->tensors[0].storage, c->tensors[1].storage);
	ck_assert_uint_eq(c->storages[0].nbytes, 5 * 3 * 4);
	ck_assert_int_eq(c->storages[0].dtype, DT_FLOAT32);
	ck_assert_uint_eq(c->storages[0].file_off % 64, 0);
	fmt_ckpt_free(c);
	free(b);
}
END_TEST

START_TEST(test_torch_storage_ranges_hold_the_storage_bytes)
{
	uint8_t *b;
	size_t n;
	struct fmt_ckpt *c = load_valid("views.pt", &b, &n);
	float f;

	ck_assert_uint_eq(c->nstorages, 1);
	ck_assert_uint_eq(c->storages[0].nbytes, 400);
	memcpy(&f, b + c->storages[0].file_off + 4 * 37, 4);
	ck_assert(f == 37.0f);
	ck_assert_uint_ne(c->storages[0].zip_crc, 0);
	fmt_ckpt_free(c);
	free(b);
}
END_TEST

START_TEST(test_torch_rejects_every_truncation)
{
	const char *files[] = {"tied.pt", "zero_elements.pt"};

	for (size_t f = 0; f < 2; f++) {
		uint8_t *b;
		size_t n;
		struct fmt_ckpt *c = load_valid(files[f], &b, &n);

		fmt_ckpt_free(c);
		for (size_t len = 0; len < n; len++) {
			struct fmt_ckpt *t = NULL;
			uint8_t *copy = malloc(len ? len : 1);
			int err;

			memcpy(copy, b, len);
			err = read_mem(&t, copy, len);
			ck_assert_msg(err == CK_ECORRUPT || err == CK_EFORMAT,
				      "%s cut at %zu: %d %s", files[f], len, err, ck_errmsg());
			ck_assert_ptr_null(t);
			ck_assert_str_ne(ck_errmsg(), "");
			free(copy);
		}
		free(b);
	}
}
END_TEST

/* Offset of the end of central directory record (comment-less file). */
static size_t eocd(const uint8_t *b, size_t n)
{
	ck_assert_uint_ge(n, 22);
	ck_assert(b[n - 22] == 'P' && b[n - 21] == 'K' && b[n - 20] == 5 && b[n - 19] == 6);
	return n - 22;
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* The zip64 end record (torch writes one even for tiny files). */
static uint8_t *eocd64(uint8_t *b, size_t n)
{
	size_t e = eocd(b, n);
	uint64_t off = 0;

	ck_assert(b[e - 20] == 'P' && b[e - 19] == 'K' && b[e - 18] == 6 && b[e - 17] == 7);
	for (int i = 7; i >= 0; i--)
		off = off << 8 | b[e - 20 + 8 + i];
	ck_assert(b[off] == 'P' && b[off + 1] == 'K' && b[off + 2] == 6 && b[off + 3] == 6);
	return b + off;
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Central directory entry named name (the first whose name ends with it). */
static uint8_t *central(uint8_t *b, size_t n, const char *name)
{
	size_t nl = strlen(name);

	for (size_t i = 0; i + 46 < n; i++) {
		if (b[i] == 'P' && b[i + 1] == 'K' && b[i + 2] == 1 && b[i + 3] == 2) {
			size_t l = b[i + 28] | b[i + 29] << 8;
			if (l >= nl && !memcmp(b + i + 46 + l - nl, name, nl))
				return b + i;
		}
	}
	ck_abort_msg("no central entry %s", name);
	return NULL;
}

START_TEST(test_torch_rejects_central_directory_past_end)
{
	uint8_t *b;
	size_t n;
	fmt_ckpt_free(load_valid("tied.pt", &b, &n));
	put32(b + eocd(b, n) + 16, (uint32_t)n + 100);
	expect_fail(b, n, CK_ECORRUPT, "disagree");
	put32(b + eocd(b, n) + 16, 0xffffffffu);
	put64(eocd64(b, n) + 48, n + 100);
	expect_fail(b, n, CK_ECORRUPT, "runs past the end records");
	free(b);
}
END_TEST

START_TEST(test_torch_rejects_entry_size_past_end)
{
	uint8_t *b;
	size_t n;
	fmt_ckpt_free(load_valid("tied.pt", &b, &n));
	uint8_t *e = central(b, n, "data/0");
	put32(e + 20, 1000000);
	put32(e + 24, 1000000);
	expect_fail(b, n, CK_ECORRUPT, "data/0");
	free(b);
}
END_TEST

START_TEST(test_torch_rejects_huge_declared_sizes)
{
	uint8_t *b;
	size_t n;
	fmt_ckpt_free(load_valid("tied.pt", &b, &n));
	uint8_t *e = central(b, n, "data.pkl");
	put32(e + 20, 0xfffffff0u);
	put32(e + 24, 0xfffffff0u);
	expect_fail(b, n, CK_ECORRUPT, "data.pkl");
	free(b);
	/* a huge record count in the end record is refused before allocation */
	fmt_ckpt_free(load_valid("tied.pt", &b, &n));
	b[eocd(b, n) + 10] = 0xff;
	b[eocd(b, n) + 11] = 0xff;
	put64(eocd64(b, n) + 32, UINT64_C(1) << 60);
	expect_fail(b, n, CK_ETOOBIG, "records");
	put64(eocd64(b, n) + 32, 100000);
	expect_fail(b, n, CK_ECORRUPT, "records");
	free(b);
}
END_TEST

START_TEST(test_torch_rejects_storage_size_not_matching_numel)
{
	uint8_t *b;
	size_t n;
	fmt_ckpt_free(load_valid("tied.pt", &b, &n));
	/* shrink the record by 4 bytes: sizes in its central entry */
	uint8_t *e = central(b, n, "data/0");
	put32(e + 20, 56);
	put32(e + 24, 56);
	expect_fail(b, n, CK_ECORRUPT, "data/0");
	free(b);
}
END_TEST

START_TEST(test_torch_rejects_persistent_id_naming_a_missing_record)
{
	uint8_t *b;
	size_t n;
	fmt_ckpt_free(load_valid("tied.pt", &b, &n));
	/* rename the record in its central entry and local header */
	uint8_t *e = central(b, n, "data/0");
	size_t l = e[28] | e[29] << 8;
	e[46 + l - 1] = '9';
	uint32_t lo = e[42] | e[43] << 8 | e[44] << 16 | (uint32_t)e[45] << 24;
	b[lo + 30 + l - 1] = '9';
	expect_fail(b, n, CK_ECORRUPT, "not in the zip");
	free(b);
}
END_TEST

START_TEST(test_torch_rejects_deflated_storages_and_unknown_formats)
{
	uint8_t *b;
	size_t n;

	b = slurp("tests/data/torch/invalid/deflated_storage.pt", &n);
	ck_assert_ptr_nonnull(b);
	expect_fail(b, n, CK_EFORMAT, "compressed");
	free(b);
	expect_fail((const uint8_t *)"hello world, not a checkpoint", 29, CK_EFORMAT,
		    "safetensors");
	expect_fail((const uint8_t *)"hello world, not a checkpoint", 29, CK_EFORMAT,
		    "PyTorch legacy");
	expect_fail((const uint8_t *)"", 0, CK_EFORMAT, "PyTorch zip");
}
END_TEST

START_TEST(test_torch_rejects_big_endian_files)
{
	uint8_t *b;
	size_t n;
	fmt_ckpt_free(load_valid("tied.pt", &b, &n));
	/* torch 1.13 writes no byteorder record: use a torch 2 file */
	free(b);
	b = slurp(COMPAT_DIR "/float32.pt", &n);
	ck_assert_ptr_nonnull(b);
	uint8_t *e = central(b, n, "byteorder");
	uint32_t lo = e[42] | e[43] << 8 | e[44] << 16 | (uint32_t)e[45] << 24;
	size_t ln = b[lo + 26] | b[lo + 27] << 8, lx = b[lo + 28] | b[lo + 29] << 8;
	memcpy(b + lo + 30 + ln + lx, "big\0\0\0", 6);
	put32(e + 16, 0); /* CRC off */
	put32(e + 20, 3);
	put32(e + 24, 3);
	expect_fail(b, n, CK_EFORMAT, "big-endian");
	free(b);
}
END_TEST

START_TEST(test_fmt_detect_sniffs_each_format)
{
	struct ck_input in = {.mem = (const uint8_t *)"PK\3\4xxxxxxx", .fd = -1, .size = 12};
	enum fmt_kind k;

	ck_assert_int_eq(fmt_detect(&k, &in), 0);
	ck_assert_int_eq(k, FMT_TORCH_ZIP);
	in.mem = (const uint8_t *)"\x80\x02\x8a\x0a";
	in.size = 4;
	ck_assert_int_eq(fmt_detect(&k, &in), 0);
	ck_assert_int_eq(k, FMT_TORCH_LEGACY);
	in.mem = (const uint8_t *)"\x02\0\0\0\0\0\0\0{}";
	in.size = 10;
	ck_assert_int_eq(fmt_detect(&k, &in), 0);
	ck_assert_int_eq(k, FMT_SAFETENSORS);
	in.mem = (const uint8_t *)"abc";
	in.size = 3;
	ck_assert_int_eq(fmt_detect(&k, &in), 0);
	ck_assert_int_eq(k, FMT_UNKNOWN);
	ck_assert_str_eq(fmt_kind_name(FMT_TORCH_ZIP), "torch-zip");
	ck_assert_str_eq(fmt_kind_name(FMT_SAFETENSORS), "safetensors");
}
END_TEST

/* ---- memory: hostile files in the budget, legitimate ones within it ---- */

/* A growable byte buffer for building inputs. */
struct bytes {
	uint8_t *p;
	size_t n, cap;
};

static void add(struct bytes *b, const void *p, size_t n)
{
	if (b->n + n > b->cap) {
		b->cap = (b->n + n) * 2;
		b->p = realloc(b->p, b->cap);
		ck_assert_ptr_nonnull(b->p);
	}
	memcpy(b->p + b->n, p, n);
	b->n += n;
}

/* v as n little-endian bytes (n up to 16: zeros past the 8th). */
static void add_le(struct bytes *b, uint64_t v, int n)
{
	uint8_t x[16] = {0};

	for (int i = 0; i < n && i < 8; i++)
		x[i] = (uint8_t)(v >> (8 * i));
	add(b, x, (size_t)n);
}

static void add_str(struct bytes *b, const char *s)
{
	add(b, s, strlen(s));
}

/* A literal, NUL bytes included. */
#define ADD_LIT(b, lit) add(b, lit, sizeof(lit) - 1)

/* BINUNICODE s */
static void add_unicode(struct bytes *b, const char *s)
{
	ADD_LIT(b, "X");
	add_le(b, strlen(s), 4);
	add_str(b, s);
}

/* A stored zip (CRC 0: unchecked) of records archive/<names[i]>. */
static uint8_t *zip_of(size_t *len, const char *const *names, const struct bytes *data, size_t n)
{
	struct bytes z = {0};
	uint64_t *off = calloc(n, sizeof(uint64_t)), cd, cd_size;
	char name[256];

	for (size_t i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "archive/%s", names[i]);
		off[i] = z.n;
		add_le(&z, 0x04034b50, 4);
		add_le(&z, 20, 2);
		add_le(&z, 0, 2 + 2 + 2 + 2 + 4);
		add_le(&z, data[i].n, 4);
		add_le(&z, data[i].n, 4);
		add_le(&z, strlen(name), 2);
		add_le(&z, 0, 2);
		add_str(&z, name);
		add(&z, data[i].p, data[i].n);
	}
	cd = z.n;
	for (size_t i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "archive/%s", names[i]);
		add_le(&z, 0x02014b50, 4);
		add_le(&z, 20, 2);
		add_le(&z, 20, 2);
		add_le(&z, 0, 2 + 2 + 2 + 2 + 4);
		add_le(&z, data[i].n, 4);
		add_le(&z, data[i].n, 4);
		add_le(&z, strlen(name), 2);
		add_le(&z, 0, 2 + 2 + 2 + 2 + 4);
		add_le(&z, off[i], 4);
		add_str(&z, name);
	}
	cd_size = z.n - cd;
	add_le(&z, 0x06054b50, 4);
	add_le(&z, 0, 4);
	add_le(&z, n, 2);
	add_le(&z, n, 2);
	add_le(&z, cd_size, 4);
	add_le(&z, cd, 4);
	add_le(&z, 0, 2);
	free(off);
	*len = z.n;
	return z.p;
}

/* data.pkl of {"t<i>": tensor of shape (numel,)} for i < n, protocol 2. With
 * shared, every tensor is a view of storage "0" (numel 0); else tensor i has
 * storage "<i>" of numel float32s. */
static void state_dict_pickle(struct bytes *b, size_t n, int shared, size_t numel)
{
	char key[32];

	ADD_LIT(b, "\x80\x02}q\x00(");
	for (size_t i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "t%zu", i);
		add_unicode(b, key);
		add_str(b, i ? "h\x01" : "ctorch._utils\n_rebuild_tensor_v2\nq\x01");
		ADD_LIT(b, "(");
		if (shared && i > 0) {
			ADD_LIT(b, "h\x03");
		} else {
			ADD_LIT(b, "(");
			add_unicode(b, "storage");
			add_str(b, i ? "h\x02" : "ctorch\nFloatStorage\nq\x02");
			snprintf(key, sizeof(key), "%zu", shared ? (size_t)0 : i);
			add_unicode(b, key);
			add_unicode(b, "cpu");
			ADD_LIT(b, "J");
			add_le(b, shared ? 0 : numel, 4);
			add_str(b, shared ? "tq\x03" : "t");
		}
		ADD_LIT(b, "Q"); /* BINPERSID */
		ADD_LIT(b, "K\x00J");
		add_le(b, shared ? 0 : numel, 4);
		ADD_LIT(b, "\x85K\x01\x85\x89"); /* (numel,), (1,), False */
		add_str(b, i ? "h\x04" : "ccollections\nOrderedDict\nq\x04");
		ADD_LIT(b, ")RtR"); /* OrderedDict(); args tuple; REDUCE */
	}
	ADD_LIT(b, "u.");
}

/* A torch zip of data.pkl = pkl, and storages "0".."nstorages-1" of
 * storage_bytes each. */
static uint8_t *torch_zip(size_t *len, struct bytes *pkl, size_t nstorages, size_t storage_bytes)
{
	const char **names = calloc(nstorages + 1, sizeof(char *));
	struct bytes *data = calloc(nstorages + 1, sizeof(struct bytes));
	uint8_t *z;

	names[0] = "data.pkl";
	data[0] = *pkl;
	for (size_t i = 0; i < nstorages; i++) {
		char *nm = malloc(32);
		snprintf(nm, 32, "data/%zu", i);
		names[i + 1] = nm;
		data[i + 1].p = calloc(1, storage_bytes ? storage_bytes : 1);
		data[i + 1].n = storage_bytes;
	}
	z = zip_of(len, names, data, nstorages + 1);
	for (size_t i = 0; i < nstorages; i++) {
		free((char *)names[i + 1]);
		free(data[i + 1].p);
	}
	free(names);
	free(data);
	return z;
}

/* This process's peak RSS in MiB since the last reset_peak_rss. */
static void reset_peak_rss(void)
{
	FILE *f = fopen("/proc/self/clear_refs", "w");

	ck_assert_ptr_nonnull(f);
	fputs("5", f);
	fclose(f);
}

static double peak_rss_mib(void)
{
	char line[256];
	FILE *f = fopen("/proc/self/status", "r");
	long kb = -1;

	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmHWM:", 6))
			kb = strtol(line + 6, NULL, 10);
	fclose(f);
	ck_assert_int_ge(kb, 0);
	return kb / 1024.0;
}

static double rss_mib(void)
{
	char line[256];
	FILE *f = fopen("/proc/self/status", "r");
	long kb = -1;

	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmRSS:", 6))
			kb = strtol(line + 6, NULL, 10);
	fclose(f);
	return kb / 1024.0;
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

/* fmt_read must refuse b with code and a message holding needle, its
 * memory growing by less than PARSE_RSS_MIB. */
static void expect_refused_in_budget(uint8_t *b, size_t n, int code, const char *needle)
{
	struct fmt_ckpt *c = NULL;
	double before;
	int err;

	reset_peak_rss();
	before = rss_mib();
	err = read_mem(&c, b, n);
	ck_assert_msg(err == code, "expected %d got %d (%s)", code, err, ck_errmsg());
	ck_assert_ptr_null(c);
	ck_assert_msg(strstr(ck_errmsg(), needle) != NULL, "message '%s' lacks '%s'", ck_errmsg(),
		      needle);
	ck_assert_msg(peak_rss_mib() - before < PARSE_RSS_MIB, "the parse took %.1f MiB",
		      peak_rss_mib() - before);
}

START_TEST(test_torch_refuses_a_pickle_graph_over_the_memory_budget)
{
	/* data.pkl: ']' then 4M x ']a' (8 MB): a list of 4 million empty lists */
	struct bytes pkl = {0};
	size_t n;
	uint8_t *z;

	ADD_LIT(&pkl, "\x80\x02]");
	for (size_t i = 0; i < (4u << 20); i++)
		ADD_LIT(&pkl, "]a");
	ADD_LIT(&pkl, ".");
	z = torch_zip(&n, &pkl, 0, 0);
	expect_refused_in_budget(z, n, CK_ETOOBIG, "per-upload memory budget");
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "archive/data.pkl"));
	free(z);
	free(pkl.p);
}
END_TEST

START_TEST(test_torch_refuses_200000_zero_size_tensors_within_the_budget)
{
	struct bytes pkl = {0};
	size_t n;
	uint8_t *z;

	state_dict_pickle(&pkl, 200000, 1, 0);
	z = torch_zip(&n, &pkl, 1, 0);
	expect_refused_in_budget(z, n, CK_ETOOBIG, "per-upload memory budget");
	free(z);
	free(pkl.p);
}
END_TEST

START_TEST(test_torch_reads_10000_tensors_well_within_the_budget)
{
	struct bytes pkl = {0};
	struct fmt_budget b;
	struct fmt_limits lim;
	struct fmt_ckpt *c = NULL;
	struct ck_input in;
	size_t n;
	uint8_t *z;

	state_dict_pickle(&pkl, 10000, 0, 4);
	z = torch_zip(&n, &pkl, 10000, 16);
	in = (struct ck_input){.mem = z, .fd = -1, .size = n};
	fmt_limits_default(&lim);
	fmt_budget_init(&b, FMT_BUDGET_PER_UPLOAD, FMT_BUDGET_TOTAL);
	lim.budget = &b;
	ck_assert_msg(fmt_read(&c, &in, &lim) == 0, "%s", ck_errmsg());
	ck_assert_uint_eq(c->ntensors, 10000);
	ck_assert_uint_eq(c->nstorages, 10000);
	ck_assert_msg(fmt_budget_peak(&b) < FMT_BUDGET_PER_UPLOAD / 2, "peak %llu",
		      (unsigned long long)fmt_budget_peak(&b));
	/* the checkpoint holds part of the budget until it is freed */
	ck_assert_uint_gt(fmt_budget_used(&b), 0);
	ck_assert_uint_lt(fmt_budget_used(&b), fmt_budget_peak(&b));
	fmt_ckpt_free(c);
	ck_assert_uint_eq(fmt_budget_used(&b), 0);
	free(z);
	free(pkl.p);
}
END_TEST

START_TEST(test_torch_gives_its_budget_back_after_a_failure)
{
	uint8_t *b;
	size_t n;
	struct fmt_budget *pb = fmt_budget_process();

	fmt_ckpt_free(load_valid("tied.pt", &b, &n));
	ck_assert_uint_eq(fmt_budget_used(pb), 0);
	for (size_t len = 0; len < n; len += 7) {
		struct fmt_ckpt *t = NULL;
		ck_assert_int_lt(read_mem(&t, b, len), 0);
		ck_assert_uint_eq(fmt_budget_used(pb), 0);
	}
	free(b);
}
END_TEST

START_TEST(test_fmt_read_refuses_when_other_uploads_hold_the_shared_budget)
{
	uint8_t *b;
	size_t n;
	struct fmt_budget shared;
	struct fmt_meter other;
	struct fmt_limits lim;
	struct fmt_ckpt *c = NULL;
	struct ck_input in;

	fmt_ckpt_free(load_valid("general_checkpoint.pt", &b, &n));
	in = (struct ck_input){.mem = b, .fd = -1, .size = n};
	fmt_limits_default(&lim);
	fmt_budget_init(&shared, 4u << 20, 8u << 20);
	lim.budget = &shared;
	/* other uploads hold all but 16 KiB of the total */
	fmt_meter_begin(&other, &shared);
	ck_assert_int_eq(fmt_meter_charge(&other, 4u << 20, "one upload"), 0);
	{
		struct fmt_meter third;
		fmt_meter_begin(&third, &shared);
		ck_assert_int_eq(fmt_meter_charge(&third, (4u << 20) - (16u << 10), "another"), 0);
		ck_assert_int_eq(fmt_read(&c, &in, &lim), CK_ETOOBIG);
		ck_assert_ptr_nonnull(strstr(ck_errmsg(), "shared by every upload"));
		ck_assert_ptr_nonnull(strstr(ck_errmsg(), "8 MiB"));
		fmt_meter_end(&third);
	}
	ck_assert_uint_eq(fmt_budget_used(&shared), 4u << 20);
	ck_assert_int_eq(fmt_read(&c, &in, &lim), 0);
	fmt_ckpt_free(c);
	fmt_meter_end(&other);
	ck_assert_uint_eq(fmt_budget_used(&shared), 0);
	free(b);
}
END_TEST

START_TEST(test_torch_rejects_a_frame_longer_than_data_pkl)
{
	size_t n;
	uint8_t *b = slurp("tests/data/torch/invalid/frame_past_end.pt", &n);

	ck_assert_ptr_nonnull(b);
	expect_fail(b, n, CK_ECORRUPT, "FRAME of 9223372036854775808 bytes runs past the end");
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "offset 2)"));
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "data.pkl"));
	free(b);
}
END_TEST

START_TEST(test_fmt_read_reports_a_read_error_not_an_unknown_format)
{
	/* an upload whose bytes cannot be read (a closed descriptor) */
	struct ck_input in = {.mem = NULL, .fd = -1, .size = 4096};
	struct fmt_ckpt *c = NULL;
	enum fmt_kind k;

	ck_assert_int_eq(fmt_read(&c, &in, NULL), CK_EIO);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "file header at offset 0"));
	ck_assert_int_eq(fmt_detect(&k, &in), CK_EIO);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("torch");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_torch_reads_every_valid_file_as_torch_load_does);
	tcase_add_test(tc, test_torch_reads_every_torch2_compat_file_as_torch_load_does);
	tcase_add_test(tc, test_torch_general_checkpoint_with_loss_object_has_no_loss);
	tcase_add_test(tc, test_torch_reads_loss_from_a_0d_tensor);
	tcase_add_test(tc, test_torch_tied_weights_share_one_storage);
	tcase_add_test(tc, test_torch_storage_ranges_hold_the_storage_bytes);
	tcase_add_test(tc, test_torch_rejects_every_truncation);
	tcase_add_test(tc, test_torch_rejects_central_directory_past_end);
	tcase_add_test(tc, test_torch_rejects_entry_size_past_end);
	tcase_add_test(tc, test_torch_rejects_huge_declared_sizes);
	tcase_add_test(tc, test_torch_rejects_storage_size_not_matching_numel);
	tcase_add_test(tc, test_torch_rejects_persistent_id_naming_a_missing_record);
	tcase_add_test(tc, test_torch_rejects_deflated_storages_and_unknown_formats);
	tcase_add_test(tc, test_torch_rejects_big_endian_files);
	tcase_add_test(tc, test_fmt_detect_sniffs_each_format);
	tcase_add_test(tc, test_torch_refuses_a_pickle_graph_over_the_memory_budget);
	tcase_add_test(tc, test_torch_refuses_200000_zero_size_tensors_within_the_budget);
	tcase_add_test(tc, test_torch_reads_10000_tensors_well_within_the_budget);
	tcase_add_test(tc, test_torch_gives_its_budget_back_after_a_failure);
	tcase_add_test(tc, test_fmt_read_refuses_when_other_uploads_hold_the_shared_budget);
	tcase_add_test(tc, test_torch_rejects_a_frame_longer_than_data_pkl);
	tcase_add_test(tc, test_fmt_read_reports_a_read_error_not_an_unknown_format);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
