/*
 * util.c: validation and parsing of request values (SPEC 2: names are
 * [A-Za-z0-9][A-Za-z0-9._-]{0,127}; numbers are plain decimals).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "internal.h"

int name_check(const char *what, const char *s)
{
	size_t n = strlen(s);
	int ok = n >= 1 && n <= 128;

	for (size_t i = 0; ok && i < n; i++) {
		char c = s[i];
		int alnum =
		    (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
		if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
			ok = 0;
	}
	if (!ok)
		return ck_error(
		    CK_EINVALID,
		    "invalid %s name '%.140s': use 1 to 128 characters from A-Z a-z 0-9 "
		    ". _ -, starting with a letter or digit",
		    what, s);
	return 0;
}

int parse_i64(int64_t *out, const char *field, const char *s)
{
	char *end;

	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (!*s || *end || errno)
		return ck_error(CK_EINVALID, "%s must be an integer, not '%.64s'", field, s);
	*out = v;
	return 0;
}

int parse_f64(double *out, const char *field, const char *s)
{
	char *end;

	errno = 0;
	double v = strtod(s, &end);
	if (!*s || *end || errno || !isfinite(v))
		return ck_error(CK_EINVALID, "%s must be a finite number, not '%.64s'", field, s);
	*out = v;
	return 0;
}

int resolve_ref(int64_t *id, struct app *app, struct req *r)
{
	const char *run = req_query(r, "run"), *metric = req_query(r, "metric");
	const char *mode = req_query(r, "mode");
	int err;

	if ((err = name_check("model", r->params[0])) < 0)
		return err;
	if (run && (err = name_check("run", run)) < 0)
		return err;
	if (metric && strcmp(metric, "loss") && (err = name_check("metric", metric)) < 0)
		return err;
	if (metric && !strcmp(metric, "loss"))
		metric = NULL;
	if (mode && strcmp(mode, "min") && strcmp(mode, "max"))
		return ck_error(CK_EINVALID, "mode must be 'min' or 'max', not '%.32s'", mode);
	return store_resolve(id, app->store, r->params[0], r->params[1], run, metric,
			     mode && !strcmp(mode, "max"));
}

void checkpoint_id_header(struct resp *out, int64_t id)
{
	char v[24];

	snprintf(v, sizeof(v), "%" PRId64, id);
	resp_header(out, "X-Checkpoint-Id", v);
}

/* Length of the valid UTF-8 sequence at p (1-4), or 0 when it is not one
 * (overlong forms, surrogates and code points past U+10FFFF are not). */
static size_t utf8_seq(const unsigned char *p)
{
	unsigned c = p[0];

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		return (p[1] & 0xc0) == 0x80 ? 2 : 0;
	if (c >= 0xe0 && c <= 0xef) {
		if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80)
			return 0;
		if ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] >= 0xa0))
			return 0;
		return 3;
	}
	if (c >= 0xf0 && c <= 0xf4) {
		if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 || (p[3] & 0xc0) != 0x80)
			return 0;
		if ((c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] >= 0x90))
			return 0;
		return 4;
	}
	return 0;
}

int utf8_valid(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	while (*p) {
		size_t n = utf8_seq(p);
		if (!n)
			return 0;
		p += n;
	}
	return 1;
}

void utf8_sanitize(char *s)
{
	unsigned char *p = (unsigned char *)s;

	while (*p) {
		size_t n = utf8_seq(p);
		if (!n) {
			*p++ = '?';
			continue;
		}
		p += n;
	}
}
