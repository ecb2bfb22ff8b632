/*
 * log.c: timestamped lines on stderr. Each line is written with one
 * fprintf on an unbuffered stream, so lines from threads do not interleave.
 * Paths are logged without their query strings, and headers never, so tokens
 * stay out of the log.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>

static void stamp(char out[64])
{
	struct timeval tv;
	struct tm tm;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	snprintf(out, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));
}

void log_msg(const char *fmt, ...)
{
	char ts[64], line[1024];
	va_list ap;

	stamp(ts);
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s %s\n", ts, line);
}

void log_request(const char *client, const char *method, const char *path, int status,
		 uint64_t bytes_in, uint64_t bytes_out, double seconds)
{
	char ts[64], safe[301];
	size_t i;

	/* a decoded path may hold any byte: keep one request on one line */
	for (i = 0; path[i] && i < sizeof(safe) - 1; i++)
		safe[i] = (path[i] < 0x20 || path[i] == 0x7f || path[i] == '"') ? '?' : path[i];
	safe[i] = '\0';
	stamp(ts);
	fprintf(stderr, "%s %s \"%s %s\" %d in=%llu out=%llu %.1fms\n", ts, client, method, safe,
		status, (unsigned long long)bytes_in, (unsigned long long)bytes_out,
		seconds * 1000.0);
}
