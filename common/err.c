/*
 * err.c: thread-local error messages for the CK_E* codes (see err.h).
 */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char msg[1024];

int ck_error(int code, const char *fmt, ...)
{
	char tmp[sizeof(msg)];
	va_list ap;

	/* Formatted aside first: an argument may be the message itself
	 * (vsnprintf must not read the buffer it writes). */
	va_start(ap, fmt);
	vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	memcpy(msg, tmp, sizeof(msg));
	return code;
}

int ck_error_prefix(int code, const char *fmt, ...)
{
	char prefix[512], old[sizeof(msg)];
	va_list ap;

	/* fmt's arguments may point into msg: format before touching it */
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	size_t n = strlen(prefix);

	memcpy(old, msg, sizeof(old));
	memcpy(msg, prefix, n);
	/* the old message after it, cut to what fits */
	size_t m = strnlen(old, sizeof(old) - 1);
	if (m > sizeof(msg) - 1 - n)
		m = sizeof(msg) - 1 - n;
	memcpy(msg + n, old, m);
	msg[n + m] = '\0';
	return code;
}

int ck_error_save(struct ck_error_state *st, int code)
{
	st->code = code;
	memcpy(st->msg, msg, sizeof(st->msg));
	return code;
}

int ck_error_restore(const struct ck_error_state *st)
{
	memcpy(msg, st->msg, sizeof(msg));
	return st->code;
}

const char *ck_errmsg(void)
{
	return msg;
}

void ck_error_clear(void)
{
	msg[0] = '\0';
}

const char *ck_err_name(int code)
{
	switch (code) {
	case CK_OK: return "ok";
	case CK_ENOTFOUND: return "not_found";
	case CK_EEXISTS: return "exists";
	case CK_EINVALID: return "invalid";
	case CK_ECORRUPT: return "corrupt";
	case CK_ETOOBIG: return "too_big";
	case CK_ENOSPC: return "no_space";
	case CK_EIO: return "io";
	case CK_EFORMAT: return "unsupported_format";
	case CK_ECONFLICT: return "conflict";
	case CK_ENOMEM: return "no_memory";
	case CK_EUNAVAIL: return "unavailable";
	}
	return "unknown";
}
