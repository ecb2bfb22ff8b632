/*
 * zip_write.c: the STORED zip writer for torch files (see zip_write.h).
 *
 * Layout of one entry, all little-endian:
 *   local header (30 bytes) | name | [zip64 extra: id 1, 16 bytes: usize,
 *   csize] | "FB" u16 n, n x 'Z' | payload (64-byte aligned)
 * then the central directory (46 bytes + name + [zip64 extra] per entry),
 * [zip64 EOCD record (56 bytes) + zip64 EOCD locator (20 bytes)], EOCD (22).
 */
#include "zip_write.h"

#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "../common/vec.h"
#include "../common/hash.h"

uint64_t zip_write_zip64_threshold = 0xFFFFFFFFu;

#define ALIGN	  64
#define DOS_DATE  0x0021 /* 1980-01-01 */
#define FLAG_UTF8 0x0800
#define VER_PLAIN 20
#define VER_ZIP64 45

struct zentry {
	char *name;
	uint64_t size;
	uint64_t hdr_off;
	uint32_t crc;
};

struct zip_writer {
	struct plan_builder *b;
	struct zentry *e;
	size_t n, cap;
};

int zip_writer_new(struct zip_writer **out, struct plan_builder *b)
{
	*out = calloc(1, sizeof(**out));
	if (!*out)
		return ck_error(CK_ENOMEM, "zip: out of memory");
	(*out)->b = b;
	return 0;
}

void zip_writer_free(struct zip_writer *zw)
{
	size_t i;

	if (!zw)
		return;
	for (i = 0; i < zw->n; i++)
		free(zw->e[i].name);
	free(zw->e);
	free(zw);
}

static int big(uint64_t v)
{
	return v >= zip_write_zip64_threshold || v >= 0xFFFFFFFFu;
}

/* Writes the local header and padding of a new entry; the payload follows. */
static int add_header(struct zip_writer *zw, const char *name, uint64_t size, uint32_t crc)
{
	struct plan_builder *b = zw->b;
	size_t nlen = strlen(name);
	uint64_t off = plan_builder_size(b), start;
	int z64 = big(size);
	uint16_t pad;
	struct zentry *e;

	if (nlen > 0xFFFF)
		return ck_error(CK_EINVALID, "zip: entry name too long (%zu bytes)", nlen);
	struct zentry *ne = vec_grow(zw->e, &zw->cap, zw->n, sizeof(*ne), 16);
	if (!ne)
		return ck_error(CK_ENOMEM, "zip: out of memory");
	zw->e = ne;
	e = &zw->e[zw->n];
	e->name = strdup(name);
	if (!e->name)
		return ck_error(CK_ENOMEM, "zip: out of memory");
	e->size = size;
	e->hdr_off = off;
	e->crc = crc;
	zw->n++;

	start = off + 30 + nlen + (z64 ? 20 : 0) + 4;
	pad = (uint16_t)((ALIGN - start % ALIGN) % ALIGN);

	plan_lit_u32(b, 0x04034b50);
	plan_lit_u16(b, z64 ? VER_ZIP64 : VER_PLAIN);
	plan_lit_u16(b, FLAG_UTF8);
	plan_lit_u16(b, 0); /* stored */
	plan_lit_u16(b, 0); /* time */
	plan_lit_u16(b, DOS_DATE);
	plan_lit_u32(b, crc);
	plan_lit_u32(b, z64 ? 0xFFFFFFFFu : (uint32_t)size);
	plan_lit_u32(b, z64 ? 0xFFFFFFFFu : (uint32_t)size);
	plan_lit_u16(b, (uint16_t)nlen);
	plan_lit_u16(b, (uint16_t)((z64 ? 20 : 0) + 4 + pad));
	plan_lit(b, name, nlen);
	if (z64) {
		plan_lit_u16(b, 0x0001);
		plan_lit_u16(b, 16);
		plan_lit_u64(b, size);
		plan_lit_u64(b, size);
	}
	plan_lit(b, "FB", 2);
	plan_lit_u16(b, pad);
	plan_lit_fill(b, 'Z', pad);
	return b->err;
}

int zip_writer_add_bytes(struct zip_writer *zw, const char *name, const void *data, size_t len)
{
	uint32_t crc = crc32_update(0, data, len);
	int err;

	if ((err = add_header(zw, name, len, crc)) < 0)
		return err;
	return plan_lit(zw->b, data, len);
}

int zip_writer_add_storage(struct zip_writer *zw, const char *name, size_t storage, uint64_t nbytes,
			   uint32_t crc)
{
	int err;

	if ((err = add_header(zw, name, nbytes, crc)) < 0)
		return err;
	return plan_range(zw->b, storage, 0, nbytes);
}

int zip_writer_finish(struct zip_writer *zw)
{
	struct plan_builder *b = zw->b;
	uint64_t cd_off = plan_builder_size(b), cd_size, eocd64_off;
	int need64 = big(cd_off) || zw->n >= 0xFFFF;
	size_t i;

	for (i = 0; i < zw->n; i++) {
		const struct zentry *e = &zw->e[i];
		int zs = big(e->size), zo = big(e->hdr_off);
		uint16_t xlen = (uint16_t)((zs || zo) ? 4 + (zs ? 16 : 0) + (zo ? 8 : 0) : 0);
		size_t nlen = strlen(e->name);

		if (zs || zo)
			need64 = 1;
		plan_lit_u32(b, 0x02014b50);
		plan_lit_u16(b, (uint16_t)(0x0300 | ((zs || zo) ? VER_ZIP64 : VER_PLAIN)));
		plan_lit_u16(b, (zs || zo) ? VER_ZIP64 : VER_PLAIN);
		plan_lit_u16(b, FLAG_UTF8);
		plan_lit_u16(b, 0);
		plan_lit_u16(b, 0);
		plan_lit_u16(b, DOS_DATE);
		plan_lit_u32(b, e->crc);
		plan_lit_u32(b, zs ? 0xFFFFFFFFu : (uint32_t)e->size);
		plan_lit_u32(b, zs ? 0xFFFFFFFFu : (uint32_t)e->size);
		plan_lit_u16(b, (uint16_t)nlen);
		plan_lit_u16(b, xlen);
		plan_lit_u16(b, 0);		 /* comment */
		plan_lit_u16(b, 0);		 /* disk */
		plan_lit_u16(b, 0);		 /* internal attributes */
		plan_lit_u32(b, 0100644u << 16); /* external: a regular file, rw-r--r-- */
		plan_lit_u32(b, zo ? 0xFFFFFFFFu : (uint32_t)e->hdr_off);
		plan_lit(b, e->name, nlen);
		if (xlen) {
			plan_lit_u16(b, 0x0001);
			plan_lit_u16(b, (uint16_t)(xlen - 4));
			if (zs) {
				plan_lit_u64(b, e->size);
				plan_lit_u64(b, e->size);
			}
			if (zo)
				plan_lit_u64(b, e->hdr_off);
		}
	}
	eocd64_off = plan_builder_size(b);
	cd_size = eocd64_off - cd_off;
	if (big(cd_size) || big(eocd64_off))
		need64 = 1;
	if (need64) {
		plan_lit_u32(b, 0x06064b50);
		plan_lit_u64(b, 44); /* size of the rest of this record */
		plan_lit_u16(b, 0x0300 | VER_ZIP64);
		plan_lit_u16(b, VER_ZIP64);
		plan_lit_u32(b, 0); /* this disk */
		plan_lit_u32(b, 0); /* disk with the central directory */
		plan_lit_u64(b, zw->n);
		plan_lit_u64(b, zw->n);
		plan_lit_u64(b, cd_size);
		plan_lit_u64(b, cd_off);
		plan_lit_u32(b, 0x07064b50);
		plan_lit_u32(b, 0); /* disk with the zip64 EOCD */
		plan_lit_u64(b, eocd64_off);
		plan_lit_u32(b, 1); /* total disks */
	}
	plan_lit_u32(b, 0x06054b50);
	plan_lit_u16(b, 0);
	plan_lit_u16(b, 0);
	plan_lit_u16(b, zw->n >= 0xFFFF ? 0xFFFF : (uint16_t)zw->n);
	plan_lit_u16(b, zw->n >= 0xFFFF ? 0xFFFF : (uint16_t)zw->n);
	plan_lit_u32(b, big(cd_size) ? 0xFFFFFFFFu : (uint32_t)cd_size);
	plan_lit_u32(b, big(cd_off) ? 0xFFFFFFFFu : (uint32_t)cd_off);
	plan_lit_u16(b, 0); /* comment */
	return b->err;
}
