/*
 * test_blob.c: the local-directory blob store (storage/blob_fs.c under the
 * codec layer of blob_store.c, blob.c): put/commit/read, dedup, durability
 * leftovers, temporaries of several processes, listing, removal,
 * concurrency, codecs, damaged stored files, stores written by earlier
 * versions, and deltas (chains, bounded length, the first delta in place
 * kept, whole forms preferred, a lost base an error).
 */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../../common/err.h"
#include "../../common/hash.h"
#include "../../storage/blob.h"
#include "../../storage/blob_objstore.h"
#include "../../storage/codec.h"
#include "check_main.h"

static char dir[256];

static void rm_rf(const char *path)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
	ck_assert_int_eq(system(cmd), 0);
}

static void setup(void)
{
	char tmpl[] = "/tmp/ckptd-blob-XXXXXX";
	ck_assert_ptr_nonnull(mkdtemp(tmpl));
	snprintf(dir, sizeof(dir), "%s/store", tmpl);
}

static void teardown(void)
{
	char top[256];
	snprintf(top, sizeof(top), "%s", dir);
	*strrchr(top, '/') = 0;
	rm_rf(top);
}

/* A memfd holding n bytes of p, and its meta. */
static int source(struct blob_meta *m, const void *p, size_t n)
{
	int fd = memfd_create("src", 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, p, n), (ssize_t)n);
	memset(m, 0, sizeof(*m));
	hash_buf(&m->hash, &m->crc32, p, n);
	m->raw_size = n;
	return fd;
}

static uint8_t *weights(size_t n)
{
	uint8_t *b = malloc(n);
	uint64_t s = 42;
	ck_assert_ptr_nonnull(b);
	for (size_t i = 0; i < n; i += 4) {
		s ^= s << 13, s ^= s >> 7, s ^= s << 17;
		double u = ((double)(s >> 11) + 0.5) / 9007199254740992.0;
		float f = (float)(0.02 * sqrt(-2.0 * log(u)) * cos((double)(s & 0xffff) * 1e-4));
		memcpy(b + i, &f, 4);
	}
	return b;
}

/* Puts and commits one blob; returns meta->existed. */
/* Puts p in its own batch, against delta base `base` (NULL: none), with
 * meta.unindexed `unindexed`. */
static void put_with(struct blob_backend *b, struct blob_meta *m, const void *p, size_t n,
		     enum dtype hint, const struct hash *base, int unindexed)
{
	struct blob_batch *bt = NULL;
	int fd = source(m, p, n);

	m->delta_base = base;
	m->unindexed = unindexed;
	ck_assert_int_eq(b->batch_begin(&bt, b), 0);
	ck_assert_int_eq(b->batch_put_fd(bt, m, fd, 0, hint), 0);
	ck_assert_int_eq(b->batch_commit(bt), 0);
	b->batch_free(bt);
	close(fd);
}

static int put_one(struct blob_backend *b, struct blob_meta *m, const void *p, size_t n,
		   enum dtype hint)
{
	put_with(b, m, p, n, hint, NULL, 0);
	return m->existed;
}

static void check_reads(struct blob_backend *b, const struct hash *h, const uint8_t *p, size_t n)
{
	struct blob_reader *r = NULL;
	uint8_t *buf = malloc(n + 1);

	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(b->open(&r, b, h), 0);
	ck_assert_uint_eq(blob_reader_size(r), n);
	ck_assert_int_eq(blob_reader_read(r, buf, n, 0), 0);
	ck_assert_int_eq(memcmp(buf, p, n), 0);
	size_t k = n - n / 3 < 10 ? n - n / 3 : 10;
	ck_assert_int_eq(blob_reader_read(r, buf, k, n / 3), 0);
	ck_assert_int_eq(memcmp(buf, p + n / 3, k), 0);
	ck_assert_int_eq(blob_reader_read(r, buf, 1, n - 1), 0);
	ck_assert_int_eq(buf[0], p[n - 1]);
	ck_assert_int_eq(blob_reader_read(r, buf, 0, n), 0);
	ck_assert_int_eq(blob_reader_read(r, buf, 2, n - 1), CK_ECORRUPT);
	ck_assert_int_eq(blob_reader_read(r, buf, 1, UINT64_MAX), CK_ECORRUPT);
	blob_reader_close(r);
	free(buf);
}

static size_t count_files(const char *sub)
{
	char path[512];
	DIR *d;
	struct dirent *de;
	size_t n = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, sub);
	d = opendir(path);
	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d)) != NULL)
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

/* Puts the file `name` as m's blob in a batch of its own and commits it;
 * `is_new` says whether the store must take the file (the blob was new). */
static void put_tmp_committed(struct blob_backend *b, struct blob_meta *m, const char *name, int fd,
			      int is_new)
{
	struct blob_batch *bt = NULL;
	int taken = -1;

	ck_assert_int_eq(b->batch_begin(&bt, b), 0);
	ck_assert_int_eq(b->batch_put_tmp(bt, m, name, fd, &taken), 0);
	ck_assert_int_eq(taken, is_new);
	ck_assert_int_eq(m->existed, !is_new);
	ck_assert_int_eq(b->batch_commit(bt), 0);
	b->batch_free(bt);
}

/* A file written before its hash is known becomes the blob itself when the
 * blob is new (the same inode, cut to its size), stays the caller's when
 * the blob exists, and goes with an uncommitted batch; a compressing store
 * gives no such file. */
START_TEST(test_blob_a_tmp_file_is_the_new_blob_itself)
{
	struct blob_backend *b = NULL;
	struct blob_batch *bt = NULL;
	struct blob_meta m;
	char name[BLOB_TMP_NAME], path[600], hex[65];
	uint8_t *w = weights(300000);
	struct stat st;
	int fd = -1, taken = -1;
	ino_t ino;

	ck_assert_int_eq(blob_fs_open(&b, dir, 1), 0);
	ck_assert_int_eq(b->tmp_open(b, &fd, name), 0);
	ck_assert_int_eq(fd, -1);
	b->free(b);

	ck_assert_int_eq(blob_fs_open(&b, dir, 0), 0);
	ck_assert_int_eq(b->tmp_open(b, &fd, name), 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, w, 300000, 0), 300000);
	ck_assert_int_eq(pwrite(fd, "PK\7\10", 4, 300000), 4); /* past the blob: cut */
	ck_assert_int_eq(fstat(fd, &st), 0);
	ino = st.st_ino;
	memset(&m, 0, sizeof(m));
	hash_buf(&m.hash, &m.crc32, w, 300000);
	m.raw_size = 300000;
	put_tmp_committed(b, &m, name, fd, 1);
	close(fd);
	hash_to_hex(hex, &m.hash);
	snprintf(path, sizeof(path), "%s/%.2s/%s", dir, hex, hex + 2);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq(st.st_ino, ino);
	ck_assert_int_eq(st.st_size, 300000);
	check_reads(b, &m.hash, w, 300000);
	ck_assert_uint_eq(count_files("tmp"), 0);

	/* stored already: not taken, the caller removes it */
	ck_assert_int_eq(b->tmp_open(b, &fd, name), 0);
	ck_assert_int_eq(pwrite(fd, w, 300000, 0), 300000);
	put_tmp_committed(b, &m, name, fd, 0);
	ck_assert_uint_eq(count_files("tmp"), 1);
	b->tmp_remove(b, name);
	close(fd);
	ck_assert_uint_eq(count_files("tmp"), 0);

	/* a new blob in a batch never committed: the file goes with it */
	ck_assert_int_eq(b->tmp_open(b, &fd, name), 0);
	ck_assert_int_eq(pwrite(fd, w, 1000, 0), 1000);
	memset(&m, 0, sizeof(m));
	hash_buf(&m.hash, &m.crc32, w, 1000);
	m.raw_size = 1000;
	ck_assert_int_eq(b->batch_begin(&bt, b), 0);
	ck_assert_int_eq(b->batch_put_tmp(bt, &m, name, fd, &taken), 0);
	ck_assert_int_eq(taken, 1);
	b->batch_free(bt);
	close(fd);
	ck_assert_uint_eq(count_files("tmp"), 0);
	ck_assert_int_eq(b->exists(b, &m.hash), CK_ENOTFOUND);
	b->free(b);
	free(w);
}
END_TEST

START_TEST(test_blob_codec_names_round_trip)
{
	for (int c = CODEC_RAW; c <= CODEC_PLANES; c++)
		ck_assert_int_eq(blob_codec_from_name(blob_codec_name(c)), c);
	ck_assert_str_eq(blob_codec_name(CODEC_PLANES), "planes");
	ck_assert_int_eq(blob_codec_from_name("lz4"), -1);
}
END_TEST

START_TEST(test_blob_put_twice_stores_once)
{
	struct blob_backend *b = NULL;
	struct blob_meta m;
	const char text[] = "the same bytes, twice";

	ck_assert_int_eq(blob_fs_open(&b, dir, 0), 0);
	ck_assert_int_eq(put_one(b, &m, text, sizeof(text), DT_INVALID), 0);
	ck_assert_int_eq(m.codec, CODEC_RAW);
	ck_assert_uint_eq(m.stored_size, sizeof(text));
	ck_assert_int_eq(put_one(b, &m, text, sizeof(text), DT_INVALID), 1);
	ck_assert_int_eq(b->exists(b, &m.hash), 0);
	check_reads(b, &m.hash, (const uint8_t *)text, sizeof(text));
	ck_assert_uint_eq(count_files("tmp"), 0);
	b->free(b);
}
END_TEST

START_TEST(test_blob_same_bytes_twice_in_one_batch_are_put_once)
{
	struct blob_backend *b = NULL;
	struct blob_batch *bt = NULL;
	struct blob_meta m1, m2;
	char hex[65], sub[8];
	int fd = source(&m1, "abcdef", 6);

	source(&m2, "abcdef", 6);
	ck_assert_int_eq(blob_fs_open(&b, dir, 0), 0);
	ck_assert_int_eq(b->batch_begin(&bt, b), 0);
	ck_assert_int_eq(b->batch_put_fd(bt, &m1, fd, 0, DT_INVALID), 0);
	ck_assert_int_eq(b->batch_put_fd(bt, &m2, fd, 0, DT_INVALID), 0);
	ck_assert_int_eq(m1.existed, 0);
	ck_assert_int_eq(m2.existed, 1);
	ck_assert_int_eq(b->batch_commit(bt), 0);
	b->batch_free(bt);
	hash_to_hex(hex, &m1.hash);
	snprintf(sub, sizeof(sub), "%.2s", hex);
	ck_assert_uint_eq(count_files(sub), 1);
	close(fd);
	b->free(b);
}
END_TEST

START_TEST(test_blob_put_reads_from_source_offset)
{
	struct blob_backend *b = NULL;
	struct blob_batch *bt = NULL;
	struct blob_meta m;
	const char text[] = "HEADERpayload bytes";
	int fd = source(&m, text, sizeof(text));

	hash_buf(&m.hash, &m.crc32, text + 6, sizeof(text) - 6);
	m.raw_size = sizeof(text) - 6;
	ck_assert_int_eq(blob_fs_open(&b, dir, 1), 0);
	ck_assert_int_eq(b->batch_begin(&bt, b), 0);
	ck_assert_int_eq(b->batch_put_fd(bt, &m, fd, 6, DT_INVALID), 0);
	ck_assert_int_eq(b->batch_commit(bt), 0);
	b->batch_free(bt);
	check_reads(b, &m.hash, (const uint8_t *)text + 6, sizeof(text) - 6);
	close(fd);
	b->free(b);
}
END_TEST

START_TEST(test_blob_uncommitted_batch_leaves_nothing)
{
	struct blob_backend *b = NULL;
	struct blob_batch *bt = NULL;
	struct blob_reader *r = NULL;
	struct blob_meta m;
	int fd = source(&m, "never committed", 15);

	ck_assert_int_eq(blob_fs_open(&b, dir, 0), 0);
	ck_assert_int_eq(b->batch_begin(&bt, b), 0);
	ck_assert_int_eq(b->batch_put_fd(bt, &m, fd, 0, DT_INVALID), 0);
	ck_assert_uint_eq(count_files("tmp"), 1);
	b->batch_free(bt);
	ck_assert_uint_eq(count_files("tmp"), 0);
	ck_assert_int_eq(b->exists(b, &m.hash), CK_ENOTFOUND);
	ck_assert_int_eq(b->open(&r, b, &m.hash), CK_ENOTFOUND);
	ck_assert_ptr_null(r);
	b->batch_free(NULL);
	close(fd);
	b->free(b);
}
END_TEST

START_TEST(test_blob_short_source_fails_and_leaves_nothing)
{
	struct blob_backend *b = NULL;
	struct blob_batch *bt = NULL;
	struct blob_meta m;
	int fd = source(&m, "short", 5);

	m.raw_size = 50;
	for (int compress = 0; compress < 2; compress++) {
		ck_assert_int_eq(blob_fs_open(&b, dir, compress), 0);
		ck_assert_int_eq(b->batch_begin(&bt, b), 0);
		ck_assert_int_eq(b->batch_put_fd(bt, &m, fd, 0, DT_INVALID), CK_ECORRUPT);
		ck_assert_uint_eq(count_files("tmp"), 0);
		b->batch_free(bt);
		b->free(b);
	}
	close(fd);
}
END_TEST

struct seen {
	struct hash h[8];
	int n;
};

static int collect(void *arg, const struct hash *h, int64_t mtime)
{
	struct seen *s = arg;
	/* a blob just written was modified within the test's minute */
	ck_assert_int_le(llabs(mtime - (int64_t)time(NULL)), 60);
	if (s->n < 8)
		s->h[s->n] = *h;
	s->n++;
	return 0;
}

static int stop_at_first(void *arg, const struct hash *h, int64_t mtime)
{
	(void)h;
	(void)mtime;
	(*(int *)arg)++;
	return 7;
}

static int seen_has(const struct seen *s, const struct hash *h)
{
	for (int i = 0; i < s->n && i < 8; i++)
		if (memcmp(&s->h[i], h, sizeof(*h)) == 0)
			return 1;
	return 0;
}

/* Sets path's modification time to `when` (seconds since the epoch). */
static void set_mtime(const char *path, time_t when)
{
	struct timespec ts[2] = {{when, 0}, {when, 0}};
	ck_assert_int_eq(utimensat(AT_FDCWD, path, ts, 0), 0);
}

START_TEST(test_blob_clean_tmp_removes_old_leftovers_and_never_young_ones)
{
	struct blob_backend *b = NULL;
	char path[512];
	time_t now = time(NULL);
	int fd;

	ck_assert_int_eq(blob_fs_open(&b, dir, 0), 0);
	for (int i = 0; i < 5; i++) {
		snprintf(path, sizeof(path), "%s/tmp/leftover.%d", dir, i);
		fd = open(path, O_CREAT | O_WRONLY, 0644);
		ck_assert_int_ge(fd, 0);
		close(fd);
		/* three an hour old, two written just now (another process's) */
		if (i < 3)
			set_mtime(path, now - 3600);
	}
	ck_assert_uint_eq(count_files("tmp"), 5);
	ck_assert_int_eq(b->clean_tmp(b, (int64_t)now - 600, 0), 0);
	ck_assert_uint_eq(count_files("tmp"), 2);
	snprintf(path, sizeof(path), "%s/tmp/leftover.3", dir);
	ck_assert_int_eq(access(path, F_OK), 0);
	ck_assert_int_eq(b->clean_tmp(b, (int64_t)now + 10, 0), 0);
	ck_assert_uint_eq(count_files("tmp"), 0);
	b->free(b);
}
END_TEST

START_TEST(test_blob_clean_tmp_with_mine_removes_this_instances_young_leftovers)
{
	struct blob_backend *b = NULL;
	struct blob_config cfg = {.compress = 0, .instance = "me-1"};
	char path[512], hex[65];
	int fd;

	memset(hex, 'a', 64);
	hex[64] = 0;
	cfg.url = dir;
	ck_assert_int_eq(blob_open(&b, &cfg), 0);
	/* just written: one by this instance's previous life, one by another */
	snprintf(path, sizeof(path), "%s/tmp/%s.me-1.7", dir, hex);
	ck_assert_int_ge(fd = open(path, O_CREAT | O_WRONLY, 0644), 0);
	close(fd);
	snprintf(path, sizeof(path), "%s/tmp/%s.me-10.7", dir, hex);
	ck_assert_int_ge(fd = open(path, O_CREAT | O_WRONLY, 0644), 0);
	close(fd);
	ck_assert_int_eq(b->clean_tmp(b, (int64_t)time(NULL) - 600, 0), 0);
	ck_assert_uint_eq(count_files("tmp"), 2);
	ck_assert_int_eq(b->clean_tmp(b, (int64_t)time(NULL) - 600, 1), 0);
	ck_assert_uint_eq(count_files("tmp"), 1);
	ck_assert_int_eq(access(path, F_OK), 0); /* the other instance's stays */
	b->free(b);
}
END_TEST

/* The name of the only file in DIR/tmp into out. */
static void only_tmp_name(char *out, size_t cap)
{
	char path[512];
	DIR *d;
	struct dirent *de;

	snprintf(path, sizeof(path), "%s/tmp", dir);
	ck_assert_ptr_nonnull(d = opendir(path));
	out[0] = 0;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			snprintf(out, cap, "%s", de->d_name);
	closedir(d);
}

START_TEST(test_blob_temp_names_carry_the_instance_id)
{
	struct blob_backend *b = NULL, *b2 = NULL;
	struct blob_batch *bt = NULL, *bt2 = NULL;
	struct blob_meta m;
	struct blob_config cfg = {.url = dir, .compress = 1, .instance = "node-7"};
	char name[300];
	int fd = source(&m, "in flight", 9);

	ck_assert_int_eq(blob_open(&b, &cfg), 0);
	ck_assert_str_eq(b->name, "fs");
	ck_assert_int_eq(b->batch_begin(&bt, b), 0);
	ck_assert_int_eq(b->batch_put_fd(bt, &m, fd, 0, DT_INVALID), 0);
	only_tmp_name(name, sizeof(name));
	ck_assert_msg(strstr(name, ".node-7.") != NULL, "temp name %s", name);

	/* a second process on the same store, putting the same blob */
	cfg.instance = "node-8";
	ck_assert_int_eq(blob_open(&b2, &cfg), 0);
	ck_assert_int_eq(b2->batch_begin(&bt2, b2), 0);
	ck_assert_int_eq(b2->batch_put_fd(bt2, &m, fd, 0, DT_INVALID), 0);
	ck_assert_uint_eq(count_files("tmp"), 2);
	b2->batch_free(bt2);
	ck_assert_uint_eq(count_files("tmp"), 1);
	ck_assert_int_eq(b->batch_commit(bt), 0);
	b->batch_free(bt);
	check_reads(b, &m.hash, (const uint8_t *)"in flight", 9);
	close(fd);
	b2->free(b2);
	b->free(b);
}
END_TEST

START_TEST(test_blob_open_takes_a_directory_and_refuses_other_urls)
{
	struct blob_backend *b = NULL;
	struct blob_config cfg = {.url = "ftp://host/x"};

	ck_assert_int_eq(blob_open(&b, &cfg), CK_EINVALID);
	ck_assert_ptr_null(b);
	cfg.url = "";
	ck_assert_int_eq(blob_open(&b, &cfg), CK_EINVALID);
	cfg.url = dir;
	ck_assert_int_eq(blob_open(&b, &cfg), 0);
	ck_assert_int_eq(access(dir, F_OK), 0);
	b->free(b);
}
END_TEST

/* Writes p[0..n) to DIR/rel as a file of an earlier ckptd would have. */
static void write_file(const char *rel, const void *p, size_t n)
{
	char path[512];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0444);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, p, n), (ssize_t)n);
	close(fd);
}

START_TEST(test_blob_reads_a_store_written_in_the_existing_layout)
{
	struct blob_backend *b = NULL;
	struct blob_meta raw, z;
	struct codec_enc *e = NULL;
	size_t n = (1 << 20) + 4096;
	uint8_t *w = weights(n), *c;
	int in, out = memfd_create("z", 0), codec;
	uint64_t stored;
	char hex[65], rel[80];
	struct seen s = {.n = 0};

	/* what an earlier version wrote: ab/<62 hex> raw, ab/<62 hex>.z a
	 * codec container, files made by hand here */
	ck_assert_int_eq(blob_fs_open(&b, dir, 0), 0);
	b->free(b);
	close(source(&raw, "raw bytes", 9));
	hash_to_hex(hex, &raw.hash);
	snprintf(rel, sizeof(rel), "%.2s/%s", hex, hex + 2);
	write_file(rel, "raw bytes", 9);
	in = source(&z, w, n);
	ck_assert_int_eq(codec_enc_new(&e), 0);
	ck_assert_int_eq(codec_encode_fd(&codec, &stored, e, out, in, 0, n, DT_FLOAT32), 0);
	ck_assert_int_eq(codec, CODEC_PLANES);
	ck_assert_ptr_nonnull(c = malloc(stored));
	ck_assert_int_eq(pread(out, c, stored, 0), (ssize_t)stored);
	hash_to_hex(hex, &z.hash);
	snprintf(rel, sizeof(rel), "%.2s/%s.z", hex, hex + 2);
	write_file(rel, c, stored);

	ck_assert_int_eq(blob_fs_open(&b, dir, 1), 0);
	check_reads(b, &raw.hash, (const uint8_t *)"raw bytes", 9);
	check_reads(b, &z.hash, w, n);
	ck_assert_int_eq(put_one(b, &z, w, n, DT_FLOAT32), 1);
	ck_assert_int_eq(z.codec, CODEC_PLANES);
	ck_assert_uint_eq(z.stored_size, stored);
	ck_assert_int_eq(b->foreach (b, collect, &s), 0);
	ck_assert_int_eq(s.n, 2);
	b->free(b);
	codec_enc_free(e);
	close(in);
	close(out);
	free(c);
	free(w);
}
END_TEST

START_TEST(test_blob_foreach_lists_every_blob_once_and_remove_deletes)
{
	struct blob_backend *b = NULL;
	struct blob_meta m[3];
	struct seen s = {.n = 0};
	char path[512];
	int fd, calls = 0;
	uint8_t *w = weights(1 << 16);

	ck_assert_int_eq(blob_fs_open(&b, dir, 1), 0);
	put_one(b, &m[0], "one", 3, DT_INVALID);
	put_one(b, &m[1], "two", 3, DT_INVALID);
	put_one(b, &m[2], w, 1 << 16, DT_FLOAT32);
	ck_assert_int_eq(m[2].codec, CODEC_PLANES);
	/* names that are not blobs are ignored */
	snprintf(path, sizeof(path), "%s/ab/not-a-blob", dir);
	fd = open(path, O_CREAT | O_WRONLY, 0644);
	ck_assert_int_ge(fd, 0);
	close(fd);
	snprintf(path, sizeof(path), "%s/zz", dir);
	ck_assert_int_eq(mkdir(path, 0755), 0);

	ck_assert_int_eq(b->foreach (b, collect, &s), 0);
	ck_assert_int_eq(s.n, 3);
	for (int i = 0; i < 3; i++)
		ck_assert(seen_has(&s, &m[i].hash));
	ck_assert_int_eq(b->foreach (b, stop_at_first, &calls), 7);
	ck_assert_int_eq(calls, 1);

	ck_assert_int_eq(b->remove(b, &m[0].hash), 0);
	ck_assert_int_eq(b->remove(b, &m[2].hash), 0);
	ck_assert_int_eq(b->remove(b, &m[0].hash), CK_ENOTFOUND);
	ck_assert_int_eq(b->exists(b, &m[2].hash), CK_ENOTFOUND);
	s.n = 0;
	ck_assert_int_eq(b->foreach (b, collect, &s), 0);
	ck_assert_int_eq(s.n, 1);
	ck_assert(seen_has(&s, &m[1].hash));
	free(w);
	b->free(b);
}
END_TEST

struct racer {
	struct blob_backend *b;
	const uint8_t *data;
	size_t n;
	int rc;
};

static void *race(void *arg)
{
	struct racer *r = arg;
	struct blob_batch *bt = NULL;
	struct blob_meta m;
	int fd = memfd_create("src", 0);

	r->rc = -100;
	if (fd < 0 || write(fd, r->data, r->n) != (ssize_t)r->n)
		return NULL;
	memset(&m, 0, sizeof(m));
	hash_buf(&m.hash, &m.crc32, r->data, r->n);
	m.raw_size = r->n;
	for (int i = 0; i < 20; i++) {
		if ((r->rc = r->b->batch_begin(&bt, r->b)) < 0 ||
		    (r->rc = r->b->batch_put_fd(bt, &m, fd, 0, DT_FLOAT32)) < 0 ||
		    (r->rc = r->b->batch_commit(bt)) < 0)
			break;
		r->b->batch_free(bt);
		bt = NULL;
		if (i % 2 == 0) /* make the next round put it anew */
			r->b->remove(r->b, &m.hash);
	}
	r->b->batch_free(bt);
	close(fd);
	return NULL;
}

/* An fs object store whose stat calls are counted, and said to cost a
 * request each (remote) or not. */
static int (*real_stat)(uint64_t *size, struct blob_objstore *o, const struct hash *h, int form);
static int nstats;

static int counting_stat(uint64_t *size, struct blob_objstore *o, const struct hash *h, int form)
{
	nstats++;
	return real_stat(size, o, h, form);
}

static struct blob_backend *counted_store(int remote)
{
	struct blob_objstore *o = NULL;
	struct blob_backend *b = NULL;

	ck_assert_int_eq(blob_fs_objstore_open(&o, dir, NULL), 0);
	real_stat = o->stat;
	o->stat = counting_stat;
	o->stat_remote = remote;
	ck_assert_int_eq(blob_store_new(&b, o, 0), 0);
	ck_assert_int_eq(b->stat_remote, remote);
	nstats = 0;
	return b;
}

/* put_one with meta.unindexed set to `unindexed`. */
static int put_marked(struct blob_backend *b, struct blob_meta *m, const void *p, size_t n,
		      int unindexed)
{
	put_with(b, m, p, n, DT_INVALID, NULL, unindexed);
	return m->existed;
}

START_TEST(test_blob_unindexed_blobs_are_put_without_asking_a_remote_store)
{
	const char text[] = "bytes that no index row names";
	struct blob_backend *b = counted_store(1);
	struct blob_meta m;
	struct seen s = {0};

	/* new, and the index does not name it: no request before the put */
	ck_assert_int_eq(put_marked(b, &m, text, sizeof(text), 1), 0);
	ck_assert_int_eq(nstats, 0);
	check_reads(b, &m.hash, (const uint8_t *)text, sizeof(text));
	/* the caller did not say: the store is asked and has it */
	ck_assert_int_eq(put_marked(b, &m, text, sizeof(text), 0), 1);
	ck_assert_int_gt(nstats, 0);
	/* stored, yet unindexed (an orphan, or another upload's in flight):
	 * put again, the same bytes under the same name, listed once */
	nstats = 0;
	ck_assert_int_eq(put_marked(b, &m, text, sizeof(text), 1), 0);
	ck_assert_int_eq(nstats, 0);
	check_reads(b, &m.hash, (const uint8_t *)text, sizeof(text));
	ck_assert_int_eq(b->foreach (b, collect, &s), 0);
	ck_assert_int_eq(s.n, 1);
	ck_assert_uint_eq(count_files("tmp"), 0);
	b->free(b);

	/* a store whose stat is local asks anyway */
	b = counted_store(0);
	ck_assert_int_eq(put_marked(b, &m, text, sizeof(text), 1), 1);
	ck_assert_int_gt(nstats, 0);
	b->free(b);
}
END_TEST

START_TEST(test_blob_concurrent_puts_of_the_same_blob_both_succeed)
{
	struct blob_backend *b = NULL;
	pthread_t t[2];
	struct racer r[2];
	struct hash h;
	size_t n = 3 << 20;
	uint8_t *w = weights(n);

	for (int compress = 0; compress < 2; compress++) {
		ck_assert_int_eq(blob_fs_open(&b, dir, compress), 0);
		for (int i = 0; i < 2; i++) {
			r[i] = (struct racer){b, w, n, 0};
			ck_assert_int_eq(pthread_create(&t[i], NULL, race, &r[i]), 0);
		}
		for (int i = 0; i < 2; i++) {
			pthread_join(t[i], NULL);
			ck_assert_msg(r[i].rc == 0, "thread %d: %d %s", i, r[i].rc, ck_errmsg());
		}
		/* whatever the interleaving, a last put makes sure it is there */
		struct blob_meta m;
		put_one(b, &m, w, n, DT_FLOAT32);
		hash_buf(&h, NULL, w, n);
		check_reads(b, &h, w, n);
		ck_assert_uint_eq(count_files("tmp"), 0);
		b->remove(b, &h);
		b->free(b);
	}
	free(w);
}
END_TEST

START_TEST(test_blob_compressed_and_raw_round_trips)
{
	struct blob_backend *b = NULL;
	struct blob_reader *r = NULL;
	struct blob_meta m;
	size_t n = (2 << 20) + 4096;
	uint8_t *w = weights(n), *text = malloc(n);
	uint64_t off = 99;

	ck_assert_ptr_nonnull(text);
	for (size_t i = 0; i < n; i++)
		text[i] = "checkpoint "[i % 11];

	/* compression on: planes for floats, zstd for repetitive bytes */
	ck_assert_int_eq(blob_fs_open(&b, dir, 1), 0);
	ck_assert_int_eq(put_one(b, &m, w, n, DT_FLOAT32), 0);
	ck_assert_int_eq(m.codec, CODEC_PLANES);
	ck_assert_uint_lt(m.stored_size, n * 9 / 10);
	check_reads(b, &m.hash, w, n);
	ck_assert_int_eq(b->open(&r, b, &m.hash), 0);
	ck_assert_int_eq(blob_reader_codec(r), CODEC_PLANES);
	ck_assert_int_eq(blob_reader_raw_fd(&off, r), -1);
	blob_reader_close(r);
	ck_assert_int_eq(put_one(b, &m, w, n, DT_FLOAT32), 1);
	ck_assert_int_eq(m.codec, CODEC_PLANES);

	ck_assert_int_eq(put_one(b, &m, text, n, DT_INVALID), 0);
	ck_assert_int_eq(m.codec, CODEC_ZSTD);
	ck_assert_uint_lt(m.stored_size, n / 10);
	check_reads(b, &m.hash, text, n);
	b->free(b);

	/* compression off: raw, and the raw fd serves the bytes */
	rm_rf(dir);
	ck_assert_int_eq(blob_fs_open(&b, dir, 0), 0);
	ck_assert_int_eq(put_one(b, &m, w, n, DT_FLOAT32), 0);
	ck_assert_int_eq(m.codec, CODEC_RAW);
	ck_assert_uint_eq(m.stored_size, n);
	check_reads(b, &m.hash, w, n);
	ck_assert_int_eq(b->open(&r, b, &m.hash), 0);
	int fd = blob_reader_raw_fd(&off, r);
	uint8_t buf[16];
	ck_assert_int_ge(fd, 0);
	ck_assert_uint_eq(off, 0);
	ck_assert_int_eq(pread(fd, buf, sizeof(buf), 1000), (ssize_t)sizeof(buf));
	ck_assert_int_eq(memcmp(buf, w + 1000, sizeof(buf)), 0);
	blob_reader_close(r);
	blob_reader_close(NULL);
	b->free(b);
	free(w);
	free(text);
}
END_TEST

START_TEST(test_blob_empty_blob_round_trips)
{
	struct blob_backend *b = NULL;
	struct blob_reader *r = NULL;
	struct blob_meta m;
	uint8_t buf[1];

	ck_assert_int_eq(blob_fs_open(&b, dir, 1), 0);
	ck_assert_int_eq(put_one(b, &m, "", 0, DT_FLOAT32), 0);
	ck_assert_int_eq(b->open(&r, b, &m.hash), 0);
	ck_assert_uint_eq(blob_reader_size(r), 0);
	ck_assert_int_eq(blob_reader_read(r, buf, 0, 0), 0);
	ck_assert_int_eq(blob_reader_read(r, buf, 1, 0), CK_ECORRUPT);
	blob_reader_close(r);
	b->free(b);
}
END_TEST

START_TEST(test_blob_damaged_compressed_file_is_corrupt_not_a_crash)
{
	struct blob_backend *b = NULL;
	struct blob_reader *r = NULL;
	struct blob_meta m;
	size_t n = 3 << 20;
	uint8_t *w = weights(n), *buf = malloc(n);
	char hex[65], path[512];
	int fd;
	struct stat st;

	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(blob_fs_open(&b, dir, 1), 0);
	put_one(b, &m, w, n, DT_FLOAT32);
	ck_assert_int_eq(m.codec, CODEC_PLANES);
	hash_to_hex(hex, &m.hash);
	snprintf(path, sizeof(path), "%s/%.2s/%s.z", dir, hex, hex + 2);
	ck_assert_int_eq(chmod(path, 0644), 0);
	fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstat(fd, &st), 0);

	/* damaged data all through the file: compressed planes are caught by
	 * their zstd checksums (raw planes, like raw blobs, by verify's hash) */
	for (off_t o = 256; o < st.st_size; o += 4096)
		ck_assert_int_eq(pwrite(fd, "\xff\xff\xff\xff\xff\xff\xff\xff", 8, o), 8);
	ck_assert_int_eq(b->open(&r, b, &m.hash), 0);
	ck_assert_int_eq(blob_reader_read(r, buf, n, 0), CK_ECORRUPT);
	blob_reader_close(r);

	/* a damaged header: refused at open, naming the file */
	ck_assert_int_eq(pwrite(fd, "XXXX", 4, 0), 4);
	ck_assert_int_eq(b->open(&r, b, &m.hash), CK_ECORRUPT);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), hex + 2));
	ck_assert_ptr_null(r);

	/* truncated below its header */
	ck_assert_int_eq(ftruncate(fd, 7), 0);
	ck_assert_int_eq(b->open(&r, b, &m.hash), CK_ECORRUPT);
	close(fd);
	free(w);
	free(buf);
	b->free(b);
}
END_TEST

START_TEST(test_blob_many_blobs_in_one_batch_commit)
{
	struct blob_backend *b = NULL;
	struct blob_batch *bt = NULL;
	struct blob_meta m[100];
	char payload[32];
	int fd = memfd_create("src", 0);

	ck_assert_int_eq(blob_fs_open(&b, dir, 1), 0);
	ck_assert_int_eq(b->batch_begin(&bt, b), 0);
	for (int i = 0; i < 100; i++) {
		int len = snprintf(payload, sizeof(payload), "blob number %d", i);
		ck_assert_int_eq(pwrite(fd, payload, (size_t)len, i * 32), len);
		memset(&m[i], 0, sizeof(m[i]));
		hash_buf(&m[i].hash, NULL, payload, (size_t)len);
		m[i].raw_size = (uint64_t)len;
		ck_assert_int_eq(b->batch_put_fd(bt, &m[i], fd, (uint64_t)i * 32, DT_INVALID), 0);
	}
	ck_assert_int_eq(b->batch_commit(bt), 0);
	b->batch_free(bt);
	for (int i = 0; i < 100; i++) {
		int len = snprintf(payload, sizeof(payload), "blob number %d", i);
		check_reads(b, &m[i].hash, (const uint8_t *)payload, (size_t)len);
	}
	ck_assert_uint_eq(count_files("tmp"), 0);
	close(fd);
	b->free(b);
}
END_TEST

/* weights moved a little: each float scaled by 1 + k * 1e-4 * (its index's
 * parity sign), so deltas against p pay */
static uint8_t *moved(const uint8_t *p, size_t n, int k)
{
	uint8_t *b = malloc(n);

	ck_assert_ptr_nonnull(b);
	for (size_t i = 0; i < n; i += 4) {
		float f;
		memcpy(&f, p + i, 4);
		f *= 1.0f + (float)k * 1e-4f * ((i / 4) % 2 ? 1.0f : -1.0f);
		memcpy(b + i, &f, 4);
	}
	return b;
}

/* Puts p against base (NULL: none) in its own batch; returns the codec. */
static int put_delta(struct blob_backend *b, struct blob_meta *m, const uint8_t *p, size_t n,
		     const struct hash *base)
{
	put_with(b, m, p, n, DT_FLOAT32, base, 0);
	return m->codec;
}

START_TEST(test_blob_delta_chains_are_bounded_and_read_through_their_bases)
{
	struct blob_backend *b = NULL;
	struct blob_meta m[5];
	struct hash chain[BLOB_MAX_CHAIN];
	size_t n = (1 << 20) + 4096;
	uint8_t *w[5];
	int nc;

	ck_assert_int_eq(blob_fs_open(&b, dir, 1), 0);
	ck_assert(b->deltas);
	w[0] = weights(n);
	ck_assert_int_eq(put_delta(b, &m[0], w[0], n, NULL), CODEC_PLANES);
	for (int i = 1; i < 5; i++) {
		w[i] = moved(w[i - 1], n, i);
		int codec = put_delta(b, &m[i], w[i], n, &m[i - 1].hash);
		/* three deltas, then a whole blob (a key frame) */
		ck_assert_int_eq(codec, i < 4 ? CODEC_DELTA : CODEC_PLANES);
		ck_assert_int_eq(m[i].nchain, i < 4 ? i : 0);
		ck_assert_int_eq(b->chain(b, &m[i].hash, chain, &nc), 0);
		ck_assert_int_eq(nc, m[i].nchain);
		for (int j = 0; j < nc; j++)
			ck_assert_int_eq(memcmp(chain[j].b, m[i - 1 - j].hash.b, 32), 0);
		if (i < 4)
			ck_assert_uint_lt(m[i].stored_size, m[0].stored_size);
	}
	for (int i = 0; i < 5; i++)
		check_reads(b, &m[i].hash, w[i], n);
	/* a put of stored bytes finds the delta and its chain */
	struct blob_meta again;
	ck_assert_int_eq(put_one(b, &again, w[3], n, DT_FLOAT32), 1);
	ck_assert_int_eq(again.codec, CODEC_DELTA);
	ck_assert_int_eq(again.nchain, 3);
	/* listing names each blob once; remove takes the delta's file too */
	struct seen sn = {0};
	ck_assert_int_eq(b->foreach (b, collect, &sn), 0);
	ck_assert_int_eq(sn.n, 5);
	ck_assert_int_eq(b->remove(b, &m[3].hash), 0);
	ck_assert_int_eq(b->exists(b, &m[3].hash), CK_ENOTFOUND);
	/* a lost base: the delta answers an error, never other bytes */
	ck_assert_int_eq(b->remove(b, &m[1].hash), 0);
	struct blob_reader *r = NULL;
	ck_assert_int_eq(b->open(&r, b, &m[2].hash), CK_ECORRUPT);
	ck_assert_ptr_null(r);
	/* a whole form put beside it is read first, whatever the chain */
	struct blob_meta whole;
	int fd = source(&whole, w[2], n);
	struct blob_batch *bt = NULL;
	whole.full_only = 1;
	ck_assert_int_eq(b->batch_begin(&bt, b), 0);
	ck_assert_int_eq(b->batch_put_fd(bt, &whole, fd, 0, DT_FLOAT32), 0);
	ck_assert_int_eq(whole.existed, 0);
	ck_assert_int_eq(b->batch_commit(bt), 0);
	b->batch_free(bt);
	close(fd);
	check_reads(b, &m[2].hash, w[2], n);
	ck_assert_int_eq(b->chain(b, &m[2].hash, chain, &nc), 0);
	ck_assert_int_eq(nc, 0);
	for (int i = 0; i < 5; i++)
		free(w[i]);
	b->free(b);
}
END_TEST

START_TEST(test_blob_delta_first_in_place_stays)
{
	struct blob_backend *b = NULL;
	struct blob_meta a1, a2, x1, x2;
	struct blob_batch *bt1 = NULL, *bt2 = NULL;
	struct hash chain[BLOB_MAX_CHAIN];
	size_t n = 256 * 1024;
	uint8_t *w = weights(n), *v1 = moved(w, n, 3), *v2 = moved(w, n, -3), *x = moved(w, n, 1);
	int fd1, fd2, nc;

	ck_assert_int_eq(blob_fs_open(&b, dir, 1), 0);
	put_delta(b, &a1, v1, n, NULL);
	put_delta(b, &a2, v2, n, NULL);
	/* two batches put the same new bytes against different bases */
	fd1 = source(&x1, x, n);
	fd2 = source(&x2, x, n);
	x1.delta_base = &a1.hash;
	x2.delta_base = &a2.hash;
	ck_assert_int_eq(b->batch_begin(&bt1, b), 0);
	ck_assert_int_eq(b->batch_begin(&bt2, b), 0);
	ck_assert_int_eq(b->batch_put_fd(bt1, &x1, fd1, 0, DT_FLOAT32), 0);
	ck_assert_int_eq(b->batch_put_fd(bt2, &x2, fd2, 0, DT_FLOAT32), 0);
	ck_assert_int_eq(x1.codec, CODEC_DELTA);
	ck_assert_int_eq(x2.codec, CODEC_DELTA);
	ck_assert_int_eq(b->batch_commit(bt1), 0);
	ck_assert_int_eq(b->batch_commit(bt2), 0);
	b->batch_free(bt1);
	b->batch_free(bt2);
	/* the second did not replace the first: the chain is a1's */
	ck_assert_int_eq(b->chain(b, &x1.hash, chain, &nc), 0);
	ck_assert_int_eq(nc, 1);
	ck_assert_int_eq(memcmp(chain[0].b, a1.hash.b, 32), 0);
	check_reads(b, &x1.hash, x, n);
	ck_assert_uint_eq(count_files("tmp"), 0);
	close(fd1);
	close(fd2);
	free(w);
	free(v1);
	free(v2);
	free(x);
	b->free(b);
}
END_TEST

static Suite *blob_suite(void)
{
	Suite *s = suite_create("blob");
	TCase *tc = tcase_create("blob");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_blob_codec_names_round_trip);
	tcase_add_test(tc, test_blob_put_twice_stores_once);
	tcase_add_test(tc, test_blob_same_bytes_twice_in_one_batch_are_put_once);
	tcase_add_test(tc, test_blob_put_reads_from_source_offset);
	tcase_add_test(tc, test_blob_uncommitted_batch_leaves_nothing);
	tcase_add_test(tc, test_blob_short_source_fails_and_leaves_nothing);
	tcase_add_test(tc, test_blob_clean_tmp_removes_old_leftovers_and_never_young_ones);
	tcase_add_test(tc, test_blob_clean_tmp_with_mine_removes_this_instances_young_leftovers);
	tcase_add_test(tc, test_blob_temp_names_carry_the_instance_id);
	tcase_add_test(tc, test_blob_open_takes_a_directory_and_refuses_other_urls);
	tcase_add_test(tc, test_blob_reads_a_store_written_in_the_existing_layout);
	tcase_add_test(tc, test_blob_foreach_lists_every_blob_once_and_remove_deletes);
	tcase_add_test(tc, test_blob_concurrent_puts_of_the_same_blob_both_succeed);
	tcase_add_test(tc, test_blob_compressed_and_raw_round_trips);
	tcase_add_test(tc, test_blob_empty_blob_round_trips);
	tcase_add_test(tc, test_blob_damaged_compressed_file_is_corrupt_not_a_crash);
	tcase_add_test(tc, test_blob_many_blobs_in_one_batch_commit);
	tcase_add_test(tc, test_blob_delta_chains_are_bounded_and_read_through_their_bases);
	tcase_add_test(tc, test_blob_delta_first_in_place_stays);
	tcase_add_test(tc, test_blob_a_tmp_file_is_the_new_blob_itself);
	tcase_add_test(tc, test_blob_unindexed_blobs_are_put_without_asking_a_remote_store);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return run_suite(blob_suite());
}
