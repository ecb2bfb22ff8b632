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
 *   2. put each into a blob batch: written unless stored already;
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
	pthread_mutex_t reserve_lock;
};

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

/* The blobs this upload wrote (nothing had them) go again, unless an index
 * row or another claim names them by now. When the index is what failed
 * (busy, unreachable), asking it again would only wait again: the reap is
 * deferred to the next one. */
static void undo_writes(struct store *s, const struct blob_meta *metas, size_t n,
			const struct blob_meta *skel, int index_down)
{
	struct hash *mine = calloc(n + 1, sizeof(*mine));
	size_t k = 0;
	struct ck_error_state saved;

	if (!mine)
		return; /* they stay until the next sweep */
	for (size_t i = 0; i < n; i++)
		if (!metas[i].existed)
			mine[k++] = metas[i].hash;
	if (skel && !skel->existed)
		mine[k++] = skel->hash;
	ck_error_save(&saved, 0);
	if (index_down)
		gc_defer(s->gc, mine, k);
	else if (gc_reap(NULL, s->gc, mine, k) < 0)
		fprintf(stderr, "ckptd: blobs of a failed upload stay for the sweep: %s\n",
			ck_errmsg());
	ck_error_restore(&saved);
	free(mine);
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
	struct hash *hashes = NULL;
	int skel_fd = -1, skel_put = 0, committed = 0, err;
	int64_t cid = 0;

	stor = calloc(in->nstorages + 1, sizeof(*stor));
	metas = calloc(in->nstorages + 1, sizeof(*metas));
	hashes = calloc(in->nstorages + 1, sizeof(*hashes));
	if (!stor || !metas || !hashes) {
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
	/* 1. claims, before anything asks whether a blob is stored */
	if ((err = gc_claim(&cl, s->gc, hashes, in->nstorages)) < 0)
		goto out;
	/* 2. the storages */
	if ((err = s->blobs->batch_begin(&bt, s->blobs)) < 0)
		goto out;
	for (size_t i = 0; i < in->nstorages; i++)
		if ((err = s->blobs->batch_put_fd(bt, &metas[i], u->fd, stor[i].file_off,
						  stor[i].dtype)) < 0)
			goto out;
	/* 3. the skeleton */
	if ((err = skeleton_write(&skel_fd, &skel, s, u->fd, in->size, stor, in->nstorages)) < 0 ||
	    (err = gc_claim_more(cl, &skel.hash, 1)) < 0)
		goto out;
	if ((err = s->blobs->batch_put_fd(bt, &skel, skel_fd, 0, DT_INVALID)) < 0)
		goto out;
	skel_put = 1;
	/* Every byte now lives in the batch: drop a disposable spool's dirty
	 * pages, or a filesystem-wide flush in the commit would write them to
	 * disk too (a second copy of the upload). Only an optimisation. */
	if (u->fd_disposable) {
		int dropped = ftruncate(u->fd, 0);
		(void)dropped;
	}
	/* 4. durable blobs, then the index */
	if ((err = s->blobs->batch_commit(bt)) < 0)
		goto out;
	for (size_t i = 0; i < in->nstorages; i++) {
		stor[i].stored_size = metas[i].stored_size;
		stor[i].codec = metas[i].codec;
	}
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
out:
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
	/* 5. retention: a failure there does not undo the commit */
	if (committed && store_retention_apply(NULL, s, in->model, cid) < 0)
		fprintf(stderr, "ckptd: retention of model '%s' after checkpoint %" PRId64 ": %s\n",
			in->model, cid, ck_errmsg());
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
	if ((err = index_models(&models, s->idx)) < 0)
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
