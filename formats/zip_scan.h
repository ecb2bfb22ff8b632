/*
 * zip_scan.h: hashing a zip's records while it is still arriving.
 *
 * torch.save writes its zip front to back: a local header, then the record's
 * bytes, then the next. The scanner follows that order on the upload stream
 * and hashes (SHA-256 + CRC-32) each stored record's payload as the bytes go
 * by (past a central directory and end records too: archives written one
 * after another, as in DCP's .distcp files, are followed to the last), so the upload pipeline does
 * not read the tensor data a second time. It is only a cache: the zip reader still parses the
 * finished file from its central directory, and a hash is used only for a storage whose offset and
 * length match a scanned record exactly. On anything it cannot follow (sizes
 * only in a data descriptor, a damaged header), and after 65,536 records (its
 * memory stays under 4 MiB whatever the upload), the scanner stops quietly
 * and the pipeline hashes the remaining storages from the file.
 */
#ifndef CK_ZIP_SCAN_H
#define CK_ZIP_SCAN_H

#include <stddef.h>
#include <stdint.h>

#include "../common/hash.h"

struct zip_scan;

/* A new scanner into *out (free with zip_scan_free). min_record: records
 * shorter than this are not hashed (cheap enough to hash later);
 * ZIP_SCAN_NO_HASH: none is (the scanner only finds payloads). */
#define ZIP_SCAN_NO_HASH UINT64_MAX
int zip_scan_new(struct zip_scan **out, uint64_t min_record);
void zip_scan_free(struct zip_scan *s);

/* Feeds the next n bytes of the stream. Never fails: on anything unexpected
 * the scanner stops following the stream. Not thread-safe per scanner. */
void zip_scan_feed(struct zip_scan *s, const uint8_t *p, size_t n);

/* zip_scan_feed, and all n bytes into partner too (the whole stream's
 * hash): the payload bytes the scanner hashes go into both at once
 * (hasher_update2), so one pass hashes the file and its records. */
void zip_scan_feed2(struct zip_scan *s, struct hasher *partner, const uint8_t *p, size_t n);
/* Has cb called, on the thread feeding the scanner, for each record payload
 * hashed in full (as zip_scan_lookup will then give it), with the record's
 * name (not NUL-terminated). */
typedef void (*zip_scan_record_fn)(void *arg, const char *name, size_t name_len, uint64_t off,
				   uint64_t len, const struct hash *h, uint32_t crc);
void zip_scan_on_record(struct zip_scan *s, zip_scan_record_fn cb, void *arg);

/* Has begin called, on the feeding thread, when a record's payload is
 * about to start (the next byte fed is its first, at stream offset off;
 * method as in its local header), and end when it has ended, at offset end
 * (the payload's last byte + 1): for a record whose size only its data
 * descriptor gives, end may lie up to 24 bytes before the bytes just fed
 * (the descriptor that confirmed it). Every begin is followed by one end
 * unless the scanner stops following the stream (zip_scan_following). */
typedef void (*zip_scan_begin_fn)(void *arg, const char *name, size_t name_len, uint64_t off,
				  unsigned method);
typedef void (*zip_scan_end_fn)(void *arg, uint64_t end);
void zip_scan_on_payload(struct zip_scan *s, zip_scan_begin_fn begin, zip_scan_end_fn end,
			 void *arg);

/* 1 while the scanner follows the stream. */
int zip_scan_following(const struct zip_scan *s);

/* The hash of the record payload at [off, off+len) if one was scanned: 0, or
 * CK_ENOTFOUND. */
int zip_scan_lookup(const struct zip_scan *s, uint64_t off, uint64_t len, struct hash *h,
		    uint32_t *crc);

/* How many record payloads were hashed in full so far, and the span
 * [*off, *off + *len) of the i-th of them, in stream order. */
size_t zip_scan_count(const struct zip_scan *s);
void zip_scan_span(const struct zip_scan *s, size_t i, uint64_t *off, uint64_t *len);
#endif
