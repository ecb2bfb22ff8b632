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
 *
 * Hostile clients (the numbers are `ckptd serve` flags, http_options):
 * - Connections: at most max_conns in all and max_conns_per_ip from one
 *   address; libmicrohttpd (MHD) closes more at accept.
 * - Request heads: a connection has header_timeout seconds from its accept,
 *   or from the end of its previous request, to send a whole request line
 *   and headers. MHD's own timeout restarts with every byte, so a trickle
 *   would never trip it: a watchdog thread shuts down such sockets instead.
 *   The clock counts only while the connection's worker thread is free to
 *   read: handlers run on MHD's pool threads, and a handler that works for
 *   seconds (an index waiting on a lock) holds up the other connections of
 *   its thread. A head late while its thread has been in one handler call
 *   for BUSY_MS or more gets header_timeout again: the delay is ours, not
 *   the client's (found when one of four uploads at once was cut off,
 *   unanswered, in the ASan suite).
 * - Uploads are finished off the pool (jobs): MHD gives each connection to
 *   the pool thread that accepted it, so two uploads often share a thread,
 *   and the end of one (parse, hash what is left, encode, store, flush,
 *   commit: a second or more for a large file, minutes on a slow object
 *   store) stopped the other's body from being read meanwhile (a 4-rank DCP
 *   save: three files stored together, the fourth 0.3-0.5 s after them).
 *   Once an upload's body is whole, its connection is suspended and a job
 *   thread (at most --threads of them, started as needed) runs the end of
 *   the upload and its handler, then resumes the connection, whose thread
 *   queues the response. Other requests run on the pool thread as before:
 *   they are short, and handing them over would cost each a thread switch.
 * - Bodies and responses: idle_timeout seconds without a byte either way
 *   closes the connection (MHD's connection timeout).
 * - The query string is parsed here, from MHD's URI callback, and hidden from
 *   MHD: MHD 0.9.75 parses arguments into its small per-connection pool, and
 *   when a long query exhausts it, it queues a 431 and then carries on
 *   parsing, and the client never gets an answer. Over MAX_FIELDS arguments
 *   is a 431 here; none is dropped.
 * - A Transfer-Encoding other than chunked: 501 (MHD would read the body to
 *   the end of the connection).
 * - A body the client ends (half-close) before its Content-Length: MHD
 *   closes the connection without a callback that could queue a response,
 *   so on_completed writes the JSON error on the socket itself.
 * - poll(), not epoll: MHD 0.9.75's edge-triggered epoll misses an end of
 *   stream that arrives together with the last bytes, and such sockets sat
 *   in CLOSE-WAIT until the timeout.
 * - Stopping: requests being handled or answered get the grace period;
 *   uploads whose client has sent nothing for STOP_IDLE_MS are dropped, and
 *   idle keep-alive connections closed.
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "../api/api.h"
#include "../common/err.h"
#include "../common/hash.h"
#include "log.h"

#define MAX_FIELD_LEN 4096
#define MAX_FIELDS    512
#define STOP_IDLE_MS  2000 /* on stop: an upload silent this long is dropped */
#define WATCHDOG_MS   250  /* how often the watchdog looks */
#define BUSY_MS	      500  /* a worker in one handler call this long is busy */
#define LOG_BURST     20   /* MHD messages per second; more are counted */

enum job_state {
	JOB_NONE = 0, /* the request runs on its connection's thread */
	JOB_RUNNING,  /* queued or on a job thread; the connection is suspended */
	JOB_DONE,     /* resp holds the answer: queue it */
};

enum phase {
	PH_HEAD = 0, /* waiting for a request line and headers */
	PH_BODY,     /* reading a request's body */
	PH_WORK,     /* handling the request or sending the response */
};

/* One of MHD's pool threads: since when it is in a handler call (0: it is
 * not), for the watchdog. */
struct worker {
	_Atomic int64_t busy_since;
};

/* One TCP connection, for the watchdog (MHD's socket context). Listed from
 * MHD's "started" notification to its "closed" one, which MHD sends before
 * closing the socket, so fd is valid while listed. */
struct conn_track {
	int fd;
	struct worker *w; /* the thread that reads it (NULL: not known) */
	atomic_int phase;
	_Atomic int64_t deadline_ms; /* PH_HEAD: the head must be in by then */
	_Atomic int64_t last_io_ms;  /* PH_BODY: the last body bytes */
	int reaped;		     /* under the lock: shut down once */
	struct conn_track *prev, *next;
};

struct http_server {
	struct MHD_Daemon *d;
	struct app *app;
	atomic_int inflight;
	int64_t header_timeout_ms;
	struct worker *workers; /* one per pool thread, each claimed by its thread */
	unsigned nworkers;
	atomic_uint nclaimed;
	pthread_mutex_t lock; /* conns, stopping, quit */
	pthread_cond_t wake;
	struct conn_track *conns;
	int stopping, quit;
	pthread_t watchdog;
	int watchdog_started;
	pthread_mutex_t log_lock;
	time_t log_second;
	unsigned log_count, log_dropped;
	/* jobs (see the top): a queue of suspended uploads, threads started as
	 * needed up to njob_max */
	pthread_mutex_t job_lock;
	pthread_cond_t job_cv;	 /* a job queued, or closing */
	pthread_cond_t job_idle; /* njobs fell */
	struct conn_state *job_head, *job_tail;
	unsigned njobs; /* queued or running */
	unsigned njob_threads, njob_max;
	pthread_t *job_threads;
	int jobs_closed;
};

struct conn_state {
	struct http_server *srv;
	struct MHD_Connection *conn;
	struct conn_track *track; /* NULL when it could not be allocated */
	struct req req;
	struct resp resp;
	const struct route *rt;
	enum body_kind body;
	int started; /* the first on_request call happened */
	int in_body; /* between the first call and the last */
	int early;   /* resp holds an error to send instead of running the route */
	int close;   /* answer with Connection: close */
	int queued;  /* a response is queued */
	enum job_state job;
	struct conn_state *job_next; /* in the server's job queue */
	/* upload */
	struct MHD_PostProcessor *pp;
	int file_parts;
	uint64_t received;   /* bytes spooled */
	uint64_t body_bytes; /* bytes of body seen, spooled or not */
	/* Range */
	uint64_t range_start;
	uint64_t bytes_out;
	struct timespec start;
	int status;
};

static int64_t now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

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

/* Percent-decodes s in place, except "%00": a NUL would end the string
 * early (a path would go to another route), so it stays literal (and then
 * fails validation with 400). With plus, '+' becomes a space first (query
 * strings). Returns the new length. */
static size_t unescape_str(char *s, int plus)
{
	char *r = s, *w = s;

	while (*r) {
		int hi, lo;
		if (r[0] == '%' && (hi = hex_value(r[1])) >= 0 && (lo = hex_value(r[2])) >= 0 &&
		    (hi | lo) != 0) {
			*w++ = (char)(hi << 4 | lo);
			r += 3;
		} else if (plus && *r == '+') {
			*w++ = ' ';
			r++;
		} else {
			*w++ = *r++;
		}
	}
	*w = '\0';
	return (size_t)(w - s);
}

/* The query string q (after '?') into r->query, in order: "k=v" pairs split
 * on '&', "k" alone has the value "", empty pieces are skipped. CK_ETOOBIG
 * past MAX_FIELDS arguments (nothing is dropped). */
static int query_parse(struct req *r, const char *q)
{
	size_t n = 0;
	int err = 0;

	for (const char *p = q; *p; p++)
		n += *p != '&' && (p == q || p[-1] == '&');
	if (n > MAX_FIELDS)
		return ck_error(CK_ETOOBIG,
				"the query has %zu arguments; at most %d are accepted: send fewer",
				n, MAX_FIELDS);
	char *copy = strdup(q), *save = NULL;
	if (!copy)
		return ck_error(CK_ENOMEM, "out of memory");
	for (char *piece = strtok_r(copy, "&", &save); piece && !err;
	     piece = strtok_r(NULL, "&", &save)) {
		char *eq = strchr(piece, '=');
		if (eq)
			*eq++ = '\0';
		unescape_str(piece, 1);
		size_t vlen = eq ? unescape_str(eq, 1) : 0;
		err = kv_push(r, piece, eq, vlen);
	}
	free(copy);
	return err;
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

static void track_phase(struct conn_state *cs, enum phase ph)
{
	if (!cs->track)
		return;
	if (ph == PH_BODY)
		atomic_store(&cs->track->last_io_ms, now_ms());
	atomic_store(&cs->track->phase, ph);
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
	if ((err = api_upload_begin(cs->srv->app, cs->rt, &cs->req)) < 0)
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
	case BODY_JSON_BIG: {
		size_t max = cs->body == BODY_JSON_BIG ? API_MAX_JSON_BIG : API_MAX_JSON_BODY;
		if (cs->req.body_len + n > max)
			return ck_error(CK_ETOOBIG, "the JSON body is over %zu bytes", max);
		char *b = realloc(cs->req.body, cs->req.body_len + n + 1);
		if (!b)
			return ck_error(CK_ENOMEM, "out of memory");
		memcpy(b + cs->req.body_len, data, n);
		cs->req.body = b;
		cs->req.body_len += n;
		b[cs->req.body_len] = '\0';
		return 0;
	}
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

/* 1*DIGIT at *p into *out, moving *p past it: 1 = a number, 0 = no digit,
 * -1 = too big for 64 bits. */
static int range_number(uint64_t *out, const char **p)
{
	const char *s = *p;
	uint64_t v = 0;

	if (*s < '0' || *s > '9')
		return 0;
	for (; *s >= '0' && *s <= '9'; s++) {
		unsigned d = (unsigned)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*p = s;
	*out = v;
	return 1;
}

/* Parses a Range header against size (RFC 9110 14.1.2), one range only:
 * 1 = satisfiable, [*start, *end]; 0 = ignore it and send the whole body
 * (not a valid bytes range: signs, spaces, last < first; several ranges; a
 * number too big for 64 bits); -1 = valid but not satisfiable (416). */
static int parse_range(uint64_t *start, uint64_t *end, const char *h, uint64_t size)
{
	uint64_t a = 0, b = 0;
	int ha, hb;

	if (strncasecmp(h, "bytes=", 6))
		return 0;
	h += 6;
	if ((ha = range_number(&a, &h)) < 0 || *h++ != '-' || (hb = range_number(&b, &h)) < 0 || *h)
		return 0;
	if (!ha) { /* suffix: the last b bytes */
		if (!hb)
			return 0;
		if (b == 0 || size == 0)
			return -1;
		*start = b >= size ? 0 : size - b;
		*end = size - 1;
		return 1;
	}
	if (hb && b < a)
		return 0;
	if (a >= size)
		return -1;
	*start = a;
	*end = !hb || b >= size ? size - 1 : b;
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
	if (cs->close)
		MHD_add_response_header(mr, MHD_HTTP_HEADER_CONNECTION, "close");
	cs->status = status;
	ret = MHD_queue_response(cs->conn, (unsigned)status, mr);
	MHD_destroy_response(mr);
	cs->queued = ret == MHD_YES;
	if (cs->queued)
		track_phase(cs, PH_WORK);
	return ret;
}

/* A request body framed another way than by Content-Length or chunked: MHD
 * would read it to the end of the connection. 0, or fills the early error. */
static int check_transfer_encoding(struct conn_state *cs)
{
	const char *te = header_lookup(&cs->req, MHD_HTTP_HEADER_TRANSFER_ENCODING);

	if (!te || !strcasecmp(te, "chunked"))
		return 0;
	api_error_status(&cs->resp, 501, "not_implemented",
			 "Transfer-Encoding '%.60s' is not supported: send the body as it is, "
			 "with a Content-Length, or chunked",
			 te);
	cs->early = 1;
	cs->close = 1;
	return -1;
}

/* MHD's URI callback: the request line has arrived (its headers have not).
 * Starts the request's state (MHD hands it back as *con_cls) and takes the
 * query string: parsed here, then cut off in MHD's buffer (uri points into
 * it, and MHD parses the arguments after this call returns), so MHD never
 * spends its connection pool on arguments. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
	struct http_server *srv = cls;
	struct conn_state *cs = calloc(1, sizeof(*cs));
	char *q = uri ? strchr(uri, '?') : NULL;
	int err;

	if (!cs)
		return NULL;
	clock_gettime(CLOCK_MONOTONIC, &cs->start);
	cs->srv = srv;
	cs->conn = conn;
	cs->req.body_fd = -1;
	cs->req.header = header_lookup;
	cs->req.conn = conn;
	if (q) {
		if ((err = query_parse(&cs->req, q + 1)) < 0) {
			if (err == CK_ETOOBIG)
				api_error_status(&cs->resp, 431, "too_many_arguments", "%s",
						 ck_errmsg());
			else
				api_error(&cs->resp, err);
			cs->early = 1;
			cs->close = 1;
		}
		q[1] = '\0';
	}
	return cs;
}

/* The end of a request whose body is whole: the upload's end, then its
 * handler, into cs->resp. */
static void run_handler(struct conn_state *cs)
{
	int err;

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
		api_handle(&cs->resp, cs->srv->app, cs->rt, &cs->req);
}

/* A job thread: runs queued requests' handlers, each on its suspended
 * connection, which it then resumes (cs belongs to MHD again from there:
 * the connection's thread queues the answer and frees it). */
static void *job_main(void *arg)
{
	struct http_server *srv = arg;

	pthread_mutex_lock(&srv->job_lock);
	for (;;) {
		struct conn_state *cs;
		while (!srv->job_head && !srv->jobs_closed)
			pthread_cond_wait(&srv->job_cv, &srv->job_lock);
		if (!(cs = srv->job_head))
			break;
		if (!(srv->job_head = cs->job_next))
			srv->job_tail = NULL;
		pthread_mutex_unlock(&srv->job_lock);
		run_handler(cs);
		cs->job = JOB_DONE;
		MHD_resume_connection(cs->conn);
		pthread_mutex_lock(&srv->job_lock);
		srv->njobs--;
		pthread_cond_broadcast(&srv->job_idle);
	}
	pthread_mutex_unlock(&srv->job_lock);
	return NULL;
}

/* Suspends cs's connection and queues its handler for a job thread (from
 * MHD's request callback). -1 (nothing changed: run it here) once the
 * server stops, or when no job thread runs and none can be started. */
static int job_submit(struct http_server *srv, struct conn_state *cs)
{
	pthread_mutex_lock(&srv->job_lock);
	if (srv->jobs_closed) {
		pthread_mutex_unlock(&srv->job_lock);
		return -1;
	}
	/* every thread has a job already: one more, if allowed */
	if (srv->njobs >= srv->njob_threads && srv->njob_threads < srv->njob_max &&
	    pthread_create(&srv->job_threads[srv->njob_threads], NULL, job_main, srv) == 0)
		srv->njob_threads++;
	if (srv->njob_threads == 0) {
		pthread_mutex_unlock(&srv->job_lock);
		return -1;
	}
	cs->job = JOB_RUNNING;
	cs->job_next = NULL;
	MHD_suspend_connection(cs->conn);
	if (srv->job_tail)
		srv->job_tail->job_next = cs;
	else
		srv->job_head = cs;
	srv->job_tail = cs;
	srv->njobs++;
	pthread_cond_signal(&srv->job_cv);
	pthread_mutex_unlock(&srv->job_lock);
	return 0;
}

static enum MHD_Result handle_request(void *cls, struct MHD_Connection *conn, const char *url,
				      const char *method, const char *version, const char *data,
				      size_t *data_size, void **con_cls)
{
	struct http_server *srv = cls;
	struct conn_state *cs = *con_cls;
	int status, err;

	if (!cs) /* on_uri could not allocate it */
		return MHD_NO;
	if (!cs->started) {
		const union MHD_ConnectionInfo *ci =
		    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
		cs->started = 1;
		cs->in_body = 1;
		cs->track = ci ? ci->socket_context : NULL;
		track_phase(cs, PH_BODY);
		atomic_fetch_add(&srv->inflight, 1);
		cs->req.method = strdup(method);
		cs->req.path = strdup(url);
		if (!cs->req.method || !cs->req.path)
			fail(cs, ck_error(CK_ENOMEM, "out of memory"));
		else if (cs->early || check_transfer_encoding(cs) < 0)
			;
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
		if (cs->track)
			atomic_store(&cs->track->last_io_ms, now_ms());
		cs->body_bytes += *data_size;
		if (!cs->early && !cs->queued && (err = body_chunk(cs, data, *data_size)) < 0)
			fail(cs, err);
		*data_size = 0;
		return MHD_YES;
	}
	cs->in_body = 0;
	track_phase(cs, PH_WORK);
	if (cs->queued || cs->job == JOB_RUNNING)
		return MHD_YES;
	if (cs->job == JOB_NONE && !cs->early && cs->body == BODY_UPLOAD &&
	    job_submit(srv, cs) == 0)
		return MHD_YES;
	if (cs->job == JOB_NONE)
		run_handler(cs);
	return respond(cs);
}

/* Writes cs->resp (a body in memory) on the socket with Connection: close,
 * best effort; 1 when all of it was written. */
static int answer_on_socket(struct conn_state *cs, int fd)
{
	struct resp *r = &cs->resp;
	int status = r->status ? r->status : 500; /* as respond() */
	char head[2048];
	int n = snprintf(head, sizeof(head),
			 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
			 "Connection: close\r\n",
			 status, MHD_get_reason_phrase_for((unsigned)status),
			 r->content_type ? r->content_type : "application/json", r->body_len);

	for (size_t i = 0; i < r->nheaders && n < (int)sizeof(head); i++)
		n += snprintf(head + n, sizeof(head) - (size_t)n, "%s: %s\r\n", r->headers[i].key,
			      r->headers[i].value);
	n += n < (int)sizeof(head) ? snprintf(head + n, sizeof(head) - (size_t)n, "\r\n") : 0;
	if (n >= (int)sizeof(head))
		return 0;
	struct iovec iov[2] = {{head, (size_t)n}, {r->body, r->body ? r->body_len : 0}};
	struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
	ssize_t w = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
	cs->status = status;
	cs->bytes_out = w > 0 ? (uint64_t)w : 0;
	return w == (ssize_t)((size_t)n + (r->body ? r->body_len : 0));
}

/* The client ended its side (half-close) before the whole body came. MHD
 * 0.9.75 then closes the connection without letting a response be queued,
 * but calls this before it shuts the socket, and the client can still
 * read: write the error (the one found during the body, e.g. 413, or a
 * 400 saying how far the body got) on the socket, best effort. */
static void answer_cut_body(struct conn_state *cs, struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	struct resp *r = &cs->resp;

	if (!ci)
		return;
	if (!cs->early) {
		const char *cl = header_lookup(&cs->req, MHD_HTTP_HEADER_CONTENT_LENGTH);
		char want[48] = "before its last chunk";
		if (cl)
			snprintf(want, sizeof(want), "of %.20s", cl);
		api_error_status(r, 400, "incomplete_body",
				 "the request body ended after %" PRIu64 " bytes %s: the client "
				 "closed its side of the connection before sending the rest",
				 cs->body_bytes, want);
	}
	answer_on_socket(cs, ci->connect_fd);
}

/* The calling pool thread's worker: claimed on its first call (each pool
 * thread serves one server); NULL past nworkers. */
static _Thread_local struct worker *tl_worker;
static _Thread_local int tl_claimed;

static struct worker *this_worker(struct http_server *srv)
{
	if (!tl_claimed) {
		unsigned i = atomic_fetch_add(&srv->nclaimed, 1);
		tl_worker = i < srv->nworkers ? &srv->workers[i] : NULL;
		tl_claimed = 1;
	}
	return tl_worker;
}

/* Every request callback, marked on its thread's worker for the watchdog. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *data,
				  size_t *data_size, void **con_cls)
{
	struct worker *w = this_worker(cls);
	enum MHD_Result r;

	if (w)
		atomic_store(&w->busy_since, now_ms());
	r = handle_request(cls, conn, url, method, version, data, data_size, con_cls);
	if (w)
		atomic_store(&w->busy_since, 0);
	return r;
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
	*con_cls = NULL;
	if (!cs->started) { /* the head never came whole: nothing to log */
		conn_state_free(cs);
		return;
	}
	if (toe == MHD_REQUEST_TERMINATED_CLIENT_ABORT && cs->in_body && !cs->queued)
		answer_cut_body(cs, conn);
	/* A job's answer, ready, but MHD 0.9.75 read the client's half-close
	 * when it resumed the connection and closed it "with error" without
	 * asking for a response (curl and Python do not half-close after a
	 * body; `nc -N` and raw sockets may): the answer is written here, as
	 * above, and logged as sent. */
	int answered = 0;
	if ((toe == MHD_REQUEST_TERMINATED_CLIENT_ABORT ||
	     toe == MHD_REQUEST_TERMINATED_WITH_ERROR) &&
	    cs->job == JOB_DONE && !cs->queued && !cs->resp.gen.read) {
		ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		answered = ci && answer_on_socket(cs, ci->connect_fd);
	}
	if (cs->track) { /* keep-alive: the next request's head has its deadline */
		atomic_store(&cs->track->deadline_ms, now_ms() + srv->header_timeout_ms);
		atomic_store(&cs->track->phase, PH_HEAD);
	}
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
	if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && status < 400 && !answered)
		status = toe == MHD_REQUEST_TERMINATED_CLIENT_ABORT ? 499 : 500;
	double secs = since(&cs->start);
	log_request(client, cs->req.method ? cs->req.method : "-",
		    cs->req.path ? cs->req.path : "-", status, cs->received, cs->bytes_out, secs);
	api_observe(srv->app, cs->rt, status, cs->received, cs->bytes_out, secs);
	conn_state_free(cs);
	atomic_fetch_sub(&srv->inflight, 1);
}

/* MHD's connection notifications: list each connection for the watchdog. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
			  enum MHD_ConnectionNotificationCode code)
{
	struct http_server *srv = cls;
	struct conn_track *t = *socket_context;

	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci =
		    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		if (!ci || !(t = calloc(1, sizeof(*t))))
			return; /* untracked: only MHD's idle timeout applies */
		t->fd = ci->connect_fd;
		t->w = this_worker(srv); /* MHD notifies on the thread that reads it */
		atomic_init(&t->phase, PH_HEAD);
		atomic_init(&t->deadline_ms, now_ms() + srv->header_timeout_ms);
		atomic_init(&t->last_io_ms, now_ms());
		pthread_mutex_lock(&srv->lock);
		t->next = srv->conns;
		if (srv->conns)
			srv->conns->prev = t;
		srv->conns = t;
		pthread_mutex_unlock(&srv->lock);
		*socket_context = t;
		return;
	}
	if (code == MHD_CONNECTION_NOTIFY_CLOSED && t) {
		pthread_mutex_lock(&srv->lock);
		if (t->prev)
			t->prev->next = t->next;
		else
			srv->conns = t->next;
		if (t->next)
			t->next->prev = t->prev;
		pthread_mutex_unlock(&srv->lock);
		free(t);
		*socket_context = NULL;
	}
}

/* Shuts down the sockets of connections whose request head is late, and,
 * once the server stops, of idle keep-alive connections and of uploads
 * whose client has gone silent. MHD then sees the end of the stream and
 * closes them on its own threads. */
static void *watchdog(void *arg)
{
	struct http_server *srv = arg;

	pthread_mutex_lock(&srv->lock);
	while (!srv->quit) {
		int64_t now = now_ms();
		for (struct conn_track *t = srv->conns; t; t = t->next) {
			int ph = atomic_load(&t->phase);
			int late =
			    ph == PH_HEAD && (srv->stopping || now >= atomic_load(&t->deadline_ms));
			int64_t busy = t->w ? atomic_load(&t->w->busy_since) : 0;
			if (late && !srv->stopping && busy && now - busy >= BUSY_MS) {
				/* its thread is held up by another request: not the
				 * client's delay (see the top of the file) */
				atomic_store(&t->deadline_ms, now + srv->header_timeout_ms);
				late = 0;
			}
			int silent = srv->stopping && ph == PH_BODY &&
				     now - atomic_load(&t->last_io_ms) >= STOP_IDLE_MS;
			if (!t->reaped && (late || silent)) {
				shutdown(t->fd, SHUT_RDWR);
				t->reaped = 1;
			}
		}
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += WATCHDOG_MS * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&srv->wake, &srv->lock, &until);
	}
	pthread_mutex_unlock(&srv->lock);
	return NULL;
}

static size_t unescape(void *cls, struct MHD_Connection *c, char *uri)
{
	return unescape_str(uri, 0);
}

/* MHD's messages, at most LOG_BURST a second: a flood of refused
 * connections must not become a flood of log lines. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	struct http_server *srv = cls;
	char line[512];
	time_t now = time(NULL);
	unsigned dropped = 0;

	pthread_mutex_lock(&srv->log_lock);
	if (now != srv->log_second) {
		dropped = srv->log_dropped;
		srv->log_second = now;
		srv->log_count = srv->log_dropped = 0;
	}
	int quiet = ++srv->log_count > LOG_BURST;
	srv->log_dropped += quiet;
	pthread_mutex_unlock(&srv->log_lock);
	if (dropped)
		log_msg("libmicrohttpd: %u more messages not shown", dropped);
	if (quiet)
		return;
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

static void server_free(struct http_server *s)
{
	if (s->watchdog_started) {
		pthread_mutex_lock(&s->lock);
		s->quit = 1;
		pthread_cond_signal(&s->wake);
		pthread_mutex_unlock(&s->lock);
		pthread_join(s->watchdog, NULL);
	}
	pthread_mutex_lock(&s->job_lock);
	s->jobs_closed = 1;
	pthread_cond_broadcast(&s->job_cv);
	pthread_mutex_unlock(&s->job_lock);
	for (unsigned i = 0; i < s->njob_threads; i++)
		pthread_join(s->job_threads[i], NULL);
	free(s->job_threads);
	pthread_mutex_destroy(&s->job_lock);
	pthread_cond_destroy(&s->job_cv);
	pthread_cond_destroy(&s->job_idle);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->wake);
	pthread_mutex_destroy(&s->log_lock);
	free(s->workers);
	free(s);
}

int http_start(struct http_server **out, const struct http_options *o)
{
	struct http_server *s = calloc(1, sizeof(*s));
	struct sockaddr_storage ss;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | MHD_USE_ITC |
			 MHD_ALLOW_SUSPEND_RESUME;
	int err;

	if (!s)
		return ck_error(CK_ENOMEM, "out of memory");
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->wake, NULL);
	pthread_mutex_init(&s->log_lock, NULL);
	pthread_mutex_init(&s->job_lock, NULL);
	pthread_cond_init(&s->job_cv, NULL);
	pthread_cond_init(&s->job_idle, NULL);
	if ((err = parse_listen(&ss, o->listen)) < 0) {
		server_free(s);
		return err;
	}
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	/* poll(), not epoll: see the top of this file. */
	if (MHD_is_feature_supported(MHD_FEATURE_POLL) == MHD_YES)
		flags |= MHD_USE_POLL;
	else if (MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES)
		flags |= MHD_USE_EPOLL;
	s->app = o->app;
	s->header_timeout_ms = (int64_t)(o->header_timeout ? o->header_timeout : 15) * 1000;
	s->nworkers = o->threads ? o->threads : 1;
	s->njob_max = s->nworkers;
	if (!(s->workers = calloc(s->nworkers, sizeof(*s->workers))) ||
	    !(s->job_threads = calloc(s->njob_max, sizeof(*s->job_threads)))) {
		server_free(s);
		return ck_error(CK_ENOMEM, "out of memory");
	}
	if (pthread_create(&s->watchdog, NULL, watchdog, s) != 0) {
		server_free(s);
		return ck_error(CK_ENOMEM, "cannot start the connection watchdog thread");
	}
	s->watchdog_started = 1;
	s->d = MHD_start_daemon(
	    flags, 0, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
	    MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL, MHD_OPTION_URI_LOG_CALLBACK, on_uri, s,
	    MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_SOCK_ADDR,
	    (struct sockaddr *)&ss, MHD_OPTION_THREAD_POOL_SIZE, o->threads ? o->threads : 1,
	    MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_CONNECTION_TIMEOUT,
	    o->idle_timeout ? o->idle_timeout : 60, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
	    (size_t)(128 * 1024), MHD_OPTION_CONNECTION_MEMORY_INCREMENT, (size_t)(16 * 1024),
	    MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1, MHD_OPTION_CONNECTION_LIMIT,
	    o->max_conns ? o->max_conns : 1024, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
	    o->max_conns_per_ip, MHD_OPTION_END);
	if (!s->d) {
		server_free(s);
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
	pthread_mutex_lock(&s->lock);
	s->stopping = 1;
	pthread_cond_signal(&s->wake);
	pthread_mutex_unlock(&s->lock);
	for (int i = 0; i < grace_seconds * 20 && atomic_load(&s->inflight) > 0; i++)
		usleep(50000);
	/* MHD must not stop with a connection suspended: no new jobs (an upload
	 * ending now runs on its connection's thread), and every job finishes
	 * (a commit is never cut short) and resumes its connection */
	pthread_mutex_lock(&s->job_lock);
	s->jobs_closed = 1;
	pthread_cond_broadcast(&s->job_cv);
	while (s->njobs > 0)
		pthread_cond_wait(&s->job_idle, &s->job_lock);
	pthread_mutex_unlock(&s->job_lock);
	MHD_stop_daemon(s->d);
	if (fd >= 0)
		close(fd);
	server_free(s);
}
