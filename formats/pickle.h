/*
 * pickle.h: Python pickles as a plain object graph, never evaluated.
 *
 * pickle_vm_run executes the opcodes of protocols 0-5 (what torch.save and
 * Python's pickle emit) on a restricted virtual machine: a GLOBAL is only a
 * symbol (module, name), a call (REDUCE, NEWOBJ, NEWOBJ_EX, INST, OBJ) only
 * records the callable and its arguments in an OBJECT node, BUILD attaches
 * the state, and SETITEM(S)/APPEND(S) on such an object fill its dict/list
 * part (an OrderedDict is an OBJECT of collections.OrderedDict whose dict part
 * holds the items). A persistent id becomes a PERSID node. Nothing is imported
 * or called, so any pickle is safe to read.
 *
 * The graph lives in one arena (struct pickle_arena) freed at once: the
 * parse region of a meter of the parsers' memory budget (budget.h). Values may
 * be shared (memo GETs) and even cyclic: walkers bound their depth. The value
 * types and the arena constructors are public so that other modules (a pickle
 * writer) can build and walk graphs without touching this file.
 */
#ifndef CK_PICKLE_H
#define CK_PICKLE_H

#include <stddef.h>
#include <stdint.h>

#include "budget.h"
#include "input.h"

enum pickle_kind {
	PICKLE_NONE = 0,
	PICKLE_BOOL,
	PICKLE_INT,    /* fits int64 */
	PICKLE_BIGINT, /* a long beyond int64: s holds little-endian two's complement */
	PICKLE_FLOAT,
	PICKLE_STR,	  /* unicode, valid UTF-8 in s */
	PICKLE_BYTES,	  /* bytes, bytearray, or a protocol 0-1 STRING */
	PICKLE_TUPLE,	  /* seq */
	PICKLE_LIST,	  /* seq */
	PICKLE_SET,	  /* seq */
	PICKLE_FROZENSET, /* seq */
	PICKLE_DICT,	  /* dict, insertion order, duplicate keys kept */
	PICKLE_GLOBAL,	  /* global: module.name symbol */
	PICKLE_OBJECT,	  /* obj: the result of calling a callable */
	PICKLE_PERSID,	  /* pid: a persistent id (torch: a storage reference) */
};

/* How an OBJECT came to be. */
enum pickle_call {
	PICKLE_CALL_REDUCE = 0, /* callable(*args) */
	PICKLE_CALL_NEWOBJ,	/* cls.__new__(cls, *args[, **kwargs]) */
	PICKLE_CALL_INST,	/* protocol 0-1 INST / OBJ */
};

struct pickle_value;

struct pickle_seq {
	struct pickle_value **items;
	size_t n, cap;
};

struct pickle_dict {
	struct pickle_value **keys, **vals;
	size_t n, cap;
};

struct pickle_value {
	enum pickle_kind kind;
	union {
		int b;	   /* BOOL */
		int64_t i; /* INT */
		double f;  /* FLOAT */
		struct {
			const char *p; /* NUL-terminated copy, len bytes before it */
			size_t len;
		} s;			 /* STR, BYTES, BIGINT */
		struct pickle_seq seq;	 /* TUPLE, LIST, SET, FROZENSET */
		struct pickle_dict dict; /* DICT */
		struct {
			const char *module, *name;
		} global; /* GLOBAL */
		struct {
			enum pickle_call call;
			struct pickle_value *callable; /* usually a GLOBAL */
			struct pickle_value *args;     /* usually a TUPLE */
			struct pickle_value *kwargs;   /* NEWOBJ_EX's dict, else NULL */
			struct pickle_value *state;    /* BUILD's argument, else NULL */
			struct pickle_seq list;	       /* APPEND(S) on the object */
			struct pickle_dict dict;       /* SETITEM(S) on the object */
		} obj;				       /* OBJECT */
		struct pickle_value *pid;	       /* PERSID */
	} u;
};

/* An arena owning every value and string of a graph. Not thread-safe. */
struct pickle_arena;

/* New arena taking its memory from m's parse region (borrowed: must outlive
 * the arena), and refusing to grow when m's budget refuses (CK_ETOOBIG). The
 * pickle VM takes its stacks and memo from the same region. NULL when the
 * meter refuses or out of memory (m->err says which). */
struct pickle_arena *pickle_arena_new(struct fmt_meter *m);
/* Ends the arena; accepts NULL. Its values stay readable until the meter's
 * parse region is given back (fmt_meter_end), which frees them. */
void pickle_arena_free(struct pickle_arena *a);
/* The meter a charges to. */
struct fmt_meter *pickle_arena_meter(const struct pickle_arena *a);

/* Constructors: values zeroed but for kind, allocated with the bytes their
 * kind uses only (read and write only the union member of v->kind); NULL when out of memory or over
 * the arena's limit (ck_error has set the message and code: see
 * pickle_arena_error). */
struct pickle_value *pickle_value_new(struct pickle_arena *a, enum pickle_kind kind);
/* A copy of p[0..len) with a NUL after it, in the arena. */
const char *pickle_strdup(struct pickle_arena *a, const void *p, size_t len);
/* Appends v to s / sets k -> v in d (appended; no key lookup). 0 or a CK_E* code. */
int pickle_seq_push(struct pickle_arena *a, struct pickle_seq *s, struct pickle_value *v);
int pickle_dict_push(struct pickle_arena *a, struct pickle_dict *d, struct pickle_value *k,
		     struct pickle_value *v);
/* The code of the arena's last failure (CK_ENOMEM or CK_ETOOBIG), else 0. */
int pickle_arena_error(const struct pickle_arena *a);

struct pickle_limits {
	uint64_t max_ops;   /* opcodes executed */
	uint64_t max_memo;  /* largest memo index + 1 */
	uint64_t max_marks; /* open MARKs at once */
	uint64_t max_stack; /* values on the stack at once */
};

/* Runs the pickle buf[0..len) to its STOP. On success *out is the top value,
 * allocated in arena a (which the caller owns and frees; the values live as
 * long as it does). Errors: CK_ECORRUPT (message names the opcode and its
 * byte offset: unknown opcode, truncated argument, a FRAME longer than the
 * rest, stack underflow, memo index not set, no STOP), CK_ETOOBIG for a limit
 * or the arena meter's budget, CK_EFORMAT for features ckptd does not read
 * (extension codes, out-of-band buffers), CK_ENOMEM. Thread-safe with
 * distinct arenas (their meters may share a budget). */
int pickle_vm_run(struct pickle_value **out, struct pickle_arena *a, const uint8_t *buf, size_t len,
		  const struct pickle_limits *lim);

/* pickle_vm_run, and *used (may be NULL) = the bytes of buf up to and
 * including the STOP opcode; the bytes after it are not read. */
int pickle_vm_run_used(struct pickle_value **out, size_t *used, struct pickle_arena *a,
		       const uint8_t *buf, size_t len, const struct pickle_limits *lim);

/* Finds where the pickle that starts at byte off of in ends, without running
 * it (for a pickle followed by other data in a file, as torch's legacy
 * format writes them): *end is the offset just past its STOP opcode. Reads
 * through a 64 KiB window charged to m's parse region and given back before
 * it returns; knows the argument layout of every opcode of protocols 0 to 5.
 * Errors: CK_ECORRUPT (an unknown opcode, an argument or a missing STOP past
 * the end of the file: the message names the opcode and its file offset),
 * CK_ETOOBIG when the pickle is longer than max_len bytes, the meter's code,
 * CK_EIO. */
int pickle_scan_end(uint64_t *end, const struct ck_input *in, uint64_t off, uint64_t max_len,
		    struct fmt_meter *m);

/* Helpers for walkers: 1 when v is a GLOBAL module.name. */
int pickle_is_global(const struct pickle_value *v, const char *module, const char *name);

/* The name of a kind ("dict", "tuple", ...), for messages. */
const char *pickle_kind_name(enum pickle_kind k);

#endif
