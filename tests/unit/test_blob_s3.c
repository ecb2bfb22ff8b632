/*
 * test_blob_s3.c: the S3 blob store (storage/blob_s3.c under the codec layer
 * of blob_store.c) against a real S3 endpoint: the backend contract of
 * test_blob.c (put/commit/exists/open/read ranges/remove/foreach), multipart
 * uploads, compressed blobs, concurrent batches, temporaries of other
 * instances, a store that loses a blob, and a store that goes away and
 * comes back.
 *
 * Needs CKPTD_TEST_S3_ENDPOINT, CKPTD_TEST_S3_BUCKET (an existing bucket),
 * AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; skipped with a message when
 * they are not set. `make unit-s3` starts a Ceph RGW with
 * tests/services/rgw.sh, runs this, and stops it. The restart test also
 * needs CKPTD_RGW_DIR (set by rgw.sh) to stop and start the gateway.
 * Each test works under its own key prefix.
 */
#include <check.h>
#include <curl/curl.h>
#include <math.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "../../common/err.h"
#include "../../common/hash.h"
#include "../../storage/blob.h"
#include "../../storage/blob_s3.h"
#include "check_main.h"

static const char *endpoint, *bucket, *region;
static char prefix[64];
static char url[256];

static void setup(void)
{
	static int n;

	snprintf(prefix, sizeof(prefix), "t%ld-%d-%ld", (long)getpid(), n++, (long)time(NULL));
	snprintf(url, sizeof(url), "s3://%s/%s", bucket, prefix);
}

static struct blob_s3_options options(void)
{
	struct blob_s3_options o = {
	    .url = url,
	    .endpoint = endpoint,
	    .region = region,
	    .instance = "unit",
	};
	return o;
}

static struct blob_backend *open_store(int compress)
{
	struct blob_backend *b = NULL;
	struct blob_config cfg = {url, compress, endpoint, region, "unit", NULL};

	ck_assert_msg(blob_open(&b, &cfg) == 0, "blob_open: %s", ck_errmsg());
	ck_assert_str_eq(b->name, "s3");
	return b;
}

/* ---- a bare S3 client, to look behind the store's back ---- */

struct body {
	char *p;
	size_t n;
};

static size_t collect_body(char *p, size_t size, size_t nmemb, void *arg)
{
	struct body *b = arg;
	size_t n = size * nmemb;

	b->p = realloc(b->p, b->n + n + 1);
	ck_assert_ptr_nonnull(b->p);
	memcpy(b->p + b->n, p, n);
	b->n += n;
	b->p[b->n] = 0;
	return n;
}

/* One signed request to ENDPOINT/BUCKET/path (path includes any query,
 * sorted); returns the status, the body into *out (free it) when out. */
static long raw_request(const char *method, const char *path, const char *payload, char **out)
{
	CURL *h = curl_easy_init();
	struct curl_slist *hdrs = NULL;
	struct body b = {NULL, 0};
	char u[1024], sig[128], up[512], sha[128], hex[65];
	uint8_t md[32];
	long status = 0;
	size_t len = payload ? strlen(payload) : 0;

	ck_assert_ptr_nonnull(h);
	SHA256((const uint8_t *)(payload ? payload : ""), len, md);
	for (int i = 0; i < 32; i++)
		sprintf(hex + 2 * i, "%02x", md[i]);
	snprintf(u, sizeof(u), "%s/%s/%s", endpoint, bucket, path);
	snprintf(sig, sizeof(sig), "aws:amz:%s:s3", region);
	snprintf(up, sizeof(up), "%s:%s", getenv("AWS_ACCESS_KEY_ID"),
		 getenv("AWS_SECRET_ACCESS_KEY"));
	snprintf(sha, sizeof(sha), "x-amz-content-sha256: %s", hex);
	hdrs = curl_slist_append(hdrs, sha);
	curl_easy_setopt(h, CURLOPT_URL, u);
	curl_easy_setopt(h, CURLOPT_AWS_SIGV4, sig);
	curl_easy_setopt(h, CURLOPT_USERPWD, up);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	if (strcmp(method, "PUT") == 0) {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PUT");
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload ? payload : "");
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)len);
	} else if (strcmp(method, "POST") == 0) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload ? payload : "");
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)len);
	} else if (strcmp(method, "HEAD") == 0) {
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else if (strcmp(method, "GET") != 0) {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	}
	ck_assert_int_eq(curl_easy_perform(h), CURLE_OK);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	if (out)
		*out = b.p ? b.p : strdup("");
	else
		free(b.p);
	return status;
}

/* How many incomplete multipart uploads there are under prefix p. */
static int count_uploads(const char *p)
{
	char path[256], *body;
	int n = 0;

	snprintf(path, sizeof(path), "?prefix=%s%%2F&uploads=", p);
	ck_assert_int_eq(raw_request("GET", path, NULL, &body), 200);
	for (char *s = body; (s = strstr(s, "<Upload>")) != NULL; s++)
		n++;
	free(body);
	return n;
}

/* The key of blob h under the test's prefix. */
static void blob_key(char *out, size_t cap, const struct hash *h, int z)
{
	char hex[65];

	hash_to_hex(hex, h);
	snprintf(out, cap, "%s/%.2s/%s%s", prefix, hex, hex + 2, z ? ".z" : "");
}

/* ---- data ---- */

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

static uint8_t *weights(size_t n, uint64_t seed)
{
	uint8_t *b = malloc(n);
	uint64_t s = seed;

	ck_assert_ptr_nonnull(b);
	for (size_t i = 0; i + 4 <= n; i += 4) {
		s ^= s << 13, s ^= s >> 7, s ^= s << 17;
		double u = ((double)(s >> 11) + 0.5) / 9007199254740992.0;
		float f = (float)(0.02 * sqrt(-2.0 * log(u)) * cos((double)(s & 0xffff) * 1e-4));
		memcpy(b + i, &f, 4);
	}
	return b;
}

static int put_one(struct blob_backend *b, struct blob_meta *m, const void *p, size_t n,
		   enum dtype hint)
{
	struct blob_batch *bt = NULL;
	int fd = source(m, p, n);

	ck_assert_int_eq(b->batch_begin(&bt, b), 0);
	ck_assert_msg(b->batch_put_fd(bt, m, fd, 0, hint) == 0, "put: %s", ck_errmsg());
	ck_assert_int_eq(b->batch_commit(bt), 0);
	b->batch_free(bt);
	close(fd);
	return m->existed;
}

static void check_reads(struct blob_backend *b, const struct hash *h, const uint8_t *p, size_t n)
{
	struct blob_reader *r = NULL;
	uint8_t *buf = malloc(n + 1);

	ck_assert_ptr_nonnull(buf);
	ck_assert_msg(b->open(&r, b, h) == 0, "open: %s", ck_errmsg());
	ck_assert_uint_eq(blob_reader_size(r), n);
	ck_assert_int_eq(blob_reader_raw_fd(NULL, r), -1);
	ck_assert_msg(blob_reader_read(r, buf, n, 0) == 0, "read: %s", ck_errmsg());
	ck_assert_int_eq(memcmp(buf, p, n), 0);
	size_t k = n - n / 3 < 10 ? n - n / 3 : 10;
	ck_assert_int_eq(blob_reader_read(r, buf, k, n / 3), 0);
	ck_assert_int_eq(memcmp(buf, p + n / 3, k), 0);
	ck_assert_int_eq(blob_reader_read(r, buf, 1, n - 1), 0);
	ck_assert_int_eq(buf[0], p[n - 1]);
	ck_assert_int_eq(blob_reader_read(r, buf, 0, n), 0);
	ck_assert_int_eq(blob_reader_read(r, buf, 2, n - 1), CK_ECORRUPT);
	blob_reader_close(r);
	/* and once more, start to end, as verify and downloads read */
	ck_assert_int_eq(b->open(&r, b, h), 0);
	ck_assert_msg(blob_reader_verify(r, h) == 0, "verify: %s", ck_errmsg());
	blob_reader_close(r);
	free(buf);
}

/* ---- tests ---- */

START_TEST(test_s3_put_twice_stores_once_and_remove_deletes)
{
	struct blob_backend *b = open_store(0);
	struct blob_reader *r = NULL;
	struct blob_meta m;
	const char text[] = "the same bytes, twice, in a bucket";
	char key[256];

	ck_assert_int_eq(put_one(b, &m, text, sizeof(text), DT_INVALID), 0);
	ck_assert_int_eq(m.codec, CODEC_RAW);
	ck_assert_uint_eq(m.stored_size, sizeof(text));
	ck_assert_int_eq(put_one(b, &m, text, sizeof(text), DT_INVALID), 1);
	ck_assert_int_eq(b->exists(b, &m.hash), 0);
	check_reads(b, &m.hash, (const uint8_t *)text, sizeof(text));
	/* named PREFIX/ab/<62 hex>, like the local store's files */
	blob_key(key, sizeof(key), &m.hash, 0);
	ck_assert_int_eq(raw_request("HEAD", key, NULL, NULL), 200);

	ck_assert_int_eq(b->remove(b, &m.hash), 0);
	ck_assert_int_eq(b->remove(b, &m.hash), CK_ENOTFOUND);
	ck_assert_int_eq(b->exists(b, &m.hash), CK_ENOTFOUND);
	ck_assert_int_eq(b->open(&r, b, &m.hash), CK_ENOTFOUND);
	ck_assert_ptr_null(r);
	ck_assert_int_eq(raw_request("HEAD", key, NULL, NULL), 404);
	b->free(b);
}
END_TEST

START_TEST(test_s3_put_reads_from_source_offset_and_same_bytes_in_a_batch_once)
{
	struct blob_backend *b = open_store(1);
	struct blob_batch *bt = NULL;
	struct blob_meta m, m2;
	const char text[] = "HEADERpayload bytes";
	int fd = source(&m, text, sizeof(text));

	hash_buf(&m.hash, &m.crc32, text + 6, sizeof(text) - 6);
	m.raw_size = sizeof(text) - 6;
	m2 = m;
	ck_assert_int_eq(b->batch_begin(&bt, b), 0);
	ck_assert_int_eq(b->batch_put_fd(bt, &m, fd, 6, DT_INVALID), 0);
	ck_assert_int_eq(b->batch_put_fd(bt, &m2, fd, 6, DT_INVALID), 0);
	ck_assert_int_eq(m.existed, 0);
	ck_assert_int_eq(m2.existed, 1);
	ck_assert_int_eq(b->batch_commit(bt), 0);
	b->batch_free(bt);
	check_reads(b, &m.hash, (const uint8_t *)text + 6, sizeof(text) - 6);

	/* a source shorter than said fails */
	m.raw_size = 500;
	m.hash.b[0] ^= 1;
	ck_assert_int_eq(b->batch_begin(&bt, b), 0);
	/* the codec reads the source at once; a raw PUT would fail at commit */
	int e = b->batch_put_fd(bt, &m, fd, 0, DT_INVALID);
	ck_assert_int_eq(e ? e : b->batch_commit(bt), CK_ECORRUPT);
	b->batch_free(bt);
	ck_assert_int_eq(b->exists(b, &m.hash), CK_ENOTFOUND);
	close(fd);
	b->free(b);
}
END_TEST

START_TEST(test_s3_a_batch_sends_while_the_caller_goes_on_and_commit_waits_for_every_put)
{
	struct blob_backend *b = open_store(0);
	struct blob_batch *bt = NULL;
	enum { N = 12 };
	size_t n = 1 << 20;
	uint8_t *w[N];
	struct blob_meta m[N];

	/* each source is closed as soon as its put returns: the batch keeps
	 * its own descriptor until the PUT is done */
	ck_assert_int_eq(b->batch_begin(&bt, b), 0);
	for (int i = 0; i < N; i++) {
		w[i] = weights(n, 100 + (uint64_t)i);
		int fd = source(&m[i], w[i], n);
		ck_assert_msg(b->batch_put_fd(bt, &m[i], fd, 0, DT_FLOAT32) == 0, "put %d: %s", i,
			      ck_errmsg());
		close(fd);
	}
	ck_assert_msg(b->batch_commit(bt) == 0, "commit: %s", ck_errmsg());
	b->batch_free(bt);
	/* acknowledged, all of them, with their bytes */
	for (int i = 0; i < N; i++) {
		ck_assert_int_eq(m[i].existed, 0);
		check_reads(b, &m[i].hash, w[i], n);
	}

	/* a batch dropped without its commit returns (what was sent stays for
	 * the sweep), and so does one freed with nothing in it */
	ck_assert_int_eq(b->batch_begin(&bt, b), 0);
	for (int i = 0; i < N; i++) {
		w[i][0] ^= 0x5a;
		int fd = source(&m[i], w[i], n);
		ck_assert_int_eq(b->batch_put_fd(bt, &m[i], fd, 0, DT_FLOAT32), 0);
		close(fd);
	}
	b->batch_free(bt);
	ck_assert_int_eq(b->batch_begin(&bt, b), 0);
	b->batch_free(bt);
	for (int i = 0; i < N; i++)
		free(w[i]);
	b->free(b);
}
END_TEST

START_TEST(test_s3_bytes_that_do_not_match_their_name_are_refused)
{
	struct blob_backend *b = open_store(0);
	struct blob_batch *bt = NULL;
	struct blob_meta m;
	int fd = source(&m, "some bytes", 10);

	/* S3 checks the payload against the SHA-256 sent with it */
	m.hash.b[5] ^= 0x40;
	ck_assert_int_eq(b->batch_begin(&bt, b), 0);
	/* the PUT is queued (async_put); its failure comes from the commit */
	ck_assert_int_eq(b->async_put, 1);
	ck_assert_int_eq(b->batch_put_fd(bt, &m, fd, 0, DT_INVALID), 0);
	ck_assert_int_eq(b->batch_commit(bt), CK_ECORRUPT);
	b->batch_free(bt);
	ck_assert_int_eq(b->exists(b, &m.hash), CK_ENOTFOUND);
	close(fd);
	b->free(b);
}
END_TEST

START_TEST(test_s3_empty_blob_round_trips)
{
	struct blob_backend *b = open_store(1);
	struct blob_reader *r = NULL;
	struct blob_meta m;
	uint8_t buf[1];

	ck_assert_int_eq(put_one(b, &m, "", 0, DT_FLOAT32), 0);
	ck_assert_int_eq(b->open(&r, b, &m.hash), 0);
	ck_assert_uint_eq(blob_reader_size(r), 0);
	ck_assert_int_eq(blob_reader_read(r, buf, 0, 0), 0);
	ck_assert_int_eq(blob_reader_read(r, buf, 1, 0), CK_ECORRUPT);
	blob_reader_close(r);
	b->free(b);
}
END_TEST

START_TEST(test_s3_blob_above_the_multipart_threshold_goes_up_in_parts)
{
	struct blob_s3_options o = options();
	struct blob_backend *b = NULL;
	struct blob_reader *r = NULL;
	struct blob_meta m;
	size_t n = (13u << 20) + 12345;
	uint8_t *w = malloc(n), buf[64];
	uint64_t s = 99;

	ck_assert_ptr_nonnull(w);
	for (size_t i = 0; i < n; i++) { /* incompressible */
		s ^= s << 13, s ^= s >> 7, s ^= s << 17;
		w[i] = (uint8_t)s;
	}
	o.multipart_threshold = 6u << 20;
	o.part_size = 5u << 20;
	ck_assert_int_eq(blob_s3_open(&b, &o, 1), 0);
	ck_assert_int_eq(put_one(b, &m, w, n, DT_INVALID), 0);
	ck_assert_int_eq(m.codec, CODEC_RAW);
	check_reads(b, &m.hash, w, n);
	/* reads across part boundaries */
	ck_assert_int_eq(b->open(&r, b, &m.hash), 0);
	for (uint64_t at = (5u << 20) - 20; at < n; at += 5u << 20) {
		ck_assert_int_eq(blob_reader_read(r, buf, sizeof(buf), at), 0);
		ck_assert_int_eq(memcmp(buf, w + at, sizeof(buf)), 0);
	}
	blob_reader_close(r);
	/* a multipart object's ETag ends in "-<parts>": three of 5 MiB */
	{
		char path[400], *body;
		snprintf(path, sizeof(path), "?list-type=2&prefix=%s%%2F", prefix);
		ck_assert_int_eq(raw_request("GET", path, NULL, &body), 200);
		ck_assert_msg(strstr(body, "-3&quot;</ETag>") || strstr(body, "-3\"</ETag>"),
			      "not a 3-part upload: %s", body);
		free(body);
	}
	ck_assert_int_eq(count_uploads(prefix), 0);
	b->free(b);
	free(w);
}
END_TEST

START_TEST(test_s3_compressed_blobs_round_trip_and_read_without_the_codec_setting)
{
	struct blob_s3_options o = options();
	struct blob_backend *b = NULL, *raw = NULL;
	struct blob_reader *r = NULL;
	struct blob_meta m, t;
	size_t n = (9u << 20) + 4096;
	uint8_t *w = weights(n, 42), *text = malloc(n), *buf = malloc(n);
	char key[256];

	ck_assert_ptr_nonnull(text);
	ck_assert_ptr_nonnull(buf);
	for (size_t i = 0; i < n; i++)
		text[i] = "checkpoint "[i % 11];
	o.multipart_threshold = 6u << 20; /* the planes container goes up in parts */
	o.part_size = 5u << 20;
	ck_assert_int_eq(blob_s3_open(&b, &o, 1), 0);
	ck_assert_int_eq(put_one(b, &m, w, n, DT_FLOAT32), 0);
	ck_assert_int_eq(m.codec, CODEC_PLANES);
	ck_assert_uint_lt(m.stored_size, n * 9 / 10);
	ck_assert_uint_gt(m.stored_size, 6u << 20);
	check_reads(b, &m.hash, w, n);
	blob_key(key, sizeof(key), &m.hash, 1);
	ck_assert_int_eq(raw_request("HEAD", key, NULL, NULL), 200);
	ck_assert_int_eq(put_one(b, &t, text, n, DT_INVALID), 0);
	ck_assert_int_eq(t.codec, CODEC_ZSTD);
	ck_assert_uint_lt(t.stored_size, n / 10);
	check_reads(b, &t.hash, text, n);

	/* a second put, from any instance, finds it with its codec */
	ck_assert_int_eq(put_one(b, &m, w, n, DT_FLOAT32), 1);
	ck_assert_int_eq(m.codec, CODEC_PLANES);

	/* the codec is the store's business: compression off reads it too */
	raw = open_store(0);
	ck_assert_int_eq(raw->open(&r, raw, &m.hash), 0);
	ck_assert_int_eq(blob_reader_codec(r), CODEC_PLANES);
	ck_assert_int_eq(blob_reader_raw_fd(NULL, r), -1);
	/* chunk by chunk from the end backwards: every read a range GET */
	for (uint64_t off = n; off > 0;) {
		size_t k = off > 700000 ? 700000 : (size_t)off;
		off -= k;
		ck_assert_int_eq(blob_reader_read(r, buf, k, off), 0);
		ck_assert_int_eq(memcmp(buf, w + off, k), 0);
	}
	blob_reader_close(r);
	ck_assert_int_eq(raw->remove(raw, &m.hash), 0);
	ck_assert_int_eq(raw_request("HEAD", key, NULL, NULL), 404);
	raw->free(raw);
	b->free(b);
	free(w);
	free(text);
	free(buf);
}
END_TEST

struct seen {
	struct hash h[16];
	int n;
	int64_t oldest, newest;
};

static int collect(void *arg, const struct hash *h, int64_t mtime)
{
	struct seen *s = arg;

	if (s->n < 16)
		s->h[s->n] = *h;
	s->n++;
	if (s->n == 1 || mtime < s->oldest)
		s->oldest = mtime;
	if (s->n == 1 || mtime > s->newest)
		s->newest = mtime;
	return 0;
}

static int stop_at_third(void *arg, const struct hash *h, int64_t mtime)
{
	return ++*(int *)arg == 3 ? 9 : 0;
}

static int seen_has(const struct seen *s, const struct hash *h)
{
	for (int i = 0; i < s->n && i < 16; i++)
		if (memcmp(&s->h[i], h, sizeof(*h)) == 0)
			return 1;
	return 0;
}

START_TEST(test_s3_foreach_lists_every_blob_once_across_pages)
{
	struct blob_s3_options o = options();
	struct blob_backend *b = NULL, *z = NULL;
	struct blob_meta m[6];
	struct seen s = {.n = 0};
	char key[256], payload[32];
	uint8_t *w = weights(1 << 16, 7);
	int64_t t0 = (int64_t)time(NULL);
	int calls = 0;

	o.list_page = 2; /* several pages */
	ck_assert_int_eq(blob_s3_open(&b, &o, 0), 0);
	ck_assert_int_eq(blob_s3_open(&z, &o, 1), 0);
	for (int i = 0; i < 5; i++) {
		int len = snprintf(payload, sizeof(payload), "listed blob %d", i);
		put_one(b, &m[i], payload, (size_t)len, DT_INVALID);
	}
	/* one blob stored both ways: compressed, then raw under its raw name */
	put_one(z, &m[5], w, 1 << 16, DT_FLOAT32);
	ck_assert_int_eq(m[5].codec, CODEC_PLANES);
	{
		/* the raw name too, as an instance that did not see the .z
		 * would write it */
		struct blob_objstore *os = NULL;
		struct blob_objbatch *ob = NULL;
		struct blob_meta again;
		int fd = source(&again, w, 1 << 16);
		ck_assert_int_eq(blob_s3_objstore_open(&os, &o), 0);
		ck_assert_int_eq(os->batch_begin(&ob, os), 0);
		ck_assert_int_eq(os->put_fd(ob, &again.hash, BLOB_FORM_RAW, fd, 0, 1 << 16), 0);
		ck_assert_int_eq(os->batch_commit(ob), 0);
		os->batch_free(ob);
		os->free(os);
		blob_key(key, sizeof(key), &again.hash, 0);
		ck_assert_int_eq(raw_request("HEAD", key, NULL, NULL), 200);
		blob_key(key, sizeof(key), &again.hash, 1);
		ck_assert_int_eq(raw_request("HEAD", key, NULL, NULL), 200);
		close(fd);
	}
	/* names that are not blobs are ignored */
	snprintf(key, sizeof(key), "%s/ab/not-a-blob", prefix);
	ck_assert_int_eq(raw_request("PUT", key, "junk", NULL), 200);
	snprintf(key, sizeof(key), "%s-other/ab/cd", prefix);
	ck_assert_int_eq(raw_request("PUT", key, "another prefix", NULL), 200);

	ck_assert_int_eq(b->foreach (b, collect, &s), 0);
	ck_assert_int_eq(s.n, 6);
	for (int i = 0; i < 6; i++)
		ck_assert(seen_has(&s, &m[i].hash));
	ck_assert_int_ge(s.oldest, t0 - 60);
	ck_assert_int_le(s.newest, (int64_t)time(NULL) + 60);
	ck_assert_int_eq(b->foreach (b, stop_at_third, &calls), 9);
	ck_assert_int_eq(calls, 3);

	ck_assert_int_eq(b->remove(b, &m[0].hash), 0);
	ck_assert_int_eq(b->remove(b, &m[5].hash), 0);
	s.n = 0;
	ck_assert_int_eq(b->foreach (b, collect, &s), 0);
	ck_assert_int_eq(s.n, 4);
	ck_assert(!seen_has(&s, &m[0].hash));
	ck_assert(!seen_has(&s, &m[5].hash));
	z->free(z);
	b->free(b);
	free(w);
}
END_TEST

struct racer {
	struct blob_backend *b;
	int id;
	int rc;
	char msg[256];
};

static void *race(void *arg)
{
	struct racer *r = arg;
	size_t n = 1 << 20;
	uint8_t *w = weights(n, 1000 + (uint64_t)r->id), *shared = weights(n, 5);
	struct blob_batch *bt = NULL;
	struct blob_meta m[6];
	int fd = memfd_create("src", 0);

	r->rc = -100;
	if (fd < 0 || pwrite(fd, shared, n, 0) != (ssize_t)n)
		goto out;
	memset(m, 0, sizeof(m));
	if ((r->rc = r->b->batch_begin(&bt, r->b)) < 0)
		goto out;
	for (int i = 0; i < 6; i++) {
		/* blob 0 is the same in every thread, 1-5 are the thread's own */
		if (i > 0) {
			w[0] = (uint8_t)i;
			if (pwrite(fd, w, n, (off_t)(i * n)) != (ssize_t)n)
				goto out;
		}
		hash_buf(&m[i].hash, &m[i].crc32, i ? w : shared, n);
		m[i].raw_size = n;
		if ((r->rc = r->b->batch_put_fd(bt, &m[i], fd, (uint64_t)i * n, DT_FLOAT32)) < 0)
			goto out;
	}
	r->rc = r->b->batch_commit(bt);
out:
	if (r->rc < 0)
		snprintf(r->msg, sizeof(r->msg), "%s", ck_errmsg());
	r->b->batch_free(bt);
	if (fd >= 0)
		close(fd);
	free(w);
	free(shared);
	return NULL;
}

START_TEST(test_s3_concurrent_batches_all_land)
{
	struct blob_backend *b = open_store(1);
	pthread_t t[4];
	struct racer r[4];
	struct seen s = {.n = 0};
	size_t n = 1 << 20;
	uint8_t *shared = weights(n, 5);
	struct hash h;

	for (int i = 0; i < 4; i++) {
		r[i] = (struct racer){b, i, 0, ""};
		ck_assert_int_eq(pthread_create(&t[i], NULL, race, &r[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		ck_assert_msg(r[i].rc == 0, "thread %d: %d %s", i, r[i].rc, r[i].msg);
	}
	ck_assert_int_eq(b->foreach (b, collect, &s), 0);
	ck_assert_int_eq(s.n, 1 + 4 * 5);
	hash_buf(&h, NULL, shared, n);
	check_reads(b, &h, shared, n);
	b->free(b);
	free(shared);
}
END_TEST

START_TEST(test_s3_clean_tmp_aborts_old_uploads_and_never_young_ones)
{
	struct blob_backend *b = open_store(1);
	char key[256], other[80], *body;
	int64_t now = (int64_t)time(NULL);

	/* an upload in flight (another instance's, or one cut off) */
	snprintf(key, sizeof(key), "%s/ab/cdef?uploads=", prefix);
	ck_assert_int_eq(raw_request("POST", key, NULL, &body), 200);
	ck_assert_ptr_nonnull(strstr(body, "<UploadId>"));
	free(body);
	snprintf(other, sizeof(other), "%s-x", prefix);
	snprintf(key, sizeof(key), "%s/ab/cdef?uploads=", other);
	ck_assert_int_eq(raw_request("POST", key, NULL, NULL), 200);
	ck_assert_int_eq(count_uploads(prefix), 1);

	/* a cutoff before it started: kept */
	ck_assert_int_eq(b->clean_tmp(b, now - 600, 0), 0);
	ck_assert_int_eq(count_uploads(prefix), 1);
	/* a cutoff after it: aborted; another store's (prefix) untouched */
	ck_assert_int_eq(b->clean_tmp(b, now + 60, 0), 0);
	ck_assert_int_eq(count_uploads(prefix), 0);
	ck_assert_int_eq(count_uploads(other), 1);
	b->free(b);
}
END_TEST

START_TEST(test_s3_a_blob_the_store_lost_is_an_error_never_wrong_bytes)
{
	struct blob_backend *b = open_store(0);
	struct blob_reader *r = NULL;
	struct blob_meta m;
	size_t n = 3u << 20;
	uint8_t *w = weights(n, 3), *buf = malloc(n);
	char key[256];

	ck_assert_ptr_nonnull(buf);
	put_one(b, &m, w, n, DT_INVALID);
	ck_assert_int_eq(b->open(&r, b, &m.hash), 0);
	ck_assert_int_eq(blob_reader_read(r, buf, 100, 0), 0);
	blob_key(key, sizeof(key), &m.hash, 0);
	/* replaced by other bytes of another size: refused */
	ck_assert_int_eq(raw_request("PUT", key, "short and wrong", NULL), 200);
	ck_assert_int_eq(blob_reader_read(r, buf, 1000, n / 2), CK_ECORRUPT);
	/* gone */
	ck_assert_int_eq(raw_request("DELETE", key, NULL, NULL), 204);
	ck_assert_int_eq(blob_reader_read(r, buf, 1000, n - 2000), CK_ENOTFOUND);
	blob_reader_close(r);
	ck_assert_int_eq(b->open(&r, b, &m.hash), CK_ENOTFOUND);
	b->free(b);
	free(w);
	free(buf);
}
END_TEST

/* Runs tests/services/rgw.sh CMD on the test's gateway. */
static void rgw(const char *cmd)
{
	char line[1024];

	snprintf(line, sizeof(line), "sh %s %s '%s' >&2",
		 getenv("CKPTD_RGW_SCRIPT") ? getenv("CKPTD_RGW_SCRIPT") : "tests/services/rgw.sh",
		 cmd, getenv("CKPTD_RGW_DIR"));
	ck_assert_msg(system(line) == 0, "%s failed", line);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct upload {
	struct blob_backend *b;
	struct blob_meta m;
	int fd;
	int rc;
	double t_end;
};

static void *upload_main(void *arg)
{
	struct upload *u = arg;
	struct blob_batch *bt = NULL;

	u->rc = u->b->batch_begin(&bt, u->b);
	if (u->rc == 0)
		u->rc = u->b->batch_put_fd(bt, &u->m, u->fd, 0, DT_INVALID);
	if (u->rc == 0)
		u->rc = u->b->batch_commit(bt);
	u->b->batch_free(bt);
	u->t_end = now_s();
	return NULL;
}

START_TEST(test_s3_store_going_away_is_unavailable_then_serves_again)
{
	struct blob_s3_options o = options();
	struct blob_backend *b = NULL;
	struct blob_reader *r = NULL;
	struct blob_meta m, before;
	struct upload u;
	pthread_t t;
	size_t n = 256u << 20;
	uint8_t *w = weights(1 << 20, 11);
	double t0;
	int fd;

	if (!getenv("CKPTD_RGW_DIR")) {
		printf("test_s3_store_going_away...: skipped: CKPTD_RGW_DIR is not set "
		       "(needs a gateway started by tests/services/rgw.sh)\n");
		free(w);
		return;
	}
	o.multipart_threshold = 8u << 20;
	o.part_size = 8u << 20;
	ck_assert_int_eq(blob_s3_open(&b, &o, 0), 0);
	put_one(b, &before, w, 1 << 20, DT_INVALID);

	/* a 256 MiB upload in parts, and the gateway stopped under it */
	u.b = b;
	u.fd = memfd_create("big", 0);
	ck_assert_int_ge(u.fd, 0);
	for (size_t off = 0; off < n; off += 1 << 20) {
		w[0] = (uint8_t)(off >> 20);
		w[1] = (uint8_t)(off >> 28);
		ck_assert_int_eq(pwrite(u.fd, w, 1 << 20, (off_t)off), 1 << 20);
	}
	{
		struct hasher *hs = hasher_new();
		uint8_t *chunk = malloc(1 << 20);
		ck_assert_ptr_nonnull(chunk);
		for (size_t off = 0; off < n; off += 1 << 20) {
			ck_assert_int_eq(pread(u.fd, chunk, 1 << 20, (off_t)off), 1 << 20);
			hasher_update(hs, chunk, 1 << 20);
		}
		memset(&u.m, 0, sizeof(u.m));
		hasher_final(hs, &u.m.hash, &u.m.crc32);
		hasher_free(hs);
		free(chunk);
	}
	u.m.raw_size = n;
	ck_assert_int_eq(pthread_create(&t, NULL, upload_main, &u), 0);
	usleep(300 * 1000);
	t0 = now_s();
	rgw("stop-rgw");
	pthread_join(t, NULL);
	ck_assert_msg(u.rc == CK_EUNAVAIL, "upload cut off: %d %s", u.rc, ck_errmsg());
	ck_assert_msg(u.t_end - t0 < 10, "took %.1f s to give up", u.t_end - t0);
	printf("upload cut off by the gateway's stop: unavailable %.1f s after the stop began\n",
	       u.t_end - t0);

	/* meanwhile: every call is unavailable, promptly */
	fd = source(&m, "while it is away", 16);
	t0 = now_s();
	{
		struct blob_batch *bt = NULL;
		ck_assert_int_eq(b->batch_begin(&bt, b), 0);
		ck_assert_int_eq(b->batch_put_fd(bt, &m, fd, 0, DT_INVALID), CK_EUNAVAIL);
		ck_assert_ptr_nonnull(strstr(ck_errmsg(), "retry later"));
		b->batch_free(bt);
	}
	ck_assert_msg(now_s() - t0 < 10, "took %.1f s", now_s() - t0);
	printf("put to a stopped gateway: unavailable after %.1f s (%s)\n", now_s() - t0,
	       ck_errmsg());
	ck_assert_int_eq(b->exists(b, &before.hash), CK_EUNAVAIL);
	ck_assert_int_eq(b->open(&r, b, &before.hash), CK_EUNAVAIL);
	ck_assert_int_eq(b->foreach (b, collect, &(struct seen){.n = 0}), CK_EUNAVAIL);

	/* back: full service, nothing of the cut-off upload visible */
	rgw("start-rgw");
	ck_assert_int_eq(b->exists(b, &u.m.hash), CK_ENOTFOUND);
	ck_assert_int_eq(b->exists(b, &before.hash), 0);
	ck_assert_int_eq(put_one(b, &m, "while it is away", 16, DT_INVALID), 0);
	check_reads(b, &m.hash, (const uint8_t *)"while it is away", 16);
	/* the cut-off upload's parts are a temporary: cleaned when old enough */
	ck_assert_int_le(count_uploads(prefix), 1);
	ck_assert_int_eq(b->clean_tmp(b, (int64_t)time(NULL) + 60, 0), 0);
	ck_assert_int_eq(count_uploads(prefix), 0);
	close(fd);
	close(u.fd);
	b->free(b);
	free(w);
}
END_TEST

static Suite *blob_s3_suite(void)
{
	Suite *s = suite_create("blob_s3");
	TCase *tc = tcase_create("blob_s3");

	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_s3_put_twice_stores_once_and_remove_deletes);
	tcase_add_test(tc, test_s3_put_reads_from_source_offset_and_same_bytes_in_a_batch_once);
	tcase_add_test(
	    tc, test_s3_a_batch_sends_while_the_caller_goes_on_and_commit_waits_for_every_put);
	tcase_add_test(tc, test_s3_bytes_that_do_not_match_their_name_are_refused);
	tcase_add_test(tc, test_s3_empty_blob_round_trips);
	tcase_add_test(tc, test_s3_blob_above_the_multipart_threshold_goes_up_in_parts);
	tcase_add_test(tc, test_s3_compressed_blobs_round_trip_and_read_without_the_codec_setting);
	tcase_add_test(tc, test_s3_foreach_lists_every_blob_once_across_pages);
	tcase_add_test(tc, test_s3_concurrent_batches_all_land);
	tcase_add_test(tc, test_s3_clean_tmp_aborts_old_uploads_and_never_young_ones);
	tcase_add_test(tc, test_s3_a_blob_the_store_lost_is_an_error_never_wrong_bytes);
	tcase_add_test(tc, test_s3_store_going_away_is_unavailable_then_serves_again);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	endpoint = getenv("CKPTD_TEST_S3_ENDPOINT");
	bucket = getenv("CKPTD_TEST_S3_BUCKET");
	region = getenv("CKPTD_TEST_S3_REGION") ? getenv("CKPTD_TEST_S3_REGION") : "us-east-1";
	if (!endpoint || !*endpoint || !bucket || !*bucket || !getenv("AWS_ACCESS_KEY_ID") ||
	    !getenv("AWS_SECRET_ACCESS_KEY")) {
		printf("test_blob_s3: skipped: set CKPTD_TEST_S3_ENDPOINT, CKPTD_TEST_S3_BUCKET, "
		       "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to run it against an S3 "
		       "store (`make unit-s3` starts a Ceph RGW for it)\n");
		return 0;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	return run_suite(blob_s3_suite());
}
