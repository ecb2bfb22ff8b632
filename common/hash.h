/*
 * hash.h: SHA-256 names for blobs and uploads (on the CPU's SHA extensions,
 * sha256.h, or through OpenSSL's libcrypto), CRC-32 beside it (libdeflate,
 * which folds with PCLMULQDQ: about 13 GB/s here against zlib's 2.8), and
 * hex conversion.
 */
#ifndef CK_HASH_H
#define CK_HASH_H

#include <stddef.h>
#include <stdint.h>

struct hash {
	uint8_t b[32];
};

/* The CRC-32 (zlib's, of zip and gzip) of n bytes after crc: 0 to start. */
uint32_t crc32_update(uint32_t crc, const void *p, size_t n);

/* Streaming SHA-256 + CRC-32 of the same bytes. Not thread-safe per object. */
struct hasher;

/* Returns a new hasher (caller frees with hasher_free), or NULL on OOM. */
struct hasher *hasher_new(void);
/* The same for the SHA-256 alone (hasher_final's CRC-32 is then 0): the
 * whole file's hash of an upload, whose CRC-32 nothing needs. */
struct hasher *hasher_new_sha256(void);
void hasher_update(struct hasher *h, const void *p, size_t n);
/* The same n bytes into a and b (two messages sharing them): on the SHA
 * extensions the two SHA-256 run interleaved, about 1.5 times as fast as
 * one after the other (sha256.h); otherwise one after the other. */
void hasher_update2(struct hasher *a, struct hasher *b, const void *p, size_t n);
/* 1 when hasher_update2 is faster than two hasher_update: one thread may
 * then hash both messages rather than two threads one each. */
int hasher_pairs_fast(void);
/* Tests: hashers made from now on use OpenSSL (on) or the SHA extensions
 * where the CPU has them (off, the default). */
void hash_force_openssl(int on);
/* Writes the digest and CRC-32 (crc may be NULL) and resets h for reuse. */
void hasher_final(struct hasher *h, struct hash *out, uint32_t *crc);
void hasher_free(struct hasher *h);

/* One-shot SHA-256 + CRC-32 (crc may be NULL) of a buffer. */
void hash_buf(struct hash *out, uint32_t *crc, const void *p, size_t n);

/* SHA-256 + CRC-32 of len bytes of fd from off, read in bounded chunks.
 * Returns 0, CK_EIO (message says where), CK_ECORRUPT if the file is short. */
int hash_fd_range(struct hash *out, uint32_t *crc, int fd, uint64_t off, uint64_t len);

/* Orders two struct hash by their bytes; a qsort/bsearch comparator. */
int hash_cmp(const void *a, const void *b);

/* 64 lowercase hex digits and a NUL into out. */
void hash_to_hex(char out[65], const struct hash *h);

/* The value of one hex digit (either case), or -1. */
int hex_value(char c);

/* Parses exactly 64 hex digits; CK_EINVALID otherwise. */
int hash_from_hex(struct hash *out, const char *hex);

#endif
