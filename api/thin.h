/*
 * thin.h: the frames of a thin upload (SPEC 3.1), decoded as they stream in.
 *
 * A thin upload is the checkpoint file in order as frames: 1 byte kind, 8
 * bytes little-endian length, payload. 'L' carries `length` literal bytes of
 * the file; 'R' stands for `length` bytes of the file that are a stored blob
 * (payload: its 32-byte SHA-256); 'E' ends it (length 32, payload: the
 * SHA-256 of the whole file). The decoder hands literal bytes and references
 * to the caller as they complete, in file order, so the upload spool can be
 * rebuilt byte for byte (api/upload.c) and parsed and hashed like any
 * upload: the checkpoint's sha256 is then the hash of bytes the server
 * itself holds, never one a client claims.
 */
#ifndef CK_THIN_H
#define CK_THIN_H

#include <stddef.h>
#include <stdint.h>

#include "../common/hash.h"

#define THIN_CONTENT_TYPE "application/x-ckptd-thin"
#define THIN_MAX_REFS	  (1u << 20) /* R frames in one upload */

struct thin_ref {
	uint64_t off, len; /* the range of the file it stands for */
	struct hash h;
};

enum thin_state { THIN_HEAD = 0, THIN_LIT, THIN_HASH, THIN_DONE };

struct thin {
	enum thin_state st;
	uint8_t head[9], hash[32];
	size_t have;	  /* bytes of head or hash collected */
	uint8_t kind;	  /* of the frame being read */
	uint64_t left;	  /* literal bytes still to come */
	uint64_t pos;	  /* bytes of the file the frames stood for so far */
	uint64_t wire;	  /* bytes of frames read */
	uint64_t ref_len; /* of the R frame whose hash is being read */
	struct thin_ref *refs;
	size_t nrefs, cap;
	struct hash end; /* the E frame's hash, once st == THIN_DONE */
};

/* What the decoder hands over: literal bytes of the file at t->pos, and
 * each complete reference. Both return 0 or a negative CK_E* code, which
 * stops the decoding and is returned by thin_feed. */
struct thin_sink {
	int (*lit)(void *arg, const uint8_t *p, size_t n);
	int (*ref)(void *arg, const struct thin_ref *ref);
	void *arg;
};

void thin_init(struct thin *t);
void thin_free(struct thin *t);

/* Decodes n more bytes of frames. A malformed stream (an unknown kind, an E
 * frame whose length is not 32, bytes after E, too many references) is
 * CK_EINVALID with the byte offset in the message. */
int thin_feed(struct thin *t, const uint8_t *p, size_t n, const struct thin_sink *sink);

/* 0 when the frames ended with E; else CK_EINVALID saying where they
 * stopped. */
int thin_finish(const struct thin *t);

#endif
