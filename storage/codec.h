/*
 * codec.h: the blob codec (SPEC 6): byte planes + zstd, in independent chunks.
 *
 * A compressed blob is stored as one "container" file. The raw bytes are cut
 * into chunks of chunk_size raw bytes (1 MiB, a multiple of the element size),
 * each encoded on its own, so a read of a small range decodes only the chunks
 * it covers and memory stays bounded whatever the blob size.
 *
 * CODEC_PLANES (floating-point blobs, element size E = 2, 4 or 8): within a
 * chunk, plane p holds byte p of every element (little-endian storage order),
 * plane E-1 the top bytes. With transform 1 (float64/32, bfloat16) the top
 * 16 bits of each element are first rotated left by one, so plane E-1 holds
 * the 8 exponent bits alone and the sign joins the mantissa plane below.
 * Each plane is then stored as a zstd frame, or raw when zstd does not pay.
 * CODEC_ZSTD: the same with E = 1 and no transform (one plane per chunk).
 *
 * Container layout (all integers little-endian):
 *
 *   header, 32 bytes
 *     0  magic "CKZ\1"
 *     4  u8  codec (1 = zstd, 2 = planes)
 *     5  u8  E, planes per chunk (1, 2, 4, 8)
 *     6  u8  transform (0 = none, 1 = rotate the top 16 bits left by 1)
 *     7  u8  0
 *     8  u32 chunk_size (raw bytes per chunk, a multiple of E, <= 16 MiB)
 *     12 u32 nchunks = ceil(raw_size / chunk_size)
 *     16 u64 raw_size
 *     24 u32 0
 *     28 u32 CRC-32 of bytes 0..27
 *   chunk table: nchunks entries of 12 + 4E bytes
 *     u64 file offset of the chunk's first plane
 *     u32 len[E]: stored length of each plane; bit 31 set = stored raw
 *     u32 CRC-32 of the entry's preceding bytes
 *   chunk data: chunk after chunk, plane after plane, no gaps.
 *
 * Entries carry absolute offsets so a reader seeks to any chunk with one
 * small read and no table held in memory. zstd frames carry their content
 * size and checksum, so damage is caught (CK_ECORRUPT) rather than served.
 *
 * Deltas (CODEC_DELTA, codec byte 3): a floating-point blob encoded against
 * a base blob of the same size, the same tensor one checkpoint earlier.
 * Each element (E = 2, 4 or 8 bytes, read as an unsigned integer) becomes
 * its difference from the base's element, zigzag-coded (byte 7 = 2: small
 * changes of either sign give small numbers, whose high bytes are zero), or
 * its XOR with it (byte 7 = 1), then byte planes (transform 0) as above.
 * Between byte 7 and the chunk table (which then starts at 32 + 8 + 32 D)
 * the header has a chain:
 *     32 u8 D, the chain's length (1..CODEC_MAX_CHAIN); 3 bytes 0
 *     36 D SHA-256 hashes: the base, then the base's own base, ...
 *     36 + 32 D  u32 CRC-32 of bytes 32 .. 36 + 32 D
 * so the whole chain a read needs is known from the one header. A reader
 * of a delta needs its base's raw bytes (codec_reader_set_base).
 */
#ifndef CK_CODEC_H
#define CK_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "../common/dtype.h"
#include "../common/hash.h"

#define CODEC_CHUNK_SIZE  (1u << 20)
#define CODEC_HEADER_SIZE 32

/* Encoder state: a zstd context and chunk buffers (about 4 MiB). One
 * encoder per thread at a time; reuse it across blobs. */
struct codec_enc;

/* A new encoder into *out (caller frees with codec_enc_free). CK_ENOMEM. */
int codec_enc_new(struct codec_enc **out);
void codec_enc_free(struct codec_enc *e);

/* Encodes raw_size bytes of in_fd from in_off into a container written to
 * out_fd from offset 0 (out_fd should be empty). hint (DT_INVALID when
 * unknown) picks byte planes for floating-point types.
 *
 * Sets *codec to CODEC_ZSTD or CODEC_PLANES and *stored_size to the
 * container's size, or *codec to CODEC_RAW when compression does not pay
 * (the first chunk, or the whole container, is not below ~97% of raw): the
 * caller then stores the bytes raw, and out_fd's contents are undefined.
 * Errors: CK_ENOSPC, CK_EIO (out_fd), CK_ECORRUPT (in_fd shorter than
 * in_off + raw_size), CK_ENOMEM. */
int codec_encode_fd(int *codec, uint64_t *stored_size, struct codec_enc *e, int out_fd, int in_fd,
		    uint64_t in_off, uint64_t raw_size, enum dtype hint);

/* A random-access reader of one container. */
struct codec_reader;

/* Reads exactly n bytes at offset off of a stored container into buf: 0, or
 * CK_ECORRUPT when the container ends first, CK_EIO, CK_EUNAVAIL (whatever
 * the store answers; the message is the callback's). The reader reads
 * through this, so a container may live in a local file or in an object
 * store read with range requests. */
typedef int (*codec_read_fn)(void *arg, void *buf, size_t n, uint64_t off);

/* Deltas: at most this many blobs a delta's read depends on (its base, the
 * base's base, ...): a full blob every CODEC_MAX_CHAIN + 1 epochs, as video
 * codecs keep key frames. */
#define CODEC_MAX_CHAIN 3

enum codec_delta_kind {
	CODEC_DELTA_XOR = 1, /* element XOR base element */
	CODEC_DELTA_SUB = 2, /* zigzag(element - base element), as integers */
};

/* The blob a delta is encoded against: its raw bytes through read(arg, ...)
 * (raw_size of them, which must equal the new blob's), its hash, and its own
 * chain (nchain hashes, 0 when it is stored whole). */
struct codec_base {
	codec_read_fn read;
	void *arg;
	uint64_t raw_size;
	struct hash hash;
	const struct hash *chain;
	int nchain;
};

/* As codec_encode_fd, as a delta of kind (enum codec_delta_kind) against
 * base: *codec CODEC_DELTA, or CODEC_RAW (nothing usable in out_fd) when a
 * delta cannot be made (not a floating-point type of 2, 4 or 8 bytes, sizes
 * differ, the chain would exceed CODEC_MAX_CHAIN) or does not pay: its
 * first chunk is not a sixteenth smaller than that chunk's own encoding
 * (planes or zstd, as codec_encode_fd makes it), or the whole is not below
 * ~97% of raw. Errors as codec_encode_fd, and the base's read errors. */
int codec_encode_delta_fd(int *codec, uint64_t *stored_size, struct codec_enc *e, int out_fd,
			  int in_fd, uint64_t in_off, uint64_t raw_size, enum dtype hint,
			  const struct codec_base *base, int kind);

/* Parses the header of the container of size bytes that read(arg, ...)
 * reads (arg is borrowed: it must stay valid until codec_reader_free).
 * CK_ECORRUPT names what is damaged; the callback's errors. */
int codec_reader_open(struct codec_reader **out, codec_read_fn read, void *arg, uint64_t size);

/* The same over the container in file fd (borrowed: it must stay open until
 * codec_reader_free), its size taken from the file. */
int codec_reader_open_fd(struct codec_reader **out, int fd);

/* Reads exactly n raw bytes at raw offset off, decoding only the chunks the
 * range covers. CK_ECORRUPT when the range is past the end or a chunk is
 * damaged (the message names the chunk and its file offset), the callback's
 * errors. Not thread-safe per reader. */
int codec_reader_read(struct codec_reader *r, void *buf, size_t n, uint64_t off);

uint64_t codec_reader_size(const struct codec_reader *r);
/* CODEC_ZSTD, CODEC_PLANES or CODEC_DELTA. */
int codec_reader_codec(const struct codec_reader *r);

/* A delta's chain: its length (0 for a container that is no delta), and
 * the hashes into chain[0..CODEC_MAX_CHAIN) (may be NULL). */
int codec_reader_chain(const struct codec_reader *r, struct hash *chain);

/* The base's raw bytes for a delta's reads: read(arg, ...) (arg borrowed
 * until codec_reader_free). A delta read without one is CK_ECORRUPT. */
void codec_reader_set_base(struct codec_reader *r, codec_read_fn read, void *arg);
/* Accepts NULL; does not close the fd nor free the callback's arg. */
void codec_reader_free(struct codec_reader *r);

#endif
