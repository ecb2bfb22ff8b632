/*
 * http.h: the libmicrohttpd daemon: a thread pool that turns MHD callbacks
 * into api/ requests and responses (STYLE 9).
 */
#ifndef CK_HTTP_H
#define CK_HTTP_H

struct app;
struct http_server;

struct http_options {
	const char *listen; /* "HOST:PORT" ("[::1]:8080" for IPv6) */
	unsigned threads;   /* thread pool size */
	struct app *app;    /* borrowed for the server's lifetime */
};

/* Starts serving. *out belongs to the caller (http_stop). CK_EINVALID for a
 * bad address, CK_EIO when the port cannot be bound. */
int http_start(struct http_server **out, const struct http_options *o);

/* Stops accepting connections, waits up to grace_seconds for requests in
 * flight to finish, then stops the daemon and frees s. */
void http_stop(struct http_server *s, int grace_seconds);

#endif
