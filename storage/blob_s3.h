/*
 * blob_s3.h: the S3 object store (blob_s3.c): blobs in a bucket of any
 * S3-compatible store (AWS S3, Ceph RGW, MinIO, ...) under a key prefix.
 *
 * Most callers open it through blob_open with an s3://BUCKET/PREFIX URL;
 * this header adds the tuning a test or a benchmark may want to change.
 */
#ifndef CK_BLOB_S3_H
#define CK_BLOB_S3_H

#include <stddef.h>
#include <stdint.h>

#include "blob.h"
#include "blob_objstore.h"

struct blob_s3_options {
	const char *url;      /* s3://BUCKET or s3://BUCKET/PREFIX */
	const char *endpoint; /* http(s)://HOST[:PORT]; NULL: https://s3.REGION.amazonaws.com */
	const char *region;   /* NULL: "us-east-1" */
	const char *instance; /* this process's id (blob_instance_id) */
	const char *tmp_dir;  /* where compressed blobs are encoded before upload;
				 NULL: $TMPDIR, else /tmp */

	/* Tuning; 0 takes the default. */
	uint64_t multipart_threshold; /* objects above this go up in parts: 64 MiB */
	uint64_t part_size;	      /* 16 MiB (S3's minimum for all but the last: 5 MiB) */
	size_t window;		      /* largest read-ahead window: 8 MiB */
	int tries;		      /* attempts per request on 5xx or connection errors: 4 */
	int backoff_ms;		      /* the first retry's delay, doubled each time: 200 */
	int connect_timeout_ms;	      /* 2000 */
	int list_page;		      /* keys per ListObjectsV2 page: 1000 */
};

/* The S3 object store that opt describes (strings copied). Credentials come
 * from the environment only: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, and
 * AWS_SESSION_TOKEN when set. Does not contact the store. CK_EINVALID for a
 * bad URL, endpoint or missing credentials. Thread-safe. */
int blob_s3_objstore_open(struct blob_objstore **out, const struct blob_s3_options *opt);

/* The blob store over it (blob_store_new), compress as in blob_fs_open. */
int blob_s3_open(struct blob_backend **out, const struct blob_s3_options *opt, int compress);

#endif
