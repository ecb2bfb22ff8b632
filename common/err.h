/*
 * err.h: the one error vocabulary of ckptd (STYLE 4).
 *
 * Every fallible function returns 0 or a negative CK_E* code, and sets a
 * thread-local message saying what went wrong and where (byte offsets for
 * damaged input). api/errors.c is the only place that maps a code to an HTTP
 * status; the CLI prints the message.
 */
#ifndef CK_ERR_H
#define CK_ERR_H

enum ck_err {
	CK_OK = 0,
	CK_ENOTFOUND = -1, /* no such model, checkpoint, blob, record */
	CK_EEXISTS = -2,   /* already there (callers often treat as success) */
	CK_EINVALID = -3,  /* a bad parameter from the caller */
	CK_ECORRUPT = -4,  /* damaged input or damaged stored data */
	CK_ETOOBIG = -5,   /* over a configured size or count limit */
	CK_ENOSPC = -6,	   /* out of disk space */
	CK_EIO = -7,	   /* an I/O or library failure: ckptd's own fault */
	CK_EFORMAT = -8,   /* not a format ckptd reads */
	CK_ECONFLICT = -9, /* the request conflicts with the stored state */
	CK_ENOMEM = -10,   /* allocation failed */
	CK_EUNAVAIL = -11, /* a backend (index or blob store) is unreachable or busy: retry later */
};

/* Sets the thread's message (printf-style) and returns code, so callers can
 * write `return ck_error(CK_ECORRUPT, "zip: entry %s past end", name);`. */
int ck_error(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The current thread's last message; never NULL (empty when none). Valid
 * until the next ck_error on this thread. */
const char *ck_errmsg(void);

/* Clears the thread's message. */
void ck_error_clear(void);

/* A short fixed name for a code ("not_found", "corrupt", ...). */
const char *ck_err_name(int code);

#endif
