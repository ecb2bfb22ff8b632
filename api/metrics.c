/*
 * metrics.c: counters for /metrics in the Prometheus text format: requests by
 * route and status, bytes in and out, an upload latency histogram, and the
 * store's sizes from the index.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "internal.h"

#define MAX_SERIES 256

static const double buckets[] = {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300};
#define NBUCKETS (sizeof(buckets) / sizeof(buckets[0]))

struct series {
	const char *route;
	int status;
	uint64_t count;
};

struct metrics {
	pthread_mutex_t lock;
	struct series s[MAX_SERIES];
	size_t n;
	uint64_t bytes_in, bytes_out;
	uint64_t upload_buckets[NBUCKETS + 1];
	uint64_t upload_count;
	double upload_sum;
};

int metrics_new(struct metrics **out)
{
	struct metrics *m = calloc(1, sizeof(*m));

	if (!m)
		return ck_error(CK_ENOMEM, "out of memory");
	pthread_mutex_init(&m->lock, NULL);
	*out = m;
	return 0;
}

void metrics_free(struct metrics *m)
{
	if (!m)
		return;
	pthread_mutex_destroy(&m->lock);
	free(m);
}

void api_observe(struct app *app, const struct route *rt, int status, uint64_t bytes_in,
		 uint64_t bytes_out, double seconds)
{
	struct metrics *m = app->metrics;
	const char *name = api_route_name(rt);
	size_t i;

	pthread_mutex_lock(&m->lock);
	for (i = 0; i < m->n; i++)
		if (m->s[i].status == status && !strcmp(m->s[i].route, name))
			break;
	if (i == m->n && m->n < MAX_SERIES)
		m->s[m->n++] = (struct series){name, status, 0};
	if (i < m->n)
		m->s[i].count++;
	m->bytes_in += bytes_in;
	m->bytes_out += bytes_out;
	if (rt && !strcmp(name, "checkpoint.upload") && status == 201) {
		size_t b = 0;
		while (b < NBUCKETS && seconds > buckets[b])
			b++;
		m->upload_buckets[b]++;
		m->upload_count++;
		m->upload_sum += seconds;
	}
	pthread_mutex_unlock(&m->lock);
}

struct buf {
	char *p;
	size_t len, cap;
	int oom;
};

static void put(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->oom)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n >= 0 && (size_t)n < b->cap - b->len) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = b->cap * 2 + (size_t)(n > 0 ? n : 0) + 256;
		char *p = realloc(b->p, cap);
		if (!p) {
			b->oom = 1;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
}

int metrics_render(char **out, size_t *len, struct metrics *m, struct app *app)
{
	struct buf b = {malloc(4096), 0, 4096, 0};
	struct index_stats st;
	uint64_t cum = 0;

	if (!b.p)
		return ck_error(CK_ENOMEM, "out of memory");
	b.p[0] = '\0';
	pthread_mutex_lock(&m->lock);
	put(&b, "# HELP ckptd_requests_total HTTP requests by route and status.\n"
		"# TYPE ckptd_requests_total counter\n");
	for (size_t i = 0; i < m->n; i++)
		put(&b, "ckptd_requests_total{route=\"%s\",status=\"%d\"} %llu\n", m->s[i].route,
		    m->s[i].status, (unsigned long long)m->s[i].count);
	put(&b,
	    "# HELP ckptd_http_bytes_received_total Request body bytes received.\n"
	    "# TYPE ckptd_http_bytes_received_total counter\n"
	    "ckptd_http_bytes_received_total %llu\n"
	    "# HELP ckptd_http_bytes_sent_total Response body bytes sent.\n"
	    "# TYPE ckptd_http_bytes_sent_total counter\n"
	    "ckptd_http_bytes_sent_total %llu\n"
	    "# HELP ckptd_upload_seconds Time from request start to committed checkpoint.\n"
	    "# TYPE ckptd_upload_seconds histogram\n",
	    (unsigned long long)m->bytes_in, (unsigned long long)m->bytes_out);
	for (size_t i = 0; i < NBUCKETS; i++) {
		cum += m->upload_buckets[i];
		put(&b, "ckptd_upload_seconds_bucket{le=\"%g\"} %llu\n", buckets[i],
		    (unsigned long long)cum);
	}
	cum += m->upload_buckets[NBUCKETS];
	put(&b,
	    "ckptd_upload_seconds_bucket{le=\"+Inf\"} %llu\n"
	    "ckptd_upload_seconds_sum %.6f\n"
	    "ckptd_upload_seconds_count %llu\n",
	    (unsigned long long)cum, m->upload_sum, (unsigned long long)m->upload_count);
	pthread_mutex_unlock(&m->lock);
	int up = store_stats(&st, app->store) == 0;
	put(&b,
	    "# HELP ckptd_index_up 1 when the index answered this scrape, 0 when it could not be "
	    "reached.\n"
	    "# TYPE ckptd_index_up gauge\n"
	    "ckptd_index_up %d\n",
	    up);
	if (up) {
		put(&b,
		    "# HELP ckptd_store_logical_bytes Sum of the sizes of all uploads kept.\n"
		    "# TYPE ckptd_store_logical_bytes gauge\n"
		    "ckptd_store_logical_bytes %lld\n"
		    "# HELP ckptd_store_unique_bytes Bytes after deduplication.\n"
		    "# TYPE ckptd_store_unique_bytes gauge\n"
		    "ckptd_store_unique_bytes %lld\n"
		    "# HELP ckptd_store_stored_bytes Bytes on disk after compression.\n"
		    "# TYPE ckptd_store_stored_bytes gauge\n"
		    "ckptd_store_stored_bytes %lld\n"
		    "# HELP ckptd_store_blobs Blobs in the store.\n"
		    "# TYPE ckptd_store_blobs gauge\n"
		    "ckptd_store_blobs %lld\n"
		    "# HELP ckptd_store_checkpoints Checkpoints in the store.\n"
		    "# TYPE ckptd_store_checkpoints gauge\n"
		    "ckptd_store_checkpoints %lld\n"
		    "# HELP ckptd_dedup_ratio Logical bytes over unique bytes.\n"
		    "# TYPE ckptd_dedup_ratio gauge\n"
		    "ckptd_dedup_ratio %.4f\n",
		    (long long)st.logical_bytes, (long long)st.unique_bytes,
		    (long long)st.stored_bytes, (long long)st.blobs, (long long)st.checkpoints,
		    st.unique_bytes ? (double)st.logical_bytes / (double)st.unique_bytes : 1.0);
	}
	if (b.oom) {
		free(b.p);
		return ck_error(CK_ENOMEM, "out of memory");
	}
	*out = b.p;
	*len = b.len;
	return 0;
}

int h_metrics(struct resp *out, struct app *app, struct req *r)
{
	char *text;
	size_t len;
	int err = metrics_render(&text, &len, app->metrics, app);

	if (err < 0)
		return err;
	out->status = 200;
	out->content_type = "text/plain; version=0.0.4; charset=utf-8";
	out->body = text;
	out->body_len = len;
	return 0;
}
