/*
 * blob.h: the content-addressed blob store, behind a backend interface.
 *
 * A blob is the raw bytes of one tensor storage (or one checkpoint skeleton),
 * named by their SHA-256. The same bytes are stored once. Callers see one
 * struct of function pointers (STYLE 2), struct blob_backend, whatever holds
 * the bytes: a local directory (blob_fs.c) or an S3-compatible object store
 * (blob_s3.c). Both are object stores under one codec layer
 * (blob_store.c, blob_objstore.h): the codec is chosen, encoded and decoded
 * there, once for every backend.
 *
 * Durability: blobs are put through a batch. batch_commit returns only when
 * every blob of the batch is durable in the store (files flushed and renamed
 * into place; objects acknowledged by the object store), so the caller may
 * then commit index rows that refer to them. A blob that already exists is
 * not written again. Freeing an uncommitted batch removes its temporary
 * files (on S3 a blob put by an uncommitted batch may stay: it is complete,
 * unreferenced, and garbage collection's sweep removes it).
 *
 * Codecs: with compression on, a floating-point blob may be stored as byte
 * planes with zstd, other blobs as plain zstd, each only when that pays
 * (storage/codec.c); readers always see the raw bytes.
 *
 * Deltas: in a store that makes them (a local directory), a floating-point
 * blob given a delta_base may be stored as its difference from that blob
 * (codec.h), when that is smaller than its own encoding. Its reads then need
 * the base and the base's own chain: put reports them (blob_meta.chain), and
 * whoever refers to the blob keeps them (storage/store.c). A blob stored
 * whole (raw or compressed) is always read whole, so a delta's chain
 * matters only while no whole form exists.
 *
 * Several processes may share one store (several ckptd instances behind a
 * load balancer): temporary names carry an instance id, and clean_tmp only
 * removes temporaries older than a cutoff.
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
	CODEC_DELTA = 3,  /* planes of the difference from a base blob (codec.h) */
};

/* "raw", "zstd", "planes"; and back (-1 when unknown). */
const char *blob_codec_name(int codec);
int blob_codec_from_name(const char *name);

/* At most this many blobs a delta needs to be read (codec.h's
 * CODEC_MAX_CHAIN). */
#define BLOB_MAX_CHAIN 3

struct blob_meta {
	struct hash hash;     /* SHA-256 of the raw bytes (set by the caller) */
	uint64_t raw_size;    /* bytes (set by the caller) */
	uint32_t crc32;	      /* CRC-32 of the raw bytes (set by the caller) */
	uint64_t stored_size; /* set by put: bytes on disk */
	int codec;	      /* set by put: enum blob_codec */
	int existed;	      /* set by put: 1 when the blob was already stored */
	/* Set by the caller: a stored blob of the same size (the same tensor
	 * one checkpoint earlier) to store this one as a delta against, when
	 * the store makes deltas and that is smaller; NULL: none. */
	const struct hash *delta_base;
	/* Set by the caller: 1 = store a whole form (raw or compressed) even
	 * when only a delta of this blob is stored. */
	int full_only;
	/* Set by the caller: 1 = the index names no such blob (asked once the
	 * blob was claimed). A store whose existence checks cost a request
	 * each (stat_remote) then puts it without asking: it is almost always
	 * new, a same-named object holds the same bytes, and the claim keeps
	 * it from being reaped. */
	int unindexed;
	/* Set by put: the blobs a read of the stored blob needs (a delta's
	 * chain, base first; nchain 0 when it is stored whole). Whatever
	 * refers to the blob must keep these too (storage/store.c). */
	int nchain;
	struct hash chain[BLOB_MAX_CHAIN];
};

struct blob_reader;
struct blob_batch;

#define BLOB_TMP_NAME 160 /* bytes of a temporary file's name, with its NUL */

struct blob_backend {
	const char *name; /* "fs", "s3" */
	/* 1 when the store makes deltas (blob_meta.delta_base) */
	int deltas;
	/* 1 when batch_put_fd may still read its fd's bytes until
	 * batch_commit returns (the S3 store sends its PUTs concurrently): the
	 * caller may close fd, but must not change those bytes until then. */
	int async_put;
	/* 1 when tmp_open gives files (below): new raw blobs are local files */
	int tmp_files;
	/* 1 when asking whether a blob is stored costs a request per form
	 * (S3): see blob_meta.unindexed */
	int stat_remote;

	/* A new batch into *out (caller frees with batch_free). */
	int (*batch_begin)(struct blob_batch **out, struct blob_backend *b);

	/* Stores meta->raw_size bytes of fd from off as the blob meta->hash,
	 * unless that blob exists. The caller has hashed those bytes already;
	 * put does not re-hash. hint is the element type (DT_INVALID when
	 * unknown) and lets the codec choose byte planes. Sets stored_size,
	 * codec, existed. Errors: CK_ENOSPC, CK_EIO, CK_EUNAVAIL (the store
	 * is unreachable), CK_ECORRUPT (fd shorter than off + raw_size); with
	 * async_put, a failure to store may come from batch_commit instead. */
	int (*batch_put_fd)(struct blob_batch *bt, struct blob_meta *meta, int fd, uint64_t off,
			    enum dtype hint);

	/* Files a blob's raw bytes are written into before their hash is
	 * known (an upload's large tensors, as they arrive): tmp_open gives
	 * one (fd the caller's, name[BLOB_TMP_NAME]), or returns 0 with *fd
	 * = -1 where a new blob would not be that file (a remote store, a
	 * compressing one). batch_put_tmp is batch_put_fd(fd, 0) that, when
	 * the blob is new and stored raw, makes the file itself the blob
	 * (*taken = 1: the batch owns the file from then on); tmp_remove drops
	 * a file not taken. */
	int (*tmp_open)(struct blob_backend *b, int *fd, char *name);
	int (*batch_put_tmp)(struct blob_batch *bt, struct blob_meta *meta, const char *name,
			     int fd, int *taken);
	void (*tmp_remove)(struct blob_backend *b, const char *name);

	/* Makes every blob put in bt durable and visible; returns only after
	 * the store has acknowledged each. */
	int (*batch_commit)(struct blob_batch *bt);

	/* Removes uncommitted temporary files and frees bt; accepts NULL. */
	void (*batch_free)(struct blob_batch *bt);

	/* 0 when the blob is stored, CK_ENOTFOUND when not, CK_EIO,
	 * CK_EUNAVAIL. */
	int (*exists)(struct blob_backend *b, const struct hash *h);

	/* Opens blob h for random-access reads of its raw bytes. The reader
	 * belongs to the caller (blob_reader_close). CK_ENOTFOUND, CK_EIO,
	 * CK_EUNAVAIL, CK_ECORRUPT (a stored file whose framing is damaged). */
	int (*open)(struct blob_reader **out, struct blob_backend *b, const struct hash *h);

	/* Reads n raw bytes at raw offset off of blob h into buf, without a
	 * reader for the caller to keep: one request to an object store for a
	 * blob stored raw (storage/readahead.c reads the blobs of a download
	 * so, on several threads). Errors as open and blob_reader_read. */
	int (*read)(struct blob_backend *b, const struct hash *h, void *buf, size_t n,
		    uint64_t off);

	/* The blobs a read of blob h needs besides h (a delta's chain) into
	 * chain[0..*n); *n = 0 when h is stored whole. CK_ENOTFOUND when h is
	 * absent, CK_EIO, CK_EUNAVAIL, CK_ECORRUPT. */
	int (*chain)(struct blob_backend *b, const struct hash *h, struct hash *chain, int *n);

	/* Deletes blob h; CK_ENOTFOUND when absent. The caller makes sure no
	 * index row or upload in flight refers to it (storage/gc.c). */
	int (*remove)(struct blob_backend *b, const struct hash *h);

	/* Calls cb for every stored blob, once each, with its last-modified
	 * time (seconds since the epoch: a file's st_mtime, an object's
	 * LastModified), until cb returns non-zero (which is then returned). */
	int (*foreach)(struct blob_backend *b,
		       int (*cb)(void *arg, const struct hash *h, int64_t mtime), void *arg);

	/* Removes this store's temporaries (files under tmp/; on S3
	 * incomplete multipart uploads) last modified before older_than
	 * (seconds since the epoch), whichever process made them, and never
	 * younger ones: other processes sharing the store may be writing
	 * those. With `mine`, also every temporary named with this backend's
	 * instance id, whatever its age: an instance restarting after a crash
	 * (it has none in flight yet) removes what its previous life left. */
	int (*clean_tmp)(struct blob_backend *b, int64_t older_than, int mine);

	void (*free)(struct blob_backend *b);
};

/* Reads exactly n raw bytes at raw offset off. CK_ECORRUPT when the range is
 * past the blob's end or stored data is damaged, CK_EIO, CK_EUNAVAIL,
 * CK_ENOTFOUND (the store lost the blob while it was open). One reader must not
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
 * compressed or not in a local file (read it with blob_reader_read). The fd
 * belongs to r: valid until blob_reader_close, never closed by the caller;
 * use it only with
 * explicit offsets (pread, sendfile with an offset pointer). */
int blob_reader_raw_fd(uint64_t *off, const struct blob_reader *r);

/* The codec r's blob is stored with (enum blob_codec). */
int blob_reader_codec(const struct blob_reader *r);

struct blob_config {
	const char *url;		     /* a directory path, or s3://BUCKET/PREFIX */
	int compress;			     /* 1: choose a codec per blob; 0: store raw only */
	const char *s3_endpoint, *s3_region; /* for s3://: http(s)://HOST[:PORT], a region name */
	const char *instance; /* this process's id in temporary names; NULL: host and pid */
	const char *tmp_dir;  /* local scratch for encoding blobs bound for S3 (this
				 instance's DATA/tmp); NULL: $TMPDIR or /tmp */
};

/* Opens the store cfg->url names: a directory (blob_fs_open), or an S3
 * bucket and key prefix on the endpoint cfg->s3_endpoint (path-style
 * requests signed with SigV4 for region cfg->s3_region, "us-east-1" when
 * NULL; credentials from the environment only: AWS_ACCESS_KEY_ID,
 * AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN). The strings are copied. The
 * backend belongs to the caller (b->free). Thread-safe. CK_EINVALID for a
 * bad URL or missing credentials; opening does not contact the store. */
int blob_open(struct blob_backend **out, const struct blob_config *cfg);

/* The local-directory backend rooted at dir (created if missing): blobs under
 * dir/ab/cdef... (the hex SHA-256, sharded by its first two digits),
 * temporary files under dir/tmp/ (layout: blob_fs.c). compress: 1 = choose
 * a codec per blob, 0 = raw only. The instance id is the host and pid. The
 * backend belongs to the caller (b->free). Thread-safe. */
int blob_fs_open(struct blob_backend **out, const char *dir, int compress);

#endif
