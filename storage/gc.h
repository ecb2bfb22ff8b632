/*
 * gc.h: removing blobs without racing uploads or downloads, in one process or
 * across several instances sharing an index and a blob store.
 *
 * The protocol. Every upload and download in flight claims the blobs it is
 * about to reference or read: rows in the index's claims table with an owner
 * (this process), a group (this request) and an expiry (the lease). A blob's
 * data is removed ("reaped") only inside the index's reaper transaction, which
 * no claim can interleave with (sql.h: SQL_TXN_REAP vs SQL_TXN_CLAIM), and
 * only when no blob row names it and no live claim does. So:
 *
 * - an upload claims first, then asks whether each blob is stored: if it is,
 *   nothing can remove it until the upload's index commit has taken its
 *   reference and the claim is dropped; if it is not (a reaper got there
 *   first), the upload writes it again;
 * - a delete drops index references in its own transaction, then reaps the
 *   blobs it freed: those an upload or download has claimed stay;
 * - a download claims a checkpoint's blobs before its first byte, so a delete
 *   meanwhile does not cut it short.
 *
 * A process that dies leaves its claims; they expire after the lease. Blobs
 * written but never committed (a crash between the blob write and the index
 * commit) have no row: gc_sweep removes them once unclaimed and older than a
 * cutoff (the lease, or now for a store only this process uses).
 *
 * Thread safety: a struct gc is shared by all threads; a struct gc_claim is
 * used by one thread at a time.
 */
#ifndef CK_GC_H
#define CK_GC_H

#include <stddef.h>
#include <stdint.h>

#include "../common/hash.h"
#include "blob.h"
#include "index.h"

struct gc;
struct gc_claim;

/* A collector for this process: owner names it in claims (unique across
 * instances), lease_seconds is how long a claim lives without renewal.
 * alone: no other process uses the store (a SQLite index), so claims are
 * kept in memory (gc.c). Borrows idx and b for its lifetime. */
int gc_new(struct gc **out, struct index *idx, struct blob_backend *b, const char *owner,
	   int64_t lease_seconds, int alone);
void gc_free(struct gc *g);

/* A new claim group holding h[0..n) (n may be 0). *out is the caller's:
 * end it with gc_release (or gc_keep). */
int gc_claim(struct gc_claim **out, struct gc *g, const struct hash *h, size_t n);

/* Adds h[0..n) to the group. */
int gc_claim_more(struct gc_claim *cl, const struct hash *h, size_t n);

/* Extends the group's lease when half of it has passed (cheap otherwise):
 * call it now and then from long transfers. */
int gc_claim_renew(struct gc_claim *cl);

/* Drops the group's claims and frees cl; accepts NULL. A failure to reach
 * the index is logged: the claims then simply expire. */
void gc_release(struct gc_claim *cl);

/* Leaves the group's claims on h[0..n) (what it claimed) in place until
 * `until` (seconds since the epoch) and frees cl: the blobs of an upload that broke off stay
 * for its retry (SPEC 3.1). When they are due, gc_expire drops the claims
 * and removes the blobs no checkpoint took up meanwhile. A restart of this
 * process drops them sooner (gc_recover, or the sweep of a store used
 * alone). */
void gc_keep(struct gc_claim *cl, int64_t until, const struct hash *h, size_t n);

/* Ends the kept groups whose time is up (cheap when none is): called now
 * and then by the store's writes. */
void gc_expire(struct gc *g);

/* yes[i] = 1 when some upload in flight, or kept for a retry, claims blob
 * h[i]. */
int gc_claimed(uint8_t *yes, struct gc *g, const struct hash *h, size_t n);

/* Removes the data of freed[0..n) unless a blob row or a live claim names
 * it. *removed (may be NULL) counts removals. */
int gc_reap(uint64_t *removed, struct gc *g, const struct hash *freed, size_t n);

/* Remembers freed[0..n) to reap later (when the index is busy now): the
 * next gc_reap of this process tries them again. Memory only: after a crash
 * the start-up sweep finds them. */
void gc_defer(struct gc *g, const struct hash *freed, size_t n);

/* After a restart of this owner: drops the claims it held in its previous
 * life and removes the blobs they named that nothing else names or claims
 * (what an upload cut short by a crash had written). Call only when this
 * owner cannot be running elsewhere. *removed counts the blobs removed. */
int gc_recover(uint64_t *removed, struct gc *g);

/* Removes every stored blob that no row names and no live claim names and
 * that was last written over a lease ago, and drops expired claims. With
 * `all` (only when no other process can be using the store: a SQLite index
 * whose lock this process holds) every claim in the index is a dead
 * process's and no age is needed. *removed counts the blobs removed. */
int gc_sweep(uint64_t *removed, struct gc *g, int all);

/* The lease, in seconds. */
int64_t gc_lease(const struct gc *g);

#endif
