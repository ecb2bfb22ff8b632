/*
 * gc.h: freeing blobs without racing uploads.
 *
 * An upload holds every blob hash it is about to reference from before it
 * checks whether the blob is stored until its index transaction has
 * committed. Deleting a checkpoint drops the index references first (one
 * transaction), then asks gc_unlink_freed to remove the files whose rows are
 * gone: a blob that an upload in flight holds, or that has a row again, is
 * kept. Both sides take the gc's mutex, so the check and the unlink are one
 * step for the uploads.
 */
#ifndef CK_GC_H
#define CK_GC_H

#include <stddef.h>
#include <stdint.h>

#include "../common/hash.h"
#include "blob.h"
#include "index.h"

struct gc;

/* A new tracker into *out (gc_free). Thread-safe object. */
int gc_new(struct gc **out);
void gc_free(struct gc *g);

/* Holds h for an upload in flight (counted: hold twice, release twice). */
int gc_hold(struct gc *g, const struct hash *h);
void gc_release(struct gc *g, const struct hash *h);

/* Removes the files of freed[0..n) that no upload holds and no index row
 * names. Returns 0, or the first error (removal goes on past errors). */
int gc_unlink_freed(struct gc *g, struct index *idx, struct blob_backend *b,
		    const struct hash *freed, size_t n);

/* Removes every stored blob with no index row that no upload holds (files
 * left by a crash between a blob write and its index commit). *removed
 * counts them. */
int gc_sweep(uint64_t *removed, struct gc *g, struct index *idx, struct blob_backend *b);

#endif
