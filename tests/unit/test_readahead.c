/*
 * test_readahead.c: a checkpoint file read ahead on worker threads
 * (storage/readahead.c), over a store in a temporary directory: the bytes in
 * order whatever the read sizes and the way the file is cut into parts, a
 * start past the beginning, a blob missing halfway (the bytes before it,
 * then its error), files too small to pay, and the process-wide budget;
 * and when a download needs none (store_layout_local_raw).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../../common/err.h"
#include "../../common/hash.h"
#include "../../storage/blob.h"
#include "../../storage/readahead.h"
#include "../../storage/store.h"
#include "check_main.h"

static char top[256], data[300];
static struct store *st;
static struct blob_backend *blobs; /* the same directory as st's blobs */

static void setup(void)
{
	char tmpl[] = "/tmp/ckptd-ra-XXXXXX";
	char dir[320];
	struct store_config cfg = {0};

	ck_assert_ptr_nonnull(mkdtemp(tmpl));
	snprintf(top, sizeof(top), "%s", tmpl);
	snprintf(data, sizeof(data), "%s/data", top);
	cfg.data_dir = data;
	ck_assert_msg(store_open(&st, &cfg) == 0, "store_open: %s", ck_errmsg());
	snprintf(dir, sizeof(dir), "%s/blobs", data);
	ck_assert_int_eq(blob_fs_open(&blobs, dir, 0), 0);
}

static void teardown(void)
{
	char cmd[300];

	blobs->free(blobs);
	store_close(st);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", top);
	ck_assert_int_eq(system(cmd), 0);
}

/* n pseudo-random bytes from seed. */
static uint8_t *bytes(size_t n, uint64_t seed)
{
	uint8_t *b = malloc(n ? n : 1);
	uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;

	ck_assert_ptr_nonnull(b);
	for (size_t i = 0; i < n; i++) {
		s ^= s << 13, s ^= s >> 7, s ^= s << 17;
		b[i] = (uint8_t)(s >> 24);
	}
	return b;
}

/* Stores p as a blob; its hash into *h. */
static void put(struct hash *h, const uint8_t *p, size_t n)
{
	struct blob_batch *bt = NULL;
	struct blob_meta m = {0};
	int fd = memfd_create("src", 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, p, n), (ssize_t)n);
	hash_buf(&m.hash, &m.crc32, p, n);
	m.raw_size = n;
	ck_assert_int_eq(blobs->batch_begin(&bt, blobs), 0);
	ck_assert_int_eq(blobs->batch_put_fd(bt, &m, fd, 0, DT_INVALID), 0);
	ck_assert_int_eq(blobs->batch_commit(bt), 0);
	blobs->batch_free(bt);
	close(fd);
	*h = m.hash;
}

/*
 * A file as torch writes one: skeleton pieces (small, from one blob, in
 * order) between storages of the given sizes. The expected file into *file.
 */
struct fake {
	struct index_layout l;
	uint8_t *file;
	uint8_t *skel;
	uint8_t **stor;
	size_t nstor;
};

static void fake_make(struct fake *f, const size_t *sizes, size_t nstor, size_t piece)
{
	size_t skel_n = piece * (nstor + 1), off = 0, k = 0, file_n = skel_n;

	memset(f, 0, sizeof(*f));
	for (size_t i = 0; i < nstor; i++)
		file_n += sizes[i];
	f->skel = bytes(skel_n, 1);
	put(&f->l.skeleton, f->skel, skel_n);
	f->l.skeleton_size = skel_n;
	f->stor = calloc(nstor, sizeof(*f->stor));
	f->nstor = nstor;
	f->l.parts = calloc(2 * nstor + 1, sizeof(*f->l.parts));
	f->file = malloc(file_n);
	ck_assert_ptr_nonnull(f->stor);
	ck_assert_ptr_nonnull(f->l.parts);
	ck_assert_ptr_nonnull(f->file);
	for (size_t i = 0; i <= nstor; i++) {
		struct index_layout_part *p = &f->l.parts[k++];
		p->blob = f->l.skeleton;
		p->file_off = off;
		p->size = piece;
		p->src_off = i * piece;
		p->blob_size = skel_n;
		memcpy(f->file + off, f->skel + i * piece, piece);
		off += piece;
		if (i == nstor)
			break;
		f->stor[i] = bytes(sizes[i], 100 + i);
		p = &f->l.parts[k++];
		put(&p->blob, f->stor[i], sizes[i]);
		p->file_off = off;
		p->size = sizes[i];
		p->blob_size = sizes[i];
		memcpy(f->file + off, f->stor[i], sizes[i]);
		off += sizes[i];
	}
	f->l.nparts = k;
	f->l.size = file_n;
}

static void fake_free(struct fake *f)
{
	for (size_t i = 0; i < f->nstor; i++)
		free(f->stor[i]);
	free(f->stor);
	free(f->skel);
	free(f->file);
	free(f->l.parts);
}

/* Reads the whole file from `from` in reads of `step` bytes; checks it. */
static void read_all(struct fake *f, uint64_t from, size_t step)
{
	struct readahead *ra = NULL;
	uint8_t *buf = malloc(step);
	uint64_t pos = from;

	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(readahead_start(&ra, st, &f->l, from), 0);
	ck_assert_ptr_nonnull(ra);
	while (pos < f->l.size) {
		ck_assert_uint_eq(readahead_pos(ra), pos);
		long got = readahead_read(ra, buf, step);
		ck_assert_msg(got > 0, "read at %llu: %ld %s", (unsigned long long)pos, got,
			      got < 0 ? ck_errmsg() : "");
		ck_assert_msg(!memcmp(buf, f->file + pos, (size_t)got), "bytes differ at %llu",
			      (unsigned long long)pos);
		pos += (uint64_t)got;
	}
	ck_assert_uint_eq(pos, f->l.size);
	ck_assert_int_eq(readahead_read(ra, buf, step), 0); /* the end */
	readahead_stop(ra);
	free(buf);
}

START_TEST(test_readahead_gives_the_file_in_order_whatever_the_parts_and_reads)
{
	struct fake f;
	/* storages smaller than a chunk, exactly one, larger (cut), tiny, and
	 * one a skeleton piece's slack past a chunk */
	const size_t sizes[] = {1000,	      RA_CHUNK, 3 * RA_CHUNK + 12345, 7, RA_CHUNK - 10,
				RA_CHUNK / 2, 1,	RA_CHUNK + 1};

	fake_make(&f, sizes, sizeof(sizes) / sizeof(sizes[0]), 300);
	read_all(&f, 0, 256 * 1024);
	read_all(&f, 0, 1 << 20);
	read_all(&f, 0, 7777);
	read_all(&f, 0, 64 << 20); /* more than the whole file at once */
	fake_free(&f);
}
END_TEST

START_TEST(test_readahead_starts_anywhere_in_the_file)
{
	struct fake f;
	const size_t sizes[] = {RA_CHUNK * 2, RA_CHUNK * 3 + 5, 4096};

	fake_make(&f, sizes, 3, 64);
	read_all(&f, 3, 100000);
	read_all(&f, RA_CHUNK + 17, 300000); /* inside a storage */
	fake_free(&f);
}
END_TEST

START_TEST(test_readahead_gives_the_bytes_before_a_lost_blob_then_its_error)
{
	struct fake f;
	const size_t sizes[] = {RA_CHUNK, RA_CHUNK, RA_CHUNK, RA_CHUNK, RA_CHUNK};
	struct readahead *ra = NULL;
	uint8_t *buf = malloc(1 << 20);
	uint64_t pos = 0, lost_at;
	long got;

	ck_assert_ptr_nonnull(buf);
	fake_make(&f, sizes, 5, 128);
	/* storage 2 is part 5 (skeleton, s0, skeleton, s1, skeleton, s2) */
	lost_at = f.l.parts[5].file_off;
	ck_assert_int_eq(blobs->remove(blobs, &f.l.parts[5].blob), 0);
	ck_assert_int_eq(readahead_start(&ra, st, &f.l, 0), 0);
	ck_assert_ptr_nonnull(ra);
	while ((got = readahead_read(ra, buf, 1 << 20)) > 0) {
		ck_assert(!memcmp(buf, f.file + pos, (size_t)got));
		pos += (uint64_t)got;
	}
	ck_assert_int_eq(got, CK_ENOTFOUND);
	ck_assert_msg(strstr(ck_errmsg(), "not found") != NULL, "%s", ck_errmsg());
	/* every byte before the lost blob's chunk arrived, none of it */
	ck_assert_uint_le(pos, lost_at);
	ck_assert_uint_ge(pos + RA_CHUNK + 64 * 1024, lost_at);
	readahead_stop(ra);
	free(buf);
	fake_free(&f);
}
END_TEST

START_TEST(test_readahead_is_not_used_when_it_would_not_pay_or_the_budget_is_spent)
{
	struct fake small, big;
	const size_t one[] = {RA_CHUNK / 2};
	const size_t many[] = {RA_CHUNK, RA_CHUNK, RA_CHUNK, RA_CHUNK,
			       RA_CHUNK, RA_CHUNK, RA_CHUNK, RA_CHUNK};
	struct readahead *ra = NULL, *all[64];
	int n = 0;

	fake_make(&small, one, 1, 10);
	ck_assert_int_eq(readahead_start(&ra, st, &small.l, 0), 0);
	ck_assert_ptr_null(ra);

	fake_make(&big, many, 8, 10);
	ck_assert_int_eq(readahead_start(&ra, st, &big.l, big.l.size - 10), 0);
	ck_assert_ptr_null(ra); /* ten bytes left */
	/* start readaheads until the budget says no; then one stopped makes room */
	while (n < 64) {
		ck_assert_int_eq(readahead_start(&all[n], st, &big.l, 0), 0);
		if (!all[n])
			break;
		n++;
	}
	ck_assert_int_lt(n, 64);
	ck_assert_int_ge(n, 1);
	ck_assert_uint_le((uint64_t)n * RA_SLOTS * RA_CHUNK, RA_BUDGET);
	readahead_stop(all[--n]);
	ck_assert_int_eq(readahead_start(&ra, st, &big.l, 0), 0);
	ck_assert_ptr_nonnull(ra);
	readahead_stop(ra);
	while (n > 0)
		readahead_stop(all[--n]);
	/* stopped before reading anything: nothing leaks, nothing hangs */
	read_all(&big, 0, 1 << 20);
	fake_free(&small);
	fake_free(&big);
}
END_TEST

/* A download reads raw local blobs itself (no readahead): the store says
 * when every storage blob past an offset is one. */
START_TEST(test_a_layout_of_raw_local_blobs_is_read_without_a_readahead)
{
	struct fake f;
	const size_t sizes[] = {RA_CHUNK, RA_CHUNK + 3, 4096};
	struct blob_backend *z = NULL;
	struct blob_batch *bt = NULL;
	struct blob_meta m = {0};
	size_t n = 1 << 20;
	float *w = calloc(n / 4, sizeof(float));
	int fd = memfd_create("w", 0);
	char dir[320];

	fake_make(&f, sizes, 3, 100);
	ck_assert_int_eq(store_layout_local_raw(st, &f.l, 0), 1);
	ck_assert_int_eq(store_layout_local_raw(st, &f.l, f.l.parts[3].file_off + 1), 1);
	/* storage 1 (part 3) stored again, encoded by a compressing store:
	 * from there on it answers no, past it yes again */
	ck_assert_ptr_nonnull(w);
	ck_assert_int_ge(fd, 0);
	for (size_t i = 0; i < n / 4; i++)
		w[i] = (float)(i % 7) * 0.25f;
	ck_assert_int_eq(write(fd, w, n), (ssize_t)n);
	hash_buf(&m.hash, &m.crc32, (const uint8_t *)w, n);
	m.raw_size = n;
	snprintf(dir, sizeof(dir), "%s/blobs", data);
	ck_assert_int_eq(blob_fs_open(&z, dir, 1), 0);
	ck_assert_int_eq(z->batch_begin(&bt, z), 0);
	ck_assert_int_eq(z->batch_put_fd(bt, &m, fd, 0, DT_FLOAT32), 0);
	ck_assert_int_eq(z->batch_commit(bt), 0);
	z->batch_free(bt);
	ck_assert_int_ne(m.codec, CODEC_RAW);
	f.l.parts[3].blob = m.hash;
	ck_assert_int_eq(store_layout_local_raw(st, &f.l, 0), 0);
	ck_assert_int_eq(store_layout_local_raw(st, &f.l, f.l.parts[4].file_off), 1);
	/* a blob that is gone: no (the readahead meets its error) */
	ck_assert_int_eq(blobs->remove(blobs, &f.l.parts[5].blob), 0);
	ck_assert_int_eq(store_layout_local_raw(st, &f.l, f.l.parts[4].file_off), 0);
	z->free(z);
	close(fd);
	free(w);
	fake_free(&f);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("readahead");
	TCase *tc = tcase_create("readahead");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_readahead_gives_the_file_in_order_whatever_the_parts_and_reads);
	tcase_add_test(tc, test_readahead_starts_anywhere_in_the_file);
	tcase_add_test(tc, test_readahead_gives_the_bytes_before_a_lost_blob_then_its_error);
	tcase_add_test(tc, test_readahead_is_not_used_when_it_would_not_pay_or_the_budget_is_spent);
	tcase_add_test(tc, test_a_layout_of_raw_local_blobs_is_read_without_a_readahead);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
