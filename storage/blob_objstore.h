/*
 * blob_objstore.h: what a blob backend implements: an object store that
 * holds opaque objects by key.
 *
 * Only backends (blob_fs.c, blob_s3.c) and the codec layer (blob_store.c)
 * include this; callers use struct blob_backend (blob.h). The codec layer
 * turns an object store into a blob store: it chooses the codec per blob,
 * encodes into a file the object store stages, and decodes containers
 * through the object store's readers. An object store never looks inside
 * an object.
 *
 * An object is named by a blob's hash and its form: BLOB_FORM_RAW (the
 * blob's raw bytes), BLOB_FORM_Z (a codec container, codec.h) or BLOB_FORM_D
 * (a delta container, which needs other blobs to be read: only in a store
 * with `deltas`). Backends keep the form in the name (".z", ".d" suffix),
 * so a reader needs no index to tell them apart. A blob may be stored in
 * several forms (the same bytes put once raw, once compressed): all hold the
 * same raw bytes.
 *
 * Errors: CK_ENOTFOUND (no such object), CK_EIO, CK_ENOSPC, CK_EUNAVAIL (the
 * store is unreachable or busy after retries: retry later), CK_ECORRUPT
 * (a source fd shorter than said). Thread safety: an object store is used by
 * any number of threads at once; one batch or reader by one at a time.
 */
#ifndef CK_BLOB_OBJSTORE_H
#define CK_BLOB_OBJSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "../common/hash.h"
#include "blob.h"

enum blob_form {
	BLOB_FORM_RAW = 0, /* the blob's raw bytes */
	BLOB_FORM_Z = 1,   /* a codec container */
	BLOB_FORM_D = 2,   /* a delta container (codec.h) */
};

struct blob_objbatch;

struct blob_objstore {
	const char *name; /* "fs", "s3" */
	int async_put;	  /* put_fd/put_staged only queue: see put_fd */
	/* 1 when batch_commit never replaces an existing BLOB_FORM_D object
	 * (the one first in place stays; a later one is dropped): a delta's
	 * object then always names the chain it was encoded against, which
	 * deltas need (blob_store.c). Only then are deltas made. */
	int deltas;
	/* 1 when stat is a request to another machine (S3: a HEAD, about 20 ms
	 * here while PUTs run) */
	int stat_remote;

	/* 0 and the object's size in *size when object (h, form) is stored;
	 * CK_ENOTFOUND (without a message) when not. */
	int (*stat)(uint64_t *size, struct blob_objstore *o, const struct hash *h, int form);

	/* A new batch into *out (batch_free). */
	int (*batch_begin)(struct blob_objbatch **out, struct blob_objstore *o);

	/* Stores n bytes of fd from off as object (h, form). It is durable
	 * and visible once batch_commit returns (an object store may make it
	 * visible earlier; a same-named object holds the same bytes). With
	 * async_put the store only queues the object (an error may then come
	 * from batch_commit instead) and reads those bytes until batch_commit
	 * returns: the caller may close fd but must not change them. */
	int (*put_fd)(struct blob_objbatch *bt, const struct hash *h, int form, int fd,
		      uint64_t off, uint64_t n);

	/* A new empty local file, open for pread/pwrite, into *fd, in which
	 * the caller builds object (h, form): the fs store's temporary file
	 * (no copy follows), or an unnamed local file for a remote store. The
	 * fd belongs to the batch; the caller ends it with put_staged (stores
	 * bytes [0, size) of it as the object, as put_fd does) or unstage
	 * (drops it). One staged file per batch at a time. */
	int (*stage)(int *fd, struct blob_objbatch *bt, const struct hash *h, int form);
	int (*put_staged)(struct blob_objbatch *bt, uint64_t size);
	void (*unstage)(struct blob_objbatch *bt);

	/* A new empty temporary file into *fd (open for pread/pwrite, the
	 * caller's to close) and its name into name[BLOB_TMP_NAME]: bytes
	 * written before their hash is known, which put_tmp makes an object
	 * without copying them, or tmp_remove drops. NULL in a store whose
	 * objects are not local files. */
	int (*tmp_open)(struct blob_objstore *o, int *fd, char *name);
	/* Object (h, form) is the first n bytes of temporary file name (fd
	 * open on it; the file is cut to n): the batch takes the file over
	 * (batch_commit moves it into place, batch_free removes it); fd stays
	 * the caller's. */
	int (*put_tmp)(struct blob_objbatch *bt, const struct hash *h, int form, const char *name,
		       int fd, uint64_t n);
	void (*tmp_remove)(struct blob_objstore *o, const char *name);

	/* Makes every object put in bt durable and visible; returns only
	 * when the store has acknowledged each. */
	int (*batch_commit)(struct blob_objbatch *bt);

	/* Drops uncommitted temporaries and frees bt; accepts NULL. */
	void (*batch_free)(struct blob_objbatch *bt);

	/* Opens object (h, form) for reads of its stored bytes: a reader
	 * (blob_reader.h) whose size is the object's, codec CODEC_RAW, and
	 * raw_fd the local file holding it, or -1. CK_ENOTFOUND without a
	 * message when absent. */
	int (*open)(struct blob_reader **out, struct blob_objstore *o, const struct hash *h,
		    int form);

	/* Reads n bytes at off of object (h, form) into buf in one request,
	 * without a reader: for a caller that reads ahead itself. CK_ENOTFOUND
	 * (without a message) when absent, CK_ECORRUPT when the object ends
	 * before off + n. NULL in a store where a reader costs nothing. */
	int (*get)(struct blob_objstore *o, const struct hash *h, int form, void *buf, size_t n,
		   uint64_t off);

	/* Deletes object (h, form); CK_ENOTFOUND (without a message) when
	 * absent. */
	int (*remove)(struct blob_objstore *o, const struct hash *h, int form);

	/* Calls cb for every stored blob, once (a blob stored in both forms
	 * too), with the last-modified time of the object reported, until
	 * cb returns non-zero (then returned). Names that are not blobs are
	 * skipped. */
	int (*list)(struct blob_objstore *o,
		    int (*cb)(void *arg, const struct hash *h, int64_t mtime), void *arg);

	/* As blob_backend's clean_tmp. */
	int (*clean_tmp)(struct blob_objstore *o, int64_t older_than, int mine);

	void (*free)(struct blob_objstore *o);
};

/* The blob store over object store o (taken over: freed with the result,
 * or here on failure). compress as in blob_fs_open. */
int blob_store_new(struct blob_backend **out, struct blob_objstore *o, int compress);

/* The instance id for temporary names into out[64]: id when given (only
 * [A-Za-z0-9_-] kept, at most 40 characters), else "<host>-<pid>". */
void blob_instance_id(char *out, const char *id);

/* The local-directory object store (blob_fs.c). */
int blob_fs_objstore_open(struct blob_objstore **out, const char *dir, const char *instance);

/* "ab/<62 hex>", "ab/<62 hex>.z" or "ab/<62 hex>.d" into out[72]: the name of object
 * (h, form) under the store's root or prefix, the same in every backend. */
void blob_object_name(char *out, const struct hash *h, int form);

/* The inverse for a name's last two components ("ab/<62 hex>[.z|.d]"): 0 and
 * the hash and form, or -1 when the name is not a blob's. */
int blob_object_parse(struct hash *h, int *form, const char *name, size_t len);

#endif
