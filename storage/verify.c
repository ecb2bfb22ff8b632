/*
 * verify.c: the store check behind `ckptd verify` (see verify.h). Blobs are
 * listed from the index a page at a time and read through the backend's
 * reader, so compressed blobs are checked after decoding, against the
 * SHA-256 of their raw bytes.
 */
#include "verify.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"

struct walk {
	struct verify_report *rep;
	struct blob_backend *b;
	void (*bad)(void *arg, const struct hash *h, const char *why);
	void (*progress)(void *arg, uint64_t done, uint64_t bytes);
	void *arg;
	uint8_t *buf;
	struct hasher *h;
};

enum { CHUNK = 1 << 20 };

static void check_one(struct walk *w, const struct hash *hh, uint64_t raw_size, uint32_t crc)
{
	struct blob_reader *rd = NULL;
	char why[256];
	int err = w->b->open(&rd, w->b, hh);

	why[0] = '\0';
	if (err == CK_ENOTFOUND) {
		w->rep->missing++;
		snprintf(why, sizeof(why), "missing from the blob store");
	} else if (err < 0) {
		w->rep->damaged++;
		snprintf(why, sizeof(why), "cannot be opened: %s", ck_errmsg());
	} else if (blob_reader_size(rd) != raw_size) {
		w->rep->damaged++;
		snprintf(why, sizeof(why), "holds %llu bytes, the index says %llu",
			 (unsigned long long)blob_reader_size(rd), (unsigned long long)raw_size);
	} else {
		uint64_t off = 0;
		struct hash got;
		uint32_t got_crc;
		while (off < raw_size) {
			size_t n = raw_size - off < CHUNK ? (size_t)(raw_size - off) : CHUNK;
			if ((err = blob_reader_read(rd, w->buf, n, off)) < 0)
				break;
			hasher_update(w->h, w->buf, n);
			off += n;
		}
		hasher_final(w->h, &got, &got_crc);
		if (err < 0) {
			w->rep->damaged++;
			snprintf(why, sizeof(why), "unreadable at offset %llu: %s",
				 (unsigned long long)off, ck_errmsg());
		} else if (memcmp(got.b, hh->b, 32) || got_crc != crc) {
			w->rep->damaged++;
			snprintf(why, sizeof(why), "content does not match its SHA-256");
		}
		w->rep->bytes += raw_size;
	}
	blob_reader_close(rd);
	w->rep->blobs++;
	if (why[0] && w->bad)
		w->bad(w->arg, hh, why);
	if (w->progress)
		w->progress(w->arg, w->rep->blobs, w->rep->bytes);
}

int verify_store(struct verify_report *rep, struct index *idx, struct blob_backend *b,
		 void (*bad)(void *arg, const struct hash *h, const char *why),
		 void (*progress)(void *arg, uint64_t done, uint64_t bytes), void *arg)
{
	enum { PAGE = 256 };
	struct walk w = {rep, b, bad, progress, arg, malloc(CHUNK), hasher_new()};
	struct index_blob *page = calloc(PAGE, sizeof(*page));
	struct hash after;
	size_t n = 0;
	int err = 0;

	memset(rep, 0, sizeof(*rep));
	if (!w.buf || !w.h || !page)
		err = ck_error(CK_ENOMEM, "out of memory");
	/* in pages, in hash order: the index is never walked in one go */
	for (int first = 1; err == 0; first = 0) {
		if ((err = index_blob_page(page, &n, idx, first ? NULL : &after, PAGE)) < 0 || !n)
			break;
		for (size_t i = 0; i < n; i++)
			check_one(&w, &page[i].hash, page[i].raw_size, page[i].crc32);
		after = page[n - 1].hash;
	}
	free(page);
	free(w.buf);
	hasher_free(w.h);
	return err;
}
