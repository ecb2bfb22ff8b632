/*
 * input.h: a read-only, random-access view of an uploaded file.
 *
 * The parsers never hold a whole upload in memory: they read what they need
 * through ck_input_read, which checks every range against the input's size
 * first. An input is either a file descriptor (the server's spool file) or a
 * memory buffer (unit tests and fuzzers).
 */
#ifndef CK_INPUT_H
#define CK_INPUT_H

#include <stddef.h>
#include <stdint.h>

/* Bytes [off, off + len) of the file (offsets in fd, before base) are
 * bytes [0, len) of another file, fd: the upload pipeline writes large
 * tensor payloads straight into their own files (api/upload.c). */
struct ck_extent {
	uint64_t off, len;
	int fd;
};

struct ck_input {
	const uint8_t *mem;	     /* when non-NULL, the bytes; fd is then ignored */
	int fd;			     /* else a file read with pread */
	uint64_t size;		     /* total size in bytes */
	uint64_t base;		     /* where offset 0 lies in mem or fd: a view of
					[base, base + size) of a larger file */
	const struct ck_extent *ext; /* with fd: ranges read elsewhere, by off */
	size_t next;
};

/* Reads exactly n bytes of fd at off, or of the extent holding them: 0,
 * or -1 with errno (0 at a short file). */
int ck_extents_pread(int fd, const struct ck_extent *ext, size_t next, void *buf, size_t n,
		     uint64_t off);

/* Reads exactly n bytes at off into buf. Returns 0, or CK_ECORRUPT (message
 * names what, the offset and the file size) when [off, off+n) is not inside
 * the input, or CK_EIO on a read error. what names the structure being read
 * ("zip local header") for the message. */
int ck_input_read(const struct ck_input *in, void *buf, size_t n, uint64_t off, const char *what);

#endif
