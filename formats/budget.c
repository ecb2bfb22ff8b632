/*
 * budget.c: the parsers' memory budget and regions (see budget.h).
 *
 * A charge first checks the meter's own cap, then adds to the shared counter
 * and takes it back if the sum went over the total: two uploads racing for
 * the last bytes may both be refused, never both admitted.
 *
 * A region is a doubly linked list of chunks, each one mapping (or, under
 * AddressSanitizer, one malloc block) that starts with struct fmt_chunk:
 *   big chunk    one allocation of BIG_BYTES or more, right after the header
 *   small chunk  SMALL_CHUNK bytes, cut front to back into allocations of
 *                less than BIG_BYTES (16-byte multiples); `used` says how far
 * Which kind an allocation is follows from its size alone, so fmt_free and
 * fmt_grow, which are given the size, find a big allocation's chunk just
 * before it. Fresh mappings are zero, and small chunks never hand out a byte
 * twice, so every allocation starts zeroed.
 */
#include "budget.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "../common/err.h"

#if defined(__SANITIZE_ADDRESS__)
#define REGION_MALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define REGION_MALLOC 1
#endif
#endif

#define MIB(n)	    ((unsigned long long)((n) >> 20))
#define BIG_BYTES   ((size_t)64 << 10)
#define SMALL_CHUNK ((size_t)256 << 10)
#define PAGE	    ((size_t)4096)

struct fmt_chunk {
	struct fmt_chunk *prev, *next;
	size_t bytes; /* mapped (or malloc'ed), header included: what is charged */
	size_t used;  /* small chunk: bytes handed out after the header */
	_Alignas(16) unsigned char data[];
};

#define HDR offsetof(struct fmt_chunk, data)

static struct fmt_budget process_budget = {0, 0, FMT_BUDGET_PER_UPLOAD, FMT_BUDGET_TOTAL};

/* ---- the budget ---- */

void fmt_budget_init(struct fmt_budget *b, uint64_t per_upload, uint64_t total)
{
	atomic_init(&b->used, 0);
	atomic_init(&b->peak, 0);
	b->per_upload = per_upload;
	b->total = total;
}

struct fmt_budget *fmt_budget_process(void)
{
	return &process_budget;
}

uint64_t fmt_budget_used(const struct fmt_budget *b)
{
	return atomic_load(&((struct fmt_budget *)b)->used);
}

uint64_t fmt_budget_peak(const struct fmt_budget *b)
{
	return atomic_load(&((struct fmt_budget *)b)->peak);
}

static void budget_release(struct fmt_budget *b, uint64_t n)
{
	if (n)
		atomic_fetch_sub(&b->used, n);
}

/* ---- the meter ---- */

void fmt_meter_begin(struct fmt_meter *m, struct fmt_budget *b)
{
	memset(m, 0, sizeof(*m));
	m->budget = b ? b : &process_budget;
}

int fmt_meter_charge(struct fmt_meter *m, uint64_t n, const char *what)
{
	struct fmt_budget *b = m->budget;
	uint64_t now, peak;

	if (n > b->per_upload || m->used > b->per_upload - n)
		return m->err = ck_error(
			   CK_ETOOBIG,
			   "%s: the upload needs more than the %llu MiB of parser memory one "
			   "upload may use (per-upload memory budget; %llu MiB held, %llu more "
			   "bytes asked)",
			   what, MIB(b->per_upload), MIB(m->used), (unsigned long long)n);
	now = atomic_fetch_add(&b->used, n) + n;
	if (now > b->total || now < n) {
		atomic_fetch_sub(&b->used, n);
		return m->err = ck_error(
			   CK_ETOOBIG,
			   "%s: the server's parser memory budget of %llu MiB, shared by every "
			   "upload being parsed, is in use (%llu MiB of it by this upload); retry "
			   "when fewer uploads are in flight",
			   what, MIB(b->total), MIB(m->used));
	}
	peak = atomic_load(&b->peak);
	while (now > peak && !atomic_compare_exchange_weak(&b->peak, &peak, now))
		;
	m->used += n;
	if (m->used > m->peak)
		m->peak = m->used;
	return 0;
}

void fmt_meter_release(struct fmt_meter *m, uint64_t n)
{
	if (n > m->used)
		n = m->used; /* never give back more than was taken */
	m->used -= n;
	budget_release(m->budget, n);
}

/* ---- chunks: mappings, or malloc blocks under AddressSanitizer ---- */

#ifdef REGION_MALLOC
static int is_big(size_t n)
{
	(void)n;
	return 1; /* every allocation is a block of its own, for ASan */
}

static size_t chunk_bytes(size_t data)
{
	return HDR + data;
}

static struct fmt_chunk *chunk_map(size_t bytes)
{
	return calloc(1, bytes);
}

static void chunk_unmap(struct fmt_chunk *c)
{
	free(c);
}

static struct fmt_chunk *chunk_remap(struct fmt_chunk *c, size_t bytes)
{
	return realloc(c, bytes);
}
#else
static int is_big(size_t n)
{
	return n >= BIG_BYTES;
}

/* a mapping's size for data bytes after the header; SIZE_MAX on overflow */
static size_t chunk_bytes(size_t data)
{
	if (data > SIZE_MAX - HDR - PAGE)
		return SIZE_MAX;
	return (HDR + data + PAGE - 1) & ~(PAGE - 1);
}

static struct fmt_chunk *chunk_map(size_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

static void chunk_unmap(struct fmt_chunk *c)
{
	munmap(c, c->bytes);
}

static struct fmt_chunk *chunk_remap(struct fmt_chunk *c, size_t bytes)
{
	void *p = mremap(c, c->bytes, bytes, MREMAP_MAYMOVE);

	return p == MAP_FAILED ? NULL : p;
}
#endif

static void link_chunk(struct fmt_region *r, struct fmt_chunk *c)
{
	c->prev = NULL;
	c->next = r->chunks;
	if (r->chunks)
		r->chunks->prev = c;
	r->chunks = c;
	r->bytes += c->bytes;
}

static void unlink_chunk(struct fmt_region *r, struct fmt_chunk *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		r->chunks = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (r->small == c)
		r->small = NULL;
	r->bytes -= c->bytes;
}

/* After c moved to n (chunk_remap), its neighbours point to n. */
static void relink_chunk(struct fmt_region *r, struct fmt_chunk *n)
{
	if (n->prev)
		n->prev->next = n;
	else
		r->chunks = n;
	if (n->next)
		n->next->prev = n;
}

static struct fmt_region *region_of(struct fmt_meter *m, enum fmt_life life)
{
	return life == FMT_RESULT ? &m->result : &m->parse;
}

static struct fmt_chunk *new_chunk(struct fmt_meter *m, struct fmt_region *r, size_t data,
				   const char *what)
{
	size_t bytes = chunk_bytes(data);
	struct fmt_chunk *c;

	if (bytes == SIZE_MAX) {
		m->err = ck_error(CK_ETOOBIG, "%s: %zu bytes", what, data);
		return NULL;
	}
	if (fmt_meter_charge(m, bytes, what) < 0)
		return NULL;
	if (!(c = chunk_map(bytes))) {
		fmt_meter_release(m, bytes);
		m->err = ck_error(CK_ENOMEM, "%s: out of memory (%zu bytes)", what, bytes);
		return NULL;
	}
	c->bytes = bytes;
	c->used = data;
	link_chunk(r, c);
	return c;
}

static void free_chunk(struct fmt_meter *m, struct fmt_region *r, struct fmt_chunk *c)
{
	size_t bytes = c->bytes;

	unlink_chunk(r, c);
	chunk_unmap(c);
	fmt_meter_release(m, bytes);
}

static struct fmt_chunk *chunk_of(void *p)
{
	return (struct fmt_chunk *)((unsigned char *)p - HDR);
}

static size_t round16(size_t n)
{
	return n ? (n + 15) & ~(size_t)15 : 16;
}

/* ---- regions ---- */

void *fmt_alloc(struct fmt_meter *m, enum fmt_life life, size_t count, size_t size,
		const char *what)
{
	struct fmt_region *r = region_of(m, life);
	struct fmt_chunk *c;
	size_t n, n16;
	void *p;

	if (size && count > SIZE_MAX / size) {
		m->err = ck_error(CK_ETOOBIG, "%s: %zu entries of %zu bytes", what, count, size);
		return NULL;
	}
	n = count * size;
	if (is_big(n))
		return (c = new_chunk(m, r, n, what)) ? c->data : NULL;
	n16 = round16(n);
	c = r->small;
	if (!c || c->bytes - HDR - c->used < n16) {
		if (!(c = new_chunk(m, r, SMALL_CHUNK - HDR, what)))
			return NULL;
		c->used = 0;
		r->small = c;
	}
	p = c->data + c->used;
	c->used += n16;
	return p;
}

void fmt_free(struct fmt_meter *m, enum fmt_life life, void *p, size_t n)
{
	if (p && is_big(n))
		free_chunk(m, region_of(m, life), chunk_of(p));
	/* a small allocation goes with its region */
}

void *fmt_grow(struct fmt_meter *m, enum fmt_life life, void *p, size_t old_n, size_t n,
	       const char *what)
{
	struct fmt_region *r = region_of(m, life);
	struct fmt_chunk *c, *s = r->small;
	void *q;

	if (!p)
		return fmt_alloc(m, life, 1, n, what);
	if (is_big(old_n) && is_big(n)) {
		size_t bytes = chunk_bytes(n), was;

		c = chunk_of(p);
		was = c->bytes;
		if (bytes == SIZE_MAX) {
			m->err = ck_error(CK_ETOOBIG, "%s: %zu bytes", what, n);
			return NULL;
		}
		if (bytes > was && fmt_meter_charge(m, bytes - was, what) < 0)
			return NULL;
		if (!(c = chunk_remap(c, bytes))) {
			if (bytes > was)
				fmt_meter_release(m, bytes - was);
			m->err = ck_error(CK_ENOMEM, "%s: out of memory (%zu bytes)", what, bytes);
			return NULL;
		}
		c->bytes = bytes;
		c->used = n;
		relink_chunk(r, c);
		r->bytes = r->bytes - was + bytes;
		if (bytes < was)
			fmt_meter_release(m, was - bytes);
		if (n > old_n) {
			/* pages added by mremap are zero; the old last page may not be */
			size_t old_room = was - HDR;
#ifdef REGION_MALLOC
			old_room = n;
#endif
			memset(c->data + old_n, 0, (n < old_room ? n : old_room) - old_n);
		}
		return c->data;
	}
	if (!is_big(old_n) && !is_big(n) && s &&
	    (uintptr_t)p + round16(old_n) == (uintptr_t)(s->data + s->used) &&
	    s->used - round16(old_n) + round16(n) <= s->bytes - HDR) {
		/* the last allocation of the small chunk: resized in place; the
		 * bytes it leaves or takes are zeroed, as fresh ones are */
		if (n > old_n)
			memset((unsigned char *)p + old_n, 0, n - old_n);
		else
			memset((unsigned char *)p + n, 0, round16(old_n) - n);
		s->used = s->used - round16(old_n) + round16(n);
		return p;
	}
	if (!(q = fmt_alloc(m, life, 1, n, what)))
		return NULL;
	memcpy(q, p, old_n < n ? old_n : n);
	fmt_free(m, life, p, old_n);
	return q;
}

char *fmt_strndup(struct fmt_meter *m, enum fmt_life life, const char *s, size_t n,
		  const char *what)
{
	char *p;

	if (n == SIZE_MAX) {
		m->err = ck_error(CK_ETOOBIG, "%s: string too long", what);
		return NULL;
	}
	if ((p = fmt_alloc(m, life, 1, n + 1, what)) && n)
		memcpy(p, s, n);
	return p;
}

void fmt_region_release(struct fmt_region *r, struct fmt_budget *b)
{
	struct fmt_chunk *c = r->chunks;
	uint64_t bytes = r->bytes;

	while (c) {
		struct fmt_chunk *next = c->next;
		chunk_unmap(c);
		c = next;
	}
	memset(r, 0, sizeof(*r));
	if (b)
		budget_release(b, bytes);
}

void fmt_meter_hand_over(struct fmt_region *out, struct fmt_meter *m)
{
	*out = m->result;
	memset(&m->result, 0, sizeof(m->result));
	m->used -= out->bytes <= m->used ? out->bytes : m->used;
}

void fmt_meter_end(struct fmt_meter *m)
{
	uint64_t held = m->parse.bytes + m->result.bytes;

	fmt_region_release(&m->parse, NULL);
	fmt_region_release(&m->result, NULL);
	fmt_meter_release(m, held);
	fmt_meter_release(m, m->used); /* charges made outside the regions */
}
