/*
 * blob.c: the backend-independent part of the blob store: codec names,
 * object names, and the reader dispatch. Each backend supplies its readers
 * (blob_reader.h); this file checks ranges once so backends need not.
 */
#include "blob.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "blob_objstore.h"
#include "blob_reader.h"

static const char *const codec_names[] = {
    [CODEC_RAW] = "raw",
    [CODEC_ZSTD] = "zstd",
    [CODEC_PLANES] = "planes",
    [CODEC_DELTA] = "delta",
};

const char *blob_codec_name(int codec)
{
	if (codec < 0 || codec >= (int)(sizeof(codec_names) / sizeof(codec_names[0])))
		return "unknown";
	return codec_names[codec];
}

int blob_codec_from_name(const char *name)
{
	for (size_t i = 0; name && i < sizeof(codec_names) / sizeof(codec_names[0]); i++)
		if (strcmp(name, codec_names[i]) == 0)
			return (int)i;
	return -1;
}

void blob_object_name(char *out, const struct hash *h, int form)
{
	char hex[65];

	hash_to_hex(hex, h);
	snprintf(out, 72, "%.2s/%s%s", hex, hex + 2,
		 form == BLOB_FORM_Z   ? ".z"
		 : form == BLOB_FORM_D ? ".d"
				       : "");
}

static int is_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

int blob_object_parse(struct hash *h, int *form, const char *name, size_t len)
{
	char hex[65];

	if (len == 65)
		*form = BLOB_FORM_RAW;
	else if (len == 67 && memcmp(name + 65, ".z", 2) == 0)
		*form = BLOB_FORM_Z;
	else if (len == 67 && memcmp(name + 65, ".d", 2) == 0)
		*form = BLOB_FORM_D;
	else
		return -1;
	if (name[2] != '/' || !is_hex(name, 2) || !is_hex(name + 3, 62))
		return -1;
	memcpy(hex, name, 2);
	memcpy(hex + 2, name + 3, 62);
	hex[64] = 0;
	return hash_from_hex(h, hex) < 0 ? -1 : 0;
}

int blob_reader_read(struct blob_reader *r, void *buf, size_t n, uint64_t off)
{
	if (off > r->size || n > r->size - off)
		return ck_error(CK_ECORRUPT,
				"blob: read of %zu bytes at offset %llu past the end (%llu bytes)",
				n, (unsigned long long)off, (unsigned long long)r->size);
	if (n == 0)
		return 0;
	return r->ops->read(r, buf, n, off);
}

uint64_t blob_reader_size(const struct blob_reader *r)
{
	return r->size;
}

int blob_reader_raw_fd(uint64_t *off, const struct blob_reader *r)
{
	if (off)
		*off = r->raw_fd >= 0 ? r->raw_off : 0;
	return r->raw_fd;
}

int blob_reader_codec(const struct blob_reader *r)
{
	return r->codec;
}

void blob_reader_close(struct blob_reader *r)
{
	if (r)
		r->ops->close(r);
}

int blob_reader_verify(struct blob_reader *r, const struct hash *h)
{
	enum { CHUNK = 1 << 20 };
	uint64_t size = blob_reader_size(r), off = 0;
	struct hasher *hs = hasher_new();
	uint8_t *buf = malloc(CHUNK);
	struct hash got;
	int err = 0;

	if (!hs || !buf) {
		err = ck_error(CK_ENOMEM, "out of memory");
		goto out;
	}
	while (off < size) {
		size_t n = size - off < CHUNK ? (size_t)(size - off) : CHUNK;
		if ((err = blob_reader_read(r, buf, n, off)) < 0)
			goto out;
		hasher_update(hs, buf, n);
		off += n;
	}
	hasher_final(hs, &got, NULL);
	if (memcmp(got.b, h->b, 32)) {
		char hex[65];
		hash_to_hex(hex, h);
		err = ck_error(CK_ECORRUPT,
			       "stored blob %s does not match its SHA-256: the store is damaged "
			       "(run 'ckptd verify')",
			       hex);
	}
out:
	free(buf);
	hasher_free(hs);
	return err;
}
