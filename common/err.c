/*
 * err.c: thread-local error messages for the CK_E* codes (see err.h).
 */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char msg[1024];

int ck_error(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return code;
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
