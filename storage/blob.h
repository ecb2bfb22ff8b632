/*
 * blob.h: the content-addressed blob store, behind a backend interface.
 *
 * A blob is the raw bytes of one tensor storage (or one checkpoint skeleton),
 * named by their SHA-256. The same bytes are stored once. A backend is a
 * struct of function pointers (STYLE 2): the local directory (blob_fs.c) is
 * the first; an object store (S3) can follow without callers changing.
 *
 * Durability: blobs are put through a batch. batch_put writes each new blob
 * to a temporary file in the store; batch_commit makes every blob of the batch
 * durable (file data flushed, renamed into place, directories flushed) before
 * it returns, so the caller may then commit index rows that refer to them. A
 * blob that already exists is not written again. Freeing an uncommitted batch
 * removes its temporary files.
 *
 * Codecs: with compression on, a floating-point blob may be stored as byte
 * planes with zstd, other blobs as plain zstd, each only when that pays
 * (storage/codec.c); readers always see the raw bytes.
 */
#ifndef CK_BLOB_H
#define CK_BLOB_H

#include <stddef.h>
#include <stdint.h>

#include "../common/hash.h"
#include "../common/dtype.h"

enum blob_codec {
	CODEC_RAW = 0,	  /* the bytes as they are */
	CODEC_ZSTD = 1,	  /* zstd of the bytes */
	CODEC_PLANES = 2, /* byte planes, each raw or zstd (floating point) */
};

/* "raw", "zstd", "planes"; and back (-1 when unknown). */
const char *blob_codec_name(int codec);
int blob_codec_from_name(const char *name);

struct blob_meta {
	struct hash hash;     /* SHA-256 of the raw bytes (set by the caller) */
	uint64_t raw_size;    /* bytes (set by the caller) */
	uint32_t crc32;	      /* CRC-32 of the raw bytes (set by the caller) */
	uint64_t stored_size; /* set by put: bytes on disk */
	int codec;	      /* set by put: enum blob_codec */
	int existed;	      /* set by put: 1 when the blob was already stored */
};

struct blob_reader;
struct blob_batch;

struct blob_backend {
	const char *name; /* "fs" */

	/* A new batch into *out (caller frees with batch_free). */
	int (*batch_begin)(struct blob_batch **out, struct blob_backend *b);

	/* Stores meta->raw_size bytes of fd from off as the blob meta->hash,
	 * unless that blob exists. The caller has hashed those bytes already;
	 * put does not re-hash. hint is the element type (DT_INVALID when
	 * unknown) and lets the codec choose byte planes. Sets stored_size,
	 * codec, existed. Errors: CK_ENOSPC, CK_EIO. */
	int (*batch_put_fd)(struct blob_batch *bt, struct blob_meta *meta, int fd, uint64_t off,
			    enum dtype hint);

	/* Makes every blob put in bt durable and visible. */
	int (*batch_commit)(struct blob_batch *bt);

	/* Removes uncommitted temporary files and frees bt; accepts NULL. */
	void (*batch_free)(struct blob_batch *bt);

	/* 0 when the blob is stored, CK_ENOTFOUND when not, CK_EIO. */
	int (*exists)(struct blob_backend *b, const struct hash *h);

	/* Opens blob h for random-access reads of its raw bytes. The reader
	 * belongs to the caller (blob_reader_close). CK_ENOTFOUND, CK_EIO,
	 * CK_ECORRUPT (a stored file whose framing is damaged). */
	int (*open)(struct blob_reader **out, struct blob_backend *b, const struct hash *h);

	/* Deletes blob h; CK_ENOTFOUND when absent. The caller makes sure no
	 * index row or upload in flight refers to it (storage/gc.c). */
	int (*remove)(struct blob_backend *b, const struct hash *h);

	/* Calls cb for every stored blob, with the time it was last written
	 * (epoch seconds), until cb returns non-zero (which is then
	 * returned). */
	int (*foreach)(struct blob_backend *b,
		       int (*cb)(void *arg, const struct hash *h, int64_t mtime), void *arg);

	/* Removes temporary objects last written before older_than (epoch
	 * seconds), whichever process made them: several instances may share
	 * a store, and one never removes another's temporaries in flight. */
	int (*clean_tmp)(struct blob_backend *b, int64_t older_than);

	void (*free)(struct blob_backend *b);
};

/* Reads exactly n raw bytes at raw offset off. CK_ECORRUPT when the range is
 * past the blob's end or stored data is damaged, CK_EIO. One reader must not
 * be used by two threads at once; separate readers may. */
int blob_reader_read(struct blob_reader *r, void *buf, size_t n, uint64_t off);

/* The blob's raw size. */
uint64_t blob_reader_size(const struct blob_reader *r);

/* Closes r; accepts NULL. */
void blob_reader_close(struct blob_reader *r);

/* Reads all of r and checks its bytes against h (SHA-256). 0 when they
 * match, CK_ECORRUPT naming the blob when not, or a read error. Memory stays
 * bounded (1 MiB chunks). */
int blob_reader_verify(struct blob_reader *r, const struct hash *h);

/* The file holding r's raw bytes uncompressed, which start at *off (off may
 * be NULL), so the HTTP layer can sendfile them; -1 when the blob is stored
 * compressed (read it with blob_reader_read). The fd belongs to r: valid
 * until blob_reader_close, never closed by the caller; use it only with
 * explicit offsets (pread, sendfile with an offset pointer). */
int blob_reader_raw_fd(uint64_t *off, const struct blob_reader *r);

/* The codec r's blob is stored with (enum blob_codec). */
int blob_reader_codec(const struct blob_reader *r);

/* The local-directory backend rooted at dir (created if missing): blobs under
 * dir/ab/cdef... (the hex SHA-256, sharded by its first two digits), temporary
 * files under dir/tmp/. compress: 1 = choose a codec per blob, 0 = raw only.
 * The backend belongs to the caller (b->free). Thread-safe. */
int blob_fs_open(struct blob_backend **out, const char *dir, int compress);

#endif
