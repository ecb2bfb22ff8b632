/*
 * readahead.h: a checkpoint file's bytes, read ahead of the one sending them.
 *
 * A download sends a checkpoint's file part after part, each part a range of
 * one blob (index_layout). From a local disk a part is a pread away; from an
 * object store every blob costs round trips, and a compressed blob costs a
 * core to decode. Read one after another on the sending thread, the download
 * waits for each in turn. A readahead has worker threads fill the file's
 * next chunks (RA_CHUNK bytes each, in file order, at most RA_SLOTS ahead of
 * the reader) while the sender takes the earlier ones: round trips overlap,
 * and decoding runs on several cores.
 *
 * Memory: RA_SLOTS x RA_CHUNK per download (less for a smaller file), and at
 * most RA_BUDGET for all downloads of the process at once: a download that
 * finds the budget spent gets no readahead and reads as before. The slots
 * are mapped, not malloc'ed, so they leave the process with the download.
 * 2 MiB chunks: a 1 GB download from S3 went as fast with them as with 4 MiB
 * ones (0.71-0.76x a direct GET here, both), with 16 MiB of slots instead
 * of 32 (test_big.py holds a 1 GB round trip under 64 MB of RSS).
 *
 * The bytes are the blobs' as stored; checking them (CRC-32, SHA-256) is the
 * caller's business, as it is for a reader's bytes.
 */
#ifndef CK_READAHEAD_H
#define CK_READAHEAD_H

#include <stddef.h>
#include <stdint.h>

#include "index.h"
#include "store.h"

#define RA_CHUNK   (2u << 20)
#define RA_SLOTS   8
#define RA_WORKERS 4
#define RA_BUDGET  (128u << 20)

struct readahead;

/* Starts reading l's file from offset from on worker threads. *out is NULL
 * (and 0 returned) when a readahead would not pay (less than two chunks to
 * read) or the process's budget is spent: the caller reads directly. l must
 * outlive the readahead. */
int readahead_start(struct readahead **out, struct store *s, const struct index_layout *l,
		    uint64_t from);

/* Copies the next min(n, what is left) bytes of the file into buf, waiting
 * for them as needed: the count, or a reader's error (code and message as
 * the reader gave them) once the reader reaches the bytes it failed on. */
long readahead_read(struct readahead *ra, uint8_t *buf, size_t n);

/* The file offset the next readahead_read starts at. */
uint64_t readahead_pos(const struct readahead *ra);

/* Stops the workers (waiting for reads in flight) and frees ra; accepts
 * NULL. */
void readahead_stop(struct readahead *ra);

#endif
