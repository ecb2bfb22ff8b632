/*
 * zip.h: a read-only zip reader over a ck_input, for PyTorch checkpoints.
 *
 * torch.save writes a zip whose records are stored (not compressed), each
 * record's data aligned to 64 bytes by a padding extra field ("FB") in its
 * local header; torch 2.x adds data descriptors, zip64 end records even on tiny
 * files and may write CRC 0. The reader trusts the central directory, reads
 * each local header to find where the data really starts, and validates that
 * every entry lies inside the file, before the central directory, without
 * overlapping another entry. Nothing is held in memory but the directory,
 * which (with every buffer zip_entry_read returns) is taken from the parse
 * region of the memory meter given to zip_reader_open (budget.h).
 */
#ifndef CK_ZIP_H
#define CK_ZIP_H

#include <stddef.h>
#include <stdint.h>

#include "budget.h"
#include "input.h"

#define ZIP_METHOD_STORED   0
#define ZIP_METHOD_DEFLATED 8

struct zip_entry {
	const char *name;     /* NUL-terminated, owned by the reader */
	size_t name_len;      /* bytes in name (names holding NUL are rejected) */
	uint16_t method;      /* ZIP_METHOD_STORED, ZIP_METHOD_DEFLATED, ... */
	uint16_t flags;	      /* general-purpose bit flags */
	uint64_t comp_size;   /* bytes of data in the file */
	uint64_t uncomp_size; /* bytes after decompression */
	uint32_t crc;	      /* CRC-32 the central directory declares (0 = none) */
	uint64_t local_off;   /* offset of the local header */
	uint64_t data_off;    /* offset of the data's first byte (from the LOCAL header) */
};

struct zip_reader;

/* Opens the zip in in (borrowed: must outlive the reader). Reads the end of
 * central directory (zip64 when present), then every central entry and its
 * local header. max_records bounds the entry count before anything is
 * allocated; all memory comes from m's parse region (borrowed: must outlive
 * the reader, whose names stay readable until fmt_meter_end). Returns 0 and
 * *out (end with zip_reader_free, which gives the tables back), CK_EFORMAT
 * when the input is not a zip ckptd reads (no end record, multi-disk,
 * encrypted), CK_ECORRUPT with the offset for damaged structures, CK_ETOOBIG
 * over max_records or m's budget, CK_ENOMEM, CK_EIO. A reader is immutable
 * after open: lookups may be shared by threads (zip_entry_read may not: it
 * uses the meter). */
int zip_reader_open(struct zip_reader **out, const struct ck_input *in, uint64_t max_records,
		    struct fmt_meter *m);

/* Ends z, giving its tables back to the meter; accepts NULL. */
void zip_reader_free(struct zip_reader *z);

/* Number of entries, in central directory order. */
size_t zip_entry_count(const struct zip_reader *z);

/* Entry i (< zip_entry_count), borrowed from z. */
const struct zip_entry *zip_entry_at(const struct zip_reader *z, size_t i);

/* The entry named name (exact bytes), or NULL. O(log n). Borrowed from z. */
const struct zip_entry *zip_entry_find(const struct zip_reader *z, const char *name);

/* The index of e (an entry of z) in central directory order. */
size_t zip_entry_index(const struct zip_reader *z, const struct zip_entry *e);

/* Reads e's uncompressed bytes into a new buffer *out (NUL-terminated one past
 * *len) from z's meter: the caller gives it back with zip_entry_buf_free (or
 * it goes with the meter's parse region).
 * Stored and deflated entries only (others: CK_EFORMAT). CK_ETOOBIG when
 * uncomp_size > max_bytes or over the meter's budget (both checked before
 * allocating); CK_ECORRUPT when the data does not inflate to exactly
 * uncomp_size bytes or its CRC-32 differs from a non-zero declared CRC. */
int zip_entry_read(uint8_t **out, size_t *len, const struct zip_reader *z,
		   const struct zip_entry *e, uint64_t max_bytes);

/* Gives back a buffer of len bytes from zip_entry_read; accepts NULL. */
void zip_entry_buf_free(const struct zip_reader *z, uint8_t *buf, size_t len);

#endif
