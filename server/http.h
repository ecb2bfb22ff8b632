/*
 * http.h: the libmicrohttpd daemon: a thread pool that turns MHD callbacks
 * into api/ requests and responses (STYLE 9).
 */
#ifndef CK_HTTP_H
#define CK_HTTP_H

struct app;
struct http_server;

struct http_options {
	const char *listen;	   /* "HOST:PORT" ("[::1]:8080" for IPv6) */
	unsigned threads;	   /* thread pool size */
	struct app *app;	   /* borrowed for the server's lifetime */
	unsigned max_conns;	   /* connections at once (0: 1024) */
	unsigned max_conns_per_ip; /* from one client address (0: no limit) */
	unsigned header_timeout;   /* seconds to send a request head (0: 15) */
	unsigned idle_timeout;	   /* seconds without a byte in a body or response (0: 60) */
};

/* Starts serving. *out belongs to the caller (http_stop). CK_EINVALID for a
 * bad address, CK_EIO when the port cannot be bound. */
int http_start(struct http_server **out, const struct http_options *o);

/* Stops accepting connections and closes idle ones, drops uploads whose
 * client has gone silent (2 s without a byte), waits up to grace_seconds
 * for the other requests in flight to finish, then stops the daemon and
 * frees s. */
void http_stop(struct http_server *s, int grace_seconds);

#endif
