/*
 * input.c: bounds-checked reads from an upload (see input.h).
 */
#include "input.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "../common/err.h"

int ck_input_read(const struct ck_input *in, void *buf, size_t n, uint64_t off, const char *what)
{
	if (off > in->size || n > in->size - off)
		return ck_error(CK_ECORRUPT,
				"%s at offset %llu (%zu bytes) runs past the end of the "
				"file (%llu bytes): the file is truncated or damaged",
				what, (unsigned long long)off, n, (unsigned long long)in->size);
	if (in->mem) {
		memcpy(buf, in->mem + in->base + off, n);
		return 0;
	}
	off += in->base;
	while (n > 0) {
		ssize_t r = pread(in->fd, buf, n, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return ck_error(CK_EIO, "reading %s at offset %llu: %s", what,
					(unsigned long long)off,
					r < 0 ? strerror(errno) : "unexpected end of file");
		buf = (uint8_t *)buf + r;
		off += (uint64_t)r;
		n -= (size_t)r;
	}
	return 0;
}
