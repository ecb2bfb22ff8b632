/*
 * blob_reader.h: what a blob backend implements to hand out readers.
 *
 * Only backends include this (blob_fs.c, a future object-store backend);
 * everyone else uses the opaque struct blob_reader through blob.h. A backend's
 * reader embeds struct blob_reader first (STYLE 2) and fills in ops; blob.c
 * dispatches blob_reader_read/close through them.
 */
#ifndef CK_BLOB_READER_H
#define CK_BLOB_READER_H

#include <stddef.h>
#include <stdint.h>

struct blob_reader;

struct blob_reader_ops {
	/* Reads exactly n raw bytes at raw offset off; off + n <= size is
	 * checked by blob.c before the call. */
	int (*read)(struct blob_reader *r, void *buf, size_t n, uint64_t off);
	/* Frees r and what it holds. */
	void (*close)(struct blob_reader *r);
};

struct blob_reader {
	const struct blob_reader_ops *ops;
	uint64_t size;	  /* raw bytes */
	int codec;	  /* enum blob_codec */
	int raw_fd;	  /* a file holding the raw bytes, or -1 (borrowed by callers) */
	uint64_t raw_off; /* where in raw_fd the raw bytes start */
};

#endif
