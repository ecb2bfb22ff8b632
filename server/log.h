/*
 * log.h: one line per request and the daemon's own messages, on stderr.
 */
#ifndef CK_LOG_H
#define CK_LOG_H

#include <stdint.h>

/* Logs a message (printf-style) with a UTC timestamp. Thread-safe. */
void log_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The request line: client, method, path, status, bytes in/out, duration. */
void log_request(const char *client, const char *method, const char *path, int status,
		 uint64_t bytes_in, uint64_t bytes_out, double seconds);

#endif
