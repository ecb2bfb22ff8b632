/*
 * budget.h: how much memory the parsers may take, per upload and in all.
 *
 * Why: an upload is small on the wire but may be large once parsed (a
 * data.pkl of 30 M empty lists, a safetensors header of 6 M metadata keys,
 * 200,000 empty tensors). Limits on counts (records, opcodes, tensors) and
 * caps proportional to the input do not bound that; the parsers take their
 * memory from an absolute budget, and refuse with CK_ETOOBIG before taking
 * memory that would go over it.
 *
 * Decision: one struct fmt_budget per process (fmt_budget_process(), which
 * fmt_limits_default puts in struct fmt_limits), holding an atomic count of
 * the bytes held by every upload being parsed and by every parsed checkpoint
 * (struct fmt_ckpt) not yet freed, with two caps:
 *   - per upload, FMT_BUDGET_PER_UPLOAD (40 MiB): what one parse may hold at
 *     once (input buffers, zip directory, pickle graph, JSON tree, result);
 *   - in all, FMT_BUDGET_TOTAL (80 MiB): the sum over concurrent uploads.
 * SPEC 7 asks for a peak RSS under 64 MB during one upload and under 128 MB
 * during four, hostile files included: the parsers cannot have all of it (64
 * MiB per upload and four times that in all would let four hostile uploads
 * hold 256 MiB), so the caps leave the rest to the daemon itself (about 12 MB
 * idle, plus HTTP, hashing and SQLite per upload). A realistic checkpoint
 * takes far less: 10,000 tensors 12 to 16 MB, 20,000 (a model with its Adam
 * state) about 23 MB. A refusal by the process-wide cap is also CK_ETOOBIG (413),
 * its message saying that the budget is shared and that a retry may pass:
 * the parsers never wait for memory, so an upload cannot hold part of the
 * budget while it waits for the rest.
 *
 * Where the memory comes from: each parse has a struct fmt_meter (on the
 * parser's stack) with two regions, one for the parse's own memory and one
 * for the checkpoint it returns. A region maps its memory from the system
 * (mmap): allocations of 64 KiB and more get a mapping of their own, given
 * back when freed or resized (mremap); smaller ones are cut from 256 KiB
 * chunks and given back with the region. A region's memory is charged when
 * it is mapped and released when it is unmapped, so the budget counts pages
 * the process really holds, and they leave the resident set as soon as the
 * parse (or the checkpoint) ends: malloc would keep them in the thread's
 * arena (glibc trims a thread's heap only past M_TRIM_THRESHOLD, which the
 * daemon sets to 64 MiB), and four threads that each parsed one hostile
 * file would keep four budgets resident. Under AddressSanitizer (the fuzzers,
 * make sanitize) every allocation is a malloc of its own instead, so that
 * ASan sees each one's bounds.
 */
#ifndef CK_BUDGET_H
#define CK_BUDGET_H

#include <stddef.h>
#include <stdint.h>

#define FMT_BUDGET_PER_UPLOAD ((uint64_t)40 << 20)
#define FMT_BUDGET_TOTAL      ((uint64_t)80 << 20)

/* The fields are private: use the functions. Lock-free, shared by threads. */
struct fmt_budget {
	_Atomic uint64_t used; /* bytes held now, all uploads */
	_Atomic uint64_t peak; /* highest used seen */
	uint64_t per_upload;   /* cap of one meter */
	uint64_t total;	       /* cap of used */
};

/* A budget with these caps, nothing held (for tests and tools). */
void fmt_budget_init(struct fmt_budget *b, uint64_t per_upload, uint64_t total);

/* The process's budget (FMT_BUDGET_PER_UPLOAD, FMT_BUDGET_TOTAL). Never NULL. */
struct fmt_budget *fmt_budget_process(void);

/* Bytes held now / the most ever held at once. */
uint64_t fmt_budget_used(const struct fmt_budget *b);
uint64_t fmt_budget_peak(const struct fmt_budget *b);

/* Memory mapped for one purpose and given back at once. Private fields. */
struct fmt_chunk;
struct fmt_region {
	struct fmt_chunk *chunks; /* every mapping, most recent first */
	struct fmt_chunk *small;  /* the chunk small allocations are cut from */
	uint64_t bytes;		  /* mapped, all of it charged */
};

/* Gives back every byte of r to the system and its charge to b; r is empty
 * after. Nothing in r may be used after. */
void fmt_region_release(struct fmt_region *r, struct fmt_budget *b);

/* One upload's account. Not thread-safe: one parse, one thread. */
struct fmt_meter {
	struct fmt_budget *budget;
	uint64_t used;		  /* bytes held through this meter */
	uint64_t peak;		  /* highest used */
	int err;		  /* code of the last refusal (CK_ETOOBIG, CK_ENOMEM) */
	struct fmt_region parse;  /* the parse's own memory */
	struct fmt_region result; /* the parsed checkpoint's (fmt_meter_hand_over) */
};

/* Which region an allocation comes from. */
enum fmt_life {
	FMT_PARSE,  /* lives until the parse ends (fmt_meter_end) */
	FMT_RESULT, /* lives as long as the checkpoint the parse returns */
};

/* Starts a meter on b (NULL: the process's budget). */
void fmt_meter_begin(struct fmt_meter *m, struct fmt_budget *b);

/* Charges n bytes for what (named in the message: "pickle object graph").
 * 0, or CK_ETOOBIG when this upload would go over the per-upload cap or all
 * uploads over the total cap (nothing charged then; m->err and the message
 * set, naming the budget that refused). The regions charge through it. */
int fmt_meter_charge(struct fmt_meter *m, uint64_t n, const char *what);

/* Gives back n bytes charged through m (at most m->used). */
void fmt_meter_release(struct fmt_meter *m, uint64_t n);

/* Takes the result region out of m into *out, with its charge: it stays
 * charged to m->budget until fmt_region_release(out, m->budget). */
void fmt_meter_hand_over(struct fmt_region *out, struct fmt_meter *m);

/* Gives back both regions (the result's too, unless handed over) and
 * everything else m holds. */
void fmt_meter_end(struct fmt_meter *m);

/* n bytes from m's region for life, zeroed, aligned for any type. NULL
 * when the budget refuses (CK_ETOOBIG) or the system has no memory
 * (CK_ENOMEM); m->err holds the code and ck_errmsg() the message, which
 * starts with what. */
void *fmt_alloc(struct fmt_meter *m, enum fmt_life life, size_t count, size_t size,
		const char *what);

/* p (from fmt_alloc or fmt_grow with the same life, old_n bytes; NULL with 0)
 * resized to n bytes, the contents kept up to the smaller size and the rest
 * zeroed. On failure NULL, p unchanged. Both sizes count while it copies. */
void *fmt_grow(struct fmt_meter *m, enum fmt_life life, void *p, size_t old_n, size_t n,
	       const char *what);

/* A NUL-terminated copy of s[0..n) from m's region for life. */
char *fmt_strndup(struct fmt_meter *m, enum fmt_life life, const char *s, size_t n,
		  const char *what);

/* Gives p (n bytes, as allocated) back before its region ends: at once for
 * 64 KiB and more, else with the region. Accepts NULL. */
void fmt_free(struct fmt_meter *m, enum fmt_life life, void *p, size_t n);

#endif
