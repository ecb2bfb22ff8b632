/*
 * zip.c: the zip reader (see zip.h).
 *
 * Structures read (all little-endian, APPNOTE 6.3):
 *   end of central directory   "PK\5\6", 22 bytes + comment, in the last 64 KiB
 *   zip64 end locator          "PK\6\7", 20 bytes just before it
 *   zip64 end record           "PK\6\6", 56 bytes + extensible data
 *   central directory entry    "PK\1\2", 46 bytes + name + extra + comment
 *   local header               "PK\3\4", 30 bytes + name + extra, then data
 * A zip64 extra field (id 1) in a central entry holds, in this order, the
 * uncompressed size, compressed size and local offset whose 32-bit fields are
 * 0xFFFFFFFF. Data descriptors (flag bit 3) follow the data; their sizes are
 * also in the central directory, which is what the reader uses.
 */
#include "zip.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "../common/err.h"
#include "../common/hash.h"
#include "le.h"

#define SIG_LOCAL   0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD    0x06054b50u
#define SIG_EOCD64  0x06064b50u
#define SIG_LOC64   0x07064b50u

/* a central entry's name, extra field and comment: 3 x 16-bit lengths */
#define VAR_BYTES (3 * 65535 + 1)

struct zip_reader {
	const struct ck_input *in;
	struct zip_entry *entries; /* central directory order */
	size_t n;
	size_t *by_name; /* indices sorted by name */
	uint64_t cd_off, cd_size;
	size_t cap;		 /* entries and by_name are this long */
	struct fmt_meter *meter; /* borrowed: its parse region holds all of this */
};

void zip_reader_free(struct zip_reader *z)
{
	if (!z)
		return;
	/* the tables go back now; names and the reader with the region */
	fmt_free(z->meter, FMT_PARSE, z->entries, z->cap * sizeof(*z->entries));
	fmt_free(z->meter, FMT_PARSE, z->by_name, z->cap * sizeof(size_t));
}

size_t zip_entry_count(const struct zip_reader *z)
{
	return z->n;
}

const struct zip_entry *zip_entry_at(const struct zip_reader *z, size_t i)
{
	return i < z->n ? &z->entries[i] : NULL;
}

size_t zip_entry_index(const struct zip_reader *z, const struct zip_entry *e)
{
	return (size_t)(e - z->entries);
}

/* Finds the end of central directory record; fills its offset and bytes. */
static int find_eocd(uint64_t *eocd_off, uint8_t rec[22], const struct ck_input *in,
		     struct fmt_meter *m)
{
	uint8_t *tail = NULL;
	size_t tlen;
	int err;

	uint8_t head[4];
	int starts_as_zip = 0, missing;

	/* A file that starts with a local header is a zip: if its end is
	 * missing, it is a damaged one (422), not another format (415). */
	if (in->size >= 4) {
		if ((err = ck_input_read(in, head, 4, 0, "zip header")) < 0)
			return err;
		starts_as_zip = head[0] == 'P' && head[1] == 'K' && head[2] == 3 && head[3] == 4;
	}
	missing = starts_as_zip ? CK_ECORRUPT : CK_EFORMAT;

	if (in->size < 22)
		return ck_error(missing, "zip: file of %llu bytes is too short for a zip%s",
				(unsigned long long)in->size,
				starts_as_zip ? ": it is truncated" : "");
	tlen = in->size < 22 + 65535 ? (size_t)in->size : 22 + 65535;
	tail = fmt_alloc(m, FMT_PARSE, 1, tlen, "zip end of file");
	if (!tail)
		return m->err;
	if ((err = ck_input_read(in, tail, tlen, in->size - tlen, "zip end of file")) < 0)
		goto out;
	err = ck_error(missing,
		       "zip: no end of central directory record in the last %zu "
		       "bytes: %s",
		       tlen, starts_as_zip ? "the file is truncated or damaged" : "not a zip file");
	for (size_t i = tlen - 22 + 1; i-- > 0;) {
		if (le32(tail + i) != SIG_EOCD)
			continue;
		if (le16(tail + i + 20) > tlen - 22 - i)
			continue; /* its comment would run past the end */
		*eocd_off = in->size - tlen + i;
		memcpy(rec, tail + i, 22);
		err = 0;
		break;
	}
out:
	fmt_free(m, FMT_PARSE, tail, tlen);
	return err;
}

/* Applies a zip64 extra field found in extra[0..len) to e. */
static int apply_zip64_extra(struct zip_entry *e, const uint8_t *extra, size_t len, int need_u,
			     int need_c, int need_o, uint64_t at)
{
	size_t p = 0;

	while (p + 4 <= len) {
		uint16_t id = le16(extra + p), sz = le16(extra + p + 2);
		size_t q = p + 4;

		if (sz > len - q)
			return ck_error(
			    CK_ECORRUPT,
			    "zip: extra field of central entry at offset %llu runs past "
			    "its end",
			    (unsigned long long)at);
		if (id == 1) {
			size_t need = 8 * (size_t)(need_u + need_c + need_o);

			if (sz < need)
				return ck_error(CK_ECORRUPT,
						"zip: zip64 extra field of central entry at offset "
						"%llu is too short (%u bytes, need %zu)",
						(unsigned long long)at, sz, need);
			if (need_u)
				e->uncomp_size = le64(extra + q), q += 8;
			if (need_c)
				e->comp_size = le64(extra + q), q += 8;
			if (need_o)
				e->local_off = le64(extra + q), q += 8;
			return 0;
		}
		p = q + sz;
	}
	return ck_error(CK_ECORRUPT,
			"zip: central entry at offset %llu needs a zip64 extra field and has none",
			(unsigned long long)at);
}

static int cmp_name_idx_ctx(const struct zip_entry *es, size_t a, size_t b)
{
	const struct zip_entry *x = &es[a], *y = &es[b];
	size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
	int c = memcmp(x->name, y->name, n);

	if (c)
		return c;
	return x->name_len < y->name_len ? -1 : x->name_len > y->name_len;
}

/* qsort has no context argument in C11; the reader sorts one table at a
 * time through this thread-local pointer. */
static _Thread_local const struct zip_entry *sort_entries;

static int cmp_by_name(const void *a, const void *b)
{
	return cmp_name_idx_ctx(sort_entries, *(const size_t *)a, *(const size_t *)b);
}

static int cmp_by_off(const void *a, const void *b)
{
	uint64_t x = sort_entries[*(const size_t *)a].local_off;
	uint64_t y = sort_entries[*(const size_t *)b].local_off;

	return x < y ? -1 : x > y;
}

/* Reads the local header of e, checks it and sets e->data_off. */
static int read_local(struct zip_entry *e, const struct ck_input *in, uint64_t limit, uint8_t *name)
{
	uint8_t h[30];
	int err;

	if (e->local_off > limit || limit - e->local_off < 30)
		return ck_error(CK_ECORRUPT,
				"zip: local header of %s at offset %llu is not before the central "
				"directory (offset %llu)",
				e->name, (unsigned long long)e->local_off,
				(unsigned long long)limit);
	if ((err = ck_input_read(in, h, 30, e->local_off, "zip local header")) < 0)
		return err;
	if (le32(h) != SIG_LOCAL)
		return ck_error(CK_ECORRUPT, "zip: no local header signature for %s at offset %llu",
				e->name, (unsigned long long)e->local_off);
	if (le16(h + 26) != e->name_len)
		return ck_error(CK_ECORRUPT,
				"zip: local header of %s at offset %llu names %u bytes, the "
				"central directory %zu",
				e->name, (unsigned long long)e->local_off, le16(h + 26),
				e->name_len);
	e->data_off = e->local_off + 30 + le16(h + 26) + le16(h + 28);
	if (e->data_off > limit || e->comp_size > limit - e->data_off)
		return ck_error(CK_ECORRUPT,
				"zip: data of %s (offset %llu, %llu bytes) runs past the central "
				"directory at offset %llu",
				e->name, (unsigned long long)e->data_off,
				(unsigned long long)e->comp_size, (unsigned long long)limit);
	err = ck_input_read(in, name, e->name_len, e->local_off + 30, "zip local header name");
	if (!err && memcmp(name, e->name, e->name_len) != 0)
		err = ck_error(CK_ECORRUPT,
			       "zip: local header at offset %llu names another record than "
			       "the central directory's %s",
			       (unsigned long long)e->local_off, e->name);
	return err;
}

int zip_reader_open(struct zip_reader **out, const struct ck_input *in, uint64_t max_records,
		    struct fmt_meter *m)
{
	struct zip_reader *z = NULL;
	uint8_t eocd[22] = {0}, *var = NULL;
	uint64_t eocd_off = 0, count, cd_off, cd_size, cd_limit, p;
	size_t *by_off = NULL;
	int err;

	*out = NULL;
	if ((err = find_eocd(&eocd_off, eocd, in, m)) < 0)
		return err;
	if (le16(eocd + 4) != 0 || le16(eocd + 6) != 0)
		return ck_error(CK_EFORMAT, "zip: multi-disk archives are not supported");
	count = le16(eocd + 10);
	cd_size = le32(eocd + 12);
	cd_off = le32(eocd + 16);
	cd_limit = eocd_off;
	if (eocd_off >= 20) {
		uint8_t loc[20], e64[56];

		if ((err = ck_input_read(in, loc, 20, eocd_off - 20, "zip64 end locator")) < 0)
			return err;
		if (le32(loc) == SIG_LOC64) {
			uint64_t off64 = le64(loc + 8);

			if (off64 > eocd_off - 20 || eocd_off - 20 - off64 < 56)
				return ck_error(
				    CK_ECORRUPT,
				    "zip: zip64 end record offset %llu (from the locator "
				    "at %llu) is not before the locator",
				    (unsigned long long)off64, (unsigned long long)(eocd_off - 20));
			if ((err = ck_input_read(in, e64, 56, off64, "zip64 end record")) < 0)
				return err;
			if (le32(e64) != SIG_EOCD64)
				return ck_error(CK_ECORRUPT,
						"zip: no zip64 end record signature at offset %llu",
						(unsigned long long)off64);
			if (le32(e64 + 16) != 0 || le32(e64 + 20) != 0)
				return ck_error(CK_EFORMAT,
						"zip: multi-disk archives are not supported");
			/* the 32-bit fields must agree with zip64's unless saturated:
			 * two readers must never see two different directories */
			if ((count != 0xffff && count != le64(e64 + 32)) ||
			    (cd_size != 0xffffffffu && cd_size != le64(e64 + 40)) ||
			    (cd_off != 0xffffffffu && cd_off != le64(e64 + 48)))
				return ck_error(
				    CK_ECORRUPT,
				    "zip: the end record at offset %llu and the zip64 end "
				    "record at offset %llu disagree on the central directory",
				    (unsigned long long)eocd_off, (unsigned long long)off64);
			count = le64(e64 + 32);
			cd_size = le64(e64 + 40);
			cd_off = le64(e64 + 48);
			cd_limit = off64;
		}
	}
	if (cd_off > cd_limit || cd_size > cd_limit - cd_off)
		return ck_error(
		    CK_ECORRUPT,
		    "zip: central directory (offset %llu, %llu bytes) runs past the end "
		    "records at offset %llu (file of %llu bytes)",
		    (unsigned long long)cd_off, (unsigned long long)cd_size,
		    (unsigned long long)cd_limit, (unsigned long long)in->size);
	if (count > max_records)
		return ck_error(CK_ETOOBIG, "zip: %llu records, over the limit of %llu",
				(unsigned long long)count, (unsigned long long)max_records);
	if (count > cd_size / 46)
		return ck_error(CK_ECORRUPT,
				"zip: %llu records cannot fit a central directory of %llu bytes",
				(unsigned long long)count, (unsigned long long)cd_size);

	/* count <= cd_size / 46 and max_records: the tables are charged whole
	 * before they are allocated */
	if (!(z = fmt_alloc(m, FMT_PARSE, 1, sizeof(*z), "zip central directory")))
		return m->err;
	z->meter = m;
	z->in = in;
	z->cd_off = cd_off;
	z->cd_size = cd_size;
	z->cap = count ? (size_t)count : 1;
	if (!(z->entries =
		  fmt_alloc(m, FMT_PARSE, z->cap, sizeof(*z->entries), "zip central directory")) ||
	    !(z->by_name =
		  fmt_alloc(m, FMT_PARSE, z->cap, sizeof(size_t), "zip central directory")) ||
	    !(by_off = fmt_alloc(m, FMT_PARSE, z->cap, sizeof(size_t), "zip central directory")) ||
	    !(var = fmt_alloc(m, FMT_PARSE, 1, VAR_BYTES, "zip central directory"))) {
		err = m->err;
		goto out;
	}

	p = cd_off;
	for (uint64_t i = 0; i < count; i++) {
		struct zip_entry *e = &z->entries[i];
		uint8_t h[46];
		size_t nl, xl, cl;
		char *name;

		if (cd_off + cd_size - p < 46) {
			err = ck_error(CK_ECORRUPT,
				       "zip: central entry %llu at offset %llu runs past the "
				       "central directory's end",
				       (unsigned long long)i, (unsigned long long)p);
			goto out;
		}
		if ((err = ck_input_read(in, h, 46, p, "zip central directory entry")) < 0)
			goto out;
		if (le32(h) != SIG_CENTRAL) {
			err = ck_error(CK_ECORRUPT,
				       "zip: no central directory entry signature at offset %llu",
				       (unsigned long long)p);
			goto out;
		}
		nl = le16(h + 28);
		xl = le16(h + 30);
		cl = le16(h + 32);
		if (cd_off + cd_size - p - 46 < nl + xl + cl) {
			err = ck_error(CK_ECORRUPT,
				       "zip: central entry at offset %llu runs past the central "
				       "directory's end",
				       (unsigned long long)p);
			goto out;
		}
		if ((err = ck_input_read(in, var, nl + xl, p + 46, "zip central entry name")) < 0)
			goto out;
		if (nl == 0 || memchr(var, 0, nl)) {
			err = ck_error(CK_ECORRUPT,
				       "zip: central entry at offset %llu has an empty name or "
				       "one holding NUL",
				       (unsigned long long)p);
			goto out;
		}
		if (!(name =
			  fmt_strndup(m, FMT_PARSE, (const char *)var, nl, "zip record names"))) {
			err = m->err;
			goto out;
		}
		e->name = name;
		z->n = i + 1;
		e->name_len = nl;
		e->flags = le16(h + 8);
		e->method = le16(h + 10);
		e->crc = le32(h + 16);
		e->comp_size = le32(h + 20);
		e->uncomp_size = le32(h + 24);
		e->local_off = le32(h + 42);
		if (e->flags & 1) {
			err = ck_error(CK_EFORMAT, "zip: record %s is encrypted", name);
			goto out;
		}
		if (le16(h + 34) != 0 && le16(h + 34) != 0xffff) {
			err = ck_error(CK_EFORMAT, "zip: record %s is on another disk", name);
			goto out;
		}
		{
			int nu = e->uncomp_size == 0xffffffffu, nc = e->comp_size == 0xffffffffu,
			    no = e->local_off == 0xffffffffu;

			if ((nu || nc || no) &&
			    (err = apply_zip64_extra(e, var + nl, xl, nu, nc, no, p)) < 0)
				goto out;
		}
		if (e->method == ZIP_METHOD_STORED && e->comp_size != e->uncomp_size) {
			err = ck_error(CK_ECORRUPT,
				       "zip: stored record %s declares %llu bytes compressed and "
				       "%llu uncompressed",
				       name, (unsigned long long)e->comp_size,
				       (unsigned long long)e->uncomp_size);
			goto out;
		}
		/* var's name, extra and comment have been used: it takes the
		 * local header's name */
		if ((err = read_local(e, in, cd_off, var)) < 0)
			goto out;
		z->by_name[i] = i;
		by_off[i] = i;
		p += 46 + nl + xl + cl;
	}

	sort_entries = z->entries;
	qsort(z->by_name, z->n, sizeof(size_t), cmp_by_name);
	qsort(by_off, z->n, sizeof(size_t), cmp_by_off);
	for (size_t i = 1; i < z->n; i++) {
		const struct zip_entry *a = &z->entries[z->by_name[i - 1]];
		const struct zip_entry *b = &z->entries[z->by_name[i]];
		if (a->name_len == b->name_len && !memcmp(a->name, b->name, a->name_len)) {
			err = ck_error(CK_ECORRUPT, "zip: two records named %s", a->name);
			goto out;
		}
	}
	for (size_t i = 1; i < z->n; i++) {
		const struct zip_entry *a = &z->entries[by_off[i - 1]];
		const struct zip_entry *b = &z->entries[by_off[i]];
		if (a->data_off + a->comp_size > b->local_off) {
			err = ck_error(CK_ECORRUPT,
				       "zip: record %s (data at offset %llu, %llu bytes) overlaps "
				       "record %s at offset %llu",
				       a->name, (unsigned long long)a->data_off,
				       (unsigned long long)a->comp_size, b->name,
				       (unsigned long long)b->local_off);
			goto out;
		}
	}
	*out = z;
	z = NULL;
	err = 0;
out:
	fmt_free(m, FMT_PARSE, var, VAR_BYTES);
	if (z)
		fmt_free(m, FMT_PARSE, by_off, z->cap * sizeof(size_t));
	zip_reader_free(z);
	return err;
}

const struct zip_entry *zip_entry_find(const struct zip_reader *z, const char *name)
{
	size_t lo = 0, hi = z->n, len = strlen(name);

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct zip_entry *e = &z->entries[z->by_name[mid]];
		size_t n = e->name_len < len ? e->name_len : len;
		int c = memcmp(e->name, name, n);

		if (!c)
			c = e->name_len < len ? -1 : e->name_len > len;
		if (!c)
			return e;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static int inflate_raw(uint8_t *dst, size_t dlen, const uint8_t *src, size_t slen,
		       const struct zip_entry *e)
{
	z_stream s;
	int r;

	memset(&s, 0, sizeof(s));
	if (inflateInit2(&s, -MAX_WBITS) != Z_OK)
		return ck_error(CK_ENOMEM, "zip: inflateInit failed");
	s.next_in = (Bytef *)src;
	s.avail_in = (uInt)slen;
	s.next_out = dst;
	s.avail_out = (uInt)dlen;
	r = inflate(&s, Z_FINISH);
	inflateEnd(&s);
	if (r != Z_STREAM_END || s.total_out != dlen)
		return ck_error(CK_ECORRUPT,
				"zip: deflated record %s at offset %llu does not inflate to its "
				"declared %zu bytes",
				e->name, (unsigned long long)e->data_off, dlen);
	return 0;
}

int zip_entry_read(uint8_t **out, size_t *len, const struct zip_reader *z,
		   const struct zip_entry *e, uint64_t max_bytes)
{
	uint8_t *buf = NULL, *src = NULL;
	char what[300];
	int err;

	*out = NULL;
	*len = 0;
	if (e->method != ZIP_METHOD_STORED && e->method != ZIP_METHOD_DEFLATED)
		return ck_error(CK_EFORMAT, "zip: record %s uses compression method %u", e->name,
				e->method);
	if (e->uncomp_size > max_bytes || e->uncomp_size > (uint64_t)UINT32_MAX ||
	    (e->method == ZIP_METHOD_DEFLATED && e->comp_size > (uint64_t)UINT32_MAX))
		return ck_error(CK_ETOOBIG,
				"zip: record %s holds %llu bytes, over the limit of %llu", e->name,
				(unsigned long long)e->uncomp_size, (unsigned long long)max_bytes);
	snprintf(what, sizeof(what), "zip: record %s", e->name);
	if (!(buf = fmt_alloc(z->meter, FMT_PARSE, 1, (size_t)e->uncomp_size + 1, what)))
		return z->meter->err;
	if (e->method == ZIP_METHOD_STORED) {
		err = ck_input_read(z->in, buf, (size_t)e->uncomp_size, e->data_off, e->name);
	} else {
		src = fmt_alloc(z->meter, FMT_PARSE, 1, (size_t)e->comp_size, what);
		if (!src) {
			err = z->meter->err;
			goto out;
		}
		err = ck_input_read(z->in, src, (size_t)e->comp_size, e->data_off, e->name);
		if (!err)
			err =
			    inflate_raw(buf, (size_t)e->uncomp_size, src, (size_t)e->comp_size, e);
	}
	if (err < 0)
		goto out;
	if (e->crc != 0 && crc32_update(0, buf, (size_t)e->uncomp_size) != e->crc) {
		err = ck_error(CK_ECORRUPT, "zip: CRC-32 mismatch in record %s at offset %llu",
			       e->name, (unsigned long long)e->data_off);
		goto out;
	}
	buf[e->uncomp_size] = '\0';
	*out = buf;
	*len = (size_t)e->uncomp_size;
	buf = NULL;
out:
	fmt_free(z->meter, FMT_PARSE, src, (size_t)e->comp_size);
	fmt_free(z->meter, FMT_PARSE, buf, (size_t)e->uncomp_size + 1);
	return err;
}

void zip_entry_buf_free(const struct zip_reader *z, uint8_t *buf, size_t len)
{
	fmt_free(z->meter, FMT_PARSE, buf, len + 1);
}
