/*
 * items.c: files that hold several torch.save archives one after another,
 * with other bytes between them: torch.distributed.checkpoint's data files
 * (`__R_S.distcp`), where each tensor item is the whole torch.save zip of a
 * chunk, placed back to back with its bytes items (raw).
 *
 * Which bytes are which only the checkpoint's .metadata says, and it is
 * written last. So the file is read on its own: each archive is found from
 * its end record (torch writes records with data descriptors: their headers
 * carry no sizes to walk by), which says where the archive's central
 * directory lies relative to its start; one pass over the file finds every
 * end record, so a file of many false signatures costs linear time. Then
 * torch's reader parses that range as a file of its own. When the upload's
 * scanner (zip_scan.c) saw where record payloads lay, the pass reads only
 * the bytes between them (fmt_read_items_past): the bytes of one archive's
 * record are never the end of another, so nothing real is passed over, and
 * a false archive inside a tensor's bytes cannot stand in for the real one
 * around it. Whatever is found
 * is only where tensor bytes lie (to store them as blobs, deduplicated
 * across ranks and epochs); the file itself is always kept byte for byte,
 * so a signature that starts no archive costs a failed parse, never a
 * byte.
 */
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "checkpoint.h"
#include "le.h"
#include "sig.h"

#define SIG_LOCAL   0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_Z64_END 0x06064b50u
#define SIG_Z64_LOC 0x07064b50u

/* The next offset from `from` where the 4-byte signature sig stands, or
 * in->size when none does; none is looked for inside the spans of skip
 * (from *k on: those that end by `from` are passed, *k moves on). */
static int next_signature(uint64_t *at, const struct ck_input *in, uint64_t from,
			  const uint8_t sig[4], const struct fmt_span *skip, size_t nskip,
			  size_t *k)
{
	enum { CHUNK = 1 << 16 };
	uint8_t *buf = malloc(CHUNK);
	int err = 0;

	if (!buf)
		return ck_error(CK_ENOMEM, "out of memory");
	*at = in->size;
	while (from + 4 <= in->size) {
		while (*k < nskip && skip[*k].off + skip[*k].len <= from)
			(*k)++;
		if (*k < nskip && skip[*k].off <= from) {
			from = skip[*k].off + skip[*k].len;
			continue;
		}
		/* the bytes up to the next span (a signature never runs into one) */
		uint64_t gap = *k < nskip && skip[*k].off < in->size ? skip[*k].off : in->size;
		if (from + 4 > gap) {
			from = gap;
			continue;
		}
		size_t n = gap - from < CHUNK ? (size_t)(gap - from) : CHUNK;
		if ((err = ck_input_read(in, buf, n, from, "data")) < 0)
			break;
		const uint8_t *hit = sig_find(buf, n, sig);
		if (hit) {
			*at = from + (uint64_t)(hit - buf);
			break;
		}
		if (from + n == gap) {
			from = gap;
			continue;
		}
		from += n - 3; /* a signature across the chunks' border */
	}
	free(buf);
	return err;
}

/* The archive an end record at e closes, if any: *start and *end (the byte
 * after its comment). An end record says where its central directory lies
 * relative to the archive's start, and the directory ends where the end
 * records begin, so e alone gives the start: e - (cd_off + cd_size), or,
 * when a zip64 locator precedes it (torch writes one even for small
 * files), the zip64 end record just before the locator minus the offset
 * the locator gives for it. The start must hold a local header's
 * signature and cd_off a central header's. */
static int end_locate(uint64_t *start, uint64_t *end, const struct ck_input *in, uint64_t e)
{
	uint8_t h[56];
	uint64_t cd_off, cd_size, cd_end;

	if (ck_input_read(in, h, 22, e, "zip end record") < 0)
		return 0;
	cd_size = le32(h + 12);
	cd_off = le32(h + 16);
	*end = e + 22 + le16(h + 20);
	if (*end > in->size)
		return 0;
	if (e >= 76 && ck_input_read(in, h, 20, e - 20, "zip64 locator") == 0 &&
	    le32(h) == SIG_Z64_LOC) {
		uint64_t z = le64(h + 8), zpos = e - 76;
		if (z > zpos || ck_input_read(in, h, 56, zpos, "zip64 end record") < 0 ||
		    le32(h) != SIG_Z64_END || le64(h + 4) != 44)
			return 0;
		*start = zpos - z;
		cd_size = le64(h + 40);
		cd_off = le64(h + 48);
		cd_end = z;
	} else {
		if (cd_off > e || cd_size > e - cd_off)
			return 0;
		*start = e - cd_off - cd_size;
		cd_end = e - *start;
	}
	if (cd_off > cd_end || cd_size != cd_end - cd_off)
		return 0;
	if (ck_input_read(in, h, 4, *start, "zip local header") < 0 || le32(h) != SIG_LOCAL)
		return 0;
	return cd_size == 0 ||
	       (ck_input_read(in, h, 4, *start + cd_off, "zip central header") == 0 &&
		le32(h) == SIG_CENTRAL);
}

void fmt_items_free(struct fmt_item *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		fmt_ckpt_free(v[i].ck);
	free(v);
}

int fmt_read_items(struct fmt_item **out, size_t *nout, const struct ck_input *in,
		   const struct fmt_limits *lim)
{
	return fmt_read_items_past(out, nout, in, lim, NULL, 0);
}

int fmt_read_items_past(struct fmt_item **out, size_t *nout, const struct ck_input *in,
			const struct fmt_limits *lim, const struct fmt_span *skip, size_t nskip)
{
	static const uint8_t end_sig[4] = {'P', 'K', 5, 6};
	struct fmt_limits def;
	struct fmt_item *v = NULL;
	size_t n = 0, cap = 0;
	uint64_t pos = 0, done = 0;
	size_t k = 0;
	int err = 0;

	if (!lim) {
		fmt_limits_default(&def);
		lim = &def;
	}
	*out = NULL;
	*nout = 0;
	/* one pass over the end records: each names its archive's start */
	while (pos + 22 <= in->size) {
		uint64_t e = 0, start = 0, end = 0;
		struct fmt_ckpt *ck = NULL;
		if ((err = next_signature(&e, in, pos, end_sig, skip, nskip, &k)) < 0 ||
		    e + 22 > in->size)
			break;
		pos = e + 1;
		if (!end_locate(&start, &end, in, e) || start < done)
			continue; /* no archive, or inside the last one found */
		struct ck_input sub = {in->mem,		 in->fd,  end - start,
				       in->base + start, in->ext, in->next};
		err = torch_zip_read(&ck, &sub, lim);
		if (err == CK_ECORRUPT || err == CK_EFORMAT) { /* no archive after all */
			ck_error_clear();
			err = 0;
			continue;
		}
		if (err < 0)
			break;
		if (n == cap) {
			size_t nc = cap ? 2 * cap : 16;
			struct fmt_item *nv =
			    n >= lim->max_records ? NULL : realloc(v, nc * sizeof(*v));
			if (!nv) {
				fmt_ckpt_free(ck);
				err =
				    n >= lim->max_records
					? ck_error(CK_ETOOBIG,
						   "more than %llu torch.save archives in one file",
						   (unsigned long long)lim->max_records)
					: ck_error(CK_ENOMEM, "out of memory");
				break;
			}
			v = nv;
			cap = nc;
		}
		v[n++] = (struct fmt_item){start, end - start, ck};
		done = pos = end;
	}
	if (err < 0) {
		fmt_items_free(v, n);
		return err;
	}
	*out = v;
	*nout = n;
	return 0;
}
