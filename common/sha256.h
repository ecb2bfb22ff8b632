/*
 * sha256.h: SHA-256 with the CPU's SHA extensions, of one message or of two
 * at once.
 *
 * Why by hand: an upload is hashed twice over the same bytes (the file's
 * SHA-256 and each storage's, SPEC 3), and one core runs two SHA-256 streams
 * interleaved about 1.5 times as fast as one after the other (the rounds
 * instruction's latency, not its throughput, bounds a single stream:
 * 2.37 GB/s for the pair against 1.60 GB/s for OpenSSL's one stream on
 * this machine's AMD EPYC). OpenSSL has no such call. Only when
 * sha256_ni() says the CPU has the instructions; hash.c falls back to
 * OpenSSL otherwise.
 */
#ifndef CK_SHA256_H
#define CK_SHA256_H

#include <stddef.h>
#include <stdint.h>

struct sha256 {
	uint32_t s[8];
	uint64_t len; /* bytes taken so far */
	uint8_t buf[64];
};

/* 1 when this CPU has the SHA extensions (and SSE4.1), which every other
 * call here needs. */
int sha256_ni(void);

void sha256_init(struct sha256 *c);
void sha256_update(struct sha256 *c, const void *p, size_t n);
/* The same n bytes into a and b (two messages that share these bytes,
 * each wherever it stands in its own message), hashed two at a time. */
void sha256_update2(struct sha256 *a, struct sha256 *b, const void *p, size_t n);
void sha256_final(struct sha256 *c, uint8_t out[32]);

#endif
