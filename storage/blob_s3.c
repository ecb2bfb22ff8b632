/*
 * blob_s3.c: the S3 object store (blob_objstore.h), spoken with libcurl.
 *
 * Layout in the bucket, under the key prefix P (none when the URL has none):
 *
 *   P/ab/<62 hex>     a raw blob (the same names as the local store's files,
 *   P/ab/<62 hex>.z   blob_fs.c, so a directory copied into a bucket is a store)
 *
 * Requests: path-style URLs (ENDPOINT/BUCKET/KEY), signed with SigV4 by
 * libcurl (CURLOPT_AWS_SIGV4 "aws:amz:REGION:s3"). libcurl 7.88 neither adds
 * the x-amz-content-sha256 header S3 needs nor sorts the query string, so
 * every request carries that header (the payload's SHA-256: S3 checks the
 * body against it, so a damaged upload is refused, never stored) and every
 * query is built with its parameters in sorted order, each with an "=".
 * Objects up to multipart_threshold go up with one PUT, streamed from the
 * caller's fd; a raw blob's payload hash is the blob's own name, so it is not
 * hashed again. Larger ones go up as a multipart upload (parts of part_size,
 * each hashed then streamed from the fd: memory stays bounded), completed
 * before the PUT is done, aborted on failure. A batch sends its PUTs on up to
 * PUT_WORKERS threads at once (below). An object is visible only complete
 * (S3 PUT and CompleteMultipartUpload are atomic), and a same-named object
 * always holds the same bytes, so several instances may put one blob at once.
 *
 * Reads: open fetches the object's first bytes with a range GET (which also
 * gives its size); reads are served from a window that grows while the reader
 * moves forward (64 KiB up to `window`), and the window after it is fetched by
 * a helper thread while the reader consumes the current one. A read larger
 * than the window goes straight into the caller's buffer. A caller that
 * reads ahead itself (storage/readahead.c) reads without a reader: `get`,
 * one range GET into its buffer. Every range answer
 * is checked against the object's size and the range asked for: a lost or
 * changed object is an error, never wrong bytes.
 *
 * Failures: connection errors and 5xx answers are retried (tries, backoff
 * doubling from backoff_ms, with jitter); when they persist the request fails
 * with CK_EUNAVAIL. 404 is CK_ENOTFOUND; other answers are CK_EIO naming S3's
 * error code and message.
 *
 * Temporaries: incomplete multipart uploads (an upload cut off by a crash or
 * an unreachable store); clean_tmp aborts those initiated before its cutoff.
 * Compressed blobs are encoded into an unnamed local file (tmp_dir) first.
 *
 * Thread safety: a pool of curl easy handles (each keeps its connection
 * open for the next request) under a mutex; everything else is immutable
 * after open.
 */
#include "blob_s3.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/evp.h>

#include "../common/err.h"
#include "blob_reader.h"

#define DEF_THRESHOLD  (64ull << 20)
#define DEF_PART       (16ull << 20)
#define MIN_PART       (5ull << 20)
#define MAX_PARTS      10000
#define DEF_WINDOW     (8u << 20)
#define FIRST_WINDOW   (64u << 10)
#define GROW_WINDOW    (256u << 10)
#define DEF_TRIES      4
#define DEF_BACKOFF_MS 200
#define DEF_CONNECT_MS 2000
#define POOL_MAX       16
#define XML_MAX	       (16u << 20) /* a listing page or an error body */
#define HASH_BUF       (1u << 20)

static const char EMPTY_SHA256[] =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

struct s3 {
	struct blob_objstore base;
	char *endpoint; /* no trailing '/' */
	char *bucket;
	char *prefix; /* "" or "p/q/" (with the trailing '/') */
	char *region;
	char *sigv4; /* "aws:amz:REGION:s3" */
	char *key_id, *secret, *token_header;
	char *tmp_dir;
	char instance[64];
	uint64_t threshold, part_size;
	size_t window;
	int tries, backoff_ms, connect_ms, list_page;

	pthread_mutex_t lock;
	CURL *idle[POOL_MAX];
	int nidle;
};

/* ---- small helpers ---- */

struct buf {
	char *p;
	size_t n, cap;
};

static int buf_add(struct buf *b, const void *p, size_t n, size_t max)
{
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *q;
		while (cap < b->n + n + 1)
			cap *= 2;
		if (cap > max + 1 && b->n + n + 1 <= max + 1)
			cap = max + 1;
		if (b->n + n > max || !(q = realloc(b->p, cap)))
			return -1;
		b->p = q;
		b->cap = cap;
	}
	memcpy(b->p + b->n, p, n);
	b->n += n;
	b->p[b->n] = 0;
	return 0;
}

static void buf_reset(struct buf *b)
{
	b->n = 0;
	if (b->p)
		b->p[0] = 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void to_hex(char *out, const uint8_t *p, size_t n)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = 0;
}

/* SigV4's URI encoding of a query value: all but A-Za-z0-9-_.~ */
static int query_escape(char *out, size_t cap, const char *s)
{
	static const char digits[] = "0123456789ABCDEF";
	size_t n = 0;

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '_' || c == '.' || c == '~') {
			if (n + 1 >= cap)
				return -1;
			out[n++] = (char)c;
		} else {
			if (n + 3 >= cap)
				return -1;
			out[n++] = '%';
			out[n++] = digits[c >> 4];
			out[n++] = digits[c & 15];
		}
	}
	out[n] = 0;
	return 0;
}

/* "2026-12-03T10:17:17.714Z" to seconds since the epoch; -1 when bad. */
static int64_t parse_iso8601(const char *s)
{
	struct tm tm;

	memset(&tm, 0, sizeof(tm));
	if (sscanf(s, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
		   &tm.tm_min, &tm.tm_sec) != 6)
		return -1;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	return (int64_t)timegm(&tm);
}

/* The text of the first <tag>...</tag> in [*p, end) into out (entities
 * decoded), and *p past it: 0, or -1 when there is none (or it does not
 * fit). */
static int xml_next(char *out, size_t cap, const char **p, const char *end, const char *tag)
{
	char open[64], close[64];
	const char *a, *b;
	size_t n = 0;

	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	a = memmem(*p, (size_t)(end - *p), open, strlen(open));
	if (!a)
		return -1;
	a += strlen(open);
	b = memmem(a, (size_t)(end - a), close, strlen(close));
	if (!b)
		return -1;
	*p = b + strlen(close);
	for (const char *s = a; s < b; s++) {
		char c = *s;
		if (c == '&') {
			static const struct {
				const char *ent;
				char c;
			} ents[] = {{"&amp;", '&'},  {"&lt;", '<'},    {"&gt;", '>'},
				    {"&quot;", '"'}, {"&apos;", '\''}, {"&#34;", '"'}};
			size_t i;
			for (i = 0; i < sizeof(ents) / sizeof(ents[0]); i++) {
				size_t k = strlen(ents[i].ent);
				if ((size_t)(b - s) >= k && memcmp(s, ents[i].ent, k) == 0) {
					c = ents[i].c;
					s += k - 1;
					break;
				}
			}
		}
		if (n + 1 >= cap)
			return -1;
		out[n++] = c;
	}
	out[n] = 0;
	return 0;
}

/* The bounds of the next <tag>...</tag> element's content in [*p, end). */
static int xml_block(const char **a, const char **b, const char **p, const char *end,
		     const char *tag)
{
	char open[64], close[64];

	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	*a = memmem(*p, (size_t)(end - *p), open, strlen(open));
	if (!*a)
		return -1;
	*a += strlen(open);
	*b = memmem(*a, (size_t)(end - *a), close, strlen(close));
	if (!*b)
		return -1;
	*p = *b + strlen(close);
	return 0;
}

/* ---- requests ---- */

struct req {
	/* what to send */
	const char *method; /* GET HEAD PUT POST DELETE */
	const char *key;    /* the object's key under the bucket, or NULL */
	const char *query;  /* sorted and escaped, without '?', or NULL */
	const char *range;  /* "bytes=A-B" or NULL */
	const char *sha256; /* the payload's hex SHA-256 (NULL: the empty one) */
	const char *content_type;
	int meta_instance; /* send x-amz-meta-ckptd-instance */
	const void *mem;   /* the body from memory ... */
	size_t mem_len;
	int fd; /* ... or from fd (-1: none) */
	uint64_t fd_off, fd_len;

	/* what came back */
	long status;
	struct buf body;		   /* the answer's body (or an error's) */
	uint8_t *dst;			   /* a 2xx GET's body goes here when set ... */
	size_t dst_cap;			   /* ... up to this many bytes */
	size_t dst_len;			   /* bytes received into dst */
	int dst_overflow;		   /* more than dst_cap came */
	uint64_t range_start, range_total; /* from Content-Range */
	int has_range;
	uint64_t length; /* Content-Length */
	int has_length;
	char etag[128];

	/* the upload's state */
	uint64_t pos;
	int src_errno; /* a read of fd failed */
	int src_short; /* fd ended early */
	CURL *h;
};

static CURL *pool_get(struct s3 *s)
{
	CURL *h = NULL;

	pthread_mutex_lock(&s->lock);
	if (s->nidle > 0)
		h = s->idle[--s->nidle];
	pthread_mutex_unlock(&s->lock);
	if (h)
		curl_easy_reset(h); /* keeps its connection and caches */
	else
		h = curl_easy_init();
	return h;
}

static void pool_put(struct s3 *s, CURL *h)
{
	pthread_mutex_lock(&s->lock);
	if (s->nidle < POOL_MAX) {
		s->idle[s->nidle++] = h;
		h = NULL;
	}
	pthread_mutex_unlock(&s->lock);
	if (h)
		curl_easy_cleanup(h);
}

static size_t on_write(char *p, size_t size, size_t nmemb, void *arg)
{
	struct req *r = arg;
	size_t n = size * nmemb;
	long code = 0;

	curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &code);
	if (r->dst && code >= 200 && code < 300) {
		if (n > r->dst_cap - r->dst_len) {
			r->dst_overflow = 1;
			return 0;
		}
		memcpy(r->dst + r->dst_len, p, n);
		r->dst_len += n;
		return n;
	}
	if (buf_add(&r->body, p, n, XML_MAX) < 0) {
		r->dst_overflow = 1;
		return 0;
	}
	return n;
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *arg)
{
	struct req *r = arg;
	size_t n = size * nmemb;
	char line[512];
	unsigned long long a, b, t;

	if (n >= sizeof(line))
		return n;
	memcpy(line, p, n);
	line[n] = 0;
	if (strncmp(line, "HTTP/", 5) == 0) { /* a new answer (after 100 Continue) */
		r->has_range = r->has_length = 0;
		r->etag[0] = 0;
	} else if (strncasecmp(line, "content-range:", 14) == 0) {
		if (sscanf(line + 14, " bytes %llu-%llu/%llu", &a, &b, &t) == 3) {
			r->range_start = a;
			r->range_total = t;
			r->has_range = 1;
		}
	} else if (strncasecmp(line, "content-length:", 15) == 0) {
		if (sscanf(line + 15, " %llu", &a) == 1) {
			r->length = a;
			r->has_length = 1;
		}
	} else if (strncasecmp(line, "etag:", 5) == 0) {
		char *v = line + 5;
		while (*v == ' ')
			v++;
		v[strcspn(v, "\r\n")] = 0;
		snprintf(r->etag, sizeof(r->etag), "%.127s", v);
	}
	return n;
}

static size_t on_read(char *p, size_t size, size_t nmemb, void *arg)
{
	struct req *r = arg;
	size_t want = size * nmemb;
	uint64_t len = r->fd >= 0 ? r->fd_len : r->mem_len;

	if (r->pos >= len)
		return 0;
	if (want > len - r->pos)
		want = (size_t)(len - r->pos);
	if (r->fd < 0) {
		memcpy(p, (const uint8_t *)r->mem + r->pos, want);
		r->pos += want;
		return want;
	}
	for (;;) {
		ssize_t got = pread(r->fd, p, want, (off_t)(r->fd_off + r->pos));
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			r->src_errno = errno;
			return CURL_READFUNC_ABORT;
		}
		if (got == 0) {
			r->src_short = 1;
			return CURL_READFUNC_ABORT;
		}
		r->pos += (uint64_t)got;
		return (size_t)got;
	}
}

static int on_seek(void *arg, curl_off_t off, int origin)
{
	struct req *r = arg;

	if (origin != SEEK_SET || off < 0)
		return CURL_SEEKFUNC_CANTSEEK;
	r->pos = (uint64_t)off;
	return CURL_SEEKFUNC_OK;
}

/* Errors worth another try: the store was unreachable or cut us off. */
static int transient(CURLcode c)
{
	switch (c) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM: return 1;
	default: return 0;
	}
}

/* The S3 error code and message of an error body, into out. */
static void s3_error_text(char *out, size_t cap, const struct req *r)
{
	char code[128] = "", msg[256] = "";
	const char *p = r->body.p ? r->body.p : "", *end = p + r->body.n;

	xml_next(code, sizeof(code), &p, end, "Code");
	p = r->body.p ? r->body.p : "";
	xml_next(msg, sizeof(msg), &p, end, "Message");
	if (code[0] && msg[0])
		snprintf(out, cap, "%s: %s", code, msg);
	else if (code[0])
		snprintf(out, cap, "%s", code);
	else
		snprintf(out, cap, "HTTP %ld", r->status);
}

/* Sends r with retries. 0 once an answer came (any status: r->status), or
 * CK_EUNAVAIL when the store stayed unreachable or kept answering 5xx,
 * CK_EIO / CK_ECORRUPT when the body's source failed. */
static int s3_perform(struct s3 *s, struct req *r)
{
	char url[2048], hdr_sha[128], hdr_range[96], hdr_type[128], hdr_inst[128];
	char errbuf[CURL_ERROR_SIZE];
	double t0 = now_s();
	long delay = s->backoff_ms;
	CURLcode rc = CURLE_OK;
	int n;

	n = snprintf(url, sizeof(url), "%s/%s%s%s%s%s", s->endpoint, s->bucket, r->key ? "/" : "",
		     r->key ? r->key : "", r->query ? "?" : "", r->query ? r->query : "");
	if (n < 0 || (size_t)n >= sizeof(url))
		return ck_error(CK_EINVALID, "blob store: S3 URL too long");
	snprintf(hdr_sha, sizeof(hdr_sha), "x-amz-content-sha256: %s",
		 r->sha256 ? r->sha256 : EMPTY_SHA256);
	if (r->range)
		snprintf(hdr_range, sizeof(hdr_range), "Range: %s", r->range);
	if (r->content_type)
		snprintf(hdr_type, sizeof(hdr_type), "Content-Type: %s", r->content_type);
	snprintf(hdr_inst, sizeof(hdr_inst), "x-amz-meta-ckptd-instance: %s", s->instance);

	for (int attempt = 1;; attempt++) {
		struct curl_slist *hdrs = NULL, *h2;
		CURL *h = pool_get(s);
		int ok = 1;

		if (!h)
			return ck_error(CK_ENOMEM, "blob store: out of memory (curl)");
		r->h = h;
		r->status = 0;
		r->pos = 0;
		r->dst_len = 0;
		r->dst_overflow = 0;
		r->src_errno = r->src_short = 0;
		r->has_range = r->has_length = 0;
		r->etag[0] = 0;
		buf_reset(&r->body);
		errbuf[0] = 0;

		ok &= (h2 = curl_slist_append(hdrs, hdr_sha)) != NULL && (hdrs = h2);
		if (ok && r->range)
			ok &= (h2 = curl_slist_append(hdrs, hdr_range)) != NULL && (hdrs = h2);
		if (ok && r->content_type)
			ok &= (h2 = curl_slist_append(hdrs, hdr_type)) != NULL && (hdrs = h2);
		if (ok && r->meta_instance)
			ok &= (h2 = curl_slist_append(hdrs, hdr_inst)) != NULL && (hdrs = h2);
		if (ok && s->token_header)
			ok &=
			    (h2 = curl_slist_append(hdrs, s->token_header)) != NULL && (hdrs = h2);
		if (!ok) {
			curl_slist_free_all(hdrs);
			pool_put(s, h);
			return ck_error(CK_ENOMEM, "blob store: out of memory (curl)");
		}

		curl_easy_setopt(h, CURLOPT_URL, url);
		curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s->sigv4);
		curl_easy_setopt(h, CURLOPT_USERNAME, s->key_id);
		curl_easy_setopt(h, CURLOPT_PASSWORD, s->secret);
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
		curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
		curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)s->connect_ms);
		/* a transfer that stalls (under 1 KiB/s for 30 s) is cut off */
		curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
		curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 30L);
		curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
		curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 256L << 10);
		curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE, 512L << 10);
		curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
		curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
		curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
		curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
		if (strcmp(r->method, "HEAD") == 0) {
			curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
		} else if (strcmp(r->method, "PUT") == 0) {
			curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
			curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
			curl_easy_setopt(h, CURLOPT_READDATA, r);
			curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
			curl_easy_setopt(h, CURLOPT_SEEKDATA, r);
			curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE,
					 (curl_off_t)(r->fd >= 0 ? r->fd_len : r->mem_len));
		} else if (strcmp(r->method, "POST") == 0) {
			curl_easy_setopt(h, CURLOPT_POST, 1L);
			curl_easy_setopt(h, CURLOPT_POSTFIELDS, r->mem ? (const char *)r->mem : "");
			curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->mem_len);
		} else if (strcmp(r->method, "DELETE") == 0) {
			curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "DELETE");
		}

		rc = curl_easy_perform(h);
		if (rc == CURLE_OK)
			curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
		curl_slist_free_all(hdrs);
		r->h = NULL;
		/* a handle whose transfer failed may hold a broken connection */
		if (rc == CURLE_OK)
			pool_put(s, h);
		else
			curl_easy_cleanup(h);

		if (r->src_errno)
			return ck_error(CK_EIO, "blob source: read at offset %llu: %s",
					(unsigned long long)(r->fd_off + r->pos),
					strerror(r->src_errno));
		if (r->src_short)
			return ck_error(CK_ECORRUPT,
					"blob source ends at offset %llu, %llu bytes short",
					(unsigned long long)(r->fd_off + r->pos),
					(unsigned long long)(r->fd_len - r->pos));
		if (rc == CURLE_WRITE_ERROR && r->dst_overflow)
			return ck_error(CK_EIO,
					"blob store: S3 %s %s: the answer is longer than asked for",
					r->method, r->key ? r->key : s->bucket);
		/* 5xx, 429 (slow down) and 408 (request timeout) are worth another
		 * try; every other answer is the answer */
		if (rc == CURLE_OK && r->status < 500 && r->status != 429 && r->status != 408)
			return 0;
		if (rc != CURLE_OK && !transient(rc))
			return ck_error(CK_EIO, "blob store: S3 %s %s: %s", r->method, url,
					errbuf[0] ? errbuf : curl_easy_strerror(rc));
		if (attempt >= s->tries) {
			char why[400];
			if (rc != CURLE_OK)
				snprintf(why, sizeof(why), "%s",
					 errbuf[0] ? errbuf : curl_easy_strerror(rc));
			else
				s3_error_text(why, sizeof(why), r);
			return ck_error(
			    CK_EUNAVAIL,
			    "blob store: S3 endpoint %s unavailable (%s %s: %s; %d tries "
			    "in %.1f s): retry later",
			    s->endpoint, r->method, r->key ? r->key : s->bucket, why, attempt,
			    now_s() - t0);
		}
		/* jitter, so instances that failed together do not retry together */
		sleep_ms(delay + (long)(random() % (delay / 2 + 1)));
		delay *= 2;
	}
}

/* An error for an answer the caller does not expect. */
static int s3_status_error(struct s3 *s, const struct req *r, const char *what)
{
	char why[400];

	s3_error_text(why, sizeof(why), r);
	if (r->status == 404)
		return ck_error(CK_ENOTFOUND, "blob store: S3 %s %s/%s: not found (%s)", what,
				s->bucket, r->key ? r->key : "", why);
	if (r->status == 403)
		return ck_error(CK_EIO,
				"blob store: S3 %s %s/%s: access denied (%s): check "
				"AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the region",
				what, s->bucket, r->key ? r->key : "", why);
	if (r->status == 400 && strstr(why, "XAmzContentSHA256Mismatch"))
		return ck_error(CK_ECORRUPT,
				"blob store: S3 %s %s/%s: the bytes sent do not match their "
				"SHA-256 (%s)",
				what, s->bucket, r->key ? r->key : "", why);
	return ck_error(CK_EIO, "blob store: S3 %s %s/%s: %s", what, s->bucket,
			r->key ? r->key : "", why);
}

static void req_init(struct req *r, const char *method, const char *key)
{
	memset(r, 0, sizeof(*r));
	r->method = method;
	r->key = key;
	r->fd = -1;
}

static void req_done(struct req *r)
{
	free(r->body.p);
	r->body.p = NULL;
}

/* The key of object (h, form) into out[KEY_MAX]. */
#define KEY_MAX 1100
static void object_key(char *out, const struct s3 *s, const struct hash *h, int form)
{
	char name[72];

	blob_object_name(name, h, form);
	snprintf(out, KEY_MAX, "%s%s", s->prefix, name);
}

/* The hex SHA-256 of n bytes of fd from off. */
static int hash_fd(char *hex, int fd, uint64_t off, uint64_t n)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	uint8_t *buf = malloc(HASH_BUF), md[32];
	unsigned int len = 0;
	int err = 0;

	if (!ctx || !buf || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
		err = ck_error(CK_ENOMEM, "blob store: out of memory (sha256)");
		goto out;
	}
	while (n > 0) {
		size_t want = n < HASH_BUF ? (size_t)n : HASH_BUF;
		ssize_t got = pread(fd, buf, want, (off_t)off);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			err = ck_error(CK_EIO, "blob source: read at offset %llu: %s",
				       (unsigned long long)off, strerror(errno));
			goto out;
		}
		if (got == 0) {
			err = ck_error(CK_ECORRUPT,
				       "blob source ends at offset %llu, %llu bytes short",
				       (unsigned long long)off, (unsigned long long)n);
			goto out;
		}
		EVP_DigestUpdate(ctx, buf, (size_t)got);
		off += (uint64_t)got;
		n -= (uint64_t)got;
	}
	EVP_DigestFinal_ex(ctx, md, &len);
	to_hex(hex, md, 32);
out:
	free(buf);
	EVP_MD_CTX_free(ctx);
	return err;
}

static void hash_mem(char *hex, const void *p, size_t n)
{
	uint8_t md[32];
	unsigned int len = 0;

	EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
	to_hex(hex, md, 32);
}

/* ---- stat, remove ---- */

static int s3_head(uint64_t *size, struct s3 *s, const char *key)
{
	struct req r;
	int err;

	req_init(&r, "HEAD", key);
	if ((err = s3_perform(s, &r)) < 0)
		goto out;
	if (r.status == 404) {
		err = CK_ENOTFOUND;
		goto out;
	}
	if (r.status != 200 || !r.has_length) {
		err = s3_status_error(s, &r, "HEAD");
		goto out;
	}
	*size = r.length;
out:
	req_done(&r);
	return err;
}

static int s3_stat(uint64_t *size, struct blob_objstore *o, const struct hash *h, int form)
{
	struct s3 *s = (struct s3 *)o;
	char key[KEY_MAX];

	object_key(key, s, h, form);
	return s3_head(size, s, key);
}

static int s3_remove(struct blob_objstore *o, const struct hash *h, int form)
{
	struct s3 *s = (struct s3 *)o;
	char key[KEY_MAX];
	uint64_t size;
	struct req r;
	int err;

	/* S3 answers 204 to a DELETE of any key: ask first, to say not found */
	object_key(key, s, h, form);
	if ((err = s3_head(&size, s, key)) < 0)
		return err;
	req_init(&r, "DELETE", key);
	if ((err = s3_perform(s, &r)) == 0 && r.status != 204 && r.status != 200 && r.status != 404)
		err = s3_status_error(s, &r, "DELETE");
	req_done(&r);
	return err;
}

/* ---- uploads ---- */

/* One PUT of n bytes of fd from off whose SHA-256 is sha (hex). */
static int put_single(struct s3 *s, const char *key, int fd, uint64_t off, uint64_t n,
		      const char *sha)
{
	struct req r;
	int err;

	req_init(&r, "PUT", key);
	r.fd = fd;
	r.fd_off = off;
	r.fd_len = n;
	r.sha256 = sha;
	r.meta_instance = 1;
	if ((err = s3_perform(s, &r)) == 0 && r.status != 200)
		err = s3_status_error(s, &r, "PUT");
	req_done(&r);
	return err;
}

static void abort_upload(struct s3 *s, const char *key, const char *upload_id)
{
	char q[600], esc[512];
	struct req r;

	if (query_escape(esc, sizeof(esc), upload_id) < 0)
		return;
	snprintf(q, sizeof(q), "uploadId=%s", esc);
	req_init(&r, "DELETE", key);
	r.query = q;
	/* best effort: if the store is unreachable, clean_tmp aborts it later */
	s3_perform(s, &r);
	req_done(&r);
}

/* A multipart upload of n bytes of fd from off. */
static int put_multipart(struct s3 *s, const char *key, int fd, uint64_t off, uint64_t n)
{
	uint64_t part = s->part_size, nparts;
	char upload_id[512] = "", esc[512], q[640], sha[65];
	struct buf xml = {0};
	char(*etags)[128] = NULL;
	struct req r;
	const char *p;
	int err;

	if ((n + part - 1) / part > MAX_PARTS) /* S3 takes at most 10000 parts */
		part = ((n + MAX_PARTS - 1) / MAX_PARTS + (1u << 20) - 1) & ~((1ull << 20) - 1);
	nparts = (n + part - 1) / part;
	if (!(etags = calloc(nparts, sizeof(*etags))))
		return ck_error(CK_ENOMEM, "blob store: out of memory");

	req_init(&r, "POST", key);
	r.query = "uploads=";
	r.meta_instance = 1;
	if ((err = s3_perform(s, &r)) == 0 && r.status != 200)
		err = s3_status_error(s, &r, "CreateMultipartUpload");
	p = r.body.p ? r.body.p : "";
	if (err == 0 && xml_next(upload_id, sizeof(upload_id), &p, p + r.body.n, "UploadId") < 0)
		err = ck_error(CK_EIO,
			       "blob store: S3 CreateMultipartUpload %s: no UploadId in "
			       "the answer",
			       key);
	req_done(&r);
	if (err < 0)
		goto out;
	if (query_escape(esc, sizeof(esc), upload_id) < 0) {
		err = ck_error(CK_EIO, "blob store: S3 upload id too long");
		goto fail;
	}

	for (uint64_t i = 0; i < nparts; i++) {
		uint64_t poff = i * part, plen = n - poff < part ? n - poff : part;
		if ((err = hash_fd(sha, fd, off + poff, plen)) < 0)
			goto fail;
		snprintf(q, sizeof(q), "partNumber=%llu&uploadId=%s", (unsigned long long)(i + 1),
			 esc);
		req_init(&r, "PUT", key);
		r.query = q;
		r.fd = fd;
		r.fd_off = off + poff;
		r.fd_len = plen;
		r.sha256 = sha;
		if ((err = s3_perform(s, &r)) == 0 && (r.status != 200 || !r.etag[0]))
			err = s3_status_error(s, &r, "UploadPart");
		snprintf(etags[i], sizeof(etags[i]), "%s", r.etag);
		req_done(&r);
		if (err < 0)
			goto fail;
	}

	err = buf_add(&xml, "<CompleteMultipartUpload>", 25, XML_MAX);
	for (uint64_t i = 0; i < nparts && err == 0; i++) {
		char one[256];
		int k = snprintf(one, sizeof(one),
				 "<Part><PartNumber>%llu</PartNumber><ETag>%s</ETag></Part>",
				 (unsigned long long)(i + 1), etags[i]);
		err = buf_add(&xml, one, (size_t)k, XML_MAX);
	}
	if (err == 0)
		err = buf_add(&xml, "</CompleteMultipartUpload>", 26, XML_MAX);
	if (err < 0) {
		err = ck_error(CK_ENOMEM, "blob store: out of memory");
		goto fail;
	}
	hash_mem(sha, xml.p, xml.n);
	snprintf(q, sizeof(q), "uploadId=%s", esc);
	req_init(&r, "POST", key);
	r.query = q;
	r.mem = xml.p;
	r.mem_len = xml.n;
	r.sha256 = sha;
	r.content_type = "application/xml";
	err = s3_perform(s, &r);
	/* S3 may answer 200 and still fail the completion in the body */
	if (err == 0 && (r.status != 200 || (r.body.p && strstr(r.body.p, "<Error>")))) {
		uint64_t got = 0;
		/* a completion retried after its answer was lost finds the upload
		 * gone: the object is there, whole, if it has the size */
		if (r.status == 404 && s3_head(&got, s, key) == 0 && got == n)
			err = 0;
		else
			err = s3_status_error(s, &r, "CompleteMultipartUpload");
	}
	req_done(&r);
	if (err < 0)
		goto fail;
	goto out;
fail:
	abort_upload(s, key, upload_id);
out:
	free(xml.p);
	free(etags);
	return err;
}

/* Stores n bytes of fd from off as key; sha is their SHA-256 when known. */
static int put_object(struct s3 *s, const struct hash *h, int form, int fd, uint64_t off,
		      uint64_t n, const char *sha)
{
	char key[KEY_MAX], hex[65];
	int err;

	object_key(key, s, h, form);
	if (n > s->threshold)
		err = put_multipart(s, key, fd, off, n);
	else if (sha)
		err = put_single(s, key, fd, off, n, sha);
	else if ((err = hash_fd(hex, fd, off, n)) == 0)
		err = put_single(s, key, fd, off, n, hex);
	return err;
}

/*
 * A batch sends its objects concurrently: put_fd and put_staged queue a PUT
 * and return; up to PUT_WORKERS threads of the batch send them while the
 * caller hashes, compresses or asks for the next blob (on S3 most of a PUT is
 * the store's own work after the last byte, so PUTs in flight overlap it). The
 * queue is bounded (a put waits while PUT_WORKERS wait), each job owns a
 * duplicate of the caller's descriptor (the caller may close its own) and
 * reads it until batch_commit returns, which waits for every PUT and answers
 * the first failure. After one fails the rest are dropped unsent.
 */
#define PUT_WORKERS 4

struct put_job {
	struct put_job *next;
	struct hash h;
	int form;
	int fd; /* the job's own descriptor */
	uint64_t off, n;
};

struct s3_batch {
	struct s3 *s;
	int staged_fd; /* or -1 */
	struct hash staged_h;
	int staged_form;

	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct put_job *head, *tail;
	int queued, active, closing;
	pthread_t threads[PUT_WORKERS];
	int nthreads;
	int err; /* the first failure's code, its message in msg */
	char msg[512];
};

static int put_job_run(struct s3 *s, const struct put_job *j)
{
	char hex[65];

	/* a raw blob's payload is the blob: its name is its SHA-256 */
	hash_to_hex(hex, &j->h);
	return put_object(s, &j->h, j->form, j->fd, j->off, j->n,
			  j->form == BLOB_FORM_RAW ? hex : NULL);
}

static void *put_worker(void *arg)
{
	struct s3_batch *bt = arg;

	pthread_mutex_lock(&bt->mu);
	for (;;) {
		struct put_job *j;
		int err = 0;

		while (!bt->head && !bt->closing)
			pthread_cond_wait(&bt->cv, &bt->mu);
		if (!(j = bt->head))
			break;
		if (!(bt->head = j->next))
			bt->tail = NULL;
		bt->queued--;
		bt->active++;
		int skip = bt->err != 0;
		pthread_cond_broadcast(&bt->cv); /* room in the queue */
		pthread_mutex_unlock(&bt->mu);
		if (!skip)
			err = put_job_run(bt->s, j);
		close(j->fd);
		pthread_mutex_lock(&bt->mu);
		bt->active--;
		if (err < 0 && !bt->err) {
			bt->err = err;
			snprintf(bt->msg, sizeof(bt->msg), "%s", ck_errmsg());
		}
		free(j);
		pthread_cond_broadcast(&bt->cv);
	}
	pthread_mutex_unlock(&bt->mu);
	return NULL;
}

/* Queues a PUT of n bytes of fd (taken over: closed here or by a worker). */
static int put_queue(struct s3_batch *bt, const struct hash *h, int form, int fd, uint64_t off,
		     uint64_t n)
{
	struct put_job *j = calloc(1, sizeof(*j));
	int err;

	if (!j) {
		close(fd);
		return ck_error(CK_ENOMEM, "blob store: out of memory");
	}
	*j = (struct put_job){NULL, *h, form, fd, off, n};
	pthread_mutex_lock(&bt->mu);
	while (bt->queued >= PUT_WORKERS && !bt->err)
		pthread_cond_wait(&bt->cv, &bt->mu);
	if ((err = bt->err) < 0) { /* fail early: the commit would fail anyway */
		pthread_mutex_unlock(&bt->mu);
		close(fd);
		free(j);
		return ck_error(err, "%s", bt->msg);
	}
	if (bt->tail)
		bt->tail->next = j;
	else
		bt->head = j;
	bt->tail = j;
	bt->queued++;
	if (bt->nthreads < PUT_WORKERS && bt->nthreads < bt->queued + bt->active &&
	    pthread_create(&bt->threads[bt->nthreads], NULL, put_worker, bt) == 0)
		bt->nthreads++;
	pthread_cond_broadcast(&bt->cv);
	if (bt->nthreads == 0) { /* no thread could start: send it here */
		bt->head = bt->tail = NULL;
		bt->queued = 0;
		pthread_mutex_unlock(&bt->mu);
		err = put_job_run(bt->s, j);
		close(j->fd);
		free(j);
		return err;
	}
	pthread_mutex_unlock(&bt->mu);
	return 0;
}

/* Waits for every queued PUT; `drop`: those not started are dropped. */
static void put_drain(struct s3_batch *bt, int drop)
{
	pthread_mutex_lock(&bt->mu);
	if (drop && !bt->err) {
		bt->err = CK_EIO;
		snprintf(bt->msg, sizeof(bt->msg), "blob store: batch abandoned");
	}
	bt->closing = 1;
	pthread_cond_broadcast(&bt->cv);
	pthread_mutex_unlock(&bt->mu);
	for (int i = 0; i < bt->nthreads; i++)
		pthread_join(bt->threads[i], NULL);
	bt->nthreads = 0;
	bt->closing = 0;
}

static int s3_batch_begin(struct blob_objbatch **out, struct blob_objstore *o)
{
	struct s3_batch *bt = calloc(1, sizeof(*bt));

	*out = NULL;
	if (!bt)
		return ck_error(CK_ENOMEM, "blob store: out of memory");
	bt->s = (struct s3 *)o;
	bt->staged_fd = -1;
	pthread_mutex_init(&bt->mu, NULL);
	pthread_cond_init(&bt->cv, NULL);
	*out = (struct blob_objbatch *)bt;
	return 0;
}

static int s3_put_fd(struct blob_objbatch *b, const struct hash *h, int form, int fd, uint64_t off,
		     uint64_t n)
{
	struct s3_batch *bt = (struct s3_batch *)b;
	int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);

	if (own < 0)
		return ck_error(errno == EMFILE || errno == ENFILE ? CK_EUNAVAIL : CK_EIO,
				"blob store: duplicating a descriptor: %s", strerror(errno));
	return put_queue(bt, h, form, own, off, n);
}

static int s3_stage(int *fd, struct blob_objbatch *b, const struct hash *h, int form)
{
	struct s3_batch *bt = (struct s3_batch *)b;
	struct s3 *s = bt->s;

	*fd = -1;
	if (bt->staged_fd >= 0)
		return ck_error(CK_EINVALID, "blob store: a staged file is already open");
	bt->staged_fd = open(s->tmp_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (bt->staged_fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
		/* no O_TMPFILE here: a named file, unlinked at once */
		char path[4096];
		snprintf(path, sizeof(path), "%s/ckptd-s3-%s.XXXXXX", s->tmp_dir, s->instance);
		bt->staged_fd = mkostemp(path, O_CLOEXEC);
		if (bt->staged_fd >= 0)
			unlink(path);
	}
	if (bt->staged_fd < 0)
		return ck_error(errno == ENOSPC ? CK_ENOSPC : CK_EIO,
				"blob store: creating a temporary file in %s: %s", s->tmp_dir,
				strerror(errno));
	bt->staged_h = *h;
	bt->staged_form = form;
	*fd = bt->staged_fd;
	return 0;
}

static int s3_put_staged(struct blob_objbatch *b, uint64_t size)
{
	struct s3_batch *bt = (struct s3_batch *)b;
	int fd = bt->staged_fd;

	if (fd < 0)
		return ck_error(CK_EINVALID, "blob store: nothing staged");
	bt->staged_fd = -1; /* the job's now */
	return put_queue(bt, &bt->staged_h, bt->staged_form, fd, 0, size);
}

static void s3_unstage(struct blob_objbatch *b)
{
	struct s3_batch *bt = (struct s3_batch *)b;

	if (bt->staged_fd >= 0)
		close(bt->staged_fd);
	bt->staged_fd = -1;
}

/* Returns once every PUT of the batch was acknowledged, or the first
 * failure. */
static int s3_batch_commit(struct blob_objbatch *b)
{
	struct s3_batch *bt = (struct s3_batch *)b;

	put_drain(bt, 0);
	return bt->err < 0 ? ck_error(bt->err, "%s", bt->msg) : 0;
}

static void s3_batch_free(struct blob_objbatch *b)
{
	struct s3_batch *bt = (struct s3_batch *)b;

	if (!bt)
		return;
	put_drain(bt, 1);
	s3_unstage(b);
	pthread_cond_destroy(&bt->cv);
	pthread_mutex_destroy(&bt->mu);
	free(bt);
}

/* ---- readers ---- */

struct window {
	uint8_t *p;
	size_t cap;
	uint64_t off; /* object offset of p[0] */
	size_t len;   /* valid bytes */
};

struct s3_reader {
	struct blob_reader base;
	struct s3 *s;
	char key[KEY_MAX];
	struct window head; /* the object's first bytes, from open: kept */
	struct window side; /* the last small read away from the reader's path */
	struct window cur;  /* the window the reader moves through */
	size_t grow;	    /* the next window's size */
	uint64_t last_end;  /* where the last read of cur's path ended */

	/* read-ahead: a helper thread fetches `next` while the reader uses cur */
	pthread_t thread;
	int running; /* a fetch is in flight or done (the thread must be joined) */
	struct window next;
	int next_err;
	char next_msg[512];
};

/* GETs [off, off + n) of object key into dst: exactly n bytes. size is the
 * object's, or UNKNOWN_SIZE: then an object that ends before off + n is
 * CK_ECORRUPT and a missing one CK_ENOTFOUND without a message. */
#define UNKNOWN_SIZE UINT64_MAX
static int get_range(struct s3 *s, const char *key, uint64_t size, uint8_t *dst, uint64_t off,
		     size_t n)
{
	char range[96];
	struct req r;
	int err;

	snprintf(range, sizeof(range), "bytes=%llu-%llu", (unsigned long long)off,
		 (unsigned long long)(off + n - 1));
	req_init(&r, "GET", key);
	r.range = range;
	r.dst = dst;
	r.dst_cap = n;
	if ((err = s3_perform(s, &r)) < 0)
		goto out;
	if (r.status == 404 && size == UNKNOWN_SIZE) {
		err = CK_ENOTFOUND;
		goto out;
	}
	if (r.status == 404) {
		err = ck_error(CK_ENOTFOUND,
			       "blob store: S3 object %s/%s is gone: the store lost it while it "
			       "was read",
			       s->bucket, key);
		goto out;
	}
	if (r.status == 206 && r.has_range && r.range_start == off &&
	    (size == UNKNOWN_SIZE ? r.range_total >= off + n : r.range_total == size) &&
	    r.dst_len == n) {
		err = 0;
	} else if (r.status == 200 && off == 0 && r.dst_len == n &&
		   (size == UNKNOWN_SIZE ? r.has_length && r.length == n : n == size)) {
		err = 0;
	} else if (r.status == 206 || r.status == 200 || r.status == 416) {
		err = ck_error(CK_ECORRUPT,
			       "blob store: S3 object %s/%s: asked for bytes %llu-%llu of %llu, "
			       "got %zu bytes (HTTP %ld, range %llu/%llu): it changed or is "
			       "damaged",
			       s->bucket, key, (unsigned long long)off,
			       (unsigned long long)(off + n - 1), (unsigned long long)size,
			       r.dst_len, r.status, (unsigned long long)r.range_start,
			       (unsigned long long)r.range_total);
	} else {
		err = s3_status_error(s, &r, "GET");
	}
out:
	req_done(&r);
	return err;
}

static void *prefetch_main(void *arg)
{
	struct s3_reader *r = arg;

	r->next_err = get_range(r->s, r->key, r->base.size, r->next.p, r->next.off, r->next.len);
	if (r->next_err < 0)
		snprintf(r->next_msg, sizeof(r->next_msg), "%s", ck_errmsg());
	return NULL;
}

/* Waits for the read-ahead in flight; 0 when `next` holds its bytes. */
static int prefetch_wait(struct s3_reader *r)
{
	if (!r->running)
		return -1;
	pthread_join(r->thread, NULL);
	r->running = 0;
	return r->next_err;
}

static int window_alloc(struct window *w, size_t n)
{
	if (w->cap >= n)
		return 0;
	uint8_t *p = realloc(w->p, n);
	if (!p)
		return ck_error(CK_ENOMEM, "blob store: out of memory");
	w->p = p;
	w->cap = n;
	return 0;
}

/* Starts fetching the window after cur, when the reader is moving forward
 * and there is more to read. */
static void prefetch_start(struct s3_reader *r)
{
	uint64_t off = r->cur.off + r->cur.len;
	size_t n = r->grow;

	/* only for a reader moving through cur */
	if (r->running || r->cur.len == 0 || r->last_end < r->cur.off || r->last_end > off ||
	    off >= r->base.size)
		return;
	if (n > r->base.size - off)
		n = (size_t)(r->base.size - off);
	if (window_alloc(&r->next, n) < 0)
		return;
	r->next.off = off;
	r->next.len = n;
	r->next_err = 0;
	if (pthread_create(&r->thread, NULL, prefetch_main, r) == 0)
		r->running = 1;
}

/* Copies what w holds of [*off, *off + *n) when it holds *off. */
static int from_window(const struct window *w, uint8_t **d, uint64_t *off, size_t *n)
{
	size_t within, take;

	if (w->len == 0 || *off < w->off || *off >= w->off + w->len)
		return 0;
	within = (size_t)(*off - w->off);
	take = w->len - within < *n ? w->len - within : *n;
	memcpy(*d, w->p + within, take);
	*d += take;
	*off += take;
	*n -= take;
	return 1;
}

/* Fetches [off, off + want) into w. */
static int fill_window(struct s3_reader *r, struct window *w, uint64_t off, size_t want)
{
	int err;

	if (want > r->base.size - off)
		want = (size_t)(r->base.size - off);
	if ((err = window_alloc(w, want)) < 0)
		return err;
	w->len = 0;
	if ((err = get_range(r->s, r->key, r->base.size, w->p, off, want)) < 0)
		return err;
	w->off = off;
	w->len = want;
	return 0;
}

/*
 * Where a read is served from: the head (a container's header and chunk
 * table live there), the current window, the read-ahead; a small read away
 * from the reader's path (a chunk table entry past the head) from a side
 * window, so the path's windows stay; else a new current window, which
 * grows while the reader moves forward (reads larger than the largest
 * window go straight into the caller's buffer).
 */
static int s3_read(struct blob_reader *br, void *buf, size_t n, uint64_t off)
{
	struct s3_reader *r = (struct s3_reader *)br;
	uint8_t *d = buf;
	size_t max = r->s->window;
	int sequential = off == r->last_end, on_path = 0, err;

	while (n > 0) {
		if (from_window(&r->head, &d, &off, &n))
			continue;
		if (from_window(&r->cur, &d, &off, &n)) {
			on_path = 1;
			continue;
		}
		if (r->running && off >= r->next.off && off < r->next.off + r->next.len) {
			struct window t;
			if ((err = prefetch_wait(r)) < 0)
				return ck_error(err, "%s", r->next_msg);
			t = r->cur;
			r->cur = r->next;
			r->next = t;
			r->grow = r->grow * 2 > max ? max : r->grow * 2;
			continue;
		}
		if (!sequential && !on_path && n < GROW_WINDOW) {
			if (from_window(&r->side, &d, &off, &n))
				continue;
			if ((err = fill_window(r, &r->side, off,
					       n > FIRST_WINDOW ? n : FIRST_WINDOW)) < 0)
				return err;
			continue;
		}
		on_path = 1;
		if (r->running) /* the reader went elsewhere: drop the read-ahead */
			prefetch_wait(r);
		if (!sequential)
			r->grow = GROW_WINDOW;
		if (n >= max) { /* straight into the caller's buffer */
			if ((err = get_range(r->s, r->key, r->base.size, d, off, n)) < 0)
				return err;
			off += n;
			n = 0;
			break;
		}
		if ((err = fill_window(r, &r->cur, off, r->grow > n ? r->grow : n)) < 0)
			return err;
		if (sequential)
			r->grow = r->grow * 2 > max ? max : r->grow * 2;
	}
	if (on_path) {
		r->last_end = off;
		prefetch_start(r);
	}
	return 0;
}

static void s3_reader_close(struct blob_reader *br)
{
	struct s3_reader *r = (struct s3_reader *)br;

	if (r->running)
		prefetch_wait(r);
	free(r->head.p);
	free(r->side.p);
	free(r->cur.p);
	free(r->next.p);
	free(r);
}

static const struct blob_reader_ops s3_reader_ops = {s3_read, s3_reader_close};

static int s3_get(struct blob_objstore *o, const struct hash *h, int form, void *buf, size_t n,
		  uint64_t off)
{
	struct s3 *s = (struct s3 *)o;
	char key[KEY_MAX];

	object_key(key, s, h, form);
	return get_range(s, key, UNKNOWN_SIZE, buf, off, n);
}

static int s3_open(struct blob_reader **out, struct blob_objstore *o, const struct hash *h,
		   int form)
{
	struct s3 *s = (struct s3 *)o;
	struct s3_reader *r = calloc(1, sizeof(*r));
	char range[64];
	struct req q;
	int err;

	*out = NULL;
	if (!r || window_alloc(&r->head, FIRST_WINDOW) < 0) {
		free(r);
		return ck_error(CK_ENOMEM, "blob store: out of memory");
	}
	r->s = s;
	object_key(r->key, s, h, form);
	/* one request gives the size and the first bytes (a container's
	 * header and chunk table) */
	snprintf(range, sizeof(range), "bytes=0-%u", FIRST_WINDOW - 1);
	req_init(&q, "GET", r->key);
	q.range = range;
	q.dst = r->head.p;
	q.dst_cap = FIRST_WINDOW;
	if ((err = s3_perform(s, &q)) < 0)
		goto fail;
	if (q.status == 404) {
		err = CK_ENOTFOUND;
		goto fail;
	}
	if (q.status == 206 && q.has_range && q.range_start == 0 &&
	    q.dst_len == (q.range_total < FIRST_WINDOW ? q.range_total : FIRST_WINDOW)) {
		r->base.size = q.range_total;
	} else if (q.status == 200 && q.has_length && q.length == q.dst_len) {
		r->base.size = q.dst_len; /* the whole object (a server that ignores ranges) */
	} else if (q.status == 416) {	  /* an empty object has no byte 0 */
		req_done(&q);
		if ((err = s3_head(&r->base.size, s, r->key)) < 0)
			goto fail;
		if (r->base.size != 0) {
			err = ck_error(CK_EIO, "blob store: S3 object %s/%s: range 0- refused",
				       s->bucket, r->key);
			goto fail;
		}
	} else {
		err = s3_status_error(s, &q, "GET");
		goto fail;
	}
	req_done(&q);
	r->head.off = 0;
	r->head.len = r->base.size < FIRST_WINDOW ? (size_t)r->base.size : FIRST_WINDOW;
	r->grow = GROW_WINDOW;
	r->base.ops = &s3_reader_ops;
	r->base.codec = CODEC_RAW;
	r->base.raw_fd = -1;
	*out = &r->base;
	return 0;
fail:
	req_done(&q);
	free(r->head.p);
	free(r);
	return err;
}

/* ---- listings ---- */

static int s3_list(struct blob_objstore *o,
		   int (*cb)(void *arg, const struct hash *h, int64_t mtime), void *arg)
{
	struct s3 *s = (struct s3 *)o;
	char token[1024] = "", esc_token[3200], esc_prefix[3200], q[7000];
	struct hash last;
	int have_last = 0, ret = 0, err;
	size_t plen = strlen(s->prefix);

	if (query_escape(esc_prefix, sizeof(esc_prefix), s->prefix) < 0)
		return ck_error(CK_EINVALID, "blob store: S3 prefix too long");
	for (;;) {
		struct req r;
		const char *p, *end, *a, *b;
		char truncated[16] = "";

		if (query_escape(esc_token, sizeof(esc_token), token) < 0)
			return ck_error(CK_EIO, "blob store: S3 continuation token too long");
		/* parameters in sorted order: libcurl 7.88 signs the query as is */
		snprintf(q, sizeof(q), "%s%s%slist-type=2&max-keys=%d%s%s",
			 token[0] ? "continuation-token=" : "", token[0] ? esc_token : "",
			 token[0] ? "&" : "", s->list_page, plen ? "&prefix=" : "",
			 plen ? esc_prefix : "");
		req_init(&r, "GET", NULL);
		r.query = q;
		if ((err = s3_perform(s, &r)) == 0 && r.status != 200)
			err = s3_status_error(s, &r, "ListObjectsV2");
		if (err < 0) {
			req_done(&r);
			return err;
		}
		p = r.body.p ? r.body.p : "";
		end = p + r.body.n;
		while (ret == 0 && xml_block(&a, &b, &p, end, "Contents") == 0) {
			char key[KEY_MAX], when[64] = "";
			const char *c = a;
			struct hash h;
			int64_t mtime;
			int form;

			if (xml_next(key, sizeof(key), &c, b, "Key") < 0)
				continue;
			c = a;
			xml_next(when, sizeof(when), &c, b, "LastModified");
			if (strncmp(key, s->prefix, plen) != 0 ||
			    blob_object_parse(&h, &form, key + plen, strlen(key + plen)) < 0)
				continue;
			/* keys come sorted, so "X.z" follows "X": stored both ways,
			 * it is reported once, with the raw name */
			if (form == BLOB_FORM_Z && have_last && memcmp(&last, &h, sizeof(h)) == 0)
				continue;
			last = h;
			have_last = 1;
			if ((mtime = parse_iso8601(when)) < 0) {
				/* an age made up would let a sweep take a young blob */
				ret = ck_error(CK_EIO,
					       "blob store: S3 ListObjectsV2: no LastModified "
					       "for %s",
					       key);
				break;
			}
			ret = cb(arg, &h, mtime);
		}
		p = r.body.p ? r.body.p : "";
		xml_next(truncated, sizeof(truncated), &p, end, "IsTruncated");
		p = r.body.p ? r.body.p : "";
		token[0] = 0;
		if (ret == 0 && strcmp(truncated, "true") == 0 &&
		    xml_next(token, sizeof(token), &p, end, "NextContinuationToken") < 0) {
			req_done(&r);
			return ck_error(CK_EIO, "blob store: S3 ListObjectsV2: truncated listing "
						"without a continuation token");
		}
		req_done(&r);
		if (ret != 0 || !token[0])
			return ret;
	}
}

static int s3_clean_tmp(struct blob_objstore *o, int64_t older_than, int mine)
{
	struct s3 *s = (struct s3 *)o;
	char key_marker[KEY_MAX] = "", id_marker[512] = "";
	char esc_key[3400], esc_id[1600], esc_prefix[3200], q[9000];
	size_t plen = strlen(s->prefix);
	int err = 0;

	if (query_escape(esc_prefix, sizeof(esc_prefix), s->prefix) < 0)
		return ck_error(CK_EINVALID, "blob store: S3 prefix too long");
	for (;;) {
		struct req r;
		const char *p, *end, *a, *b;
		char truncated[16] = "";

		if (query_escape(esc_key, sizeof(esc_key), key_marker) < 0 ||
		    query_escape(esc_id, sizeof(esc_id), id_marker) < 0)
			return ck_error(CK_EIO, "blob store: S3 upload marker too long");
		snprintf(q, sizeof(q),
			 "%s%s%s%s%s%s%s%s%suploads=", key_marker[0] ? "key-marker=" : "",
			 key_marker[0] ? esc_key : "", key_marker[0] ? "&" : "",
			 plen ? "prefix=" : "", plen ? esc_prefix : "", plen ? "&" : "",
			 id_marker[0] ? "upload-id-marker=" : "", id_marker[0] ? esc_id : "",
			 id_marker[0] ? "&" : "");
		req_init(&r, "GET", NULL);
		r.query = q;
		if ((err = s3_perform(s, &r)) == 0 && r.status != 200)
			err = s3_status_error(s, &r, "ListMultipartUploads");
		if (err < 0) {
			req_done(&r);
			return err;
		}
		p = r.body.p ? r.body.p : "";
		end = p + r.body.n;
		while (xml_block(&a, &b, &p, end, "Upload") == 0) {
			char key[KEY_MAX], id[512], when[64] = "";
			const char *c = a;
			int64_t t;

			if (xml_next(key, sizeof(key), &c, b, "Key") < 0)
				continue;
			c = a;
			if (xml_next(id, sizeof(id), &c, b, "UploadId") < 0)
				continue;
			c = a;
			xml_next(when, sizeof(when), &c, b, "Initiated");
			t = parse_iso8601(when);
			/* younger ones may be another instance's upload in flight */
			if (t < 0 || t >= older_than || strncmp(key, s->prefix, plen) != 0)
				continue;
			abort_upload(s, key, id);
		}
		p = r.body.p ? r.body.p : "";
		xml_next(truncated, sizeof(truncated), &p, end, "IsTruncated");
		key_marker[0] = id_marker[0] = 0;
		if (strcmp(truncated, "true") == 0) {
			p = r.body.p ? r.body.p : "";
			xml_next(key_marker, sizeof(key_marker), &p, end, "NextKeyMarker");
			p = r.body.p ? r.body.p : "";
			xml_next(id_marker, sizeof(id_marker), &p, end, "NextUploadIdMarker");
		}
		req_done(&r);
		if (!key_marker[0])
			return 0;
	}
}

/* ---- open ---- */

static void s3_free(struct blob_objstore *o)
{
	struct s3 *s = (struct s3 *)o;

	if (!s)
		return;
	for (int i = 0; i < s->nidle; i++)
		curl_easy_cleanup(s->idle[i]);
	pthread_mutex_destroy(&s->lock);
	free(s->endpoint);
	free(s->bucket);
	free(s->prefix);
	free(s->region);
	free(s->sigv4);
	free(s->key_id);
	if (s->secret)
		memset(s->secret, 0, strlen(s->secret));
	free(s->secret);
	free(s->token_header);
	free(s->tmp_dir);
	free(s);
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
	srandom((unsigned)getpid() ^ (unsigned)time(NULL));
}

static int valid_chars(const char *s, const char *extra)
{
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || strchr(extra, *s)))
			return 0;
	return 1;
}

static char *xasprintf(const char *fmt, const char *a, const char *b)
{
	char *p = NULL;

	if (asprintf(&p, fmt, a, b) < 0)
		return NULL;
	return p;
}

int blob_s3_objstore_open(struct blob_objstore **out, const struct blob_s3_options *opt)
{
	const char *url = opt->url, *slash, *key = getenv("AWS_ACCESS_KEY_ID"),
		   *secret = getenv("AWS_SECRET_ACCESS_KEY"), *token = getenv("AWS_SESSION_TOKEN"),
		   *tmp = opt->tmp_dir ? opt->tmp_dir : getenv("TMPDIR");
	struct s3 *s;
	char *prefix = NULL;
	size_t n;

	*out = NULL;
	pthread_once(&curl_once, curl_init);
	if (curl_init_rc != CURLE_OK)
		return ck_error(CK_EIO, "blob store: curl_global_init: %s",
				curl_easy_strerror(curl_init_rc));
	if (!url || strncmp(url, "s3://", 5) != 0)
		return ck_error(CK_EINVALID, "blob store: %s is not an s3://BUCKET/PREFIX URL",
				url ? url : "(none)");
	if (!key || !*key || !secret || !*secret)
		return ck_error(CK_EINVALID,
				"blob store: %s needs credentials: set AWS_ACCESS_KEY_ID and "
				"AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones) "
				"in the environment",
				url);
	if (opt->endpoint && strncmp(opt->endpoint, "http://", 7) != 0 &&
	    strncmp(opt->endpoint, "https://", 8) != 0)
		return ck_error(CK_EINVALID,
				"blob store: S3 endpoint %s: give it as http(s)://HOST[:PORT]",
				opt->endpoint);
	if (!(s = calloc(1, sizeof(*s))))
		return ck_error(CK_ENOMEM, "blob store: out of memory");
	pthread_mutex_init(&s->lock, NULL);

	url += 5;
	slash = strchr(url, '/');
	n = slash ? (size_t)(slash - url) : strlen(url);
	s->bucket = strndup(url, n);
	if (slash) {
		const char *p = slash;
		while (*p == '/')
			p++;
		prefix = strdup(p);
		if (prefix) /* "p/q/" -> "p/q" */
			for (size_t k = strlen(prefix); k > 0 && prefix[k - 1] == '/'; k--)
				prefix[k - 1] = 0;
	} else {
		prefix = strdup("");
	}
	if (!s->bucket || !prefix) {
		free(prefix);
		s3_free(&s->base);
		return ck_error(CK_ENOMEM, "blob store: out of memory");
	}
	if (!*s->bucket || strlen(s->bucket) > 63 || !valid_chars(s->bucket, ".-_")) {
		free(prefix);
		s3_free(&s->base);
		return ck_error(CK_EINVALID,
				"blob store: %s: the bucket name must be 1 to 63 letters, digits, "
				"'.', '-' or '_'",
				opt->url);
	}
	if (strlen(prefix) > 512 || !valid_chars(prefix, "/._-~") || strstr(prefix, "//")) {
		free(prefix);
		s3_free(&s->base);
		return ck_error(
		    CK_EINVALID,
		    "blob store: %s: the key prefix may hold letters, digits, '/', '.', "
		    "'_', '-', '~' (at most 512)",
		    opt->url);
	}
	s->prefix = *prefix ? xasprintf("%s%s", prefix, "/") : strdup("");
	free(prefix);
	s->region = strdup(opt->region && *opt->region ? opt->region : "us-east-1");
	if (opt->endpoint) {
		s->endpoint = strdup(opt->endpoint);
		if (s->endpoint)
			for (size_t k = strlen(s->endpoint); k > 0 && s->endpoint[k - 1] == '/';
			     k--)
				s->endpoint[k - 1] = 0;
	} else if (s->region) {
		s->endpoint = xasprintf("https://s3.%s.amazonaws.com%s", s->region, "");
	}
	s->sigv4 = s->region ? xasprintf("aws:amz:%s:%s", s->region, "s3") : NULL;
	s->key_id = strdup(key);
	s->secret = strdup(secret);
	if (token && *token)
		s->token_header = xasprintf("x-amz-security-token: %s%s", token, "");
	s->tmp_dir = strdup(tmp && *tmp ? tmp : "/tmp");
	if (!s->prefix || !s->region || !s->endpoint || !s->sigv4 || !s->key_id || !s->secret ||
	    (token && *token && !s->token_header) || !s->tmp_dir) {
		s3_free(&s->base);
		return ck_error(CK_ENOMEM, "blob store: out of memory");
	}
	blob_instance_id(s->instance, opt->instance);
	s->threshold = opt->multipart_threshold ? opt->multipart_threshold : DEF_THRESHOLD;
	s->part_size = opt->part_size ? opt->part_size : DEF_PART;
	if (s->part_size < MIN_PART)
		s->part_size = MIN_PART;
	s->window = opt->window ? opt->window : DEF_WINDOW;
	if (s->window < GROW_WINDOW)
		s->window = GROW_WINDOW;
	s->tries = opt->tries > 0 ? opt->tries : DEF_TRIES;
	s->backoff_ms = opt->backoff_ms > 0 ? opt->backoff_ms : DEF_BACKOFF_MS;
	s->connect_ms = opt->connect_timeout_ms > 0 ? opt->connect_timeout_ms : DEF_CONNECT_MS;
	s->list_page = opt->list_page > 0 ? opt->list_page : 1000;

	s->base.name = "s3";
	s->base.async_put = 1;
	s->base.stat_remote = 1;
	s->base.stat = s3_stat;
	s->base.batch_begin = s3_batch_begin;
	s->base.put_fd = s3_put_fd;
	s->base.stage = s3_stage;
	s->base.put_staged = s3_put_staged;
	s->base.unstage = s3_unstage;
	s->base.batch_commit = s3_batch_commit;
	s->base.batch_free = s3_batch_free;
	s->base.open = s3_open;
	s->base.get = s3_get;
	s->base.remove = s3_remove;
	s->base.list = s3_list;
	s->base.clean_tmp = s3_clean_tmp;
	s->base.free = s3_free;
	*out = &s->base;
	return 0;
}

int blob_s3_open(struct blob_backend **out, const struct blob_s3_options *opt, int compress)
{
	struct blob_objstore *o = NULL;
	int err;

	*out = NULL;
	if ((err = blob_s3_objstore_open(&o, opt)) < 0)
		return err;
	return blob_store_new(out, o, compress);
}
