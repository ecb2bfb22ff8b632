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
 */
#ifndef CK_CODEC_H
#define CK_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "../common/dtype.h"

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
/* CODEC_ZSTD or CODEC_PLANES. */
int codec_reader_codec(const struct codec_reader *r);
/* Accepts NULL; does not close the fd nor free the callback's arg. */
void codec_reader_free(struct codec_reader *r);

#endif
