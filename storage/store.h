/*
 * store.h: the store: an index, a blob store and the collector that keeps
 * them consistent, behind the operations the HTTP API and the commands need
 * (commit a checkpoint, delete, apply retention, resolve a ref, read a
 * checkpoint's layout or tensors, hold blobs for a download, verify, gc).
 * api/ calls these, never the index, the blobs or the collector directly.
 *
 * Durability (SPEC 6): store_commit makes every blob of a checkpoint durable
 * in the blob store before the index transaction that makes the checkpoint
 * visible, so a crash leaves the whole checkpoint or none of it; blobs of an
 * upload that never committed are swept (storage/gc.h).
 *
 * Thread safety: every function may be called from any thread at once.
 */
#ifndef CK_STORE_H
#define CK_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "../common/hash.h"
#include "blob.h"
#include "index.h"

struct store;

struct store_config {
	const char *data_dir;  /* this instance's directory: spools, temp files */
	const char *index_url; /* NULL = sqlite:DATA/index.sqlite */
	const char *blobs_url; /* NULL = DATA/blobs; or s3://BUCKET/PREFIX */
	const char *s3_endpoint, *s3_region;
	int compress;	   /* 1 = a codec per blob when it pays */
	int64_t lease;	   /* seconds a claim lives unrenewed (default 3600) */
	int clean;	   /* 1 = remove leftovers of earlier processes at open */
	const char *owner; /* NULL = made up (host, pid, random) */
};

/* Opens (creating) the store. *out is the caller's (store_close). */
int store_open(struct store **out, const struct store_config *cfg);
void store_close(struct store *s);

/* The directory for upload spools (on this instance's disk). */
const char *store_tmp_dir(const struct store *s);
/* "sqlite" or "postgresql"; the blob backend's name. */
const char *store_index_kind(const struct store *s);
const char *store_blobs_kind(const struct store *s);
/* 1 when no other process can use this store (SQLite index). */
int store_alone(const struct store *s);

/* ---- writing ---- */

/*
 * An upload's storages sent while its body still arrives. A remote blob
 * store (S3) takes about as long to store an upload as the upload takes to
 * arrive; sent one after the other, the two add up. As each storage record
 * has arrived and been hashed (api/upload.c follows the zip as it streams),
 * it is offered here, claimed, and put into a batch that store_commit then
 * finishes: most of the sending is done when the body ends.
 *
 * The filesystem store gains too: each storage is copied from the spool
 * into its blob's temporary file, and that file's writeback starts, while
 * the rest of the body arrives, so the commit finds the copy done and little
 * left to flush (a new 1 GB upload: 1.93-2.02 s against 2.28-2.36 s copied
 * at the commit, alternating runs, bench/RESULTS.md).
 *
 * Only where that changes nothing stored: a store that does not compress (a
 * codec needs the tensor's dtype, known only once the upload is parsed,
 * and a delta its base). A blob offered but
 * not part of the committed checkpoint (a record that was no storage, an
 * upload refused or cut off) is removed by store_early_free, or by the
 * sweep if that cannot.
 */
struct store_early;

/* *out NULL (and 0) when the store has nothing to gain. fd is the upload's
 * spool: read from until store_early_free, never changed. */
int store_early_begin(struct store_early **out, struct store *s, int fd);

/* Offers the n bytes of the spool at off, whose SHA-256 and CRC-32 are h and
 * crc: sent on the early sender's thread. Never waits for the network; any
 * thread. */
void store_early_offer(struct store_early *e, const struct hash *h, uint32_t crc, uint64_t off,
		       uint64_t n);

/* Stops sending, waits for the puts in flight, removes the blobs it stored
 * that no checkpoint names, frees e. Accepts NULL. */
void store_early_free(struct store_early *e);

/*
 * Writing once. Where new blobs are plain local files (the filesystem store
 * without compression), api/upload.c writes each large tensor payload of a
 * torch zip, as it arrives, straight into a temporary blob file of its own
 * instead of the spool. When that blob is new, the commit makes the file
 * itself the blob (flushed, renamed into place): the bytes are written
 * once and never copied. When it is stored already, the file is removed
 * unflushed, as the spool is. Early sends (above) are then not used.
 */
struct store_direct;

/* 1 when store_direct_open gives files. */
int store_direct_possible(const struct store *s);

/* A new temporary blob file into *out, open for pread/pwrite in *fd (the
 * store_direct's: valid until store_direct_free); *out NULL (and 0) where
 * new blobs are not such files. */
int store_direct_open(struct store_direct **out, int *fd, struct store *s);

/* d's bytes are complete and hash to h: when the store lacks blob h, the
 * file's writeback starts now, so the commit has little left to flush. */
void store_direct_hint(struct store_direct *d, const struct hash *h);

/* Removes the file unless a commit took it over; closes it. Accepts NULL. */
void store_direct_free(struct store_direct *d);

/* A parsed upload to commit. The storages carry blob, raw_size, crc32,
 * dtype and file_off (stored_size and codec are the store's to fill); the
 * skeleton fields are computed by store_commit from fd. */
struct store_upload {
	struct index_new_checkpoint ck;
	int fd;			   /* the upload's bytes, size ck.size */
	int fd_disposable;	   /* 1: the store may truncate fd once it has copied it */
	struct store_early *early; /* NULL, or what was sent while it arrived */
	/* NULL, or per storage: 1 when its bytes are not in fd (a thin
	 * upload's R frame): its blob must be stored, it is never written */
	const uint8_t *referenced;
	/* NULL, or per storage: the file of store_direct_open that holds its
	 * bytes from offset 0 (NULL: in fd at file_off) */
	struct store_direct *const *direct;
};

/* Stores the blobs (each once), commits the checkpoint, then applies the
 * model's retention policy (never to this checkpoint). *id and *dedup
 * describe it. Nothing is visible unless everything committed. */
int store_commit(int64_t *id, struct index_dedup *dedup, struct store *s,
		 const struct store_upload *u);

/* A storage of an upload that broke off: its bytes in the spool and their
 * hashes (from api/upload.c's scan as they arrived). */
struct store_piece {
	struct hash hash;
	uint64_t off, size;
	uint32_t crc32;
};

/* Resuming (SPEC 3.1): stores the pieces p[0..n) of fd as blobs under a
 * claim kept until `until` (seconds since the epoch: the moment the body
 * broke off plus --resume-grace, however long the storing takes), so the upload's retry finds
 * them with /blobs/missing and sends only the rest. They belong to no
 * checkpoint: nothing else sees them, and once the time is up the blobs no
 * checkpoint took up are removed (gc_keep). */
int store_keep(struct store *s, int fd, const struct store_piece *p, size_t n, int64_t until);

/* Brackets a keep from the moment the body broke off (the caller still
 * hashes what arrived) to the end of store_keep: store_blobs_have waits for
 * keeps under way in this process (at most 30 s) before it answers for a
 * blob the index lacks, so a retry that asks at once still finds them. */
void store_keep_begin(struct store *s);
void store_keep_end(struct store *s);

/* ---- checkpoints of several files (SPEC 3.2) ---- */

/* How long a file's write mark lives without a renewal, and how often
 * store_staged_expire asks the index (seconds). */
#define STORE_WRITE_LEASE_S  120
#define STORE_STAGED_CHECK_S 1

/* Opens a staged checkpoint with k's fields (model, run, epoch, ...,
 * stage_until > 0): invisible until store_staged_commit. */
int store_staged_open(int64_t *id, struct store *s, const struct index_new_checkpoint *k);

/* A file being written to staged checkpoint id: marked from before its
 * body arrives (begin; renew now and then while it streams) until
 * store_commit of its part ends the mark, or end drops it on a failure.
 * begin: CK_ENOTFOUND / CK_ECONFLICT as index_file_write_begin. */
int store_file_write_begin(struct store *s, const char *model, int64_t id, int64_t token);
int store_file_write_renew(struct store *s, int64_t id, int64_t token);
void store_file_write_end(struct store *s, int64_t id, int64_t token);

/* Makes it visible (index_staged_commit), then applies retention. */
int store_staged_commit(struct store *s, const char *model, int64_t id);
/* *n = files of checkpoint id being written now (index_files_writing). */
int store_files_writing(int64_t *n, struct store *s, int64_t id);

int store_files(struct index_file_list **out, struct store *s, int64_t id);

/* Removes the staged checkpoints past their --stage-timeout and reaps their
 * blobs; asks the index at most every STORE_STAGED_CHECK_S unless force.
 * store_commit calls it. */
int store_staged_expire(struct store *s, int force);

/* Deletes a checkpoint / a model and removes the blobs nothing else uses.
 * On a disk so full that the index cannot commit, a small reserve kept for
 * this is released first, so space can always be freed through deletes. */
int store_delete(struct store *s, const char *model, int64_t id);
int store_model_delete(struct store *s, const char *model);

/* Applies model's retention policy now; protect (> 0) is never removed.
 * *removed (may be NULL) counts the checkpoints removed. */
int store_retention_apply(uint64_t *removed, struct store *s, const char *model, int64_t protect);

int store_retention_get(struct index_retention *out, int *has, struct store *s, const char *model);
/* Sets a policy (creating the model if new) and applies it. *with_metric is
 * how many checkpoints have the policy's metric (0: a warning to show). */
int store_retention_set(int64_t *with_metric, uint64_t *removed, struct store *s, const char *model,
			const struct index_retention *p);

int store_patch(struct store *s, int64_t id, const struct index_patch *p);

/* ---- reading ---- */

int store_resolve(int64_t *id, struct store *s, const char *model, const char *ref, const char *run,
		  const char *metric, int maximize);
int store_checkpoint(struct index_checkpoint **out, struct store *s, int64_t id);
int store_list(struct index_checkpoint_list **out, struct store *s,
	       const struct index_list_query *q);
int store_layout(struct index_layout **out, struct store *s, int64_t id);
int store_tensors(struct index_tensors **out, struct store *s, int64_t id);
int store_models(struct index_model_list **out, struct store *s);
int store_stats(struct index_stats *out, struct store *s);
int store_generation(uint64_t *out, struct store *s);

/* Blobs a download reads, held against deletes until store_hold_end. */
struct store_hold;
int store_hold(struct store_hold **out, struct store *s, const struct hash *h, size_t n);
/* Extends the hold's lease when due (cheap otherwise): long downloads call
 * it as they go. */
int store_hold_renew(struct store_hold *hd);
void store_hold_end(struct store_hold *hd);

/* Opens blob h for reading (blob.h's reader; the caller closes it). */
int store_blob_open(struct blob_reader **out, struct store *s, const struct hash *h);
/* Reads n raw bytes at off of blob h, without a reader (blob.h's read). */
int store_blob_read(struct store *s, const struct hash *h, void *buf, size_t n, uint64_t off);
/* 1 when every storage blob of l from file offset `from` on is a raw blob
 * in a local file: a pread away, nothing to wait for or decode, so a
 * download reads it itself rather than through a readahead (readahead.h).
 * The skeleton is left out (small, read once). 0 on a remote store (without
 * asking it anything), for an encoded blob, or for one that cannot be opened
 * (the download then meets that error where it would). */
int store_layout_local_raw(struct store *s, const struct index_layout *l, uint64_t from);

/* have[i] = 1 when the index names blob h[i] with raw size size[i] (a
 * committed checkpoint's blob: SPEC 3.1's /blobs/missing and thin uploads),
 * or when it is stored with that size under a live claim (kept by
 * store_keep for a retry, or written by an upload in flight). One index
 * lookup for all (index_blob_sizes), then for each blob the index lacks a
 * claim lookup and a look at the blob. */
int store_blobs_have(uint8_t *have, struct store *s, const struct hash *h, const uint64_t *size,
		     size_t n);

/* ---- maintenance ---- */

/* Re-hashes every blob the index names; see storage/verify.h. */
struct verify_report;
int store_verify(struct verify_report *rep, struct store *s,
		 void (*bad)(void *arg, const struct hash *h, const char *why),
		 void (*progress)(void *arg, uint64_t done, uint64_t bytes), void *arg);

/* What store_migrate did so far. */
struct store_migrate_report {
	uint64_t checkpoints, total; /* done (copied or found), of all */
	uint64_t skipped;	     /* already in the target (an earlier run) */
	uint64_t blobs_copied, bytes_copied;
	uint64_t blobs_present; /* in the target already: not copied again */
};

/* Copies every checkpoint of src into dst (ckptd migrate), in id order, each
 * with its blobs, keeping its id, creation time and dedup counters, and
 * every model's retention policy. Each checkpoint goes in as an upload does
 * (blobs durable, then one index transaction), so an interrupted migration
 * leaves dst consistent, and running it again resumes: checkpoints dst has
 * are skipped, blobs dst stores are not copied again. dst should not be
 * served meanwhile (ids are kept). progress (may be NULL) is called after
 * each checkpoint. Verifying dst afterwards is the caller's (store_verify). */
int store_migrate(struct store_migrate_report *rep, struct store *src, struct store *dst,
		  void (*progress)(void *arg, const struct store_migrate_report *rep), void *arg);

/* Removes staged checkpoints past their time, applies every model's
 * retention policy, then sweeps blobs nothing names.
 * *removed counts blobs removed. */
int store_gc(uint64_t *removed, struct store *s);

#endif
