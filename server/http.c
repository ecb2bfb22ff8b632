/*
 * http.c: libmicrohttpd glue (STYLE 9). Each connection's request gets a
 * conn_state: the api route found from its first callback, the token check
 * done before any body byte is read, the body streamed as the route asks
 * (an upload into an unlinked O_TMPFILE spool in the store's tmp directory,
 * hashed as it arrives; a multipart form through MHD's post processor, its
 * 'file' part spooled the same way and its other fields added to the query
 * list; a small JSON body in memory), then the api handler, then an MHD
 * response: memory bodies as they are, generated bodies through a reader
 * callback, with single Range requests (206/416) and HEAD handled here for
 * every generated body.
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "../api/api.h"
#include "../common/err.h"
#include "../common/hash.h"
#include "log.h"

#define MAX_FIELD_LEN 4096
#define MAX_FIELDS    512

struct http_server {
	struct MHD_Daemon *d;
	struct app *app;
	atomic_int inflight;
};

struct conn_state {
	struct http_server *srv;
	struct MHD_Connection *conn;
	struct req req;
	struct resp resp;
	const struct route *rt;
	enum body_kind body;
	int early;  /* resp holds an error to send instead of running the route */
	int queued; /* a response is queued */
	/* upload */
	struct MHD_PostProcessor *pp;
	int file_parts;
	uint64_t received;
	/* Range */
	uint64_t range_start;
	uint64_t bytes_out;
	struct timespec start;
	int status;
};

static double since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static const char *header_lookup(const struct req *r, const char *name)
{
	return MHD_lookup_connection_value((struct MHD_Connection *)r->conn, MHD_HEADER_KIND, name);
}

static int kv_push(struct req *r, const char *key, const char *value, size_t vlen)
{
	if (r->nquery >= MAX_FIELDS)
		return ck_error(CK_EINVALID, "too many query arguments or form fields (over %d)",
				MAX_FIELDS);
	struct kv *v = realloc(r->query, (r->nquery + 1) * sizeof(*v));
	if (!v)
		return ck_error(CK_ENOMEM, "out of memory");
	r->query = v;
	v[r->nquery].key = strdup(key);
	v[r->nquery].value = value ? strndup(value, vlen) : strdup("");
	if (!v[r->nquery].key || !v[r->nquery].value) {
		free(v[r->nquery].key);
		free(v[r->nquery].value);
		return ck_error(CK_ENOMEM, "out of memory");
	}
	r->nquery++;
	return 0;
}

static enum MHD_Result collect_arg(void *cls, enum MHD_ValueKind kind, const char *key,
				   const char *value)
{
	struct conn_state *cs = cls;

	return kv_push(&cs->req, key, value, value ? strlen(value) : 0) < 0 ? MHD_NO : MHD_YES;
}

static void conn_state_free(struct conn_state *cs)
{
	if (cs->pp)
		MHD_destroy_post_processor(cs->pp);
	api_upload_free(&cs->req);
	for (size_t i = 0; i < cs->req.nquery; i++) {
		free(cs->req.query[i].key);
		free(cs->req.query[i].value);
	}
	free(cs->req.query);
	for (size_t i = 0; i < cs->req.nparams; i++)
		free(cs->req.params[i]);
	free(cs->req.body);
	free((char *)cs->req.method);
	free((char *)cs->req.path);
	resp_release(&cs->resp);
	free(cs);
}

/* Sets the early error response from an error code. */
static void fail(struct conn_state *cs, int code)
{
	api_error(&cs->resp, code);
	cs->early = 1;
}

static int spool_write(struct conn_state *cs, const char *data, size_t n)
{
	int err = api_upload_write(cs->srv->app, &cs->req, data, n);

	if (err == 0)
		cs->received += n;
	return err;
}

static enum MHD_Result post_iter(void *cls, enum MHD_ValueKind kind, const char *key,
				 const char *filename, const char *content_type,
				 const char *transfer_encoding, const char *data, uint64_t off,
				 size_t size)
{
	struct conn_state *cs = cls;
	struct req *r = &cs->req;
	int err;

	if (cs->early)
		return MHD_YES;
	if (!strcmp(key, "file")) {
		if (off == 0 && ++cs->file_parts > 1) {
			fail(cs, ck_error(CK_EINVALID, "the form has more than one 'file' part"));
			return MHD_YES;
		}
		if (size && (err = spool_write(cs, data, size)) < 0)
			fail(cs, err);
		return MHD_YES;
	}
	if (off > 0 && r->nquery > 0 && !strcmp(r->query[r->nquery - 1].key, key)) {
		struct kv *last = &r->query[r->nquery - 1];
		size_t have = strlen(last->value);
		if (have + size > MAX_FIELD_LEN) {
			fail(cs, ck_error(CK_EINVALID, "form field '%s' is too long", key));
			return MHD_YES;
		}
		char *v = realloc(last->value, have + size + 1);
		if (!v) {
			fail(cs, ck_error(CK_ENOMEM, "out of memory"));
			return MHD_YES;
		}
		memcpy(v + have, data, size);
		v[have + size] = '\0';
		last->value = v;
		return MHD_YES;
	}
	if ((err = kv_push(r, key, data, size)) < 0)
		fail(cs, err);
	return MHD_YES;
}

static int upload_begin(struct conn_state *cs, struct MHD_Connection *conn)
{
	const char *cl =
	    MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	const char *ct =
	    MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
	uint64_t max = app_max_upload(cs->srv->app);
	int err;

	if (cl && max && strtoull(cl, NULL, 10) > max)
		return ck_error(
		    CK_ETOOBIG,
		    "the upload (%s bytes) is larger than this server's limit of %" PRIu64
		    " bytes (--max-upload-size)",
		    cl, max);
	if (ct && !strncasecmp(ct, "multipart/form-data", 19)) {
		cs->pp = MHD_create_post_processor(conn, 256 * 1024, post_iter, cs);
		if (!cs->pp)
			return ck_error(CK_EINVALID, "the multipart form has no usable boundary");
	}
	if ((err = api_upload_begin(cs->srv->app, &cs->req)) < 0)
		return err;
	return 0;
}

static int body_chunk(struct conn_state *cs, const char *data, size_t n)
{
	switch (cs->body) {
	case BODY_UPLOAD:
		if (cs->pp)
			return MHD_post_process(cs->pp, data, n) == MHD_YES
				   ? 0
				   : ck_error(CK_EINVALID, "the multipart form is malformed");
		return spool_write(cs, data, n);
	case BODY_JSON:
		if (cs->req.body_len + n > API_MAX_JSON_BODY)
			return ck_error(CK_ETOOBIG, "the JSON body is over %d bytes",
					API_MAX_JSON_BODY);
		char *b = realloc(cs->req.body, cs->req.body_len + n + 1);
		if (!b)
			return ck_error(CK_ENOMEM, "out of memory");
		memcpy(b + cs->req.body_len, data, n);
		cs->req.body = b;
		cs->req.body_len += n;
		b[cs->req.body_len] = '\0';
		return 0;
	case BODY_NONE: return 0;
	}
	return 0;
}

static ssize_t gen_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct conn_state *cs = cls;
	struct resp_gen *g = &cs->resp.gen;
	long n = g->read(g->ctx, cs->range_start + pos, (uint8_t *)buf, max);

	if (n < 0)
		return MHD_CONTENT_READER_END_WITH_ERROR;
	if (n == 0)
		return MHD_CONTENT_READER_END_OF_STREAM;
	cs->bytes_out += (uint64_t)n;
	return n;
}

/* Parses a single "bytes=a-b" range against size. 1 = a range in
 * [*start, *end], 0 = none or not understood (serve it whole), -1 = not
 * satisfiable. */
static int parse_range(uint64_t *start, uint64_t *end, const char *h, uint64_t size)
{
	char *e;

	if (strncmp(h, "bytes=", 6) || strchr(h, ','))
		return 0;
	h += 6;
	if (*h == '-') {
		uint64_t n = strtoull(h + 1, &e, 10);
		if (e == h + 1 || *e)
			return 0;
		if (n == 0 || size == 0)
			return -1;
		*start = n >= size ? 0 : size - n;
		*end = size - 1;
		return 1;
	}
	uint64_t a = strtoull(h, &e, 10);
	if (e == h || *e != '-')
		return 0;
	h = e + 1;
	uint64_t b = size ? size - 1 : 0;
	if (*h) {
		b = strtoull(h, &e, 10);
		if (*e)
			return 0;
		if (b >= size)
			b = size - 1;
	}
	if (a >= size || b < a)
		return -1;
	*start = a;
	*end = b;
	return 1;
}

static enum MHD_Result respond(struct conn_state *cs)
{
	struct resp *r = &cs->resp;
	struct MHD_Response *mr;
	int status = r->status ? r->status : 500;
	char cr[128];
	enum MHD_Result ret;

	cr[0] = '\0';
	if (r->gen.read) {
		uint64_t len = r->gen.size, a = 0, b = 0;
		const char *range = header_lookup(&cs->req, "Range");
		if (range && r->gen.rangeable && status == 200) {
			int k = parse_range(&a, &b, range, r->gen.size);
			if (k < 0) {
				snprintf(cr, sizeof(cr), "bytes */%" PRIu64, r->gen.size);
				api_error_status(r, 416, "range_not_satisfiable",
						 "the range '%.60s' is outside the file (%" PRIu64
						 " bytes)",
						 range, len);
				resp_header(r, "Content-Range", cr);
				return respond(cs);
			}
			if (k > 0) {
				status = 206;
				cs->range_start = a;
				if (r->gen.ranged)
					r->gen.ranged(r->gen.ctx);
				len = b - a + 1;
				snprintf(cr, sizeof(cr), "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64,
					 a, b, r->gen.size);
			}
		}
		mr = MHD_create_response_from_callback(len, 256 * 1024, gen_reader, cs, NULL);
		if (mr && r->gen.rangeable)
			MHD_add_response_header(mr, "Accept-Ranges", "bytes");
		if (mr && cr[0])
			MHD_add_response_header(mr, "Content-Range", cr);
	} else {
		mr = MHD_create_response_from_buffer(r->body_len, r->body ? r->body : (void *)"",
						     r->body ? MHD_RESPMEM_MUST_FREE
							     : MHD_RESPMEM_PERSISTENT);
		if (mr) {
			r->body = NULL; /* MHD owns it now */
			cs->bytes_out = r->body_len;
		}
	}
	if (!mr)
		return MHD_NO;
	if (r->content_type && status != 204 && status != 304)
		MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type);
	for (size_t i = 0; i < r->nheaders; i++)
		MHD_add_response_header(mr, r->headers[i].key, r->headers[i].value);
	cs->status = status;
	ret = MHD_queue_response(cs->conn, (unsigned)status, mr);
	MHD_destroy_response(mr);
	cs->queued = ret == MHD_YES;
	return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *data,
				  size_t *data_size, void **con_cls)
{
	struct http_server *srv = cls;
	struct conn_state *cs = *con_cls;
	int status, err;

	if (!cs) {
		if (!(cs = calloc(1, sizeof(*cs))))
			return MHD_NO;
		clock_gettime(CLOCK_MONOTONIC, &cs->start);
		cs->srv = srv;
		cs->conn = conn;
		cs->req.body_fd = -1;
		cs->req.header = header_lookup;
		cs->req.conn = conn;
		cs->req.method = strdup(method);
		cs->req.path = strdup(url);
		*con_cls = cs;
		atomic_fetch_add(&srv->inflight, 1);
		if (!cs->req.method || !cs->req.path) {
			fail(cs, ck_error(CK_ENOMEM, "out of memory"));
			return MHD_YES;
		}
		if (MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, collect_arg, cs) < 0)
			fail(cs, CK_ENOMEM);
		else if (!(cs->rt = api_route_find(&cs->resp, &status, &cs->req)))
			cs->early = 1;
		else if (api_authorize(&cs->resp, srv->app, cs->rt, &cs->req) < 0)
			cs->early = 1;
		else if ((cs->body = api_route_body(cs->rt)) == BODY_UPLOAD &&
			 (err = upload_begin(cs, conn)) < 0)
			fail(cs, err);
		/* Refuse before the body is sent (curl waits for 100-continue). */
		if (cs->early && respond(cs) == MHD_YES)
			return MHD_YES;
		return MHD_YES;
	}
	if (*data_size > 0) {
		if (!cs->early && !cs->queued && (err = body_chunk(cs, data, *data_size)) < 0)
			fail(cs, err);
		*data_size = 0;
		return MHD_YES;
	}
	if (cs->queued)
		return MHD_YES;
	if (!cs->early && cs->body == BODY_UPLOAD) {
		if (cs->pp && cs->file_parts == 0) {
			fail(cs, ck_error(CK_EINVALID,
					  "the multipart form has no 'file' part: send the "
					  "checkpoint as -F file=@ckpt.pth"));
		} else {
			if ((err = api_upload_end(&cs->req)) < 0)
				fail(cs, err);
		}
	}
	if (!cs->early)
		api_handle(&cs->resp, srv->app, cs->rt, &cs->req);
	return respond(cs);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct http_server *srv = cls;
	struct conn_state *cs = *con_cls;
	const union MHD_ConnectionInfo *ci;
	char client[INET6_ADDRSTRLEN] = "-";

	if (!cs)
		return;
	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (ci && ci->client_addr) {
		const struct sockaddr *sa = ci->client_addr;
		if (sa->sa_family == AF_INET)
			inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, client,
				  sizeof(client));
		else if (sa->sa_family == AF_INET6)
			inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, client,
				  sizeof(client));
	}
	int status = cs->status ? cs->status : 499; /* 499: the client went away */
	if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && status < 400)
		status = toe == MHD_REQUEST_TERMINATED_CLIENT_ABORT ? 499 : 500;
	double secs = since(&cs->start);
	log_request(client, cs->req.method ? cs->req.method : "-",
		    cs->req.path ? cs->req.path : "-", status, cs->received, cs->bytes_out, secs);
	api_observe(srv->app, cs->rt, status, cs->received, cs->bytes_out, secs);
	conn_state_free(cs);
	*con_cls = NULL;
	atomic_fetch_sub(&srv->inflight, 1);
}

/* Percent-decodes uri in place, except "%00": a NUL would end the path early
 * and send the request to another route, so it stays literal (and then fails
 * name validation with 400). Returns the new length. */
static size_t unescape(void *cls, struct MHD_Connection *c, char *uri)
{
	char *r = uri, *w = uri;

	while (*r) {
		int hi, lo;
		if (r[0] == '%' && (hi = hex_value(r[1])) >= 0 && (lo = hex_value(r[2])) >= 0 &&
		    (hi | lo) != 0) {
			*w++ = (char)(hi << 4 | lo);
			r += 3;
		} else {
			*w++ = *r++;
		}
	}
	*w = '\0';
	return (size_t)(w - uri);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char line[512];

	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\n")] = '\0';
	log_msg("libmicrohttpd: %s", line);
}

static int parse_listen(struct sockaddr_storage *ss, const char *listen)
{
	char host[256];
	const char *colon = strrchr(listen, ':');
	struct addrinfo hints = {0}, *res = NULL;

	if (!colon || colon == listen || !colon[1] || (size_t)(colon - listen) >= sizeof(host))
		return ck_error(CK_EINVALID, "--listen '%s' is not HOST:PORT", listen);
	memcpy(host, listen, (size_t)(colon - listen));
	host[colon - listen] = '\0';
	if (host[0] == '[') { /* [::1]:8080 */
		size_t n = strlen(host);
		if (host[n - 1] != ']')
			return ck_error(CK_EINVALID, "--listen '%s' is not [HOST]:PORT", listen);
		memmove(host, host + 1, n - 2);
		host[n - 2] = '\0';
	}
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if (getaddrinfo(host, colon + 1, &hints, &res) != 0 || !res)
		return ck_error(CK_EINVALID, "--listen '%s': cannot resolve the host or port",
				listen);
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	return 0;
}

int http_start(struct http_server **out, const struct http_options *o)
{
	struct http_server *s = calloc(1, sizeof(*s));
	struct sockaddr_storage ss;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | MHD_USE_ITC;
	int err;

	if (!s)
		return ck_error(CK_ENOMEM, "out of memory");
	if ((err = parse_listen(&ss, o->listen)) < 0) {
		free(s);
		return err;
	}
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	if (MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES)
		flags |= MHD_USE_EPOLL;
	s->app = o->app;
	s->d = MHD_start_daemon(
	    flags, 0, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
	    MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL, MHD_OPTION_SOCK_ADDR,
	    (struct sockaddr *)&ss, MHD_OPTION_THREAD_POOL_SIZE, o->threads ? o->threads : 1,
	    MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_CONNECTION_TIMEOUT,
	    (unsigned)300, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(128 * 1024),
	    MHD_OPTION_CONNECTION_MEMORY_INCREMENT, (size_t)(16 * 1024),
	    MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1, MHD_OPTION_CONNECTION_LIMIT,
	    (unsigned)1024, MHD_OPTION_END);
	if (!s->d) {
		free(s);
		return ck_error(CK_EIO, "cannot listen on %s (is the port in use?)", o->listen);
	}
	*out = s;
	return 0;
}

void http_stop(struct http_server *s, int grace_seconds)
{
	if (!s)
		return;
	int fd = MHD_quiesce_daemon(s->d);
	for (int i = 0; i < grace_seconds * 20 && atomic_load(&s->inflight) > 0; i++)
		usleep(50000);
	MHD_stop_daemon(s->d);
	if (fd >= 0)
		close(fd);
	free(s);
}
