/*
 * gc.c: the hold set of uploads in flight and the unlinking of freed blobs
 * (see gc.h). The hold set is a small chained hash table keyed by the blob
 * hash's first bytes (already uniformly distributed).
 */
#include "gc.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"

#define GC_BUCKETS 4096

struct held {
	struct hash h;
	unsigned count;
	struct held *next;
};

struct gc {
	pthread_mutex_t lock;
	struct held *buckets[GC_BUCKETS];
};

static size_t bucket(const struct hash *h)
{
	return ((size_t)h->b[0] << 8 | h->b[1]) % GC_BUCKETS;
}

int gc_new(struct gc **out)
{
	struct gc *g = calloc(1, sizeof(*g));

	if (!g)
		return ck_error(CK_ENOMEM, "out of memory");
	pthread_mutex_init(&g->lock, NULL);
	*out = g;
	return 0;
}

void gc_free(struct gc *g)
{
	if (!g)
		return;
	for (size_t i = 0; i < GC_BUCKETS; i++)
		while (g->buckets[i]) {
			struct held *e = g->buckets[i];
			g->buckets[i] = e->next;
			free(e);
		}
	pthread_mutex_destroy(&g->lock);
	free(g);
}

static struct held *find(struct gc *g, const struct hash *h)
{
	for (struct held *e = g->buckets[bucket(h)]; e; e = e->next)
		if (!memcmp(e->h.b, h->b, 32))
			return e;
	return NULL;
}

int gc_hold(struct gc *g, const struct hash *h)
{
	int err = 0;

	pthread_mutex_lock(&g->lock);
	struct held *e = find(g, h);
	if (e) {
		e->count++;
	} else if ((e = calloc(1, sizeof(*e)))) {
		e->h = *h;
		e->count = 1;
		e->next = g->buckets[bucket(h)];
		g->buckets[bucket(h)] = e;
	} else {
		err = ck_error(CK_ENOMEM, "out of memory");
	}
	pthread_mutex_unlock(&g->lock);
	return err;
}

void gc_release(struct gc *g, const struct hash *h)
{
	pthread_mutex_lock(&g->lock);
	for (struct held **p = &g->buckets[bucket(h)]; *p; p = &(*p)->next) {
		if (memcmp((*p)->h.b, h->b, 32))
			continue;
		if (--(*p)->count == 0) {
			struct held *e = *p;
			*p = e->next;
			free(e);
		}
		break;
	}
	pthread_mutex_unlock(&g->lock);
}

/* With g->lock held: unlink h unless held or named by the index. */
static int unlink_if_free(struct gc *g, struct index *idx, struct blob_backend *b,
			  const struct hash *h)
{
	int err;

	if (find(g, h))
		return 0;
	err = index_blob_exists(idx, h);
	if (err == 0)
		return 0;
	if (err != CK_ENOTFOUND)
		return err;
	err = b->remove(b, h);
	return err == CK_ENOTFOUND ? 0 : err;
}

int gc_unlink_freed(struct gc *g, struct index *idx, struct blob_backend *b,
		    const struct hash *freed, size_t n)
{
	int first = 0;

	pthread_mutex_lock(&g->lock);
	for (size_t i = 0; i < n; i++) {
		int err = unlink_if_free(g, idx, b, &freed[i]);
		if (err < 0 && !first)
			first = err;
	}
	pthread_mutex_unlock(&g->lock);
	return first;
}

struct sweep {
	struct gc *g;
	struct index *idx;
	struct blob_backend *b;
	uint64_t removed;
	int err;
};

static int sweep_one(void *arg, const struct hash *h, int64_t mtime)
{
	struct sweep *s = arg;
	int err;

	if (index_blob_exists(s->idx, h) == 0)
		return 0;
	pthread_mutex_lock(&s->g->lock);
	err = unlink_if_free(s->g, s->idx, s->b, h);
	pthread_mutex_unlock(&s->g->lock);
	if (err < 0 && !s->err)
		s->err = err;
	else if (err == 0 && s->b->exists(s->b, h) == CK_ENOTFOUND)
		s->removed++;
	return 0;
}

int gc_sweep(uint64_t *removed, struct gc *g, struct index *idx, struct blob_backend *b)
{
	struct sweep s = {g, idx, b, 0, 0};
	int err = b->foreach (b, sweep_one, &s);

	*removed = s.removed;
	return err < 0 ? err : s.err;
}
