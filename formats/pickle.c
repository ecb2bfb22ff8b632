/*
 * pickle.c: the restricted pickle virtual machine (see pickle.h).
 *
 * It follows CPython's Lib/pickle.py _Unpickler: MARK pushes the stack depth
 * on a mark stack and the opcodes that consume "items since the mark" pop back
 * to it; popping below the innermost mark is an underflow, as in CPython. The
 * memo is an array indexed by the memo key, bounded by max_memo. Every value
 * is allocated in an arena, which is the parse region of a memory meter
 * (budget.h): what the graph takes is charged before it is taken, and a value
 * takes only the bytes its kind uses (an int 16, an object 104). The VM's own
 * stacks and memo are arrays bounded by max_stack/max_marks/max_memo, taken
 * from the same region and given back on return.
 */
#include "pickle.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"

/* ---- arena ---- */

/* The arena is the meter's parse region (budget.h): values are cut from
 * its chunks and given back with it. */
struct pickle_arena {
	struct fmt_meter *meter; /* borrowed */
	int err;
};

struct pickle_arena *pickle_arena_new(struct fmt_meter *m)
{
	struct pickle_arena *a =
	    fmt_alloc(m, FMT_PARSE, 1, sizeof(struct pickle_arena), "pickle object graph");

	if (a)
		a->meter = m;
	return a;
}

void pickle_arena_free(struct pickle_arena *a)
{
	(void)a; /* its memory goes with the meter's parse region */
}

int pickle_arena_error(const struct pickle_arena *a)
{
	return a->err;
}

struct fmt_meter *pickle_arena_meter(const struct pickle_arena *a)
{
	return a->meter;
}

static void *arena_alloc(struct pickle_arena *a, size_t n)
{
	void *p = fmt_alloc(a->meter, FMT_PARSE, 1, n, "pickle object graph");

	if (!p)
		a->err = a->meter->err;
	return p;
}

/* Bytes of a value of kind k: the header and the union member that kind
 * uses, so that an int does not take the room of an object. */
static size_t value_size(enum pickle_kind k)
{
	size_t head = offsetof(struct pickle_value, u);

	switch (k) {
	case PICKLE_NONE: return head;
	case PICKLE_BOOL: return head + sizeof(int);
	case PICKLE_INT: return head + sizeof(int64_t);
	case PICKLE_FLOAT: return head + sizeof(double);
	case PICKLE_BIGINT:
	case PICKLE_STR:
	case PICKLE_BYTES: return head + sizeof(((struct pickle_value *)0)->u.s);
	case PICKLE_TUPLE:
	case PICKLE_LIST:
	case PICKLE_SET:
	case PICKLE_FROZENSET: return head + sizeof(struct pickle_seq);
	case PICKLE_DICT: return head + sizeof(struct pickle_dict);
	case PICKLE_GLOBAL: return head + sizeof(((struct pickle_value *)0)->u.global);
	case PICKLE_PERSID: return head + sizeof(struct pickle_value *);
	case PICKLE_OBJECT: break;
	}
	return sizeof(struct pickle_value);
}

struct pickle_value *pickle_value_new(struct pickle_arena *a, enum pickle_kind kind)
{
	size_t n = value_size(kind);
	struct pickle_value *v = arena_alloc(a, n);

	if (v) {
		memset(v, 0, n);
		v->kind = kind;
	}
	return v;
}

const char *pickle_strdup(struct pickle_arena *a, const void *p, size_t len)
{
	char *s;

	if (len == SIZE_MAX) {
		a->err = ck_error(CK_ETOOBIG, "pickle: string too long");
		return NULL;
	}
	s = arena_alloc(a, len + 1);
	if (!s)
		return NULL;
	if (len)
		memcpy(s, p, len);
	s[len] = '\0';
	return s;
}

static int grow(struct pickle_arena *a, void **arr, size_t *cap, size_t n, size_t elem)
{
	size_t ncap = *cap ? *cap * 2 : 4;
	void *p;

	if (n < *cap)
		return 0;
	if (ncap > SIZE_MAX / elem)
		return a->err = ck_error(CK_ETOOBIG, "pickle: container too large");
	p = fmt_grow(a->meter, FMT_PARSE, *arr, *cap * elem, ncap * elem, "pickle object graph");
	if (!p)
		return a->err = a->meter->err;
	*arr = p;
	*cap = ncap;
	return 0;
}

int pickle_seq_push(struct pickle_arena *a, struct pickle_seq *s, struct pickle_value *v)
{
	int err = grow(a, (void **)&s->items, &s->cap, s->n, sizeof(*s->items));

	if (err < 0)
		return err;
	s->items[s->n++] = v;
	return 0;
}

int pickle_dict_push(struct pickle_arena *a, struct pickle_dict *d, struct pickle_value *k,
		     struct pickle_value *v)
{
	size_t kcap = d->cap;
	int err = grow(a, (void **)&d->keys, &kcap, d->n, sizeof(*d->keys));

	if (err < 0)
		return err;
	if (kcap != d->cap) {
		struct pickle_value **nv =
		    fmt_grow(a->meter, FMT_PARSE, d->vals, d->cap * sizeof(*nv), kcap * sizeof(*nv),
			     "pickle object graph");

		if (!nv)
			return a->err = a->meter->err;
		d->vals = nv;
		d->cap = kcap;
	}
	d->keys[d->n] = k;
	d->vals[d->n] = v;
	d->n++;
	return 0;
}

int pickle_is_global(const struct pickle_value *v, const char *module, const char *name)
{
	return v && v->kind == PICKLE_GLOBAL && !strcmp(v->u.global.module, module) &&
	       !strcmp(v->u.global.name, name);
}

const char *pickle_kind_name(enum pickle_kind k)
{
	switch (k) {
	case PICKLE_NONE: return "None";
	case PICKLE_BOOL: return "bool";
	case PICKLE_INT: return "int";
	case PICKLE_BIGINT: return "int";
	case PICKLE_FLOAT: return "float";
	case PICKLE_STR: return "str";
	case PICKLE_BYTES: return "bytes";
	case PICKLE_TUPLE: return "tuple";
	case PICKLE_LIST: return "list";
	case PICKLE_SET: return "set";
	case PICKLE_FROZENSET: return "frozenset";
	case PICKLE_DICT: return "dict";
	case PICKLE_GLOBAL: return "global";
	case PICKLE_OBJECT: return "object";
	case PICKLE_PERSID: return "persistent id";
	}
	return "?";
}

/* ---- the machine ---- */

struct vm {
	const uint8_t *buf;
	size_t len, pos, op_off;
	uint8_t op;
	struct pickle_arena *a;
	const struct pickle_limits *lim;
	struct pickle_value **stack;
	size_t sp, scap;
	size_t *marks;
	size_t nmarks, mcap;
	struct pickle_value **memo;
	size_t memo_cap;
	uint64_t memo_count;
	struct pickle_value *none, *vtrue, *vfalse;
};

static int corrupt(struct vm *m, const char *what)
{
	return ck_error(CK_ECORRUPT, "pickle: %s (opcode 0x%02x at offset %zu)", what, m->op,
			m->op_off);
}

static int oom(struct vm *m)
{
	return pickle_arena_error(m->a) ? pickle_arena_error(m->a)
					: ck_error(CK_ENOMEM, "pickle: out of memory");
}

static int need(struct vm *m, size_t n, const uint8_t **p)
{
	if (m->len - m->pos < n)
		return corrupt(m, "argument runs past the end of the pickle");
	*p = m->buf + m->pos;
	m->pos += n;
	return 0;
}

/* A text argument up to its newline; *n excludes the newline. */
static int line(struct vm *m, const char **s, size_t *n)
{
	const uint8_t *p = m->buf + m->pos;
	const uint8_t *nl = memchr(p, '\n', m->len - m->pos);

	if (!nl)
		return corrupt(m, "text argument without a newline");
	*s = (const char *)p;
	*n = (size_t)(nl - p);
	m->pos += *n + 1;
	return 0;
}

static int push(struct vm *m, struct pickle_value *v)
{
	if (!v)
		return oom(m);
	if (m->sp == m->scap) {
		size_t ncap = m->scap ? m->scap * 2 : 64;
		void *p;

		if (m->sp >= m->lim->max_stack)
			return ck_error(CK_ETOOBIG,
					"pickle: more than %llu values on the stack (offset %zu)",
					(unsigned long long)m->lim->max_stack, m->op_off);
		if (ncap > m->lim->max_stack)
			ncap = (size_t)m->lim->max_stack;
		p = fmt_grow(m->a->meter, FMT_PARSE, m->stack, m->scap * sizeof(*m->stack),
			     ncap * sizeof(*m->stack), "pickle stack");
		if (!p)
			return m->a->meter->err;
		m->stack = p;
		m->scap = ncap;
	}
	m->stack[m->sp++] = v;
	return 0;
}

static size_t base(const struct vm *m)
{
	return m->nmarks ? m->marks[m->nmarks - 1] : 0;
}

static int pop(struct vm *m, struct pickle_value **v)
{
	if (m->sp <= base(m))
		return corrupt(m, "stack underflow");
	*v = m->stack[--m->sp];
	return 0;
}

static int top(struct vm *m, struct pickle_value **v)
{
	if (m->sp <= base(m))
		return corrupt(m, "stack underflow");
	*v = m->stack[m->sp - 1];
	return 0;
}

/* Pops the innermost mark: the items above it are stack[*from .. sp). The
 * caller then truncates sp to *from. */
static int pop_mark(struct vm *m, size_t *from)
{
	if (!m->nmarks)
		return corrupt(m, "no MARK on the stack");
	*from = m->marks[--m->nmarks];
	return 0;
}

static struct pickle_value *make_seq(struct vm *m, enum pickle_kind kind, size_t from)
{
	struct pickle_value *v = pickle_value_new(m->a, kind);
	size_t n = m->sp - from;

	if (!v)
		return NULL;
	if (n) {
		v->u.seq.items = arena_alloc(m->a, n * sizeof(*v->u.seq.items));
		if (!v->u.seq.items)
			return NULL;
		memcpy(v->u.seq.items, m->stack + from, n * sizeof(*v->u.seq.items));
		v->u.seq.n = v->u.seq.cap = n;
	}
	m->sp = from;
	return v;
}

static int utf8_valid(const uint8_t *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint8_t c = s[i];
		size_t k;
		uint32_t cp;

		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0)
			k = 1, cp = c & 0x1f;
		else if ((c & 0xf0) == 0xe0)
			k = 2, cp = c & 0x0f;
		else if ((c & 0xf8) == 0xf0)
			k = 3, cp = c & 0x07;
		else
			return 0;
		if (n - i - 1 < k)
			return 0;
		for (size_t j = 1; j <= k; j++) {
			if ((s[i + j] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (s[i + j] & 0x3f);
		}
		if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) ||
		    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += k + 1;
	}
	return 1;
}

static int push_str(struct vm *m, enum pickle_kind kind, const uint8_t *p, size_t n)
{
	struct pickle_value *v;

	if (kind == PICKLE_STR && !utf8_valid(p, n))
		return corrupt(m, "string is not valid UTF-8");
	v = pickle_value_new(m->a, kind);
	if (!v || !(v->u.s.p = pickle_strdup(m->a, p, n)))
		return oom(m);
	v->u.s.len = n;
	return push(m, v);
}

static int push_int(struct vm *m, int64_t i)
{
	struct pickle_value *v = pickle_value_new(m->a, PICKLE_INT);

	if (v)
		v->u.i = i;
	return push(m, v);
}

/* A little-endian two's complement integer of n bytes (LONG1/LONG4). */
static int push_long(struct vm *m, const uint8_t *p, size_t n)
{
	if (n <= 8) {
		uint64_t u = 0;

		for (size_t i = 0; i < n; i++)
			u |= (uint64_t)p[i] << (8 * i);
		if (n > 0 && n < 8 && (p[n - 1] & 0x80))
			u |= ~(uint64_t)0 << (8 * n);
		return push_int(m, (int64_t)u);
	}
	return push_str(m, PICKLE_BIGINT, p, n);
}

static int parse_dec(struct vm *m, const char *s, size_t n, int64_t *out)
{
	uint64_t u = 0;
	size_t i = 0;
	int neg = 0;

	if (i < n && (s[i] == '-' || s[i] == '+'))
		neg = s[i++] == '-';
	if (i == n)
		return corrupt(m, "empty decimal integer");
	for (; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return corrupt(m, "bad decimal integer");
		if (u > (UINT64_C(1) << 63) / 10)
			return ck_error(CK_EFORMAT, "pickle: integer beyond 64 bits at offset %zu",
					m->op_off);
		u = u * 10 + (uint64_t)(s[i] - '0');
	}
	if (u > (UINT64_C(1) << 63) - (neg ? 0 : 1))
		return ck_error(CK_EFORMAT, "pickle: integer beyond 64 bits at offset %zu",
				m->op_off);
	*out = neg ? (int64_t)(0 - u) : (int64_t)u;
	return 0;
}

static int memo_put(struct vm *m, uint64_t idx)
{
	if (m->sp <= base(m))
		return corrupt(m, "memo store with an empty stack");
	if (idx >= m->lim->max_memo)
		return ck_error(
		    CK_ETOOBIG, "pickle: memo index %llu over the limit of %llu (offset %zu)",
		    (unsigned long long)idx, (unsigned long long)m->lim->max_memo, m->op_off);
	if (idx >= m->memo_cap) {
		size_t ncap = m->memo_cap ? m->memo_cap : 64;
		void *p;

		while (ncap <= idx)
			ncap *= 2;
		if (ncap > m->lim->max_memo)
			ncap = (size_t)m->lim->max_memo;
		p = fmt_grow(m->a->meter, FMT_PARSE, m->memo, m->memo_cap * sizeof(*m->memo),
			     ncap * sizeof(*m->memo), "pickle memo");
		if (!p)
			return m->a->meter->err;
		memset((struct pickle_value **)p + m->memo_cap, 0,
		       (ncap - m->memo_cap) * sizeof(*m->memo));
		m->memo = p;
		m->memo_cap = ncap;
	}
	if (!m->memo[idx])
		m->memo_count++;
	m->memo[idx] = m->stack[m->sp - 1];
	return 0;
}

static int memo_get(struct vm *m, uint64_t idx)
{
	if (idx >= m->memo_cap || !m->memo[idx]) {
		char what[80];

		snprintf(what, sizeof(what), "memo index %llu was never stored",
			 (unsigned long long)idx);
		return corrupt(m, what);
	}
	return push(m, m->memo[idx]);
}

static int make_global(struct vm *m, const char *mod, size_t ml, const char *name, size_t nl)
{
	struct pickle_value *v = pickle_value_new(m->a, PICKLE_GLOBAL);

	if (!v || !(v->u.global.module = pickle_strdup(m->a, mod, ml)) ||
	    !(v->u.global.name = pickle_strdup(m->a, name, nl)))
		return oom(m);
	return push(m, v);
}

static int make_object(struct vm *m, enum pickle_call call, struct pickle_value *callable,
		       struct pickle_value *args, struct pickle_value *kwargs)
{
	struct pickle_value *v = pickle_value_new(m->a, PICKLE_OBJECT);

	if (!v)
		return oom(m);
	v->u.obj.call = call;
	v->u.obj.callable = callable;
	v->u.obj.args = args;
	v->u.obj.kwargs = kwargs;
	return push(m, v);
}

static int set_items(struct vm *m, struct pickle_value *target, size_t from)
{
	struct pickle_dict *d;

	if ((m->sp - from) % 2)
		return corrupt(m, "odd number of items for a dict");
	if (target->kind == PICKLE_DICT)
		d = &target->u.dict;
	else if (target->kind == PICKLE_OBJECT)
		d = &target->u.obj.dict;
	else
		return corrupt(m, "SETITEM(S) on a value that is not a dict");
	for (size_t i = from; i < m->sp; i += 2)
		if (pickle_dict_push(m->a, d, m->stack[i], m->stack[i + 1]) < 0)
			return oom(m);
	m->sp = from;
	return 0;
}

static int append_items(struct vm *m, struct pickle_value *target, size_t from)
{
	struct pickle_seq *s;

	if (target->kind == PICKLE_LIST)
		s = &target->u.seq;
	else if (target->kind == PICKLE_OBJECT)
		s = &target->u.obj.list;
	else
		return corrupt(m, "APPEND(S) on a value that is not a list");
	for (size_t i = from; i < m->sp; i++)
		if (pickle_seq_push(m->a, s, m->stack[i]) < 0)
			return oom(m);
	m->sp = from;
	return 0;
}

/* Protocol 0 quoted STRING: 'abc' or "abc" without escapes. */
static int text_string(struct vm *m, const char *s, size_t n, enum pickle_kind kind)
{
	if (kind == PICKLE_BYTES) {
		if (n < 2 || (s[0] != '\'' && s[0] != '"') || s[n - 1] != s[0])
			return corrupt(m, "STRING argument is not quoted");
		s++;
		n -= 2;
	}
	for (size_t i = 0; i < n; i++)
		if (s[i] == '\\' || (unsigned char)s[i] >= 0x80)
			return ck_error(CK_EFORMAT,
					"pickle: protocol 0 string with escapes at offset %zu is "
					"not supported",
					m->op_off);
	return push_str(m, kind, (const uint8_t *)s, n);
}

static int step(struct vm *m, int *done)
{
	const uint8_t *p = NULL;
	const char *s = NULL, *s2 = NULL;
	size_t n = 0, n2 = 0, from = 0;
	struct pickle_value *v = NULL, *w = NULL, *x = NULL;
	int64_t i64 = 0;
	int err = 0;

	m->op_off = m->pos;
	if ((err = need(m, 1, &p)) < 0)
		return ck_error(CK_ECORRUPT, "pickle: ends at offset %zu without STOP", m->pos);
	m->op = p[0];
	switch (m->op) {
	case 0x80: /* PROTO */
		if ((err = need(m, 1, &p)) < 0)
			return err;
		if (p[0] > 5)
			return ck_error(CK_EFORMAT, "pickle: protocol %u is not supported", p[0]);
		return 0;
	case 0x95: /* FRAME: groups the opcodes that follow; only its length is checked */
	{
		uint64_t u = 0;

		if ((err = need(m, 8, &p)) < 0)
			return err;
		for (int i = 7; i >= 0; i--)
			u = u << 8 | p[i];
		if (u > m->len - m->pos) {
			char what[120];

			snprintf(what, sizeof(what),
				 "FRAME of %llu bytes runs past the end of the pickle (%zu bytes "
				 "left)",
				 (unsigned long long)u, m->len - m->pos);
			return corrupt(m, what);
		}
		return 0;
	}
	case '.': /* STOP */ *done = 1; return 0;
	case '(': /* MARK */
		if (m->nmarks >= m->lim->max_marks)
			return ck_error(CK_ETOOBIG,
					"pickle: more than %llu nested MARKs (offset %zu)",
					(unsigned long long)m->lim->max_marks, m->op_off);
		if (m->nmarks == m->mcap) {
			size_t ncap = m->mcap ? m->mcap * 2 : 32;
			void *q =
			    fmt_grow(m->a->meter, FMT_PARSE, m->marks, m->mcap * sizeof(*m->marks),
				     ncap * sizeof(*m->marks), "pickle marks");

			if (!q)
				return m->a->meter->err;
			m->marks = q;
			m->mcap = ncap;
		}
		m->marks[m->nmarks++] = m->sp;
		return 0;
	case '0': /* POP */ return pop(m, &v);
	case '1': /* POP_MARK */
		if ((err = pop_mark(m, &from)) < 0)
			return err;
		m->sp = from;
		return 0;
	case '2': /* DUP */
		if ((err = top(m, &v)) < 0)
			return err;
		return push(m, v);
	case 'N': return push(m, m->none);
	case 0x88: return push(m, m->vtrue);
	case 0x89: return push(m, m->vfalse);
	case 'K': /* BININT1 */
		if ((err = need(m, 1, &p)) < 0)
			return err;
		return push_int(m, p[0]);
	case 'M': /* BININT2 */
		if ((err = need(m, 2, &p)) < 0)
			return err;
		return push_int(m, p[0] | p[1] << 8);
	case 'J': /* BININT */
		if ((err = need(m, 4, &p)) < 0)
			return err;
		return push_int(m, (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 |
					     (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24));
	case 0x8a: /* LONG1 */
		if ((err = need(m, 1, &p)) < 0)
			return err;
		n = p[0];
		if ((err = need(m, n, &p)) < 0)
			return err;
		return push_long(m, p, n);
	case 0x8b: /* LONG4 */
		if ((err = need(m, 4, &p)) < 0)
			return err;
		if (p[3] & 0x80)
			return corrupt(m, "negative LONG4 length");
		n = (size_t)p[0] | (size_t)p[1] << 8 | (size_t)p[2] << 16 | (size_t)p[3] << 24;
		if ((err = need(m, n, &p)) < 0)
			return err;
		return push_long(m, p, n);
	case 'I': /* INT (text) */
		if ((err = line(m, &s, &n)) < 0)
			return err;
		if (n == 2 && s[0] == '0' && (s[1] == '0' || s[1] == '1'))
			return push(m, s[1] == '1' ? m->vtrue : m->vfalse);
		if ((err = parse_dec(m, s, n, &i64)) < 0)
			return err;
		return push_int(m, i64);
	case 'L': /* LONG (text) */
		if ((err = line(m, &s, &n)) < 0)
			return err;
		if (n && s[n - 1] == 'L')
			n--;
		if ((err = parse_dec(m, s, n, &i64)) < 0)
			return err;
		return push_int(m, i64);
	case 'G': /* BINFLOAT: big-endian double */
	{
		uint64_t u = 0;
		double d;

		if ((err = need(m, 8, &p)) < 0)
			return err;
		for (int i = 0; i < 8; i++)
			u = u << 8 | p[i];
		memcpy(&d, &u, 8);
		v = pickle_value_new(m->a, PICKLE_FLOAT);
		if (v)
			v->u.f = d;
		return push(m, v);
	}
	case 'F': /* FLOAT (text) */
	{
		char tmp[64];
		char *end;

		if ((err = line(m, &s, &n)) < 0)
			return err;
		if (n == 0 || n >= sizeof(tmp))
			return corrupt(m, "bad FLOAT argument");
		memcpy(tmp, s, n);
		tmp[n] = '\0';
		v = pickle_value_new(m->a, PICKLE_FLOAT);
		if (!v)
			return oom(m);
		v->u.f = strtod(tmp, &end);
		if (*end)
			return corrupt(m, "bad FLOAT argument");
		return push(m, v);
	}
	case 0x8c: /* SHORT_BINUNICODE */
	case 'C':  /* SHORT_BINBYTES */
	case 'U':  /* SHORT_BINSTRING */
		if ((err = need(m, 1, &p)) < 0)
			return err;
		n = p[0];
		if ((err = need(m, n, &p)) < 0)
			return err;
		return push_str(m, m->op == 0x8c ? PICKLE_STR : PICKLE_BYTES, p, n);
	case 'X': /* BINUNICODE */
	case 'B': /* BINBYTES */
	case 'T': /* BINSTRING */
		if ((err = need(m, 4, &p)) < 0)
			return err;
		n = (size_t)p[0] | (size_t)p[1] << 8 | (size_t)p[2] << 16 | (size_t)p[3] << 24;
		if ((err = need(m, n, &p)) < 0)
			return err;
		return push_str(m, m->op == 'X' ? PICKLE_STR : PICKLE_BYTES, p, n);
	case 0x8d: /* BINUNICODE8 */
	case 0x8e: /* BINBYTES8 */
	case 0x96: /* BYTEARRAY8 */
	{
		uint64_t u = 0;

		if ((err = need(m, 8, &p)) < 0)
			return err;
		for (int i = 7; i >= 0; i--)
			u = u << 8 | p[i];
		if (u > m->len - m->pos)
			return corrupt(m, "argument runs past the end of the pickle");
		if ((err = need(m, (size_t)u, &p)) < 0)
			return err;
		return push_str(m, m->op == 0x8d ? PICKLE_STR : PICKLE_BYTES, p, (size_t)u);
	}
	case 'S': /* STRING (text) */
	case 'V': /* UNICODE (text) */
		if ((err = line(m, &s, &n)) < 0)
			return err;
		return text_string(m, s, n, m->op == 'S' ? PICKLE_BYTES : PICKLE_STR);
	case '}': return push(m, pickle_value_new(m->a, PICKLE_DICT));
	case ']': return push(m, pickle_value_new(m->a, PICKLE_LIST));
	case ')': return push(m, pickle_value_new(m->a, PICKLE_TUPLE));
	case 0x8f: return push(m, pickle_value_new(m->a, PICKLE_SET));
	case 0x85: /* TUPLE1 */
	case 0x86: /* TUPLE2 */
	case 0x87: /* TUPLE3 */
		n = (size_t)(m->op - 0x84);
		if (m->sp - base(m) < n)
			return corrupt(m, "stack underflow");
		return push(m, make_seq(m, PICKLE_TUPLE, m->sp - n));
	case 't':  /* TUPLE */
	case 'l':  /* LIST */
	case 0x91: /* FROZENSET */
		if ((err = pop_mark(m, &from)) < 0)
			return err;
		return push(m, make_seq(m,
					m->op == 't'   ? PICKLE_TUPLE
					: m->op == 'l' ? PICKLE_LIST
						       : PICKLE_FROZENSET,
					from));
	case 'd': /* DICT */
		if ((err = pop_mark(m, &from)) < 0)
			return err;
		v = pickle_value_new(m->a, PICKLE_DICT);
		if (!v)
			return oom(m);
		if ((err = set_items(m, v, from)) < 0)
			return err;
		return push(m, v);
	case 's': /* SETITEM */
		if (m->sp - base(m) < 3)
			return corrupt(m, "stack underflow");
		return set_items(m, m->stack[m->sp - 3], m->sp - 2);
	case 'u': /* SETITEMS */
		if ((err = pop_mark(m, &from)) < 0)
			return err;
		if (from <= base(m))
			return corrupt(m, "stack underflow");
		return set_items(m, m->stack[from - 1], from);
	case 'a': /* APPEND */
		if (m->sp - base(m) < 2)
			return corrupt(m, "stack underflow");
		return append_items(m, m->stack[m->sp - 2], m->sp - 1);
	case 'e': /* APPENDS */
		if ((err = pop_mark(m, &from)) < 0)
			return err;
		if (from <= base(m))
			return corrupt(m, "stack underflow");
		return append_items(m, m->stack[from - 1], from);
	case 0x90: /* ADDITEMS */
		if ((err = pop_mark(m, &from)) < 0)
			return err;
		if (from <= base(m))
			return corrupt(m, "stack underflow");
		v = m->stack[from - 1];
		if (v->kind != PICKLE_SET)
			return corrupt(m, "ADDITEMS on a value that is not a set");
		for (size_t i = from; i < m->sp; i++)
			if (pickle_seq_push(m->a, &v->u.seq, m->stack[i]) < 0)
				return oom(m);
		m->sp = from;
		return 0;
	case 'p': /* PUT (text) */
		if ((err = line(m, &s, &n)) < 0 || (err = parse_dec(m, s, n, &i64)) < 0)
			return err;
		if (i64 < 0)
			return corrupt(m, "negative memo index");
		return memo_put(m, (uint64_t)i64);
	case 'q': /* BINPUT */
		if ((err = need(m, 1, &p)) < 0)
			return err;
		return memo_put(m, p[0]);
	case 'r': /* LONG_BINPUT */
		if ((err = need(m, 4, &p)) < 0)
			return err;
		return memo_put(m, (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
				       (uint64_t)p[3] << 24);
	case 0x94: /* MEMOIZE */ return memo_put(m, m->memo_count);
	case 'g': /* GET (text) */
		if ((err = line(m, &s, &n)) < 0 || (err = parse_dec(m, s, n, &i64)) < 0)
			return err;
		if (i64 < 0)
			return corrupt(m, "negative memo index");
		return memo_get(m, (uint64_t)i64);
	case 'h': /* BINGET */
		if ((err = need(m, 1, &p)) < 0)
			return err;
		return memo_get(m, p[0]);
	case 'j': /* LONG_BINGET */
		if ((err = need(m, 4, &p)) < 0)
			return err;
		return memo_get(m, (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
				       (uint64_t)p[3] << 24);
	case 'c': /* GLOBAL module\nname\n */
		if ((err = line(m, &s, &n)) < 0 || (err = line(m, &s2, &n2)) < 0)
			return err;
		return make_global(m, s, n, s2, n2);
	case 0x93: /* STACK_GLOBAL */
		if ((err = pop(m, &w)) < 0 || (err = pop(m, &v)) < 0)
			return err;
		if (v->kind != PICKLE_STR || w->kind != PICKLE_STR)
			return corrupt(m, "STACK_GLOBAL needs two strings");
		return make_global(m, v->u.s.p, v->u.s.len, w->u.s.p, w->u.s.len);
	case 'R': /* REDUCE */
		if ((err = pop(m, &w)) < 0 || (err = pop(m, &v)) < 0)
			return err;
		return make_object(m, PICKLE_CALL_REDUCE, v, w, NULL);
	case 0x81: /* NEWOBJ */
		if ((err = pop(m, &w)) < 0 || (err = pop(m, &v)) < 0)
			return err;
		return make_object(m, PICKLE_CALL_NEWOBJ, v, w, NULL);
	case 0x92: /* NEWOBJ_EX */
		if ((err = pop(m, &x)) < 0 || (err = pop(m, &w)) < 0 || (err = pop(m, &v)) < 0)
			return err;
		return make_object(m, PICKLE_CALL_NEWOBJ, v, w, x);
	case 'i': /* INST module\nname\n, args since the mark */
		if ((err = line(m, &s, &n)) < 0 || (err = line(m, &s2, &n2)) < 0)
			return err;
		if ((err = pop_mark(m, &from)) < 0)
			return err;
		w = make_seq(m, PICKLE_TUPLE, from);
		if (!w || (err = make_global(m, s, n, s2, n2)) < 0)
			return w ? err : oom(m);
		v = m->stack[--m->sp];
		return make_object(m, PICKLE_CALL_INST, v, w, NULL);
	case 'o': /* OBJ: mark, cls, args... */
		if ((err = pop_mark(m, &from)) < 0)
			return err;
		if (m->sp == from)
			return corrupt(m, "OBJ without a class");
		v = m->stack[from];
		w = make_seq(m, PICKLE_TUPLE, from + 1);
		m->sp = from;
		if (!w)
			return oom(m);
		return make_object(m, PICKLE_CALL_INST, v, w, NULL);
	case 'b': /* BUILD */
		if ((err = pop(m, &w)) < 0 || (err = top(m, &v)) < 0)
			return err;
		if (v->kind == PICKLE_OBJECT)
			v->u.obj.state = w;
		/* state on anything else (a GLOBAL, a dict) has no meaning here */
		return 0;
	case 'P': /* PERSID (text) */
		if ((err = line(m, &s, &n)) < 0)
			return err;
		if ((err = push_str(m, PICKLE_STR, (const uint8_t *)s, n)) < 0)
			return err;
		w = m->stack[--m->sp];
		goto persid;
	case 'Q': /* BINPERSID */
		if ((err = pop(m, &w)) < 0)
			return err;
	persid:
		v = pickle_value_new(m->a, PICKLE_PERSID);
		if (v)
			v->u.pid = w;
		return push(m, v);
	case 0x82:
	case 0x83:
	case 0x84:
		return ck_error(
		    CK_EFORMAT,
		    "pickle: extension registry codes (opcode 0x%02x at offset %zu) are "
		    "not supported",
		    m->op, m->op_off);
	case 0x97:
	case 0x98:
		return ck_error(CK_EFORMAT,
				"pickle: out-of-band buffers (opcode 0x%02x at offset %zu) are not "
				"supported",
				m->op, m->op_off);
	default: return corrupt(m, "unknown opcode");
	}
}

int pickle_vm_run_used(struct pickle_value **out, size_t *used, struct pickle_arena *a,
		       const uint8_t *buf, size_t len, const struct pickle_limits *lim)
{
	struct vm m;
	uint64_t ops = 0;
	int done = 0, err = 0;

	*out = NULL;
	memset(&m, 0, sizeof(m));
	m.buf = buf;
	m.len = len;
	m.a = a;
	m.lim = lim;
	m.none = pickle_value_new(a, PICKLE_NONE);
	m.vtrue = pickle_value_new(a, PICKLE_BOOL);
	m.vfalse = pickle_value_new(a, PICKLE_BOOL);
	if (!m.none || !m.vtrue || !m.vfalse) {
		err = oom(&m);
		goto out;
	}
	m.vtrue->u.b = 1;
	while (!done) {
		if (++ops > lim->max_ops) {
			err = ck_error(CK_ETOOBIG, "pickle: more than %llu opcodes (offset %zu)",
				       (unsigned long long)lim->max_ops, m.pos);
			goto out;
		}
		if ((err = step(&m, &done)) < 0)
			goto out;
	}
	if (m.sp == 0) {
		err = corrupt(&m, "STOP with an empty stack");
		goto out;
	}
	*out = m.stack[m.sp - 1];
	if (used)
		*used = m.pos;
out:
	fmt_free(a->meter, FMT_PARSE, m.stack, m.scap * sizeof(*m.stack));
	fmt_free(a->meter, FMT_PARSE, m.marks, m.mcap * sizeof(*m.marks));
	fmt_free(a->meter, FMT_PARSE, m.memo, m.memo_cap * sizeof(*m.memo));
	return err;
}

int pickle_vm_run(struct pickle_value **out, struct pickle_arena *a, const uint8_t *buf, size_t len,
		  const struct pickle_limits *lim)
{
	return pickle_vm_run_used(out, NULL, a, buf, len, lim);
}

/* ---- finding a pickle's end in a file ---- */

/* A window on the input: the scanner reads opcodes a byte or a few at a
 * time, and the input may be a file (pread). */
#define SCAN_WINDOW (64u << 10)

struct scan {
	const struct ck_input *in;
	uint64_t start, max_len;
	uint8_t *buf;
	size_t cap; /* SCAN_WINDOW, or less for what is left of a small file */
	uint64_t buf_off;
	size_t buf_len;
	uint8_t op;
	uint64_t op_off;
};

/* Checks that [pos, pos+n) is in the file and in the pickle's limit. */
static int scan_room(struct scan *s, uint64_t pos, uint64_t n)
{
	if (pos > s->in->size || n > s->in->size - pos)
		return ck_error(CK_ECORRUPT,
				"pickle: opcode 0x%02x at offset %llu runs past the end of the "
				"file (%llu bytes): the file is truncated or damaged",
				s->op, (unsigned long long)s->op_off,
				(unsigned long long)s->in->size);
	if (pos + n - s->start > s->max_len)
		return ck_error(CK_ETOOBIG,
				"pickle: the pickle at offset %llu is longer than %llu bytes "
				"(opcode 0x%02x at offset %llu)",
				(unsigned long long)s->start, (unsigned long long)s->max_len, s->op,
				(unsigned long long)s->op_off);
	return 0;
}

/* Copies n <= 8 bytes at pos into b. */
static int scan_get(struct scan *s, uint8_t *b, uint64_t pos, size_t n)
{
	int err;

	if ((err = scan_room(s, pos, n)) < 0)
		return err;
	if (pos < s->buf_off || pos + n > s->buf_off + s->buf_len) {
		uint64_t left = s->in->size - pos;

		s->buf_len = left < s->cap ? (size_t)left : s->cap;
		s->buf_off = pos;
		if ((err = ck_input_read(s->in, s->buf, s->buf_len, pos, "pickle")) < 0)
			return err;
	}
	memcpy(b, s->buf + (pos - s->buf_off), n);
	return 0;
}

/* *pos moves past the next newline. */
static int scan_line(struct scan *s, uint64_t *pos)
{
	uint8_t c;
	int err;

	do {
		if ((err = scan_get(s, &c, *pos, 1)) < 0)
			return err;
		(*pos)++;
	} while (c != '\n');
	return 0;
}

int pickle_scan_end(uint64_t *end, const struct ck_input *in, uint64_t off, uint64_t max_len,
		    struct fmt_meter *m)
{
	struct scan s = {.in = in, .start = off, .max_len = max_len};
	uint64_t pos = off, n = 0;
	uint8_t b[8];
	int err = 0;

	*end = 0;
	if (off >= in->size)
		return ck_error(
		    CK_ECORRUPT,
		    "pickle: the file ends at offset %llu, where a pickle should start: "
		    "the file is truncated",
		    (unsigned long long)in->size);
	s.cap = in->size - off < SCAN_WINDOW ? (size_t)(in->size - off) : SCAN_WINDOW;
	if (!(s.buf = fmt_alloc(m, FMT_PARSE, 1, s.cap, "pickle scan window")))
		return m->err;
	for (;;) {
		size_t argn = 0; /* fixed argument bytes */
		int lenb = 0;	 /* bytes of a length prefix, then that many bytes */
		int lines = 0;	 /* newline-terminated arguments */

		s.op_off = pos;
		s.op = 0;
		if ((err = scan_get(&s, b, pos, 1)) < 0) {
			if (err == CK_ECORRUPT)
				err =
				    ck_error(CK_ECORRUPT,
					     "pickle: the pickle at offset %llu ends at offset "
					     "%llu without STOP: the file is truncated or damaged",
					     (unsigned long long)off, (unsigned long long)pos);
			goto out;
		}
		s.op = b[0];
		pos++;
		switch (s.op) {
		case '.': *end = pos; goto out;
		case '0':
		case '1':
		case '2':
		case 'N':
		case 0x88:
		case 0x89:
		case '}':
		case ']':
		case ')':
		case 0x8f:
		case 0x85:
		case 0x86:
		case 0x87:
		case 't':
		case 'l':
		case 0x91:
		case 'd':
		case 's':
		case 'u':
		case 'a':
		case 'e':
		case 0x90:
		case 0x94:
		case 0x93:
		case 'R':
		case 0x81:
		case 0x92:
		case 'o':
		case 'b':
		case 'Q':
		case '(':
		case 0x97:
		case 0x98: break;
		case 0x80:
		case 'K':
		case 'q':
		case 'h':
		case 0x82: argn = 1; break;
		case 'M':
		case 0x83: argn = 2; break;
		case 'J':
		case 'r':
		case 'j':
		case 0x84: argn = 4; break;
		case 'G':
		case 0x95: argn = 8; break;
		case 0x8a:
		case 0x8c:
		case 'C':
		case 'U': lenb = 1; break;
		case 0x8b:
		case 'X':
		case 'B':
		case 'T': lenb = 4; break;
		case 0x8d:
		case 0x8e:
		case 0x96: lenb = 8; break;
		case 'I':
		case 'L':
		case 'F':
		case 'S':
		case 'V':
		case 'p':
		case 'g':
		case 'P': lines = 1; break;
		case 'c':
		case 'i': lines = 2; break;
		default:
			err = ck_error(CK_ECORRUPT, "pickle: unknown opcode 0x%02x at offset %llu",
				       s.op, (unsigned long long)s.op_off);
			goto out;
		}
		if (argn && (err = scan_room(&s, pos, argn)) < 0)
			goto out;
		pos += argn;
		if (lenb) {
			if ((err = scan_get(&s, b, pos, (size_t)lenb)) < 0)
				goto out;
			pos += (uint64_t)lenb;
			n = 0;
			for (int i = lenb - 1; i >= 0; i--)
				n = n << 8 | b[i];
			if (s.op == 0x8b && (b[3] & 0x80)) {
				err = ck_error(CK_ECORRUPT,
					       "pickle: negative LONG4 length at offset %llu",
					       (unsigned long long)s.op_off);
				goto out;
			}
			if ((err = scan_room(&s, pos, n)) < 0)
				goto out;
			pos += n;
		}
		for (int i = 0; i < lines; i++)
			if ((err = scan_line(&s, &pos)) < 0)
				goto out;
	}
out:
	fmt_free(m, FMT_PARSE, s.buf, s.cap);
	return err;
}
