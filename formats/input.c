/*
 * input.c: bounds-checked reads from an upload (see input.h).
 */
#include "input.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "../common/err.h"

int ck_extents_pread(int fd, const struct ck_extent *ext, size_t next, void *buf, size_t n,
		     uint64_t off)
{
	/* the first extent ending after off */
	size_t lo = 0, hi = next;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (ext[mid].off + ext[mid].len <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	while (n > 0) {
		int from = fd;
		uint64_t at = off;
		size_t k = n;
		if (lo < next && ext[lo].off <= off) { /* inside extent lo */
			from = ext[lo].fd;
			at = off - ext[lo].off;
			if (ext[lo].off + ext[lo].len - off < k)
				k = (size_t)(ext[lo].off + ext[lo].len - off);
		} else if (lo < next && ext[lo].off - off < k) {
			k = (size_t)(ext[lo].off - off);
		}
		ssize_t r = pread(from, buf, k, (off_t)at);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			if (r == 0)
				errno = 0;
			return -1;
		}
		buf = (uint8_t *)buf + r;
		off += (uint64_t)r;
		n -= (size_t)r;
		if (lo < next && off >= ext[lo].off + ext[lo].len)
			lo++;
	}
	return 0;
}

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
	if (ck_extents_pread(in->fd, in->ext, in->next, buf, n, off) < 0)
		return ck_error(CK_EIO, "reading %s at offset %llu: %s", what,
				(unsigned long long)off,
				errno ? strerror(errno) : "unexpected end of file");
	return 0;
}
