/*
 * zip_scan.c: the streaming record hasher (see zip_scan.h).
 *
 * States: HEAD collects a header's signature, then its fixed part (30 bytes
 * for a local header); NAME collects a local header's name and extra field
 * (to find zip64 sizes); DATA passes the payload through the hasher (stored
 * records of at least min_record bytes) or skips it; DESC skips a data
 * descriptor; SKIP skips the rest of a central directory entry or an end
 * record, after which another archive may begin (DCP's .distcp files are
 * torch.save zips one after another); STOP ignores the rest of the stream.
 *
 * torch writes every record with its sizes only in the data descriptor that
 * follows it (flag bit 3, zeros in the local header). DATA_UNKNOWN follows
 * such a stored record by hashing until it meets a descriptor signature
 * "PK\7\8" whose size fields equal the bytes seen since the payload began:
 * a chance match inside tensor data would also need its two size fields to
 * name its own offset. The few bytes that might start a descriptor wait in
 * carry[] until they are confirmed or released into the hash.
 */
#include "zip_scan.h"

#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "le.h"
#include "sig.h"

enum state { HEAD, NAME, DATA, DATA_UNKNOWN, DESC, SKIP, STOP };

#define SIG_LOCAL   0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_Z64_END 0x06064b50u
#define SIG_Z64_LOC 0x07064b50u
#define SIG_END	    0x06054b50u

/* Record hashes kept at most (56 bytes each: 3.5 MiB): an upload of many
 * records cannot make the cache grow with it; past this the scanner stops. */
#define MAX_SCANNED 65536

struct scanned {
	uint64_t off, len;
	struct hash h;
	uint32_t crc;
};

struct zip_scan {
	enum state st;
	uint64_t pos;	     /* stream offset of the next byte fed */
	uint64_t min_record; /* smaller payloads are not hashed */
	uint8_t head[46];    /* a local or central header, or an end record */
	size_t have;	     /* bytes collected for HEAD / NAME / DESC */
	size_t need;	     /* HEAD: the header's fixed size (4 until the signature) */
	uint8_t *name;	     /* name + extra, collected in NAME */
	size_t name_len;     /* name + extra length */
	uint16_t flags, method;
	uint64_t size; /* payload bytes */
	uint64_t left; /* payload (or descriptor) bytes still to come */
	uint64_t data_off;
	int zip64, hashing;
	struct hasher *hasher;
	uint8_t carry[24]; /* DATA_UNKNOWN: bytes that may start a descriptor */
	size_t carry_len;
	struct scanned *done;
	size_t ndone, cap;
	zip_scan_record_fn on_record;
	void *on_record_arg;
	zip_scan_begin_fn on_begin;
	zip_scan_end_fn on_end;
	void *on_payload_arg;
	/* zip_scan_feed2: the partner takes every byte of the chunk; the
	 * bytes of a hashed payload go into both at once (rec_update) */
	struct hasher *partner;
	const uint8_t *chunk; /* the chunk fed, at stream offset chunk_pos */
	uint64_t chunk_pos;
	uint64_t partner_pos; /* the partner has taken the stream up to here */
	int replay;	      /* > 0: carry bytes fed again, not from the chunk */
};

int zip_scan_new(struct zip_scan **out, uint64_t min_record)
{
	struct zip_scan *s = calloc(1, sizeof(*s));

	if (!s || !(s->hasher = hasher_new())) {
		free(s);
		return ck_error(CK_ENOMEM, "out of memory");
	}
	s->min_record = min_record;
	s->need = 4;
	*out = s;
	return 0;
}

void zip_scan_on_record(struct zip_scan *s, zip_scan_record_fn cb, void *arg)
{
	s->on_record = cb;
	s->on_record_arg = arg;
}

void zip_scan_on_payload(struct zip_scan *s, zip_scan_begin_fn begin, zip_scan_end_fn end,
			 void *arg)
{
	s->on_begin = begin;
	s->on_end = end;
	s->on_payload_arg = arg;
}

int zip_scan_following(const struct zip_scan *s)
{
	return s->st != STOP;
}

void zip_scan_free(struct zip_scan *s)
{
	if (!s)
		return;
	hasher_free(s->hasher);
	free(s->name);
	free(s->done);
	free(s);
}

/* The next header's bytes are collected from here. */
static void to_head(struct zip_scan *s)
{
	s->have = 0;
	s->need = 4;
	s->st = HEAD;
}

/* The fixed part of the header a signature opens: 0 for none the scanner
 * follows. */
static size_t head_size(uint32_t sig)
{
	switch (sig) {
	case SIG_LOCAL: return 30;
	case SIG_CENTRAL: return 46;
	case SIG_Z64_END: return 12; /* then the size it gives */
	case SIG_Z64_LOC: return 20;
	case SIG_END: return 22;
	default: return 0;
	}
}

/* A header's fixed part is complete (or its signature, while need is 4):
 * decide how to follow what comes after it. A central directory and the
 * end records are skipped, so archives written one after another (DCP's
 * .distcp files: a torch.save zip per item) are followed to the last. */
static void head_done(struct zip_scan *s)
{
	const uint8_t *h = s->head;
	uint32_t sig = le32(h);

	if (s->need == 4) {
		if (!(s->need = head_size(sig)))
			s->st = STOP; /* garbage, or bytes between archives */
		return;
	}
	if (sig != SIG_LOCAL) {
		s->left = sig == SIG_CENTRAL ? (uint64_t)le16(h + 28) + le16(h + 30) + le16(h + 32)
			  : sig == SIG_Z64_END ? le64(h + 4)
			  : sig == SIG_END     ? le16(h + 20)
					       : 0;
		s->have = 0;
		s->st = SKIP;
		if (s->left == 0)
			to_head(s);
		return;
	}
	s->flags = le16(h + 6);
	s->method = le16(h + 8);
	s->size = le32(h + 18);
	s->name_len = (size_t)le16(h + 26) + le16(h + 28);
	s->zip64 = 0;
	free(s->name);
	s->name = malloc(s->name_len ? s->name_len : 1);
	if (!s->name) {
		s->st = STOP;
		return;
	}
	s->have = 0;
	s->st = NAME;
}

static void data_done(struct zip_scan *s);

/* Name and extra are complete: find zip64 sizes, start the payload. */
static void name_done(struct zip_scan *s)
{
	size_t nlen = le16(s->head + 26), i = nlen;
	uint32_t csize32 = le32(s->head + 18), usize32 = le32(s->head + 22);

	while (i + 4 <= s->name_len) {
		uint16_t id = le16(s->name + i), len = le16(s->name + i + 2);
		if (i + 4 + len > s->name_len)
			break;
		if (id == 0x0001) {
			const uint8_t *p = s->name + i + 4;
			size_t k = 0;
			s->zip64 = 1;
			/* the zip64 field lists uncompressed then compressed size,
			 * each only when its 32-bit field is 0xFFFFFFFF */
			if (usize32 == 0xFFFFFFFFu && k + 8 <= len)
				k += 8;
			if (csize32 == 0xFFFFFFFFu && k + 8 <= len)
				s->size = le64(p + k);
		}
		i += 4 + (size_t)len;
	}
	if (s->size == 0xFFFFFFFFu) {
		s->st = STOP;
		return;
	}
	if ((s->flags & 8) && s->size == 0) {
		/* the size is only in the data descriptor */
		s->data_off = s->pos;
		s->carry_len = 0;
		s->hashing = s->min_record != ZIP_SCAN_NO_HASH;
		s->st = s->method == 0 ? DATA_UNKNOWN : STOP;
		if (s->st == DATA_UNKNOWN && s->on_begin)
			s->on_begin(s->on_payload_arg, (const char *)s->name, nlen, s->data_off,
				    s->method);
		return;
	}
	s->data_off = s->pos;
	s->left = s->size;
	s->hashing = s->method == 0 && s->size >= s->min_record;
	s->st = DATA;
	s->have = 0;
	if (s->on_begin)
		s->on_begin(s->on_payload_arg, (const char *)s->name, nlen, s->data_off, s->method);
	if (s->left == 0)
		data_done(s);
}

/* n payload bytes at p, the stream's bytes at s->pos, into the record's
 * hash; with a partner (zip_scan_feed2), into the partner too, after it has
 * taken the chunk's bytes before them. */
static void rec_update(struct zip_scan *s, const uint8_t *p, size_t n)
{
	if (!s->partner || s->replay) {
		hasher_update(s->hasher, p, n);
		return;
	}
	hasher_update(s->partner, s->chunk + (s->partner_pos - s->chunk_pos),
		      (size_t)(s->pos - s->partner_pos));
	hasher_update2(s->partner, s->hasher, p, n);
	s->partner_pos = s->pos + n;
}

static void data_done(struct zip_scan *s)
{
	if (s->on_end)
		s->on_end(s->on_payload_arg, s->data_off + s->size);
	if (s->hashing && s->size >= s->min_record) {
		if (s->ndone == MAX_SCANNED) {
			s->st = STOP;
			return;
		}
		if (s->ndone == s->cap) {
			size_t cap = s->cap ? s->cap * 2 : 64;
			struct scanned *d = realloc(s->done, cap * sizeof(*d));
			if (!d) {
				s->st = STOP;
				return;
			}
			s->done = d;
			s->cap = cap;
		}
		struct scanned *d = &s->done[s->ndone++];
		d->off = s->data_off;
		d->len = s->size;
		hasher_final(s->hasher, &d->h, &d->crc);
		if (s->on_record)
			s->on_record(s->on_record_arg, (const char *)s->name, le16(s->head + 26),
				     d->off, d->len, &d->h, d->crc);
	} else if (s->hashing) {
		struct hash h;
		hasher_final(s->hasher, &h, NULL); /* reset for the next record */
	}
	if (s->flags & 8) {
		s->have = 0;
		s->st = DESC;
	} else {
		to_head(s);
	}
}

static const uint8_t desc_sig[4] = {'P', 'K', 7, 8};

static void unknown_feed(struct zip_scan *s, const uint8_t *p, size_t n);

/* carry[] holds bytes that may start a descriptor: confirm, wait, or
 * release its first byte into the hash and look again. */
static void carry_resolve(struct zip_scan *s)
{
	size_t len = s->carry_len, m = len < 4 ? len : 4, need = s->zip64 ? 24 : 16;
	uint64_t payload = s->pos - len - s->data_off;

	if (!memcmp(s->carry, desc_sig, m)) {
		if (len < need)
			return; /* wait for more bytes */
		int sizes_match =
		    s->zip64 ? le64(s->carry + 8) == payload && le64(s->carry + 16) == payload
			     : le32(s->carry + 8) == payload && le32(s->carry + 12) == payload;
		if (sizes_match) {
			s->size = payload;
			s->carry_len = 0;
			s->flags &= (uint16_t)~8u; /* the descriptor is consumed */
			data_done(s);
			return;
		}
	}
	/* not a descriptor: its first byte is payload */
	uint8_t rest[sizeof(s->carry)];
	if (s->hashing)
		hasher_update(s->hasher, s->carry, 1); /* a partner: from its chunk */
	memcpy(rest, s->carry + 1, len - 1);
	s->carry_len = 0;
	s->pos -= len - 1; /* unknown_feed counts them again */
	s->replay++;
	unknown_feed(s, rest, len - 1);
	s->replay--;
}

/* Hashes payload bytes of a record of unknown size, watching for its
 * descriptor. */
static void unknown_feed(struct zip_scan *s, const uint8_t *p, size_t n)
{
	while (n > 0 && s->st == DATA_UNKNOWN) {
		if (s->carry_len > 0) {
			s->carry[s->carry_len++] = *p++;
			n--;
			s->pos++;
			carry_resolve(s);
			continue;
		}
		const uint8_t *q = sig_find(p, n, desc_sig);
		size_t k = 0;
		if (q) {
			k = (size_t)(q - p);
		} else {
			/* the chunk may end inside a signature */
			k = n;
			for (size_t t = 3; t > 0; t--)
				if (n >= t && !memcmp(p + n - t, desc_sig, t)) {
					k = n - t;
					break;
				}
		}
		if (s->hashing)
			rec_update(s, p, k);
		s->pos += k;
		p += k;
		n -= k;
		if (n > 0) { /* a candidate starts here */
			s->carry[s->carry_len++] = *p++;
			n--;
			s->pos++;
			carry_resolve(s);
		}
	}
	if (n > 0 && s->st != DATA_UNKNOWN)
		zip_scan_feed(s, p, n);
}

void zip_scan_feed(struct zip_scan *s, const uint8_t *p, size_t n)
{
	while (n > 0 && s->st != STOP) {
		size_t take = 0;
		switch (s->st) {
		case HEAD:
			take = s->need - s->have < n ? s->need - s->have : n;
			memcpy(s->head + s->have, p, take);
			s->have += take;
			if (s->have == s->need)
				head_done(s);
			break;
		case NAME:
			take = s->name_len - s->have < n ? s->name_len - s->have : n;
			memcpy(s->name + s->have, p, take);
			s->have += take;
			s->pos += take;
			p += take;
			n -= take;
			if (s->have == s->name_len)
				name_done(s);
			continue;
		case DATA:
			take = s->left < n ? (size_t)s->left : n;
			if (s->hashing)
				rec_update(s, p, take);
			s->left -= take;
			if (s->left == 0) {
				s->pos += take;
				p += take;
				n -= take;
				data_done(s);
				continue;
			}
			break;
		case DESC:
			/* signature (optional) + CRC + two sizes (8 bytes each with
			 * zip64): collect 4 bytes to see whether the signature is
			 * there, then skip the rest */
			take = 4 - s->have < n ? 4 - s->have : n;
			memcpy(s->head + s->have, p, take);
			s->have += take;
			if (s->have == 4) {
				size_t rest = s->zip64 ? 16 : 8;
				s->left = le32(s->head) == 0x08074b50u ? 4 + rest : rest;
				s->st = SKIP;
			}
			break;
		case SKIP: /* the rest of a descriptor, central directory entry or end record */
			take = s->left < n ? (size_t)s->left : n;
			s->left -= take;
			if (s->left == 0) {
				s->pos += take;
				p += take;
				n -= take;
				to_head(s);
				continue;
			}
			break;
		case DATA_UNKNOWN: unknown_feed(s, p, n); return;
		case STOP: return;
		}
		s->pos += take;
		p += take;
		n -= take;
	}
}

void zip_scan_feed2(struct zip_scan *s, struct hasher *partner, const uint8_t *p, size_t n)
{
	s->partner = partner;
	s->chunk = p;
	s->chunk_pos = s->partner_pos = s->pos;
	zip_scan_feed(s, p, n);
	size_t taken = (size_t)(s->partner_pos - s->chunk_pos);
	hasher_update(partner, p + taken, n - taken);
	s->partner = NULL;
	s->chunk = NULL;
}

int zip_scan_lookup(const struct zip_scan *s, uint64_t off, uint64_t len, struct hash *h,
		    uint32_t *crc)
{
	/* records arrive in file order: binary search by offset */
	size_t lo = 0, hi = s->ndone;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (s->done[mid].off < off)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < s->ndone && s->done[lo].off == off && s->done[lo].len == len) {
		*h = s->done[lo].h;
		*crc = s->done[lo].crc;
		return 0;
	}
	return CK_ENOTFOUND;
}

size_t zip_scan_count(const struct zip_scan *s)
{
	return s->ndone;
}

void zip_scan_span(const struct zip_scan *s, size_t i, uint64_t *off, uint64_t *len)
{
	*off = s->done[i].off;
	*len = s->done[i].len;
}
