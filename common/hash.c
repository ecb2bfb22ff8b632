/*
 * hash.c: SHA-256 on the CPU's SHA extensions (sha256.c) where it has them,
 * through OpenSSL's EVP interface otherwise; CRC-32 through libdeflate.
 */
#include "hash.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libdeflate.h>
#include <openssl/evp.h>

#include "err.h"
#include "sha256.h"

struct hasher {
	EVP_MD_CTX *md; /* NULL: ni */
	struct sha256 ni;
	uint32_t crc;
	int no_crc; /* hasher_new_sha256: the SHA-256 alone */
};

static int openssl_only;

void hash_force_openssl(int on)
{
	openssl_only = on;
}

int hasher_pairs_fast(void)
{
	return !openssl_only && sha256_ni();
}

uint32_t crc32_update(uint32_t crc, const void *p, size_t n)
{
	return libdeflate_crc32(crc, p, n);
}

struct hasher *hasher_new(void)
{
	struct hasher *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	if (hasher_pairs_fast()) {
		sha256_init(&h->ni);
		return h;
	}
	h->md = EVP_MD_CTX_new();
	if (!h->md || EVP_DigestInit_ex(h->md, EVP_sha256(), NULL) != 1) {
		hasher_free(h);
		return NULL;
	}
	h->crc = 0;
	return h;
}

struct hasher *hasher_new_sha256(void)
{
	struct hasher *h = hasher_new();

	if (h)
		h->no_crc = 1;
	return h;
}

static void crc_update(struct hasher *h, const void *p, size_t n)
{
	if (!h->no_crc)
		h->crc = libdeflate_crc32(h->crc, p, n);
}

void hasher_update(struct hasher *h, const void *p, size_t n)
{
	if (h->md)
		EVP_DigestUpdate(h->md, p, n);
	else
		sha256_update(&h->ni, p, n);
	crc_update(h, p, n);
}

void hasher_update2(struct hasher *a, struct hasher *b, const void *p, size_t n)
{
	if (a->md || b->md) {
		hasher_update(a, p, n);
		hasher_update(b, p, n);
		return;
	}
	sha256_update2(&a->ni, &b->ni, p, n);
	crc_update(a, p, n);
	crc_update(b, p, n);
}

void hasher_final(struct hasher *h, struct hash *out, uint32_t *crc)
{
	unsigned int len = 0;

	if (h->md) {
		EVP_DigestFinal_ex(h->md, out->b, &len);
		EVP_DigestInit_ex(h->md, EVP_sha256(), NULL);
	} else {
		sha256_final(&h->ni, out->b);
		sha256_init(&h->ni);
	}
	if (crc)
		*crc = h->crc;
	h->crc = 0;
}

void hasher_free(struct hasher *h)
{
	if (!h)
		return;
	EVP_MD_CTX_free(h->md);
	free(h);
}

void hash_buf(struct hash *out, uint32_t *crc, const void *p, size_t n)
{
	struct hasher *h = hasher_new();

	if (!h) { /* EVP could not allocate: fall back to the one-shot call */
		unsigned int len = 0;
		EVP_Digest(p, n, out->b, &len, EVP_sha256(), NULL);
		if (crc)
			*crc = libdeflate_crc32(0, p, n);
		return;
	}
	hasher_update(h, p, n);
	hasher_final(h, out, crc);
	hasher_free(h);
}

int hash_fd_range(struct hash *out, uint32_t *crc, int fd, uint64_t off, uint64_t len)
{
	enum { CHUNK = 1 << 20 };
	struct hasher *h = hasher_new();
	uint8_t *buf = malloc(CHUNK);
	int err = 0;

	if (!h || !buf) {
		err = ck_error(CK_ENOMEM, "out of memory hashing a blob");
		goto out;
	}
	while (len > 0) {
		size_t want = len < CHUNK ? (size_t)len : CHUNK;
		ssize_t r = pread(fd, buf, want, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			err = ck_error(CK_EIO, "read at offset %llu: %s", (unsigned long long)off,
				       strerror(errno));
			goto out;
		}
		if (r == 0) {
			err = ck_error(CK_ECORRUPT, "file ends at offset %llu, %llu bytes early",
				       (unsigned long long)off, (unsigned long long)len);
			goto out;
		}
		hasher_update(h, buf, (size_t)r);
		off += (uint64_t)r;
		len -= (uint64_t)r;
	}
	hasher_final(h, out, crc);
out:
	free(buf);
	hasher_free(h);
	return err;
}

void hash_to_hex(char out[65], const struct hash *h)
{
	static const char hex[] = "0123456789abcdef";

	for (int i = 0; i < 32; i++) {
		out[2 * i] = hex[h->b[i] >> 4];
		out[2 * i + 1] = hex[h->b[i] & 15];
	}
	out[64] = '\0';
}

int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int hash_from_hex(struct hash *out, const char *hex)
{
	for (int i = 0; i < 32; i++) {
		int hi = hex_value(hex[2 * i]), lo;
		if (hi < 0)
			return ck_error(CK_EINVALID, "not a SHA-256 hex digest");
		lo = hex_value(hex[2 * i + 1]);
		if (lo < 0)
			return ck_error(CK_EINVALID, "not a SHA-256 hex digest");
		out->b[i] = (uint8_t)(hi << 4 | lo);
	}
	if (hex[64] != '\0')
		return ck_error(CK_EINVALID, "not a SHA-256 hex digest");
	return 0;
}

int hash_cmp(const void *a, const void *b)
{
	return memcmp(((const struct hash *)a)->b, ((const struct hash *)b)->b,
		      sizeof(((const struct hash *)a)->b));
}
