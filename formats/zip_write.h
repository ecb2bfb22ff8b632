/*
 * zip_write.h: the zip writer behind plan_torch_zip, appending a STORED
 * (method 0) archive to a plan as torch's PyTorchStreamWriter lays it out.
 *
 * Every payload starts on a 64-byte boundary: the local header's extra field
 * ends with torch's padding block (id "FB", then that many 'Z' bytes). CRC-32s
 * and sizes are in the local headers (no data descriptors). An entry whose
 * size or header offset reaches 0xFFFFFFFF gets a zip64 extended information
 * field (local: both sizes; central: the saturated fields, in order), and the
 * archive then ends with a zip64 end-of-central-directory record and locator
 * before the classic EOCD.
 */
#ifndef CK_ZIP_WRITE_H
#define CK_ZIP_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "plan_build.h"

struct zip_writer;

/* Sizes and offsets at or above this use zip64 fields. 0xFFFFFFFF by the zip
 * spec; tests lower it to exercise the zip64 path on small files. Not
 * thread-safe to change while writers run. */
extern uint64_t zip_write_zip64_threshold;

/* A writer appending to b (borrowed until zip_writer_finish/free). */
int zip_writer_new(struct zip_writer **out, struct plan_builder *b);

/* Adds an entry holding a copy of data[0..len) (CRC computed here). */
int zip_writer_add_bytes(struct zip_writer *zw, const char *name, const void *data, size_t len);

/* Adds an entry holding storage `storage` whole (nbytes bytes, CRC-32 crc as
 * the blob table knows it: never recomputed). */
int zip_writer_add_storage(struct zip_writer *zw, const char *name, size_t storage, uint64_t nbytes,
			   uint32_t crc);

/* Appends the central directory and end records. Returns 0 or the error. */
int zip_writer_finish(struct zip_writer *zw);

/* Frees zw (not the builder); accepts NULL. */
void zip_writer_free(struct zip_writer *zw);

#endif
