/*
 * gc.c: claims and reaping (see gc.h for the protocol).
 *
 * Two places keep claims, one per kind of store:
 *
 * - shared (several processes: a PostgreSQL index): claims are rows in the
 *   index, and reaping runs in the index's reaper transaction, which no claim
 *   can interleave with;
 * - alone (one process: a SQLite index, whose serving process holds the data
 *   directory's lock): claims are a counted hash set in memory, and claiming
 *   and reaping take this collector's mutex, so a claim cannot fall between
 *   a reap's check and its removal. A download then costs no index write,
 *   and works on a disk too full for one.
 */
#include "gc.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/err.h"
#include "../common/vec.h"

#define HOLD_BUCKETS 4096

struct held {
	struct hash h;
	unsigned count;
	int doomed; /* a reap skipped it: reap it when the last hold goes */
	struct held *next;
};

struct gc {
	struct index *idx;
	struct blob_backend *b;
	char *owner;
	int64_t lease;
	int alone;
	atomic_llong next_group;
	pthread_mutex_t lock; /* alone: the hold set, and claims vs reaps */
	struct held *buckets[HOLD_BUCKETS];
	pthread_mutex_t defer_lock;
	struct hash *deferred; /* gc_defer: to reap at the next chance */
	size_t ndeferred, capdeferred;
	/* gc_keep: groups left to expire, in no order (gc_expire walks them
	 * all once kept_next is due); under keep_lock */
	pthread_mutex_t keep_lock;
	struct kept *kept;
	int64_t kept_next; /* the earliest expiry (INT64_MAX: none) */
};

/* A claim group kept for a retry (gc_keep), until its time is up. */
struct kept {
	int64_t group, until;
	struct hash *h; /* what it claims */
	size_t n;
	struct kept *next;
};

struct gc_claim {
	struct gc *g;
	int64_t group;
	int64_t renewed;   /* when the lease was last set (epoch seconds) */
	struct hash *held; /* alone: what this group holds */
	size_t nheld, cap;
};

static int64_t now_s(void)
{
	return (int64_t)time(NULL);
}

int gc_new(struct gc **out, struct index *idx, struct blob_backend *b, const char *owner,
	   int64_t lease_seconds, int alone)
{
	struct gc *g = calloc(1, sizeof(*g));

	if (!g || !(g->owner = strdup(owner))) {
		free(g);
		return ck_error(CK_ENOMEM, "out of memory");
	}
	g->idx = idx;
	g->b = b;
	g->lease = lease_seconds > 0 ? lease_seconds : 3600;
	g->alone = alone;
	atomic_init(&g->next_group, 1);
	pthread_mutex_init(&g->lock, NULL);
	pthread_mutex_init(&g->defer_lock, NULL);
	pthread_mutex_init(&g->keep_lock, NULL);
	g->kept_next = INT64_MAX;
	*out = g;
	return 0;
}

void gc_free(struct gc *g)
{
	if (!g)
		return;
	for (size_t i = 0; i < HOLD_BUCKETS; i++)
		while (g->buckets[i]) {
			struct held *e = g->buckets[i];
			g->buckets[i] = e->next;
			free(e);
		}
	while (g->kept) { /* their claims expire, or the next start sweeps */
		struct kept *k = g->kept;
		g->kept = k->next;
		free(k->h);
		free(k);
	}
	pthread_mutex_destroy(&g->lock);
	pthread_mutex_destroy(&g->defer_lock);
	pthread_mutex_destroy(&g->keep_lock);
	free(g->deferred);
	free(g->owner);
	free(g);
}

int64_t gc_lease(const struct gc *g)
{
	return g->lease;
}

/* ---- the in-memory hold set (alone) ---- */

static size_t bucket(const struct hash *h)
{
	return ((size_t)h->b[0] << 8 | h->b[1]) % HOLD_BUCKETS;
}

static struct held *held_find(struct gc *g, const struct hash *h)
{
	for (struct held *e = g->buckets[bucket(h)]; e; e = e->next)
		if (!memcmp(e->h.b, h->b, 32))
			return e;
	return NULL;
}

/* With g->lock held. 1 when this was the last hold of a blob a reap
 * skipped (the caller reaps it now). */
static int held_drop(struct gc *g, const struct hash *h)
{
	for (struct held **p = &g->buckets[bucket(h)]; *p; p = &(*p)->next) {
		if (memcmp((*p)->h.b, h->b, 32))
			continue;
		if (--(*p)->count == 0) {
			struct held *e = *p;
			int doomed = e->doomed;
			*p = e->next;
			free(e);
			return doomed;
		}
		return 0;
	}
	return 0;
}

static int hold_add(struct gc_claim *cl, const struct hash *h, size_t n)
{
	struct gc *g = cl->g;
	int err = 0;

	if (cl->nheld + n > cl->cap) {
		size_t cap = cl->cap ? cl->cap : 16;
		while (cap < cl->nheld + n)
			cap *= 2;
		struct hash *v = realloc(cl->held, cap * sizeof(*v));
		if (!v)
			return ck_error(CK_ENOMEM, "out of memory");
		cl->held = v;
		cl->cap = cap;
	}
	pthread_mutex_lock(&g->lock);
	for (size_t i = 0; i < n; i++) {
		struct held *e = held_find(g, &h[i]);
		if (e) {
			e->count++;
		} else if ((e = calloc(1, sizeof(*e)))) {
			e->h = h[i];
			e->count = 1;
			e->next = g->buckets[bucket(&h[i])];
			g->buckets[bucket(&h[i])] = e;
		} else {
			err = ck_error(CK_ENOMEM, "out of memory");
			break;
		}
		cl->held[cl->nheld++] = h[i];
	}
	pthread_mutex_unlock(&g->lock);
	return err;
}

static int reap_now(uint64_t *removed, struct gc *g, const struct hash *h, size_t n);

/* Drops the group's holds, then reaps what a delete freed meanwhile. */
static void hold_drop_all(struct gc_claim *cl)
{
	size_t ndoomed = 0;
	uint64_t removed;

	pthread_mutex_lock(&cl->g->lock);
	for (size_t i = 0; i < cl->nheld; i++)
		if (held_drop(cl->g, &cl->held[i]))
			cl->held[ndoomed++] = cl->held[i]; /* i >= ndoomed: no overlap */
	pthread_mutex_unlock(&cl->g->lock);
	cl->nheld = 0;
	if (ndoomed && reap_now(&removed, cl->g, cl->held, ndoomed) < 0)
		gc_defer(cl->g, cl->held, ndoomed);
}

/* ---- claims ---- */

int gc_claim(struct gc_claim **out, struct gc *g, const struct hash *h, size_t n)
{
	struct gc_claim *cl = calloc(1, sizeof(*cl));
	int err = 0;

	if (!cl)
		return ck_error(CK_ENOMEM, "out of memory");
	cl->g = g;
	cl->group = atomic_fetch_add(&g->next_group, 1);
	cl->renewed = now_s();
	if (n && (err = gc_claim_more(cl, h, n)) < 0) {
		gc_release(cl);
		return err;
	}
	*out = cl;
	return 0;
}

int gc_claim_more(struct gc_claim *cl, const struct hash *h, size_t n)
{
	if (!n)
		return 0;
	if (cl->g->alone)
		return hold_add(cl, h, n);
	return index_claims_add(cl->g->idx, cl->g->owner, cl->group, h, n,
				cl->renewed + cl->g->lease);
}

int gc_claim_renew(struct gc_claim *cl)
{
	int64_t now = now_s();
	int err;

	if (cl->g->alone || now - cl->renewed < cl->g->lease / 2)
		return 0;
	if ((err = index_claims_renew(cl->g->idx, cl->g->owner, cl->group, now + cl->g->lease)) < 0)
		return err;
	cl->renewed = now;
	return 0;
}

static void claim_free(struct gc_claim *cl)
{
	free(cl->held);
	free(cl);
}

void gc_release(struct gc_claim *cl)
{
	struct hash *orphans = NULL;
	size_t n = 0;
	uint64_t removed;

	if (!cl)
		return;
	if (cl->g->alone) {
		hold_drop_all(cl);
	} else if (index_claims_release(&orphans, &n, cl->g->idx, cl->g->owner, cl->group) < 0) {
		fprintf(stderr, "ckptd: claims of group %" PRId64 " stay until they expire: %s\n",
			cl->group, ck_errmsg());
	} else if (n && reap_now(&removed, cl->g, orphans, n) < 0) {
		/* freed by a delete while this group held them: ours to reap */
		gc_defer(cl->g, orphans, n);
	}
	free(orphans);
	claim_free(cl);
}

void gc_keep(struct gc_claim *cl, int64_t until, const struct hash *h, size_t n)
{
	struct kept *k;

	if (!cl)
		return;
	k = calloc(1, sizeof(*k));
	if (k && n && !(k->h = malloc(n * sizeof(*h)))) {
		free(k);
		k = NULL;
	}
	if (!k) { /* out of memory: nothing kept */
		gc_release(cl);
		return;
	}
	if (n)
		memcpy(k->h, h, n * sizeof(*h));
	k->n = n;
	k->group = cl->group;
	k->until = until;
	/* alone, the holds stay in the hold set until gc_expire drops them */
	if (!cl->g->alone && index_claims_renew(cl->g->idx, cl->g->owner, cl->group, k->until) < 0)
		fprintf(stderr, "ckptd: claims of group %" PRId64 " keep their lease: %s\n",
			cl->group, ck_errmsg());
	if (cl->g->alone) { /* the group's holds, for gc_expire to drop */
		free(k->h);
		k->h = cl->held;
		k->n = cl->nheld;
		cl->held = NULL;
	}
	pthread_mutex_lock(&cl->g->keep_lock);
	k->next = cl->g->kept;
	cl->g->kept = k;
	if (k->until < cl->g->kept_next)
		cl->g->kept_next = k->until;
	pthread_mutex_unlock(&cl->g->keep_lock);
	claim_free(cl);
}

int gc_claimed(uint8_t *yes, struct gc *g, const struct hash *h, size_t n)
{
	if (g->alone) {
		pthread_mutex_lock(&g->lock);
		for (size_t i = 0; i < n; i++)
			yes[i] = held_find(g, &h[i]) != NULL;
		pthread_mutex_unlock(&g->lock);
		return 0;
	}
	return index_blobs_claimed(yes, g->idx, h, n, now_s());
}

void gc_expire(struct gc *g)
{
	int64_t now = now_s();
	struct kept *due = NULL, **p;

	pthread_mutex_lock(&g->keep_lock);
	if (g->kept_next > now) {
		pthread_mutex_unlock(&g->keep_lock);
		return;
	}
	g->kept_next = INT64_MAX;
	for (p = &g->kept; *p;) {
		struct kept *k = *p;
		if (k->until <= now) {
			*p = k->next;
			k->next = due;
			due = k;
			continue;
		}
		if (k->until < g->kept_next)
			g->kept_next = k->until;
		p = &k->next;
	}
	pthread_mutex_unlock(&g->keep_lock);
	while (due) {
		struct kept *k = due;
		struct gc_claim cl = {.g = g, .group = k->group, .held = k->h, .nheld = k->n};
		uint64_t removed;
		due = k->next;
		/* the claims go (reaping what a delete freed meanwhile), then
		 * what no checkpoint took up */
		if (g->alone) { /* it compacts its array: give it a copy */
			cl.held = k->n ? malloc(k->n * sizeof(*k->h)) : NULL;
			if (cl.held)
				memcpy(cl.held, k->h, k->n * sizeof(*k->h));
			else
				cl.nheld = 0; /* out of memory: the holds stay */
			hold_drop_all(&cl);
			free(cl.held);
		} else {
			struct hash *orphans = NULL;
			size_t n = 0;
			if (index_claims_release(&orphans, &n, g->idx, g->owner, k->group) < 0)
				fprintf(stderr,
					"ckptd: claims of group %" PRId64
					" stay until they expire: %s\n",
					k->group, ck_errmsg());
			free(orphans);
		}
		if (k->n && reap_now(&removed, g, k->h, k->n) < 0)
			gc_defer(g, k->h, k->n);
		free(k->h);
		free(k);
	}
}

/* ---- reaping ---- */

static int unlink_blob(void *arg, const struct hash *h)
{
	struct gc *g = arg;

	/* alone, g->lock is held by the reap: the hold set is stable */
	struct held *e = g->alone ? held_find(g, h) : NULL;
	if (e) {
		e->doomed = 1; /* its last release reaps it */
		return 1;
	}
	return g->b->remove(g->b, h);
}

void gc_defer(struct gc *g, const struct hash *freed, size_t n)
{
	pthread_mutex_lock(&g->defer_lock);
	if (g->ndeferred + n > g->capdeferred) {
		size_t cap = g->capdeferred ? g->capdeferred : 64;
		while (cap < g->ndeferred + n)
			cap *= 2;
		struct hash *v = realloc(g->deferred, cap * sizeof(*v));
		if (!v) { /* the start-up sweep finds them */
			pthread_mutex_unlock(&g->defer_lock);
			return;
		}
		g->deferred = v;
		g->capdeferred = cap;
	}
	memcpy(g->deferred + g->ndeferred, freed, n * sizeof(*freed));
	g->ndeferred += n;
	pthread_mutex_unlock(&g->defer_lock);
}

static int reap_now(uint64_t *removed, struct gc *g, const struct hash *h, size_t n)
{
	int err;

	*removed = 0;
	if (!n)
		return 0;
	if (g->alone)
		pthread_mutex_lock(&g->lock);
	err = index_reap(removed, g->idx, h, n, now_s(), unlink_blob, g);
	if (g->alone)
		pthread_mutex_unlock(&g->lock);
	return err;
}

int gc_reap(uint64_t *removed, struct gc *g, const struct hash *freed, size_t n)
{
	uint64_t r = 0, r2 = 0;
	struct hash *later = NULL;
	size_t nlater = 0;
	int err = reap_now(&r, g, freed, n);

	/* what an earlier reap could not do, now that the index answers */
	if (err == 0) {
		pthread_mutex_lock(&g->defer_lock);
		later = g->deferred;
		nlater = g->ndeferred;
		g->deferred = NULL;
		g->ndeferred = g->capdeferred = 0;
		pthread_mutex_unlock(&g->defer_lock);
		if (nlater && reap_now(&r2, g, later, nlater) < 0)
			gc_defer(g, later, nlater);
		free(later);
	}
	if (removed)
		*removed = r + r2;
	return err;
}

int gc_recover(uint64_t *removed, struct gc *g)
{
	struct hash *h = NULL;
	size_t n = 0;
	int err;

	*removed = 0;
	/* the claims go first: reaping checks every live claim, ours too */
	if ((err = index_claims_owned(&h, &n, g->idx, g->owner)) < 0 ||
	    (err = index_claims_release(NULL, NULL, g->idx, g->owner, -1)) < 0)
		goto out;
	err = gc_reap(removed, g, h, n);
out:
	free(h);
	return err;
}

/* ---- sweep ---- */

struct sweep {
	struct gc *g;
	int64_t cutoff; /* blobs written before this may go */
	struct hash *cand;
	size_t n, cap;
};

static int sweep_one(void *arg, const struct hash *h, int64_t mtime)
{
	struct sweep *s = arg;
	struct index_blob row;
	int err;

	if (mtime >= s->cutoff)
		return 0;
	err = index_blob_get(&row, s->g->idx, h);
	if (err == 0)
		return 0;
	if (err != CK_ENOTFOUND)
		return err;
	struct hash *v = vec_grow(s->cand, &s->cap, s->n, sizeof(*v), 64);
	if (!v)
		return ck_error(CK_ENOMEM, "out of memory");
	s->cand = v;
	s->cand[s->n++] = *h;
	return 0;
}

int gc_sweep(uint64_t *removed, struct gc *g, int all)
{
	int64_t now = now_s();
	struct sweep s = {g, all ? INT64_MAX : now - g->lease, NULL, 0, 0};
	int err;

	*removed = 0;
	err = g->b->foreach (g->b, sweep_one, &s);
	/* Candidates are checked again under the reaper's lock: an upload may
	 * have committed or claimed one since. With `all`, every claim left in
	 * the index is a dead process's: `now` past all expiries drops them. */
	if (err == 0) { /* also with no candidate: it drops expired claims */
		if (g->alone)
			pthread_mutex_lock(&g->lock);
		err =
		    index_reap(removed, g->idx, s.cand, s.n, all ? INT64_MAX : now, unlink_blob, g);
		if (g->alone)
			pthread_mutex_unlock(&g->lock);
	}
	free(s.cand);
	return err;
}
