/*
 * readahead.c: a checkpoint file's bytes read ahead of the sender
 * (readahead.h).
 *
 * The file is cut into chunks along its parts: a chunk is at most RA_CHUNK
 * bytes, plus at most RA_SLACK of small parts that follow (a torch file's
 * skeleton pieces between storages), and a part larger than RA_CHUNK is cut
 * into RA_CHUNK pieces. So a storage of up to RA_CHUNK is one chunk, one
 * request to an object store, not two halves of two chunks. Chunk k is
 * filled into slot k % nslots. A worker takes the lowest chunk nobody has taken, when its
 * slot is free (the reader has moved past chunk k - nslots), reads it part by
 * part through its own blob readers, and marks the slot full or failed. The
 * reader copies out of the slot of the chunk it is in and frees the slot when
 * it leaves the chunk. A storage's bytes are read without a reader
 * (store_blob_read: one request to an object store, straight into the
 * slot); the skeleton's small pieces through a reader each worker keeps
 * open, which reads ahead within the skeleton.
 *
 * Locking: one mutex per readahead guards the slots' states and the
 * counters; a slot's bytes belong to the worker filling it, then to the
 * reader once it is full. The budget has its own mutex.
 */
#include "readahead.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "../common/err.h"
#include "blob.h"

#define RA_SLACK (64u << 10)

enum slot_state { SLOT_FREE = 0, SLOT_FILLING, SLOT_FULL, SLOT_FAILED };

struct slot {
	uint8_t *p;
	uint64_t chunk; /* the chunk it holds (or is being filled with) */
	size_t len;
	enum slot_state state;
	int err;
	char msg[512];
};

struct readahead {
	struct store *s;
	const struct index_layout *l;
	uint64_t from, end, nchunks;
	uint64_t *starts; /* chunk k is the file's [starts[k], starts[k + 1]) */
	size_t reserved;  /* of the budget */
	int nslots;
	struct slot slots[RA_SLOTS];

	pthread_mutex_t mu;
	pthread_cond_t filled; /* a slot became full or failed */
	pthread_cond_t freed;  /* a slot became free, or stop */
	uint64_t next_fill;    /* the next chunk a worker takes */
	uint64_t cur;	       /* the chunk the reader is in */
	size_t cur_off;	       /* its bytes already taken */
	int stop;
	pthread_t threads[RA_WORKERS];
	int nthreads;
};

static pthread_mutex_t budget_mu = PTHREAD_MUTEX_INITIALIZER;
static size_t budget_used;

static int budget_take(size_t n)
{
	int ok;

	pthread_mutex_lock(&budget_mu);
	ok = budget_used + n <= RA_BUDGET;
	if (ok)
		budget_used += n;
	pthread_mutex_unlock(&budget_mu);
	return ok;
}

static void budget_give(size_t n)
{
	pthread_mutex_lock(&budget_mu);
	budget_used -= n;
	pthread_mutex_unlock(&budget_mu);
}

/* Reads the file's [at, at + n) into dst. */
static int fill(struct readahead *ra, struct blob_reader **skel, uint8_t *dst, uint64_t at,
		size_t n)
{
	const struct index_layout *l = ra->l;
	size_t i = index_layout_part_at(l, at);
	int err;

	while (n > 0) {
		const struct index_layout_part *p = &l->parts[i++];
		uint64_t in_part = at - p->file_off;
		size_t m = p->size - in_part < n ? (size_t)(p->size - in_part) : n;
		if (memcmp(p->blob.b, l->skeleton.b, 32))
			err = store_blob_read(ra->s, &p->blob, dst, m, p->src_off + in_part);
		else if (*skel || (err = store_blob_open(skel, ra->s, &p->blob)) == 0)
			err = blob_reader_read(*skel, dst, m, p->src_off + in_part);
		if (err < 0)
			return err;
		dst += m;
		at += m;
		n -= m;
	}
	return 0;
}

static void *worker_main(void *arg)
{
	struct readahead *ra = arg;
	struct blob_reader *skel = NULL;

	pthread_mutex_lock(&ra->mu);
	for (;;) {
		while (!ra->stop && ra->next_fill < ra->nchunks &&
		       ra->next_fill >= ra->cur + (uint64_t)ra->nslots)
			pthread_cond_wait(&ra->freed, &ra->mu);
		if (ra->stop || ra->next_fill >= ra->nchunks)
			break;
		uint64_t k = ra->next_fill++;
		struct slot *sl = &ra->slots[k % (uint64_t)ra->nslots];
		uint64_t at = ra->starts[k];
		size_t n = (size_t)(ra->starts[k + 1] - at);

		sl->chunk = k;
		sl->state = SLOT_FILLING;
		pthread_mutex_unlock(&ra->mu);
		int err = fill(ra, &skel, sl->p, at, n);
		pthread_mutex_lock(&ra->mu);
		sl->len = n;
		sl->err = err;
		sl->state = err < 0 ? SLOT_FAILED : SLOT_FULL;
		if (err < 0) {
			snprintf(sl->msg, sizeof(sl->msg), "%s", ck_errmsg());
			ra->next_fill = ra->nchunks; /* nothing past a failure */
		}
		pthread_cond_broadcast(&ra->filled);
	}
	pthread_mutex_unlock(&ra->mu);
	blob_reader_close(skel);
	return NULL;
}

/* Cuts [from, l->size) into chunks: their starts (and the end) into *out,
 * their number into *n; with out NULL only counts. */
static uint64_t cut(uint64_t *out, const struct index_layout *l, uint64_t from)
{
	uint64_t n = 0, start = from, at = from;

	for (size_t i = index_layout_part_at(l, from); i < l->nparts && at < l->size; i++) {
		const struct index_layout_part *p = &l->parts[i];
		uint64_t left = p->file_off + p->size - at; /* of this part, from at */
		/* a large part after others: a chunk of its own */
		if (at > start && at - start + left > RA_CHUNK &&
		    (left > RA_SLACK || at - start + left > RA_CHUNK + RA_SLACK)) {
			if (out)
				out[n] = start;
			n++;
			start = at;
		}
		while (at - start + left > RA_CHUNK + (left <= RA_SLACK ? RA_SLACK : 0)) {
			uint64_t take = RA_CHUNK - (at - start);
			at += take;
			left -= take;
			if (out)
				out[n] = start;
			n++;
			start = at;
		}
		at += left;
	}
	if (out) {
		out[n] = start;
		out[n + 1] = l->size;
	}
	return n + 1;
}

int readahead_start(struct readahead **out, struct store *s, const struct index_layout *l,
		    uint64_t from)
{
	struct readahead *ra;
	uint64_t nchunks;
	int nslots;

	*out = NULL;
	if (from >= l->size || l->size - from < 2 * RA_CHUNK)
		return 0;
	nchunks = cut(NULL, l, from);
	nslots = nchunks < RA_SLOTS ? (int)nchunks : RA_SLOTS;
	if (!budget_take((size_t)nslots * (RA_CHUNK + RA_SLACK)))
		return 0;
	if (!(ra = calloc(1, sizeof(*ra))) ||
	    !(ra->starts = calloc(nchunks + 1, sizeof(uint64_t)))) {
		free(ra);
		budget_give((size_t)nslots * (RA_CHUNK + RA_SLACK));
		return ck_error(CK_ENOMEM, "out of memory");
	}
	cut(ra->starts, l, from);
	ra->s = s;
	ra->l = l;
	ra->from = from;
	ra->end = l->size;
	ra->nchunks = nchunks;
	ra->nslots = nslots;
	ra->reserved = (size_t)nslots * (RA_CHUNK + RA_SLACK);
	pthread_mutex_init(&ra->mu, NULL);
	pthread_cond_init(&ra->filled, NULL);
	pthread_cond_init(&ra->freed, NULL);
	for (int i = 0; i < nslots; i++) {
		/* mapped, not malloc'ed: freeing a large malloc'ed block raises
		 * glibc's mmap threshold, and the next download's slots would
		 * then come from the heap and stay resident after it */
		void *p = mmap(NULL, RA_CHUNK + RA_SLACK, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED) {
			readahead_stop(ra);
			return ck_error(CK_ENOMEM, "out of memory");
		}
		ra->slots[i].p = p;
	}
	for (int i = 0; i < RA_WORKERS && i < nslots; i++)
		if (pthread_create(&ra->threads[ra->nthreads], NULL, worker_main, ra) == 0)
			ra->nthreads++;
	if (ra->nthreads == 0) { /* no thread: read directly */
		readahead_stop(ra);
		return 0;
	}
	*out = ra;
	return 0;
}

long readahead_read(struct readahead *ra, uint8_t *buf, size_t n)
{
	size_t done = 0;

	pthread_mutex_lock(&ra->mu);
	while (done < n && ra->cur < ra->nchunks) {
		struct slot *sl = &ra->slots[ra->cur % (uint64_t)ra->nslots];

		while ((sl->state != SLOT_FULL && sl->state != SLOT_FAILED) || sl->chunk != ra->cur)
			pthread_cond_wait(&ra->filled, &ra->mu);
		if (sl->state == SLOT_FAILED) {
			int err = sl->err;
			pthread_mutex_unlock(&ra->mu);
			if (done > 0) /* the bytes before the failure first */
				return (long)done;
			return ck_error(err, "%s", sl->msg);
		}
		size_t m = sl->len - ra->cur_off < n - done ? sl->len - ra->cur_off : n - done;
		memcpy(buf + done, sl->p + ra->cur_off, m);
		done += m;
		ra->cur_off += m;
		if (ra->cur_off == sl->len) {
			sl->state = SLOT_FREE;
			ra->cur++;
			ra->cur_off = 0;
			pthread_cond_broadcast(&ra->freed);
		}
	}
	pthread_mutex_unlock(&ra->mu);
	return (long)done;
}

uint64_t readahead_pos(const struct readahead *ra)
{
	return ra->cur < ra->nchunks ? ra->starts[ra->cur] + ra->cur_off : ra->end;
}

void readahead_stop(struct readahead *ra)
{
	if (!ra)
		return;
	pthread_mutex_lock(&ra->mu);
	ra->stop = 1;
	pthread_cond_broadcast(&ra->freed);
	pthread_mutex_unlock(&ra->mu);
	for (int i = 0; i < ra->nthreads; i++)
		pthread_join(ra->threads[i], NULL);
	for (int i = 0; i < ra->nslots; i++)
		if (ra->slots[i].p)
			munmap(ra->slots[i].p, RA_CHUNK + RA_SLACK);
	pthread_cond_destroy(&ra->freed);
	pthread_cond_destroy(&ra->filled);
	pthread_mutex_destroy(&ra->mu);
	budget_give(ra->reserved);
	free(ra->starts);
	free(ra);
}
