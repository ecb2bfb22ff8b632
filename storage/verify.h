/*
 * verify.h: re-hash every blob the index names (ckptd verify).
 */
#ifndef CK_VERIFY_H
#define CK_VERIFY_H

#include <stdint.h>

#include "blob.h"
#include "index.h"

struct verify_report {
	uint64_t blobs, bytes;	   /* checked */
	uint64_t missing, damaged; /* bad ones */
};

/* Reads every blob named by the index and compares its SHA-256, size and
 * CRC-32 with the index. bad(arg, hash, why) is called for each bad blob,
 * progress(arg, done, total_blobs, bytes) after each blob (either may be
 * NULL). Returns 0 when the walk finished (bad blobs are counted, not
 * errors), or an index error. */
int verify_store(struct verify_report *rep, struct index *idx, struct blob_backend *b,
		 void (*bad)(void *arg, const struct hash *h, const char *why),
		 void (*progress)(void *arg, uint64_t done, uint64_t bytes), void *arg);

#endif
