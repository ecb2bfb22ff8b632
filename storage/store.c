/*
 * store.c: the store layer (see store.h): the index, the blob store and the
 * collector, opened together and used through the operations below.
 *
 * This instance's directory (--data) holds only what is local to it:
 *
 *   DATA/tmp/       upload spools and skeleton copies (O_TMPFILE: never
 *                   visible by name, gone with the process)
 *   DATA/RESERVE    8 MiB kept free for deletes on a full disk
 *   DATA/INSTANCE   this instance's name in claims, kept across restarts
 *   DATA/LOCK       held by the serving process (server/main.c)
 *
 * and, by default, the shared parts too: DATA/index.sqlite and DATA/blobs/.
 *
 * Committing a checkpoint (store_commit):
 *   1. claim the storages' blobs (gc.h): from here no delete removes them;
 *   2. put each into a blob batch: written unless stored already, as a
 *      delta against the same tensor of the run's latest checkpoint (of its
 *      file of the same name, for a file of several) when the
 *      blob store makes deltas and that is smaller; a blob stored as a delta
 *      needs its chain (blob.h): claimed, checked, and referenced by the
 *      checkpoint like its storages (index_new_checkpoint.extra);
 *   3. copy every other byte of the upload (the skeleton) into a temporary
 *      file, hashing it; claim and put it too;
 *   4. commit the batch (every blob durable), then the index transaction;
 *   5. drop the claims; apply the model's retention policy (never to the
 *      checkpoint just made). On failure before 4's index commit, the blobs
 *      this upload wrote are reaped again, unless something else names them.
 */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../common/err.h"
#include "gc.h"
#include "verify.h"

#define RESERVE_BYTES (8u << 20)

struct store {
	char *data_dir, *tmp_dir, *reserve;
	struct index *idx;
	struct blob_backend *blobs;
	struct gc *gc;
	int alone;
	int compress;
	pthread_mutex_t reserve_lock;
	/* keeps under way (store_keep_begin .. _end), which store_blobs_have
	 * waits for */
	pthread_mutex_t keep_lock;
	pthread_cond_t keep_done;
	int keeps;
	/* when store_staged_expire last asked the index (epoch seconds) */
	_Atomic int64_t staged_checked;
};

/* How long store_blobs_have waits for keeps under way. */
#define KEEP_WAIT_S 30

struct store_hold {
	struct gc_claim *cl;
};

static char *path_join(const char *a, const char *b)
{
	size_t n = strlen(a) + strlen(b) + 2;
	char *p = malloc(n);

	if (p)
		snprintf(p, n, "%s/%s", a, b);
	return p;
}

static int mkdir_one(const char *dir)
{
	if (mkdir(dir, 0755) == 0 || errno == EEXIST)
		return 0;
	return ck_error(errno == ENOSPC ? CK_ENOSPC : CK_EIO, "cannot create %s: %s", dir,
			strerror(errno));
}

/* Keeps RESERVE_BYTES allocated in the data directory (best effort: a disk
 * already full leaves it smaller or absent until space is freed). */
static void reserve_make(struct store *s)
{
	int fd = open(s->reserve, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);

	if (fd < 0)
		return;
	if (posix_fallocate(fd, 0, RESERVE_BYTES) == 0)
		fsync(fd);
	close(fd);
}

/* Unlinks the reserve; 1 when there was one to release. */
static int reserve_release(struct store *s)
{
	struct stat st;

	if (stat(s->reserve, &st) < 0 || st.st_size == 0)
		return 0;
	return unlink(s->reserve) == 0;
}

/* This instance's name in claims: kept in DATA/INSTANCE, so that after a
 * crash the instance knows which claims and temporary files were its own
 * (the data directory's lock makes it one process at a time). Made on first
 * use; a name made up per process when it cannot be kept. */
static void owner_make(char *out, size_t n);

static void owner_stable(char *out, size_t n, const char *data_dir)
{
	char path[4096], buf[160];
	ssize_t got;
	int fd;

	snprintf(path, sizeof(path), "%s/INSTANCE", data_dir);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0) {
		got = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (got > 0) {
			buf[got] = '\0';
			buf[strcspn(buf, "\n")] = '\0';
			if (buf[0]) {
				snprintf(out, n, "%s", buf);
				return;
			}
		}
	}
	owner_make(out, n);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) >= 0) {
		int ok = write(fd, out, strlen(out)) == (ssize_t)strlen(out) && fsync(fd) == 0;
		close(fd);
		if (!ok)
			unlink(path);
	}
}

static void owner_make(char *out, size_t n)
{
	char host[64] = "host";
	unsigned char rnd[6] = {0};
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

	gethostname(host, sizeof(host) - 1);
	host[sizeof(host) - 1] = '\0';
	if (fd >= 0) {
		if (read(fd, rnd, sizeof(rnd)) != (ssize_t)sizeof(rnd))
			memset(rnd, 0, sizeof(rnd));
		close(fd);
	}
	snprintf(out, n, "%s-%02x%02x%02x%02x%02x%02x", host, rnd[0], rnd[1], rnd[2], rnd[3],
		 rnd[4], rnd[5]);
}

int store_open(struct store **out, const struct store_config *cfg)
{
	struct store *s = calloc(1, sizeof(*s));
	char *index_url = NULL, *blob_dir = NULL, owner[160];
	int err;

	if (!s)
		return ck_error(CK_ENOMEM, "out of memory");
	pthread_mutex_init(&s->reserve_lock, NULL);
	pthread_mutex_init(&s->keep_lock, NULL);
	pthread_cond_init(&s->keep_done, NULL);
	s->data_dir = strdup(cfg->data_dir);
	s->tmp_dir = path_join(cfg->data_dir, "tmp");
	s->reserve = path_join(cfg->data_dir, "RESERVE");
	if (cfg->index_url)
		index_url = strdup(cfg->index_url);
	else if ((index_url = malloc(strlen(cfg->data_dir) + 32)))
		sprintf(index_url, "sqlite:%s/index.sqlite", cfg->data_dir);
	blob_dir = cfg->blobs_url ? strdup(cfg->blobs_url) : path_join(cfg->data_dir, "blobs");
	if (!s->data_dir || !s->tmp_dir || !s->reserve || !index_url || !blob_dir) {
		err = ck_error(CK_ENOMEM, "out of memory");
		goto fail;
	}
	if ((err = mkdir_one(s->data_dir)) < 0 || (err = mkdir_one(s->tmp_dir)) < 0)
		goto fail;
	if ((err = index_open(&s->idx, index_url)) < 0)
		goto fail;
	s->alone = !strcmp(index_kind(s->idx), "sqlite");
	s->compress = cfg->compress;
	if (cfg->owner)
		snprintf(owner, sizeof(owner), "%s", cfg->owner);
	else if (cfg->clean) /* we hold the data directory: its name is ours */
		owner_stable(owner, sizeof(owner), s->data_dir);
	else
		owner_make(owner, sizeof(owner));
	struct blob_config bc = {blob_dir,	 cfg->compress, cfg->s3_endpoint,
				 cfg->s3_region, owner,		s->tmp_dir};
	if ((err = blob_open(&s->blobs, &bc)) < 0)
		goto fail;
	if ((err = gc_new(&s->gc, s->idx, s->blobs, owner, cfg->lease, s->alone)) < 0)
		goto fail;
	if (cfg->clean) {
		/* Leftovers of earlier processes: temporary blob files, and
		 * blobs written for checkpoints that never committed. Alone, all
		 * of them; shared, only what is older than a lease. */
		uint64_t swept = 0, mine = 0;
		int64_t cutoff = s->alone ? INT64_MAX : (int64_t)time(NULL) - gc_lease(s->gc);
		if ((err = s->blobs->clean_tmp(s->blobs, cutoff, 1)) < 0 ||
		    (err = gc_recover(&mine, s->gc)) < 0 ||
		    (err = gc_sweep(&swept, s->gc, s->alone)) < 0)
			goto fail;
		if (swept + mine)
			fprintf(stderr,
				"ckptd: removed %" PRIu64 " blobs left by an unfinished upload\n",
				swept + mine);
		reserve_make(s);
	}
	free(index_url);
	free(blob_dir);
	*out = s;
	return 0;
fail:
	free(index_url);
	free(blob_dir);
	store_close(s);
	return err;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	gc_free(s->gc);
	if (s->blobs)
		s->blobs->free(s->blobs);
	index_close(s->idx);
	pthread_mutex_destroy(&s->reserve_lock);
	pthread_mutex_destroy(&s->keep_lock);
	pthread_cond_destroy(&s->keep_done);
	free(s->data_dir);
	free(s->tmp_dir);
	free(s->reserve);
	free(s);
}

const char *store_tmp_dir(const struct store *s)
{
	return s->tmp_dir;
}

const char *store_index_kind(const struct store *s)
{
	return index_kind(s->idx);
}

const char *store_blobs_kind(const struct store *s)
{
	return s->blobs->name;
}

int store_alone(const struct store *s)
{
	return s->alone;
}

/* ---- commit ---- */

/* Copies every byte of the upload outside the storages into a new unlinked
 * file, hashing it on the way. */
static int skeleton_write(int *fd_out, struct blob_meta *meta, struct store *s, int src,
			  uint64_t size, const struct index_storage *st, size_t n)
{
	enum { CHUNK = 1 << 18 };
	struct hasher *h = hasher_new();
	uint8_t *buf = malloc(CHUNK);
	uint64_t pos = 0, out_off = 0;
	int fd = -1, err = 0;

	if (!h || !buf) {
		err = ck_error(CK_ENOMEM, "out of memory");
		goto out;
	}
	fd = open(s->tmp_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0) {
		err = ck_error(errno == ENOSPC ? CK_ENOSPC : CK_EIO,
			       "cannot create a temporary file in %s: %s", s->tmp_dir,
			       strerror(errno));
		goto out;
	}
	for (size_t i = 0; i <= n; i++) {
		uint64_t end = i < n ? st[i].file_off : size;
		while (pos < end) {
			size_t want = end - pos < CHUNK ? (size_t)(end - pos) : CHUNK;
			ssize_t got = pread(src, buf, want, (off_t)pos);
			if (got < 0 && errno == EINTR)
				continue;
			if (got < 0) {
				err =
				    ck_error(CK_EIO, "reading the upload spool at %" PRIu64 ": %s",
					     pos, strerror(errno));
				goto out;
			}
			if (got == 0) {
				err = ck_error(
				    CK_EIO, "the upload spool ends at %" PRIu64 ", before %" PRIu64,
				    pos, end);
				goto out;
			}
			hasher_update(h, buf, (size_t)got);
			for (ssize_t w = 0; w < got;) {
				ssize_t k = pwrite(fd, buf + w, (size_t)(got - w),
						   (off_t)(out_off + (uint64_t)w));
				if (k < 0 && errno == EINTR)
					continue;
				if (k < 0) {
					err = ck_error(errno == ENOSPC ? CK_ENOSPC : CK_EIO,
						       "writing the skeleton: %s", strerror(errno));
					goto out;
				}
				w += k;
			}
			pos += (uint64_t)got;
			out_off += (uint64_t)got;
		}
		if (i < n)
			pos = st[i].file_off + st[i].raw_size;
	}
	hasher_final(h, &meta->hash, &meta->crc32);
	meta->raw_size = out_off;
	*fd_out = fd;
	fd = -1;
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	hasher_free(h);
	return err;
}

/* Removes blobs mine[0..k) that an upload wrote and that, by its failure,
 * nothing names (gc_reap keeps any a row or another claim names by now).
 * When the index is what failed (busy, unreachable), asking it again would
 * only wait again: the reap is deferred to the next one. The thread's error
 * message is kept. */
static void reap_written(struct store *s, const struct hash *mine, size_t k, int index_down,
			 const char *what)
{
	struct ck_error_state saved;

	if (k == 0)
		return;
	ck_error_save(&saved, 0);
	if (index_down)
		gc_defer(s->gc, mine, k);
	else if (gc_reap(NULL, s->gc, mine, k) < 0)
		fprintf(stderr, "ckptd: %s stay for the sweep: %s\n", what, ck_errmsg());
	ck_error_restore(&saved);
}

/* Sets metas[i].unindexed for each blob of metas[0..n) (claimed by now)
 * that the index does not name, on a store where asking the store costs
 * requests (blob_meta.unindexed); when the index cannot say, the store is
 * asked as before. Never for a blob whose bytes the caller does not hold
 * (skip[i]: a thin or resumed upload's reference, which names a blob kept
 * for it, claimed but in no row): put unasked, it would be written from
 * the spool's hole. */
static void mark_unindexed(struct store *s, struct blob_meta *metas, size_t n, const uint8_t *skip)
{
	struct hash *h;
	uint64_t *size;

	if (!s->blobs->stat_remote || n == 0)
		return;
	h = calloc(n, sizeof(*h));
	size = malloc(n * sizeof(*size));
	if (h && size) {
		for (size_t i = 0; i < n; i++)
			h[i] = metas[i].hash;
		if (index_blob_sizes(size, s->idx, h, n) == 0)
			for (size_t i = 0; i < n; i++)
				metas[i].unindexed = size[i] == INDEX_NO_BLOB && !(skip && skip[i]);
		else
			ck_error_clear();
	}
	free(h);
	free(size);
}

/* ---- early sends (store.h) ---- */

struct early_item {
	struct early_item *next;
	struct blob_meta meta; /* hash, raw_size, crc32; the rest once put */
	uint64_t off;
	int used; /* taken over by store_commit, which commits or undoes it */
};

struct store_early {
	struct store *s;
	int fd;
	struct gc_claim *cl;
	struct blob_batch *bt; /* NULL once store_commit took it over */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct early_item *queue, *tail; /* offered, not sent yet */
	struct early_item *sent;	 /* put into bt */
	size_t nsent;
	struct early_item **sorted; /* sent, by hash, once stopped */
	size_t nsorted;
	pthread_t thread;
	int running, closing, failed;
};

static void *early_main(void *arg)
{
	struct store_early *e = arg;

	pthread_mutex_lock(&e->mu);
	for (;;) {
		struct early_item *it;
		int err;

		while (!e->queue && !e->closing)
			pthread_cond_wait(&e->cv, &e->mu);
		if (e->closing) /* what is left, store_commit puts */
			break;
		it = e->queue;
		if (!(e->queue = it->next))
			e->tail = NULL;
		pthread_mutex_unlock(&e->mu);
		/* claimed before the store is asked, as store_commit does */
		err = gc_claim_more(e->cl, &it->meta.hash, 1);
		if (err == 0)
			mark_unindexed(e->s, &it->meta, 1, NULL); /* spooled bytes */
		if (err == 0)
			err =
			    e->s->blobs->batch_put_fd(e->bt, &it->meta, e->fd, it->off, DT_INVALID);
		pthread_mutex_lock(&e->mu);
		if (err < 0) { /* the store is in trouble: store_commit will tell */
			e->failed = 1;
			free(it);
			continue;
		}
		it->next = e->sent;
		e->sent = it;
		e->nsent++;
	}
	pthread_mutex_unlock(&e->mu);
	return NULL;
}

int store_early_begin(struct store_early **out, struct store *s, int fd)
{
	struct store_early *e;
	int err;

	*out = NULL;
	if (s->compress || store_direct_possible(s)) /* nothing to gain */
		return 0;
	if (!(e = calloc(1, sizeof(*e))))
		return ck_error(CK_ENOMEM, "out of memory");
	e->s = s;
	e->fd = fd;
	pthread_mutex_init(&e->mu, NULL);
	pthread_cond_init(&e->cv, NULL);
	if ((err = gc_claim(&e->cl, s->gc, NULL, 0)) < 0 ||
	    (err = s->blobs->batch_begin(&e->bt, s->blobs)) < 0) {
		store_early_free(e);
		return err;
	}
	*out = e;
	return 0;
}

void store_early_offer(struct store_early *e, const struct hash *h, uint32_t crc, uint64_t off,
		       uint64_t n)
{
	struct early_item *it;

	if (!e)
		return;
	pthread_mutex_lock(&e->mu);
	if (e->closing || e->failed || !(it = calloc(1, sizeof(*it)))) {
		pthread_mutex_unlock(&e->mu);
		return; /* store_commit puts it */
	}
	it->meta.hash = *h;
	it->meta.crc32 = crc;
	it->meta.raw_size = n;
	it->off = off;
	if (e->tail)
		e->tail->next = it;
	else
		e->queue = it;
	e->tail = it;
	if (!e->running) {
		if (pthread_create(&e->thread, NULL, early_main, e) == 0)
			e->running = 1;
		else
			e->failed = 1;
	}
	pthread_cond_signal(&e->cv);
	pthread_mutex_unlock(&e->mu);
}

static int item_cmp(const void *a, const void *b)
{
	const struct early_item *x = *(struct early_item *const *)a;
	const struct early_item *y = *(struct early_item *const *)b;

	return hash_cmp(&x->meta.hash, &y->meta.hash);
}

/* Stops the sender thread; what it had not sent yet is dropped, what it
 * sent is sorted by hash for early_find. */
static void early_stop(struct store_early *e)
{
	pthread_mutex_lock(&e->mu);
	e->closing = 1;
	pthread_cond_signal(&e->cv);
	pthread_mutex_unlock(&e->mu);
	if (e->running)
		pthread_join(e->thread, NULL);
	e->running = 0;
	while (e->queue) {
		struct early_item *it = e->queue;
		e->queue = it->next;
		free(it);
	}
	e->tail = NULL;
	/* without the sorted table, store_commit puts them again */
	if (e->sorted || !e->nsent || !(e->sorted = calloc(e->nsent, sizeof(*e->sorted))))
		return;
	e->nsorted = e->nsent;
	size_t k = 0;
	for (struct early_item *it = e->sent; it; it = it->next)
		e->sorted[k++] = it;
	qsort(e->sorted, e->nsorted, sizeof(*e->sorted), item_cmp);
}

/* The item sent for blob h, once stopped; NULL when none. */
static struct early_item *early_find(struct store_early *e, const struct hash *h)
{
	struct early_item key, *kp = &key, **hit;

	if (!e || !e->nsorted)
		return NULL;
	key.meta.hash = *h;
	hit = bsearch(&kp, e->sorted, e->nsorted, sizeof(*e->sorted), item_cmp);
	return hit ? *hit : NULL;
}

void store_early_free(struct store_early *e)
{
	struct hash *mine = NULL;
	size_t k = 0;

	if (!e)
		return;
	early_stop(e);
	if (e->bt) /* never committed: the puts in flight end, the rest go */
		e->s->blobs->batch_free(e->bt);
	gc_release(e->cl);
	/* what it stored and store_commit did not take over: gone again */
	mine = calloc(e->nsent + 1, sizeof(*mine));
	for (struct early_item *it = e->sent; mine && it; it = it->next)
		if (!it->used && !it->meta.existed)
			mine[k++] = it->meta.hash;
	reap_written(e->s, mine, k, 0, "blobs sent early for an upload");
	free(mine);
	while (e->sent) {
		struct early_item *it = e->sent;
		e->sent = it->next;
		free(it);
	}
	free(e->sorted);
	pthread_cond_destroy(&e->cv);
	pthread_mutex_destroy(&e->mu);
	free(e);
}

/* ---- writing once (store.h) ---- */

struct store_direct {
	struct store *s;
	int fd;
	int taken; /* a batch owns the file */
	char name[BLOB_TMP_NAME];
};

int store_direct_possible(const struct store *s)
{
	return s->blobs->tmp_files;
}

int store_direct_open(struct store_direct **out, int *fd, struct store *s)
{
	struct store_direct *d;
	int err;

	*out = NULL;
	*fd = -1;
	if (!s->blobs->tmp_files)
		return 0;
	if (!(d = calloc(1, sizeof(*d))))
		return ck_error(CK_ENOMEM, "out of memory");
	d->s = s;
	if ((err = s->blobs->tmp_open(s->blobs, &d->fd, d->name)) < 0 || d->fd < 0) {
		free(d);
		return err;
	}
	*fd = d->fd;
	*out = d;
	return 0;
}

void store_direct_hint(struct store_direct *d, const struct hash *h)
{
	struct ck_error_state saved;

	if (!d)
		return;
	ck_error_save(&saved, 0);
	if (d->s->blobs->exists(d->s->blobs, h) == CK_ENOTFOUND)
		sync_file_range(d->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
	ck_error_restore(&saved);
}

void store_direct_free(struct store_direct *d)
{
	if (!d)
		return;
	if (!d->taken)
		d->s->blobs->tmp_remove(d->s->blobs, d->name);
	close(d->fd);
	free(d);
}

/* Puts storage i of u into bt: from its direct file (taken over when the
 * blob is new) or from the spool. */
static int put_storage(struct blob_batch *bt, struct blob_meta *meta, struct store *s,
		       const struct store_upload *u, size_t i, const struct index_storage *st)
{
	struct store_direct *d = u->direct ? u->direct[i] : NULL;
	int taken = 0, err;

	if (!d)
		return s->blobs->batch_put_fd(bt, meta, u->fd, st->file_off, st->dtype);
	if (d->taken) /* the same file named twice: it is stored */
		return s->blobs->batch_put_fd(bt, meta, d->fd, 0, st->dtype);
	err = s->blobs->batch_put_tmp(bt, meta, d->name, d->fd, &taken);
	d->taken = taken;
	return err;
}

/* The blobs this upload wrote (nothing had them) go again (reap_written). */
static void undo_writes(struct store *s, const struct blob_meta *metas, size_t n,
			const struct blob_meta *skel, int index_down)
{
	struct hash *mine = calloc(n + 1, sizeof(*mine));
	size_t k = 0;

	if (!mine)
		return; /* they stay until the next sweep */
	for (size_t i = 0; i < n; i++)
		if (!metas[i].existed)
			mine[k++] = metas[i].hash;
	if (skel && !skel->existed)
		mine[k++] = skel->hash;
	reap_written(s, mine, k, index_down, "blobs of a failed upload");
	free(mine);
}

/* A storage whose bytes the upload does not hold (store_upload.referenced)
 * must be stored: it is claimed by now, so it stays; if it is not there
 * (a store damaged from outside), writing it from the upload would store
 * the wrong bytes under its name, so the upload is refused. */
static int referenced_there(struct store *s, const struct hash *h)
{
	char hex[65];
	int err = s->blobs->exists(s->blobs, h);

	if (err != CK_ENOTFOUND)
		return err;
	ck_error_clear();
	hash_to_hex(hex, h);
	return ck_error(CK_ECONFLICT,
			"blob %s, which the upload refers to, is not in the blob store although "
			"the index names it (run ckptd verify); send the whole file",
			hex);
}

/* ---- deltas (blob.h) ---- */

struct prev_tensor {
	const char *path;
	const struct index_storage_row *st;
};

static int prev_cmp(const void *a, const void *b)
{
	return strcmp(((const struct prev_tensor *)a)->path, ((const struct prev_tensor *)b)->path);
}

/* The file named name of checkpoint *id (one of several files), into *id:
 * 0, or CK_ENOTFOUND. */
static int file_part(int64_t *id, struct store *s, const char *name)
{
	struct index_file_list *fl = NULL;
	int err = index_checkpoint_files(&fl, s->idx, *id);

	if (err < 0)
		return err;
	err = CK_ENOTFOUND;
	for (size_t i = 0; i < fl->nitems; i++)
		if (!strcmp(fl->items[i].name, name)) {
			*id = fl->items[i].part;
			err = 0;
		}
	index_file_list_free(fl);
	return err;
}

/* Each storage's delta base into base[i] (has[i] = 1): the blob of the
 * tensor of the same path, dtype and size in the run's latest checkpoint
 * (for a file of a checkpoint of several files: in the file of the same
 * name of the run's latest checkpoint), both tensors spanning their whole
 * storage. None when the blob store makes no deltas. Returns how many. */
static size_t delta_bases(struct hash *base, uint8_t *has, struct store *s,
			  const struct index_new_checkpoint *in)
{
	struct index_tensors *t = NULL;
	struct prev_tensor *pv = NULL;
	size_t np = 0, nb = 0;
	int64_t prev;

	if (!s->blobs->deltas || in->stage_until || !in->run || !in->ntensors ||
	    (in->part_of && !in->file_name))
		return 0;
	if (index_checkpoint_resolve(&prev, s->idx, in->model, "latest", in->run, NULL, 0) < 0 ||
	    (in->part_of && file_part(&prev, s, in->file_name) < 0) ||
	    index_checkpoint_tensors(&t, s->idx, prev) < 0) {
		ck_error_clear(); /* a first checkpoint, or a new file: no base */
		return 0;
	}
	if (!(pv = calloc(t->ntensors + 1, sizeof(*pv))))
		goto out;
	for (size_t j = 0; j < t->ntensors; j++) {
		const struct index_tensor_row *r = &t->tensors[j];
		if (r->storage >= t->nstorages)
			continue;
		const struct index_storage_row *st = &t->storages[r->storage];
		if (r->path && r->offset == 0 && r->nbytes == st->nbytes && r->dtype == st->dtype)
			pv[np++] = (struct prev_tensor){r->path, st};
	}
	qsort(pv, np, sizeof(*pv), prev_cmp);
	for (size_t j = 0; j < in->ntensors; j++) {
		const struct index_tensor *r = &in->tensors[j];
		struct prev_tensor key = {r->path, NULL}, *hit;
		if (!r->path || r->storage >= in->nstorages || has[r->storage])
			continue;
		const struct index_storage *st = &in->storages[r->storage];
		if (r->offset || r->nbytes != st->raw_size || r->dtype != st->dtype ||
		    !(hit = bsearch(&key, pv, np, sizeof(*pv), prev_cmp)))
			continue;
		if (hit->st->dtype != st->dtype || hit->st->nbytes != st->raw_size ||
		    !memcmp(hit->st->blob.b, st->blob.b, 32))
			continue;
		base[r->storage] = hit->st->blob;
		has[r->storage] = 1;
		nb++;
	}
out:
	free(pv);
	index_tensors_free(t);
	return nb;
}

/* Claims m's chain and checks that each of its blobs is stored and has a
 * row: 0, CK_ENOTFOUND (one is gone: a blob stored as a delta and no longer
 * referenced, whose base went), or an error. */
static int chain_hold(struct store *s, struct gc_claim *cl, const struct blob_meta *m)
{
	int err;

	if ((err = gc_claim_more(cl, m->chain, (size_t)m->nchain)) < 0)
		return err;
	for (int j = 0; j < m->nchain; j++) {
		struct index_blob row;
		if ((err = index_blob_get(&row, s->idx, &m->chain[j])) < 0 ||
		    (err = s->blobs->exists(s->blobs, &m->chain[j])) < 0)
			return err;
	}
	return 0;
}

static int chain_gone(const struct hash *h)
{
	char hex[65];

	ck_error_clear();
	hash_to_hex(hex, h);
	return ck_error(CK_ECONFLICT,
			"blob %s, which the upload refers to, is stored as a delta whose base "
			"is gone (run ckptd verify); send the whole file",
			hex);
}

/* The blobs the storages' chains name, once each, as rows of the index
 * (index_new_checkpoint.extra) into *out (the caller frees it). */
static int chain_extra(struct index_storage **out, size_t *n, struct store *s,
		       const struct blob_meta *metas, const struct index_storage *stor, size_t nm)
{
	struct index_storage *x = NULL;
	size_t total = 0, k = 0;
	int err;

	*out = NULL;
	*n = 0;
	for (size_t i = 0; i < nm; i++)
		total += (size_t)metas[i].nchain;
	if (!total)
		return 0;
	if (!(x = calloc(total, sizeof(*x))))
		return ck_error(CK_ENOMEM, "out of memory");
	for (size_t i = 0; i < nm; i++) {
		for (int j = 0; j < metas[i].nchain; j++) {
			const struct hash *h = &metas[i].chain[j];
			struct index_blob row;
			size_t q = 0;
			while (q < k && memcmp(x[q].blob.b, h->b, 32))
				q++;
			if (q < k)
				continue;
			if ((err = index_blob_get(&row, s->idx, h)) < 0) {
				free(x);
				return err == CK_ENOTFOUND ? chain_gone(&metas[i].hash) : err;
			}
			x[k++] = (struct index_storage){.blob = *h,
							.raw_size = row.raw_size,
							.stored_size = row.stored_size,
							.crc32 = row.crc32,
							.codec = row.codec,
							.dtype = stor[i].dtype};
		}
	}
	*out = x;
	*n = k;
	return 0;
}

int store_commit(int64_t *id, struct index_dedup *dedup, struct store *s,
		 const struct store_upload *u)
{
	const struct index_new_checkpoint *in = &u->ck;
	struct index_new_checkpoint k = *in;
	struct index_storage *stor = NULL;
	struct blob_meta *metas = NULL, skel = {0};
	struct blob_batch *bt = NULL;
	struct gc_claim *cl = NULL;
	struct hash *hashes = NULL, *bases = NULL;
	uint8_t *has_base = NULL;
	struct index_storage *extra = NULL;
	size_t nbases, nextra = 0;
	int skel_fd = -1, skel_put = 0, committed = 0, err;
	struct index_freed replaced = {0};
	int64_t cid = 0;

	gc_expire(s->gc);
	store_staged_expire(s, 0);
	k.replaced = &replaced;
	stor = calloc(in->nstorages + 1, sizeof(*stor));
	metas = calloc(in->nstorages + 1, sizeof(*metas));
	hashes = calloc(2 * in->nstorages + 1, sizeof(*hashes));
	bases = calloc(in->nstorages + 1, sizeof(*bases));
	has_base = calloc(in->nstorages + 1, 1);
	if (!stor || !metas || !hashes || !bases || !has_base) {
		err = ck_error(CK_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < in->nstorages; i++) {
		stor[i] = in->storages[i];
		hashes[i] = stor[i].blob;
		metas[i].hash = stor[i].blob;
		metas[i].raw_size = stor[i].raw_size;
		metas[i].crc32 = stor[i].crc32;
	}
	/* 1. claims, before anything asks whether a blob is stored (the
	 * deltas' bases too: read while the blobs are encoded) */
	nbases = delta_bases(bases, has_base, s, in);
	for (size_t i = 0, k = in->nstorages; i < in->nstorages; i++)
		if (has_base[i]) {
			hashes[k++] = bases[i];
			metas[i].delta_base = &bases[i];
		}
	if ((err = gc_claim(&cl, s->gc, hashes, in->nstorages + nbases)) < 0)
		goto out;
	mark_unindexed(s, metas, in->nstorages, u->referenced);
	/* 2. the storages: those sent while the upload arrived are in its
	 * batch already */
	if (u->early) {
		early_stop(u->early);
		bt = u->early->bt;
		u->early->bt = NULL;
	}
	if (!bt && (err = s->blobs->batch_begin(&bt, s->blobs)) < 0)
		goto out;
	for (size_t i = 0; i < in->nstorages; i++) {
		struct early_item *it = early_find(u->early, &metas[i].hash);
		if (it && it->meta.raw_size == metas[i].raw_size) {
			metas[i].stored_size = it->meta.stored_size;
			metas[i].codec = it->meta.codec;
			metas[i].existed = it->meta.existed;
			it->used = 1; /* committed below, or undone with metas */
			continue;
		}
		if (u->referenced && u->referenced[i] &&
		    (err = referenced_there(s, &metas[i].hash)) < 0)
			goto out;
		if ((err = put_storage(bt, &metas[i], s, u, i, &stor[i])) < 0)
			goto out;
		if (!metas[i].nchain)
			continue;
		/* stored as a delta: its chain is kept with it, or, gone, the
		 * blob is stored whole from the upload */
		if ((err = chain_hold(s, cl, &metas[i])) != CK_ENOTFOUND) {
			if (err < 0)
				goto out;
			continue;
		}
		if (u->referenced && u->referenced[i]) {
			err = chain_gone(&metas[i].hash);
			goto out;
		}
		ck_error_clear();
		metas[i].full_only = 1;
		if ((err = put_storage(bt, &metas[i], s, u, i, &stor[i])) < 0)
			goto out;
	}
	/* 3. the skeleton */
	if ((err = skeleton_write(&skel_fd, &skel, s, u->fd, in->size, stor, in->nstorages)) < 0 ||
	    (err = gc_claim_more(cl, &skel.hash, 1)) < 0)
		goto out;
	if ((err = s->blobs->batch_put_fd(bt, &skel, skel_fd, 0, DT_INVALID)) < 0)
		goto out;
	skel_put = 1;
	/* Every byte now lives in the batch: drop a disposable spool's dirty
	 * pages, or a filesystem-wide flush in the commit would write them to
	 * disk too (a second copy of the upload). Only an optimisation, and
	 * not for a store still sending them (async_put). */
	if (u->fd_disposable && !s->blobs->async_put) {
		int dropped = ftruncate(u->fd, 0);
		(void)dropped;
	}
	/* 4. durable blobs, then the index */
	if ((err = s->blobs->batch_commit(bt)) < 0)
		goto out;
	for (size_t i = 0; i < in->nstorages; i++) {
		struct hash ch[BLOB_MAX_CHAIN];
		int nc;
		stor[i].stored_size = metas[i].stored_size;
		stor[i].codec = metas[i].codec;
		if (metas[i].existed || !metas[i].nchain)
			continue;
		/* A delta this upload wrote: another may have put its own first
		 * (never replaced: blob_fs.c); what is stored is what counts. */
		if ((err = s->blobs->chain(s->blobs, &metas[i].hash, ch, &nc)) < 0)
			goto out;
		if (nc == metas[i].nchain &&
		    !memcmp(ch, metas[i].chain, sizeof(ch[0]) * (size_t)nc))
			continue;
		memcpy(metas[i].chain, ch, sizeof(ch[0]) * (size_t)nc);
		metas[i].nchain = nc;
		if (nc && (err = chain_hold(s, cl, &metas[i])) < 0) {
			if (err == CK_ENOTFOUND)
				err = chain_gone(&metas[i].hash);
			goto out;
		}
	}
	if ((err = chain_extra(&extra, &nextra, s, metas, stor, in->nstorages)) < 0)
		goto out;
	k.extra = extra;
	k.nextra = nextra;
	k.storages = stor;
	k.skeleton = skel.hash;
	k.skeleton_size = skel.raw_size;
	k.skeleton_stored = skel.stored_size;
	k.skeleton_crc = skel.crc32;
	k.skeleton_codec = skel.codec;
	if ((err = index_checkpoint_insert(&cid, dedup, s->idx, &k)) < 0)
		goto out;
	committed = 1;
	*id = cid;
	/* the file this one replaced */
	if (replaced.n && gc_reap(NULL, s->gc, replaced.v, replaced.n) < 0)
		fprintf(stderr, "ckptd: blobs of a replaced file stay until the next sweep: %s\n",
			ck_errmsg());
out:
	index_freed_clear(&replaced);
	if (bt)
		s->blobs->batch_free(bt);
	gc_release(cl);
	if (err < 0 && !committed && bt)
		undo_writes(s, metas, in->nstorages, skel_put ? &skel : NULL, err == CK_EUNAVAIL);
	if (skel_fd >= 0)
		close(skel_fd);
	free(stor);
	free(metas);
	free(hashes);
	free(bases);
	free(has_base);
	free(extra);
	/* 5. retention: a failure there does not undo the commit; nothing
	 * staged is visible to it yet */
	if (committed && !in->stage_until && !in->part_of &&
	    store_retention_apply(NULL, s, in->model, cid) < 0)
		fprintf(stderr, "ckptd: retention of model '%s' after checkpoint %" PRId64 ": %s\n",
			in->model, cid, ck_errmsg());
	return err;
}

void store_keep_begin(struct store *s)
{
	pthread_mutex_lock(&s->keep_lock);
	s->keeps++;
	pthread_mutex_unlock(&s->keep_lock);
}

void store_keep_end(struct store *s)
{
	pthread_mutex_lock(&s->keep_lock);
	if (--s->keeps == 0)
		pthread_cond_broadcast(&s->keep_done);
	pthread_mutex_unlock(&s->keep_lock);
}

/* Waits (at most KEEP_WAIT_S) until no keep is under way. */
static void keeps_wait(struct store *s)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += KEEP_WAIT_S;
	pthread_mutex_lock(&s->keep_lock);
	while (s->keeps > 0 && pthread_cond_timedwait(&s->keep_done, &s->keep_lock, &until) == 0)
		;
	pthread_mutex_unlock(&s->keep_lock);
}

int store_keep(struct store *s, int fd, const struct store_piece *p, size_t n, int64_t until)
{
	struct blob_meta *metas = calloc(n + 1, sizeof(*metas));
	struct hash *hashes = calloc(n * (1 + BLOB_MAX_CHAIN) + 1, sizeof(*hashes));
	struct blob_batch *bt = NULL;
	struct gc_claim *cl = NULL;
	size_t nh = n;
	int err;

	gc_expire(s->gc);
	if (!metas || !hashes) {
		err = ck_error(CK_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		hashes[i] = metas[i].hash = p[i].hash;
		metas[i].raw_size = p[i].size;
		metas[i].crc32 = p[i].crc32;
	}
	/* claimed first, as by a commit; the element types are not known
	 * (the file was never parsed), so no byte planes: the retry's commit
	 * takes each blob as stored here */
	if ((err = gc_claim(&cl, s->gc, hashes, n)) < 0 ||
	    (err = s->blobs->batch_begin(&bt, s->blobs)) < 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		if ((err = s->blobs->batch_put_fd(bt, &metas[i], fd, p[i].off, DT_INVALID)) < 0)
			goto out;
		/* stored already as a delta: its chain is kept with it */
		if (metas[i].nchain &&
		    (err = gc_claim_more(cl, metas[i].chain, (size_t)metas[i].nchain)) < 0)
			goto out;
		for (int j = 0; j < metas[i].nchain; j++)
			hashes[nh++] = metas[i].chain[j];
	}
	if ((err = s->blobs->batch_commit(bt)) < 0)
		goto out;
	gc_keep(cl, until, hashes, nh);
	cl = NULL;
out:
	if (bt)
		s->blobs->batch_free(bt);
	if (cl) {
		gc_release(cl);
		undo_writes(s, metas, n, NULL, err == CK_EUNAVAIL);
	}
	free(metas);
	free(hashes);
	return err;
}

/* ---- delete, retention ---- */

/* Runs a delete; on a disk too full for the index to commit, releases the
 * reserve and tries once more, then makes the reserve again. */
static int delete_with_reserve(struct store *s, const char *model, int64_t id)
{
	struct index_freed freed = {0};
	int err = id >= 0 ? index_checkpoint_delete(&freed, s->idx, model, id)
			  : index_model_delete(&freed, s->idx, model);

	if (err == CK_ENOSPC) {
		pthread_mutex_lock(&s->reserve_lock);
		int released = reserve_release(s);
		pthread_mutex_unlock(&s->reserve_lock);
		if (released)
			err = id >= 0 ? index_checkpoint_delete(&freed, s->idx, model, id)
				      : index_model_delete(&freed, s->idx, model);
	}
	if (err == 0)
		err = gc_reap(NULL, s->gc, freed.v, freed.n);
	index_freed_clear(&freed);
	if (err == 0 && access(s->reserve, F_OK) < 0) {
		pthread_mutex_lock(&s->reserve_lock);
		reserve_make(s);
		pthread_mutex_unlock(&s->reserve_lock);
	}
	return err;
}

/* ---- checkpoints of several files (SPEC 3.2) ---- */

int store_staged_open(int64_t *id, struct store *s, const struct index_new_checkpoint *k)
{
	struct store_upload u;
	struct index_dedup dd;

	memset(&u, 0, sizeof(u));
	u.fd = -1; /* no byte: the skeleton is the empty blob */
	u.ck = *k;
	u.ck.size = 0;
	u.ck.storages = NULL;
	u.ck.nstorages = 0;
	u.ck.tensors = NULL;
	u.ck.ntensors = 0;
	u.ck.format = "files";
	return store_commit(id, &dd, s, &u);
}

int store_file_write_begin(struct store *s, const char *model, int64_t id, int64_t token)
{
	return index_file_write_begin(s->idx, model, id, token,
				      (int64_t)time(NULL) + STORE_WRITE_LEASE_S);
}

int store_file_write_renew(struct store *s, int64_t id, int64_t token)
{
	return index_file_write_end(s->idx, id, token, (int64_t)time(NULL) + STORE_WRITE_LEASE_S);
}

void store_file_write_end(struct store *s, int64_t id, int64_t token)
{
	if (index_file_write_end(s->idx, id, token, 0) < 0)
		fprintf(stderr,
			"ckptd: the mark of a failed write to checkpoint %" PRId64
			" stays until it expires: %s\n",
			id, ck_errmsg());
}

int store_files_writing(int64_t *n, struct store *s, int64_t id)
{
	return index_files_writing(n, s->idx, id);
}

int store_staged_commit(struct store *s, const char *model, int64_t id)
{
	int err = index_staged_commit(s->idx, model, id, NULL);

	if (err == 0 && store_retention_apply(NULL, s, model, id) < 0)
		fprintf(stderr, "ckptd: retention of model '%s' after checkpoint %" PRId64 ": %s\n",
			model, id, ck_errmsg());
	return err;
}

int store_files(struct index_file_list **out, struct store *s, int64_t id)
{
	return index_checkpoint_files(out, s->idx, id);
}

int store_staged_expire(struct store *s, int force)
{
	struct index_freed freed = {0};
	int64_t now = (int64_t)time(NULL), removed = 0;
	int err;

	/* at most once a second (one query on a partial index) */
	if (!force && now - atomic_load(&s->staged_checked) < STORE_STAGED_CHECK_S)
		return 0;
	atomic_store(&s->staged_checked, now);
	if ((err = index_staged_expire(&freed, &removed, s->idx, now)) == 0 && freed.n)
		err = gc_reap(NULL, s->gc, freed.v, freed.n);
	if (removed)
		fprintf(stderr,
			"ckptd: %" PRId64 " staged checkpoint%s not committed in time removed\n",
			removed, removed == 1 ? "" : "s");
	index_freed_clear(&freed);
	return err;
}

int store_delete(struct store *s, const char *model, int64_t id)
{
	return delete_with_reserve(s, model, id);
}

int store_model_delete(struct store *s, const char *model)
{
	return delete_with_reserve(s, model, -1);
}

int store_retention_apply(uint64_t *removed, struct store *s, const char *model, int64_t protect)
{
	int64_t *ids = NULL;
	size_t n = 0;
	uint64_t done = 0;
	int err = index_retention_victims(&ids, &n, s->idx, model);

	for (size_t i = 0; err == 0 && i < n; i++) {
		if (ids[i] == protect)
			continue;
		err = store_delete(s, model, ids[i]);
		if (err == CK_ENOTFOUND) { /* a concurrent delete got there first */
			ck_error_clear();
			err = 0;
		} else if (err == 0) {
			done++;
		}
	}
	free(ids);
	if (removed)
		*removed = done;
	return err;
}

int store_retention_get(struct index_retention *out, int *has, struct store *s, const char *model)
{
	return index_retention_get(out, has, s->idx, model);
}

int store_retention_set(int64_t *with_metric, uint64_t *removed, struct store *s, const char *model,
			const struct index_retention *p)
{
	int err;

	if ((err = index_retention_set(s->idx, model, p)) < 0 ||
	    (err = index_metric_count(with_metric, s->idx, model, p->metric)) < 0)
		return err;
	return store_retention_apply(removed, s, model, 0);
}

int store_patch(struct store *s, int64_t id, const struct index_patch *p)
{
	return index_checkpoint_patch(s->idx, id, p);
}

/* ---- reading ---- */

int store_resolve(int64_t *id, struct store *s, const char *model, const char *ref, const char *run,
		  const char *metric, int maximize)
{
	return index_checkpoint_resolve(id, s->idx, model, ref, run, metric, maximize);
}

int store_checkpoint(struct index_checkpoint **out, struct store *s, int64_t id)
{
	return index_checkpoint_get(out, s->idx, id);
}

int store_list(struct index_checkpoint_list **out, struct store *s,
	       const struct index_list_query *q)
{
	return index_checkpoint_list(out, s->idx, q);
}

int store_layout(struct index_layout **out, struct store *s, int64_t id)
{
	return index_checkpoint_layout(out, s->idx, id);
}

int store_tensors(struct index_tensors **out, struct store *s, int64_t id)
{
	return index_checkpoint_tensors(out, s->idx, id);
}

int store_models(struct index_model_list **out, struct store *s)
{
	return index_models(out, s->idx);
}

int store_stats(struct index_stats *out, struct store *s)
{
	return index_stats(out, s->idx);
}

int store_generation(uint64_t *out, struct store *s)
{
	return index_generation(out, s->idx);
}

int store_hold(struct store_hold **out, struct store *s, const struct hash *h, size_t n)
{
	struct store_hold *hd = calloc(1, sizeof(*hd));
	int err;

	if (!hd)
		return ck_error(CK_ENOMEM, "out of memory");
	if ((err = gc_claim(&hd->cl, s->gc, h, n)) < 0) {
		free(hd);
		return err;
	}
	/* A blob stored as a delta is read through its chain: held too. */
	for (size_t i = 0; s->blobs->deltas && i < n; i++) {
		struct hash ch[BLOB_MAX_CHAIN];
		int nc = 0;
		if (s->blobs->chain(s->blobs, &h[i], ch, &nc) < 0) {
			ck_error_clear(); /* not stored: its reads will say so */
			continue;
		}
		if (nc && (err = gc_claim_more(hd->cl, ch, (size_t)nc)) < 0) {
			store_hold_end(hd);
			return err;
		}
	}
	*out = hd;
	return 0;
}

int store_hold_renew(struct store_hold *hd)
{
	return hd ? gc_claim_renew(hd->cl) : 0;
}

void store_hold_end(struct store_hold *hd)
{
	if (!hd)
		return;
	gc_release(hd->cl);
	free(hd);
}

int store_blob_open(struct blob_reader **out, struct store *s, const struct hash *h)
{
	return s->blobs->open(out, s->blobs, h);
}

int store_blob_read(struct store *s, const struct hash *h, void *buf, size_t n, uint64_t off)
{
	return s->blobs->read(s->blobs, h, buf, n, off);
}

int store_layout_local_raw(struct store *s, const struct index_layout *l, uint64_t from)
{
	const struct hash *last = NULL;
	struct ck_error_state saved;
	int yes = strcmp(s->blobs->name, "fs") == 0;

	if (from >= l->size)
		return yes;
	ck_error_save(&saved, 0);
	for (size_t i = index_layout_part_at(l, from); yes && i < l->nparts; i++) {
		const struct hash *h = &l->parts[i].blob;
		struct blob_reader *r = NULL;
		uint64_t off;
		if (!memcmp(h->b, l->skeleton.b, 32) || (last && !memcmp(last->b, h->b, 32)))
			continue;
		last = h;
		yes = s->blobs->open(&r, s->blobs, h) == 0 && blob_reader_raw_fd(&off, r) >= 0;
		blob_reader_close(r);
	}
	ck_error_restore(&saved);
	return yes;
}

/* For blob h, which no checkpoint names yet but a live claim does (kept for
 * the retry of an upload that broke off, or written by one in flight):
 * stored, and of that size. */
static int have_kept(int *yes, struct store *s, const struct hash *h, uint64_t size)
{
	struct blob_reader *r = NULL;
	int err = s->blobs->open(&r, s->blobs, h);

	*yes = err == 0 && blob_reader_size(r) == size;
	blob_reader_close(r);
	return err == CK_ENOTFOUND || err == CK_ECORRUPT ? 0 : err;
}

int store_blobs_have(uint8_t *have, struct store *s, const struct hash *h, const uint64_t *size,
		     size_t n)
{
	uint64_t *got = malloc((n ? n : 1) * sizeof(*got));
	struct hash *lack = malloc((n ? n : 1) * sizeof(*lack));
	uint8_t *claimed = malloc(n ? n : 1);
	size_t *at = malloc((n ? n : 1) * sizeof(*at)), k = 0;
	int err;

	if (!got || !lack || !claimed || !at) {
		err = ck_error(CK_ENOMEM, "out of memory");
		goto out;
	}
	gc_expire(s->gc);
	if ((err = index_blob_sizes(got, s->idx, h, n)) < 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		have[i] = got[i] == size[i];
		if (got[i] == INDEX_NO_BLOB) {
			lack[k] = h[i];
			at[k++] = i;
		}
	}
	if (!k)
		goto out;
	/* an upload that just broke off may be keeping them: the retry's
	 * question comes a moment after the cut */
	keeps_wait(s);
	if ((err = gc_claimed(claimed, s->gc, lack, k)) < 0)
		goto out;
	for (size_t j = 0; j < k && !err; j++) {
		int yes = 0;
		if (claimed[j] && (err = have_kept(&yes, s, &lack[j], size[at[j]])) == 0)
			have[at[j]] = (uint8_t)yes;
	}
out:
	free(got);
	free(lack);
	free(claimed);
	free(at);
	return err;
}

/* ---- maintenance ---- */

int store_verify(struct verify_report *rep, struct store *s,
		 void (*bad)(void *arg, const struct hash *h, const char *why),
		 void (*progress)(void *arg, uint64_t done, uint64_t bytes), void *arg)
{
	return verify_store(rep, s->idx, s->blobs, bad, progress, arg);
}

int store_gc(uint64_t *removed, struct store *s)
{
	struct index_model_list *models = NULL;
	int err;

	*removed = 0;
	/* staged checkpoints past --stage-timeout first: their blobs then go */
	if ((err = store_staged_expire(s, 1)) < 0 || (err = index_models(&models, s->idx)) < 0)
		return err;
	for (size_t i = 0; i < models->nitems && err == 0; i++)
		err = store_retention_apply(NULL, s, models->items[i].name, 0);
	index_model_list_free(models);
	if (err < 0 ||
	    (err = s->blobs->clean_tmp(
		 s->blobs, s->alone ? INT64_MAX : (int64_t)time(NULL) - gc_lease(s->gc), 0)) < 0)
		return err;
	return gc_sweep(removed, s->gc, s->alone);
}

/* ---- migrate ---- */

struct copied {
	struct hash h;
	uint64_t stored;
	int codec;
	uint32_t crc;
};

/* Where blob h of src goes into dst's batch: nothing when dst's index names
 * it (then *c comes from that row), else put (a raw file straight from its
 * fd; a compressed one decoded into a temporary file on the way, checked
 * against its name). */
static int migrate_blob(struct copied *c, struct store_migrate_report *rep, struct store *src,
			struct store *dst, struct blob_batch *bt, const struct hash *h,
			uint64_t raw_size, uint32_t crc, enum dtype dt)
{
	struct index_blob row;
	struct blob_reader *rd = NULL;
	struct blob_meta meta = {.hash = *h, .raw_size = raw_size, .crc32 = crc, .full_only = 1};
	struct hasher *hs = NULL;
	uint8_t *buf = NULL;
	uint64_t raw_off = 0;
	int fd = -1, tmp = -1, err;

	c->h = *h;
	c->crc = crc;
	if ((err = index_blob_get(&row, dst->idx, h)) == 0) {
		c->stored = row.stored_size;
		c->codec = row.codec;
		rep->blobs_present++;
		return 0;
	}
	if (err != CK_ENOTFOUND || (err = store_blob_open(&rd, src, h)) < 0)
		return err;
	if (blob_reader_size(rd) != raw_size) {
		char hex[65];
		hash_to_hex(hex, h);
		err = ck_error(CK_ECORRUPT, "source blob %s holds %llu bytes, its index says %llu",
			       hex, (unsigned long long)blob_reader_size(rd),
			       (unsigned long long)raw_size);
		goto out;
	}
	fd = blob_reader_raw_fd(&raw_off, rd);
	if (fd < 0) {
		enum { CHUNK = 1 << 20 };
		struct hash got;
		if ((tmp = open(dst->tmp_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600)) < 0) {
			err = ck_error(errno == ENOSPC ? CK_ENOSPC : CK_EIO,
				       "cannot create a temporary file in %s: %s", dst->tmp_dir,
				       strerror(errno));
			goto out;
		}
		if (!(hs = hasher_new()) || !(buf = malloc(CHUNK))) {
			err = ck_error(CK_ENOMEM, "out of memory");
			goto out;
		}
		for (uint64_t off = 0; off < raw_size;) {
			size_t n = raw_size - off < CHUNK ? (size_t)(raw_size - off) : CHUNK;
			if ((err = blob_reader_read(rd, buf, n, off)) < 0)
				goto out;
			hasher_update(hs, buf, n);
			for (size_t w = 0; w < n;) {
				ssize_t k = pwrite(tmp, buf + w, n - w, (off_t)(off + w));
				if (k < 0 && errno == EINTR)
					continue;
				if (k < 0) {
					err = ck_error(errno == ENOSPC ? CK_ENOSPC : CK_EIO,
						       "writing a temporary file: %s",
						       strerror(errno));
					goto out;
				}
				w += (size_t)k;
			}
			off += n;
		}
		hasher_final(hs, &got, NULL);
		if (memcmp(got.b, h->b, 32)) {
			char hex[65];
			hash_to_hex(hex, h);
			err =
			    ck_error(CK_ECORRUPT,
				     "source blob %s does not match its SHA-256: run ckptd verify "
				     "on the source",
				     hex);
			goto out;
		}
		fd = tmp;
		raw_off = 0;
	}
	if ((err = dst->blobs->batch_put_fd(bt, &meta, fd, raw_off, dt)) < 0)
		goto out;
	c->stored = meta.stored_size;
	c->codec = meta.codec;
	if (meta.existed) {
		rep->blobs_present++;
	} else {
		rep->blobs_copied++;
		rep->bytes_copied += raw_size;
	}
out:
	if (tmp >= 0)
		close(tmp);
	free(buf);
	hasher_free(hs);
	blob_reader_close(rd);
	return err;
}

/* Copies checkpoint id of src into dst. */
/* Copies checkpoint ck; part_of > 0: as file `name` of that staged
 * checkpoint; stage_until > 0: staged (its files follow). */
static int migrate_one(struct store_migrate_report *rep, struct store *src, struct store *dst,
		       const struct index_checkpoint *ck, int64_t part_of, const char *name,
		       int64_t stage_until)
{
	struct index_layout *l = NULL;
	struct index_tensors *t = NULL;
	struct index_storage *stor = NULL;
	struct index_tensor *tens = NULL;
	struct copied *cp = NULL, skel = {0};
	struct hash *claim = NULL;
	struct blob_batch *bt = NULL;
	struct gc_claim *cl = NULL;
	struct index_new_checkpoint k = {0};
	struct index_dedup dd;
	const char **tags = NULL;
	int64_t id;
	int err;

	if ((err = store_layout(&l, src, ck->id)) < 0 || (err = store_tensors(&t, src, ck->id)) < 0)
		goto out;
	stor = calloc(t->nstorages + 1, sizeof(*stor));
	tens = calloc(t->ntensors + 1, sizeof(*tens));
	cp = calloc(t->nstorages + 1, sizeof(*cp));
	claim = calloc(t->nstorages + 1, sizeof(*claim));
	tags = calloc(ck->ntags + 1, sizeof(*tags));
	if (!stor || !tens || !cp || !claim || !tags) {
		err = ck_error(CK_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < t->nstorages; i++)
		claim[i] = t->storages[i].blob;
	claim[t->nstorages] = l->skeleton;
	/* claimed in dst as an upload's are: safe even beside a serving one */
	if ((err = gc_claim(&cl, dst->gc, claim, t->nstorages + 1)) < 0 ||
	    (err = dst->blobs->batch_begin(&bt, dst->blobs)) < 0)
		goto out;
	for (size_t i = 0; i < t->nstorages; i++) {
		const struct index_storage_row *r = &t->storages[i];
		if ((err = migrate_blob(&cp[i], rep, src, dst, bt, &r->blob, r->nbytes, r->crc32,
					r->dtype)) < 0)
			goto out;
		stor[i] = (struct index_storage){r->blob,     r->nbytes, cp[i].stored, r->crc32,
						 cp[i].codec, r->dtype,	 r->file_off};
	}
	uint32_t skel_crc = 0;
	for (size_t i = 0; i < l->nparts; i++)
		if (!memcmp(l->parts[i].blob.b, l->skeleton.b, 32))
			skel_crc = l->parts[i].blob_crc;
	if (l->nparts == 0 || l->skeleton_size == 0) { /* no part names it: its row does */
		struct index_blob row;
		if ((err = index_blob_get(&row, src->idx, &l->skeleton)) < 0)
			goto out;
		skel_crc = row.crc32;
	}
	if ((err = migrate_blob(&skel, rep, src, dst, bt, &l->skeleton, l->skeleton_size, skel_crc,
				DT_INVALID)) < 0 ||
	    (err = dst->blobs->batch_commit(bt)) < 0)
		goto out;
	for (size_t i = 0; i < t->ntensors; i++) {
		const struct index_tensor_row *r = &t->tensors[i];
		tens[i] = (struct index_tensor){r->path,    r->dtype,  r->ndim,	   r->shape,
						r->strides, r->offset, r->storage, r->nbytes};
	}
	for (size_t i = 0; i < ck->ntags; i++)
		tags[i] = ck->tags[i];
	k.model = ck->model;
	k.run = ck->run;
	k.has_epoch = ck->has_epoch;
	k.epoch = ck->epoch;
	k.has_step = ck->has_step;
	k.step = ck->step;
	k.has_loss = ck->has_loss;
	k.loss = ck->loss;
	k.metrics = ck->metrics;
	k.nmetrics = ck->nmetrics;
	k.tags = tags;
	k.ntags = ck->ntags;
	k.pinned = ck->pinned;
	k.format = ck->format;
	k.size = ck->size;
	k.sha256 = ck->sha256;
	k.skeleton = l->skeleton;
	k.skeleton_size = l->skeleton_size;
	k.skeleton_stored = skel.stored;
	k.skeleton_crc = skel_crc;
	k.skeleton_codec = skel.codec;
	k.storages = stor;
	k.nstorages = t->nstorages;
	k.tensors = tens;
	k.ntensors = t->ntensors;
	k.id = ck->id;
	k.created_at = ck->created_at;
	k.dedup = &ck->dedup;
	k.resumed_from = ck->resumed_from;
	k.part_of = part_of;
	k.file_name = name;
	k.stage_until = stage_until;
	err = index_checkpoint_insert(&id, &dd, dst->idx, &k);
out:
	if (bt)
		dst->blobs->batch_free(bt);
	gc_release(cl);
	free(claim);
	free(tags);
	free(stor);
	free(tens);
	free(cp);
	index_layout_free(l);
	index_tensors_free(t);
	if (err < 0)
		ck_error_prefix(err, "checkpoint %" PRId64 " of model '%s': ", ck->id, ck->model);
	return err;
}

/* A checkpoint of several files is copied staged (invisible) until this far
 * future, then its files, then committed with its own creation time. */
#define MIGRATE_STAGED_UNTIL ((int64_t)1 << 40)

/* The files of checkpoint c (staged in dst), each as a part under its own
 * id (those an earlier run copied are kept), then its commit. */
static int migrate_files(struct store_migrate_report *rep, struct store *src, struct store *dst,
			 const struct index_checkpoint *c)
{
	struct index_file_list *fl = NULL;
	int err = index_checkpoint_files(&fl, src->idx, c->id);

	for (size_t i = 0; err == 0 && i < fl->nitems; i++) {
		struct index_checkpoint *part = NULL, *have = NULL;
		err = index_checkpoint_get(&have, dst->idx, fl->items[i].part);
		index_checkpoint_free(have);
		if (err != CK_ENOTFOUND)
			continue; /* copied by an earlier run, or an error */
		ck_error_clear();
		if ((err = index_checkpoint_get(&part, src->idx, fl->items[i].part)) == 0)
			err = migrate_one(rep, src, dst, part, c->id, fl->items[i].name, 0);
		index_checkpoint_free(part);
	}
	if (err == 0)
		err = index_staged_commit(dst->idx, c->model, c->id, c->created_at);
	index_file_list_free(fl);
	return err;
}

int store_migrate(struct store_migrate_report *rep, struct store *src, struct store *dst,
		  void (*progress)(void *arg, const struct store_migrate_report *rep), void *arg)
{
	struct index_model_list *models = NULL;
	struct index_stats st;
	int err;

	memset(rep, 0, sizeof(*rep));
	if ((err = store_stats(&st, src)) < 0 || (err = store_models(&models, src)) < 0)
		return err;
	rep->total = (uint64_t)st.checkpoints;
	for (size_t m = 0; m < models->nitems && err == 0; m++) {
		const char *name = models->items[m].name;
		struct index_retention pol;
		int has = 0;
		if ((err = store_retention_get(&pol, &has, src, name)) < 0 ||
		    (has && (err = index_retention_set(dst->idx, name, &pol)) < 0))
			break;
		for (int64_t offset = 0;; offset += 500) {
			struct index_list_query q = {
			    .model = name, .order = "created", .limit = 500, .offset = offset};
			struct index_checkpoint_list *l = NULL;
			if ((err = store_list(&l, src, &q)) < 0)
				break;
			size_t n = l->nitems;
			for (size_t i = 0; i < n && err == 0; i++) {
				struct index_checkpoint *have = NULL;
				const struct index_checkpoint *c = &l->items[i];
				int multi = index_format_multi(c->format);
				err = index_checkpoint_get(&have, dst->idx, c->id);
				if (err == 0 && have->stage_until && multi) {
					/* an earlier run stopped among its files */
					err = migrate_files(rep, src, dst, c);
				} else if (err == 0) {
					/* an earlier run's: it must be this one */
					if (memcmp(have->sha256.b, c->sha256.b, 32) ||
					    strcmp(have->model, c->model))
						err = ck_error(
						    CK_ECONFLICT,
						    "the target already has a checkpoint "
						    "%" PRId64 " that is not model '%s''s: "
						    "migrate into an empty store",
						    c->id, c->model);
					rep->skipped++;
				} else if (err == CK_ENOTFOUND) {
					ck_error_clear();
					/* several files: staged until they are all in */
					err = migrate_one(rep, src, dst, c, 0, NULL,
							  multi ? MIGRATE_STAGED_UNTIL : 0);
					if (err == 0 && multi)
						err = migrate_files(rep, src, dst, c);
				}
				index_checkpoint_free(have);
				if (err == 0) {
					rep->checkpoints++;
					if (progress)
						progress(arg, rep);
				}
			}
			index_checkpoint_list_free(l);
			if (err < 0 || n < 500)
				break;
		}
	}
	index_model_list_free(models);
	return err;
}
