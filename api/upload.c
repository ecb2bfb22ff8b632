/*
 * upload.c: an upload's spool and the hashing that follows it (api.h's
 * api_upload_*).
 *
 * The body streams into an unlinked O_TMPFILE spool in the store's tmp
 * directory; it is never held in memory. Two hashes read the spool just
 * behind the writer, from the page cache: the SHA-256 of the whole file, and
 * the zip record scanner (formats/zip_scan.c), so ingest need not read the
 * tensor data a second time.
 *
 * Both run on one pool of hashing threads per app, shared by every upload:
 * one thread per CPU (2 to 16), started with the first body byte of the
 * first upload, never one per upload, so a thousand uploads waiting for
 * their bodies start no thread. Each upload has two jobs (one per hash); on
 * a CPU with the SHA extensions, when the pool has no more threads than
 * two per upload in flight, the record job hashes the file too and the other
 * idles (hasher_update2: the storages' bytes, most of the file, go into
 * both hashes at once, interleaved on one core, about a third less CPU
 * than two passes, and the spool is read once). A job is queued when
 * the writer publishes bytes it has not read and it is neither queued nor
 * running; a worker takes the oldest job, hashes at most QUANTUM bytes of
 * what was published, and queues it again at the tail if more is there,
 * so uploads share the threads in turn.
 *
 * A thin upload (SPEC 3.1, Content-Type application/x-ckptd-thin) is
 * decoded as it arrives (thin.c): literal bytes go to the spool at their
 * offsets in the file, and each reference to a stored blob is checked in
 * the index and leaves a hole of its length in the spool (a sparse file:
 * nothing written, nothing read yet). The parsers read the file's
 * structure from the spool, never a storage's bytes, and every R frame must
 * be exactly one storage (upload_thin_check_refs), so the holes are never
 * read as bytes: a referenced storage's hash is its blob's, its CRC-32 the
 * one computed below (upload_thin_storage), and the store is told its bytes
 * are not in the spool (store_upload.referenced: it must exist, it is never
 * written from the hole). At the end the referenced blobs are held against
 * deletes and checked again (store_hold, store_blobs_have), then one pass
 * reads the file the frames stand for, literal bytes from the spool and
 * each referenced blob from the store, into the file's SHA-256: sha256 is
 * computed by the server over bytes it holds, and the E frame's hash only
 * has to agree (upload_thin_check_hash). Blobs the store lacks are
 * collected and answered with 409 missing_blobs. A thin upload is not
 * hashed by the pool while it arrives (its body is small: the work is the
 * final pass), so a thin upload that breaks off keeps nothing for a retry,
 * and sends nothing early.
 *
 * On a store that does not compress (store_early_begin), each torch storage
 * record the scanner finishes hashing is offered to the store at once
 * (store_early_offer), so its PUT (S3) or its copy into a blob file and
 * the start of that file's writeback (the filesystem) run while the rest of
 * the body arrives; store_commit finishes what was sent.
 *
 * Writing once (store_direct_open: a filesystem store that does not
 * compress). The writer follows the zip too (a second zip_scan that only
 * finds where payloads begin and end): once a torch storage record's
 * payload passes DIRECT_MIN bytes, the payload is written from then on
 * straight into a temporary blob file of its own (an extent: its first
 * DIRECT_MIN bytes are copied there from the spool), leaving a hole in the
 * spool. Everything that reads the file reads through the extents
 * (file_read, ck_input's ext): the hashing jobs, the parsers, the hashing
 * of storages the scan missed. At the commit, an extent that is exactly one
 * storage of the parsed file becomes its blob when the blob is new (renamed
 * into place, never copied: store.h); any other extent (a record that is
 * no storage, a damaged file) is copied back into the spool's hole first
 * (upload_direct), and an upload that broke off fills them all before its
 * storages are kept. A record whose size only its data descriptor gives
 * (torch's) is known to end only once that descriptor has arrived, up to
 * 24 bytes later: those bytes, written to the extent, are then copied into
 * the spool too, and the extent is cut at the payload's end once the body
 * ends. At most MAX_DIRECT extents per upload (open files); past that, and
 * when a file cannot be created, payloads stay in the spool.
 *
 * With more uploads than threads, hashing falls behind the writers. Then
 * api_upload_end takes its jobs back from the pool (waiting only for a
 * quantum in progress) and hashes what is left on the caller's thread, from
 * the page cache or the disk: the result never waits for a free worker.
 *
 * Locking: one mutex per pool guards the queue, every job's state and every
 * upload's `published`. A job's `done` and its hash state belong to whoever
 * runs it (a worker while RUNNING, the owner once CLAIMED); the handover
 * goes through the mutex.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "../common/err.h"
#include "../common/vec.h"
#include "../formats/zip_scan.h"
#include "internal.h"
#include "thin.h"

/* Records below this size are hashed after the upload from the spool (in
 * the page cache): following them as they stream costs more than it saves. */
#define SCAN_MIN_RECORD (64 * 1024)

#define READ_CHUNK (1 << 20)  /* one pread */
#define DIRECT_MIN (64 << 10) /* payload bytes before a storage gets its own file */
#define MAX_DIRECT 1024	      /* extents of one upload (each an open file) */
#define QUANTUM	   (16 << 20) /* bytes a worker hashes before taking turns */
#define POOL_MIN   2
#define POOL_MAX   16

enum job_state {
	JOB_IDLE = 0, /* nothing to read, or not yet started */
	JOB_QUEUED,   /* waiting in the pool's queue */
	JOB_RUNNING,  /* a worker is reading for it */
	JOB_CLAIMED,  /* taken back by the upload's owner: never queued again */
};

struct upload;

/* A range of the file written into a file of its own (writing once). */
struct extent {
	uint64_t off;
	uint64_t len; /* once closed */
	int fd;
	int open; /* still written: holds every byte from off written so far */
	struct store_direct *d;
};

struct hash_job {
	struct upload *u;
	void (*eat)(struct upload *u, const uint8_t *p, size_t n);
	enum job_state state;
	uint64_t done; /* bytes hashed */
	int err;       /* a failed read: the job stops */
	struct hash_job *prev, *next;
};

struct upload_pool {
	pthread_mutex_t lock;
	pthread_cond_t work;	/* a job was queued, or stop */
	pthread_cond_t settled; /* a job stopped running */
	struct hash_job *head, *tail;
	pthread_t threads[POOL_MAX];
	unsigned nthreads, max_threads, idle;
	unsigned uploads; /* begun and not yet freed */
	int stop;
};

struct upload {
	struct upload_pool *pool;
	struct zip_scan *scan;
	struct hasher *h;
	uint64_t size;	    /* bytes spooled (the writer's count) */
	uint64_t published; /* under pool->lock: bytes the jobs may read */
	int fd;
	struct store_early *early; /* NULL: nothing is sent before the commit */
	struct hash_job job[2];
	int first_job; /* 1: job 1 hashes the file too (eat_both), job 0 idles */
	/* a thin upload */
	struct app *app;
	int thin;
	struct thin t;
	struct hash *missing; /* R frames' blobs the store lacks */
	size_t nmissing, mcap;
	uint32_t *ref_crc;	 /* of each R frame's bytes, after api_upload_end */
	int filled;		 /* upload_thin_fill wrote the R frames' bytes */
	struct store_hold *hold; /* the R frames' blobs, from api_upload_end on */
	/* resuming: the storages hashed in full so far, kept by
	 * api_upload_free when the body broke off (store_keep) */
	struct store_piece *pieces; /* owned by the records job until claim() */
	size_t npieces, pcap;
	int ended;  /* api_upload_end ran: the body is whole */
	int failed; /* a write was refused (too large, bad frames) */
	/* writing once: the writer's scanner, the extents (x[0..nx) by off,
	 * guarded by xmu against the hashing jobs) and, while a chunk is
	 * written, where it is (chunk at chunk_off, placed up to placed) */
	struct zip_scan *split;
	pthread_mutex_t xmu;
	struct extent *x;
	size_t nx, xcap;
	const uint8_t *chunk;
	uint64_t chunk_off, placed;
	int cur;	  /* the open extent, or -1 */
	int cur_eligible; /* the current payload may get one */
	uint64_t cur_off; /* where that payload begins */
	int wr_err;
	struct ck_extent *view; /* after api_upload_end: x[] for ck_input */
	/* a file of a staged checkpoint: its write mark */
	int64_t file_of, token;
	time_t renewed;
	int written; /* upload_file_written: the mark went with the commit */
};

static void eat_file_hash(struct upload *u, const uint8_t *p, size_t n)
{
	hasher_update(u->h, p, n);
}

static void eat_records(struct upload *u, const uint8_t *p, size_t n)
{
	zip_scan_feed(u->scan, p, n);
}

/* Both hashes in one pass: a storage's bytes go into its hash and the
 * file's at once (hasher_update2), read from the spool once. */
static void eat_both(struct upload *u, const uint8_t *p, size_t n)
{
	zip_scan_feed2(u->scan, u->h, p, n);
}

/* A record hashed in full: a storage goes to the store now, and is noted
 * in case the body breaks off. */
static void on_record(void *arg, const char *name, size_t name_len, uint64_t off, uint64_t len,
		      const struct hash *h, uint32_t crc)
{
	struct upload *u = arg;

	if (!torch_zip_storage_name(name, name_len))
		return;
	if (u->nx) {
		struct store_direct *d = NULL;
		pthread_mutex_lock(&u->xmu);
		for (size_t i = u->nx; i-- > 0 && u->x[i].off >= off;)
			if (u->x[i].off == off && !u->x[i].open && u->x[i].len == len)
				d = u->x[i].d;
		pthread_mutex_unlock(&u->xmu);
		store_direct_hint(d, h); /* d lives until api_upload_free */
	}
	if (u->early)
		store_early_offer(u->early, h, crc, off, len);
	if (u->app->cfg.resume_grace > 0) {
		struct store_piece *v = vec_grow(u->pieces, &u->pcap, u->npieces, sizeof(*v), 64);
		if (!v) /* out of memory: this one is sent again */
			return;
		u->pieces = v;
		u->pieces[u->npieces++] = (struct store_piece){*h, off, len, crc};
	}
}

/* Reads up to n bytes of the file at off (bytes the writer has placed)
 * from the spool or the extent holding them: pread's result. */
static ssize_t file_read(struct upload *u, void *buf, size_t n, uint64_t off)
{
	int fd = u->fd;
	uint64_t at = off;

	if (u->nx) {
		size_t lo = 0, hi;
		pthread_mutex_lock(&u->xmu);
		hi = u->nx;
		while (lo < hi) { /* the first extent beginning after off */
			size_t mid = (lo + hi) / 2;
			if (u->x[mid].off <= off)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo < u->nx && u->x[lo].off - off < n)
			n = (size_t)(u->x[lo].off - off);
		if (lo > 0) {
			const struct extent *x = &u->x[lo - 1];
			if (x->open || off < x->off + x->len) {
				fd = x->fd;
				at = off - x->off;
				if (!x->open && x->off + x->len - off < n)
					n = (size_t)(x->off + x->len - off);
			}
		}
		pthread_mutex_unlock(&u->xmu);
	}
	return pread(fd, buf, n, (off_t)at);
}

/* Hashes the job's bytes up to end, reading the spool into buf. Run by the
 * job's current holder only, without the pool's lock. */
static void job_run(struct hash_job *j, uint8_t *buf, uint64_t end)
{
	while (!j->err && j->done < end) {
		size_t n = end - j->done < READ_CHUNK ? (size_t)(end - j->done) : READ_CHUNK;
		ssize_t r = file_read(j->u, buf, n, j->done);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			j->err = CK_EIO;
			break;
		}
		j->eat(j->u, buf, (size_t)r);
		j->done += (uint64_t)r;
	}
}

/* Queue operations: with the pool's lock held. */
static void queue_push(struct upload_pool *p, struct hash_job *j)
{
	j->state = JOB_QUEUED;
	j->next = NULL;
	j->prev = p->tail;
	if (p->tail)
		p->tail->next = j;
	else
		p->head = j;
	p->tail = j;
}

static void queue_remove(struct upload_pool *p, struct hash_job *j)
{
	if (j->prev)
		j->prev->next = j->next;
	else
		p->head = j->next;
	if (j->next)
		j->next->prev = j->prev;
	else
		p->tail = j->prev;
	j->prev = j->next = NULL;
}

static void *worker(void *arg)
{
	struct upload_pool *p = arg;
	uint8_t *buf = malloc(READ_CHUNK);

	pthread_mutex_lock(&p->lock);
	for (;;) {
		while (!p->head && !p->stop) {
			p->idle++;
			pthread_cond_wait(&p->work, &p->lock);
			p->idle--;
		}
		if (p->stop)
			break;
		struct hash_job *j = p->head;
		queue_remove(p, j);
		j->state = JOB_RUNNING;
		uint64_t end = j->u->published;
		if (end - j->done > QUANTUM)
			end = j->done + QUANTUM;
		pthread_mutex_unlock(&p->lock);
		if (buf)
			job_run(j, buf, end);
		else
			j->err = CK_ENOMEM;
		pthread_mutex_lock(&p->lock);
		if (!j->err && j->done < j->u->published)
			queue_push(p, j);
		else
			j->state = JOB_IDLE;
		pthread_cond_broadcast(&p->settled);
	}
	pthread_mutex_unlock(&p->lock);
	free(buf);
	return NULL;
}

int upload_pool_new(struct upload_pool **out)
{
	struct upload_pool *p = calloc(1, sizeof(*p));
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	if (!p)
		return ck_error(CK_ENOMEM, "out of memory");
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->work, NULL);
	pthread_cond_init(&p->settled, NULL);
	p->max_threads = ncpu < POOL_MIN ? POOL_MIN : ncpu > POOL_MAX ? POOL_MAX : (unsigned)ncpu;
	*out = p;
	return 0;
}

void upload_pool_free(struct upload_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = 1;
	pthread_cond_broadcast(&p->work);
	pthread_mutex_unlock(&p->lock);
	for (unsigned i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->work);
	pthread_cond_destroy(&p->settled);
	free(p);
}

/* Makes u->size readable by its jobs and queues those with bytes to read.
 * Starts a worker when no thread is idle and the pool is not full. */
static void publish(struct upload *u)
{
	struct upload_pool *p = u->pool;
	int queued = 0;

	pthread_mutex_lock(&p->lock);
	u->published = u->size;
	for (int i = u->first_job; i < 2; i++) {
		struct hash_job *j = &u->job[i];
		if (j->state == JOB_IDLE && !j->err && j->done < u->published) {
			queue_push(p, j);
			queued++;
		}
	}
	/* A thread that cannot start leaves the work to the others, or to
	 * api_upload_end's catch-up. */
	while (queued > (int)p->idle && p->nthreads < p->max_threads &&
	       pthread_create(&p->threads[p->nthreads], NULL, worker, p) == 0) {
		p->nthreads++;
		queued--;
	}
	if (queued)
		pthread_cond_broadcast(&p->work);
	pthread_mutex_unlock(&p->lock);
}

/* Takes u's jobs back from the pool: out of the queue, or once the worker
 * running one has finished its quantum. Afterwards no worker touches u. */
static void claim(struct upload *u)
{
	struct upload_pool *p = u->pool;

	pthread_mutex_lock(&p->lock);
	for (int i = 0; i < 2; i++) {
		struct hash_job *j = &u->job[i];
		while (j->state == JOB_RUNNING)
			pthread_cond_wait(&p->settled, &p->lock);
		if (j->state == JOB_QUEUED)
			queue_remove(p, j);
		j->state = JOB_CLAIMED;
	}
	pthread_mutex_unlock(&p->lock);
}

/* A file of a staged checkpoint: its name and checkpoint checked, and its
 * write marked, before the body comes. */
static int file_begin(struct upload *u, struct app *app, struct req *r)
{
	int64_t id;
	int err;

	if ((err = name_check("model", r->params[0])) < 0 ||
	    (err = staged_id(&id, r->params[1])) < 0 || (err = file_name_check(r->params[2])) < 0)
		return err;
	if (RAND_bytes((unsigned char *)&u->token, sizeof(u->token)) != 1)
		return ck_error(CK_EIO, "no random bytes for the write's token");
	u->token &= INT64_MAX;
	if ((err = store_file_write_begin(app->store, r->params[0], id, u->token)) < 0)
		return err;
	u->file_of = id;
	u->renewed = time(NULL);
	return 0;
}

int upload_file_token(const struct req *r, int64_t *token)
{
	const struct upload *u = r->upload;

	if (!u || !u->file_of)
		return ck_error(CK_EINVALID, "not a file upload");
	*token = u->token;
	return 0;
}

void upload_file_written(struct req *r)
{
	struct upload *u = r->upload;

	if (u)
		u->written = 1;
}

void upload_file_failed(struct req *r)
{
	struct upload *u = r->upload;

	if (u && u->file_of && !u->written) {
		store_file_write_end(u->app->store, u->file_of, u->token);
		u->written = 1;
	}
}

static void split_begin(void *arg, const char *name, size_t name_len, uint64_t off,
			unsigned method);
static void split_end(void *arg, uint64_t end);

int api_upload_begin(struct app *app, const struct route *rt, struct req *r)
{
	struct upload *u = calloc(1, sizeof(*u));

	if (!u)
		return ck_error(CK_ENOMEM, "out of memory");
	r->upload = u;
	u->pool = app->uploads;
	u->fd = -1;
	u->cur = -1;
	pthread_mutex_init(&u->xmu, NULL);
	for (int i = 0; i < 2; i++)
		u->job[i].u = u;
	u->job[0].eat = eat_file_hash;
	u->job[1].eat = eat_records;
	/* One pass for both hashes takes a third less CPU but puts them on one
	 * thread: taken when the pool has no more threads than two per upload
	 * in flight (always on 2 CPUs); with threads to spare, two jobs finish
	 * a lone upload's hashing sooner (1.6 GB/s for the slower one, against
	 * about 1.2 GB/s of file for the pair). */
	pthread_mutex_lock(&u->pool->lock);
	unsigned inflight = ++u->pool->uploads, threads = u->pool->max_threads;
	pthread_mutex_unlock(&u->pool->lock);
	if (hasher_pairs_fast() && 2 * inflight >= threads) {
		u->first_job = 1;
		u->job[1].eat = eat_both;
	}
	u->app = app;
	thin_init(&u->t);
	if (!strcmp(api_route_name(rt), "checkpoint.file.put")) {
		int err = file_begin(u, app, r);
		if (err < 0)
			return err;
	}
	const char *ct = r->header ? r->header(r, "Content-Type") : NULL;
	u->thin = ct && !strncasecmp(ct, THIN_CONTENT_TYPE, strlen(THIN_CONTENT_TYPE));
	if (!(u->h = hasher_new_sha256()) || zip_scan_new(&u->scan, SCAN_MIN_RECORD) < 0)
		return ck_error(CK_ENOMEM, "out of memory");
	r->body_fd = open(store_tmp_dir(app->store), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (r->body_fd < 0)
		return ck_error(errno == ENOSPC ? CK_ENOSPC : CK_EIO,
				"cannot create an upload spool in %s: %s",
				store_tmp_dir(app->store), strerror(errno));
	u->fd = r->body_fd;
	int err = store_early_begin(&u->early, app->store, u->fd);
	if (err < 0)
		return err;
	if (!u->thin && store_direct_possible(app->store)) {
		if (zip_scan_new(&u->split, ZIP_SCAN_NO_HASH) < 0)
			return ck_error(CK_ENOMEM, "out of memory");
		zip_scan_on_payload(u->split, split_begin, split_end, u);
	}
	if (u->early || u->split || app->cfg.resume_grace > 0)
		zip_scan_on_record(u->scan, on_record, u);
	return 0;
}

/* Writes n bytes at off of fd. */
static int write_at(int fd, const uint8_t *b, size_t n, uint64_t off)
{
	while (n > 0) {
		ssize_t w = pwrite(fd, b, n, (off_t)off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return ck_error(errno == ENOSPC || errno == EDQUOT ? CK_ENOSPC : CK_EIO,
					"cannot spool the upload: %s", strerror(errno));
		b += w;
		n -= (size_t)w;
		off += (uint64_t)w;
	}
	return 0;
}

/* Copies n bytes of src at from to dst at to (small: an extent's start or
 * a descriptor's bytes). */
static int copy_at(int dst, uint64_t to, int src, uint64_t from, uint64_t n)
{
	uint8_t buf[64 * 1024];

	while (n > 0) {
		loff_t in = (loff_t)from, out = (loff_t)to;
		ssize_t c =
		    copy_file_range(src, &in, dst, &out, n > (1u << 30) ? (1u << 30) : n, 0);
		if (c < 0 && errno == EINTR)
			continue;
		if (c <= 0)
			break; /* not here, or a short source: through buf, which tells */
		from += (uint64_t)c;
		to += (uint64_t)c;
		n -= (uint64_t)c;
	}
	while (n > 0) {
		size_t k = n < sizeof(buf) ? (size_t)n : sizeof(buf);
		ssize_t r = pread(src, buf, k, (off_t)from);
		int err;
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return ck_error(CK_EIO, "cannot read back the upload: %s",
					r < 0 ? strerror(errno) : "short file");
		if ((err = write_at(dst, buf, (size_t)r, to)) < 0)
			return err;
		from += (uint64_t)r;
		to += (uint64_t)r;
		n -= (uint64_t)r;
	}
	return 0;
}

/* The current payload has DIRECT_MIN bytes in the spool: it gets an
 * extent, which starts with them. On any failure it stays in the spool. */
static void extent_open(struct upload *u)
{
	struct store_direct *d = NULL;
	struct extent *x;
	int fd = -1;

	u->cur_eligible = 0;
	if (u->nx == MAX_DIRECT || store_direct_open(&d, &fd, u->app->store) < 0 || !d ||
	    copy_at(fd, 0, u->fd, u->cur_off, u->placed - u->cur_off) < 0) {
		ck_error_clear();
		store_direct_free(d);
		return;
	}
	pthread_mutex_lock(&u->xmu); /* the readers look at x[] */
	if (!(x = vec_grow(u->x, &u->xcap, u->nx, sizeof(*x), 16))) {
		pthread_mutex_unlock(&u->xmu);
		store_direct_free(d);
		return;
	}
	u->x = x;
	u->x[u->nx] = (struct extent){u->cur_off, 0, fd, 1, d};
	u->cur = (int)u->nx++;
	pthread_mutex_unlock(&u->xmu);
}

/* Writes the chunk's bytes up to file offset upto where they belong: the
 * open extent, or the spool (where an eligible payload that reaches
 * DIRECT_MIN gets its extent). */
static void place(struct upload *u, uint64_t upto)
{
	while (!u->wr_err && u->placed < upto) {
		const uint8_t *p = u->chunk + (u->placed - u->chunk_off);
		uint64_t k = upto - u->placed;
		int err;
		if (u->cur_eligible) {
			uint64_t thr = u->cur_off + DIRECT_MIN;
			if (u->placed >= thr) {
				extent_open(u);
				continue;
			}
			if (k > thr - u->placed)
				k = thr - u->placed;
		}
		if (u->cur >= 0) {
			const struct extent *x = &u->x[u->cur];
			err = write_at(x->fd, p, (size_t)k, u->placed - x->off);
		} else {
			err = write_at(u->fd, p, (size_t)k, u->placed);
		}
		if (err < 0)
			u->wr_err = err;
		u->placed += k;
	}
}

/* The writer's scanner: a payload begins at off. */
static void split_begin(void *arg, const char *name, size_t name_len, uint64_t off, unsigned method)
{
	struct upload *u = arg;

	if (off < u->placed || u->cur >= 0)
		return; /* cannot happen: the scanner follows the stream */
	place(u, off);
	u->cur_eligible = method == 0 && torch_zip_storage_name(name, name_len);
	u->cur_off = off;
}

/* ... and ends at end. */
static void split_end(void *arg, uint64_t end)
{
	struct upload *u = arg;

	if (end >= u->placed) {
		place(u, end);
	} else if (u->cur >= 0 && !u->wr_err) {
		/* the descriptor began in a chunk written before: the bytes
		 * [end, placed), in the extent, belong to the spool */
		const struct extent *x = &u->x[u->cur];
		if (end < x->off)
			u->wr_err = ck_error(CK_EIO, "upload: a payload ends before it begins");
		else
			u->wr_err = copy_at(u->fd, end, x->fd, end - x->off, u->placed - end);
	}
	if (u->cur >= 0) {
		pthread_mutex_lock(&u->xmu);
		struct extent *x = &u->x[u->cur];
		x->len = end > x->off ? end - x->off : 0;
		x->open = 0;
		pthread_mutex_unlock(&u->xmu);
	}
	u->cur = -1;
	u->cur_eligible = 0;
}

/* Appends n bytes of the file to the spool (or its extents), within
 * --max-upload-size. */
static int spool_append(struct upload *u, const uint8_t *b, size_t n)
{
	uint64_t max = u->app->cfg.max_upload;
	int err;

	if (max && u->size + n > max)
		return ck_error(CK_ETOOBIG,
				"the upload is larger than this server's limit of %llu bytes "
				"(--max-upload-size)",
				(unsigned long long)max);
	if (!u->split || (!zip_scan_following(u->split) && u->cur < 0)) {
		/* at the file's offset: a thin upload leaves holes (thin_ref) */
		if ((err = write_at(u->fd, b, n, u->size)) < 0)
			return err;
		u->size += n;
		return 0;
	}
	u->chunk = b;
	u->chunk_off = u->placed = u->size;
	u->wr_err = 0;
	zip_scan_feed(u->split, b, n);
	place(u, u->size + n);
	u->chunk = NULL;
	if (u->wr_err < 0)
		return u->wr_err;
	u->size += n;
	return 0;
}

static int thin_lit(void *arg, const uint8_t *p, size_t n)
{
	struct upload *u = arg;

	return u->nmissing ? 0 : spool_append(u, p, n);
}

static int add_missing(struct upload *u, const struct hash *h)
{
	struct hash *m = vec_grow(u->missing, &u->mcap, u->nmissing, sizeof(*m), 16);
	if (!m)
		return ck_error(CK_ENOMEM, "out of memory");
	u->missing = m;
	u->missing[u->nmissing++] = *h;
	return 0;
}

/* An R frame: a hole of its length in the spool, or the blob noted
 * missing. */
static int thin_ref(void *arg, const struct thin_ref *ref)
{
	struct upload *u = arg;
	uint64_t max = u->app->cfg.max_upload;
	uint8_t have = 0;
	int err;

	if ((err = store_blobs_have(&have, u->app->store, &ref->h, &ref->len, 1)) < 0)
		return err;
	if (!have)
		return add_missing(u, &ref->h);
	if (max && u->size + ref->len > max)
		return ck_error(CK_ETOOBIG,
				"the upload is larger than this server's limit of %llu bytes "
				"(--max-upload-size)",
				(unsigned long long)max);
	u->size += ref->len;
	return 0;
}

int api_upload_write(struct app *app, struct req *r, const void *p, size_t n)
{
	struct upload *u = r->upload;
	int err;

	if (u->thin) {
		const struct thin_sink sink = {thin_lit, thin_ref, u};
		err = thin_feed(&u->t, p, n, &sink);
	} else {
		err = spool_append(u, p, n);
		publish(u);
	}
	if (err < 0)
		u->failed = 1;
	/* a long file keeps its write mark alive (a commit waits for it) */
	if (u->file_of && time(NULL) - u->renewed >= STORE_WRITE_LEASE_S / 4) {
		u->renewed = time(NULL);
		if (store_file_write_renew(app->store, u->file_of, u->token) < 0)
			fprintf(stderr,
				"ckptd: the write mark of a file of checkpoint %" PRId64
				" was not renewed: %s\n",
				u->file_of, ck_errmsg());
	}
	return err;
}

/* Hashes what u's claimed jobs from job `first` on have not read yet,
 * reading each byte of the spool once for all. */
static void catch_up(struct upload *u, uint8_t *buf, int first)
{
	uint64_t pos = u->size;

	for (int i = first; i < 2; i++)
		if (!u->job[i].err && u->job[i].done < pos)
			pos = u->job[i].done;
	while (pos < u->size) {
		size_t n = u->size - pos < READ_CHUNK ? (size_t)(u->size - pos) : READ_CHUNK;
		ssize_t r = file_read(u, buf, n, pos);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			for (int i = first; i < 2; i++)
				if (!u->job[i].err && u->job[i].done < u->size)
					u->job[i].err = CK_EIO;
			break;
		}
		for (int i = first; i < 2; i++) {
			struct hash_job *j = &u->job[i];
			if (j->err || j->done >= pos + (uint64_t)r)
				continue;
			j->eat(u, buf + (j->done - pos), (size_t)(pos + (uint64_t)r - j->done));
			j->done = pos + (uint64_t)r;
		}
		pos += (uint64_t)r;
	}
}

/* The pass over a thin upload's file at its end: a reader (a thread of
 * its own) reads the literal bytes from the spool and each referenced blob
 * from the store (decoding it) into a ring of PASS_SLOTS buffers, taking
 * each R frame's CRC-32 as it goes; the caller hashes the buffers in order
 * into the file's SHA-256. Reading and decoding on one core, SHA-256 on
 * the other: the two took about as long as each other, one after the
 * other. Without a thread the reader runs on the caller, buffer by buffer. */
enum { PASS_SLOTS = 3 };

struct thin_pass {
	struct upload *u;
	uint8_t *buf[PASS_SLOTS];
	size_t len[PASS_SLOTS];
	int threaded;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t produced, consumed; /* buffers, under mu when threaded */
	int done;		     /* the reader ended */
	int err;		     /* the reader's, with its message: */
	char msg[512];
	size_t lost; /* the R frame whose blob was gone (err CK_ENOTFOUND) */
};

/* The next buffer to fill, once the caller has hashed what it held. */
static uint8_t *pass_slot(struct thin_pass *p)
{
	if (!p->threaded)
		return p->buf[0];
	pthread_mutex_lock(&p->mu);
	while (p->produced - p->consumed == PASS_SLOTS)
		pthread_cond_wait(&p->cv, &p->mu);
	uint8_t *b = p->buf[p->produced % PASS_SLOTS];
	pthread_mutex_unlock(&p->mu);
	return b;
}

/* The buffer pass_slot gave holds n bytes of the file. */
static void pass_put(struct thin_pass *p, size_t n)
{
	if (!p->threaded) {
		hasher_update(p->u->h, p->buf[0], n);
		return;
	}
	pthread_mutex_lock(&p->mu);
	p->len[p->produced % PASS_SLOTS] = n;
	p->produced++;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

static int pass_read(struct thin_pass *p)
{
	struct upload *u = p->u;
	const struct thin *t = &u->t;
	uint64_t pos = 0;
	uint8_t *b;

	for (size_t i = 0; i <= t->nrefs; i++) {
		uint64_t lit_end = i < t->nrefs ? t->refs[i].off : u->size;
		while (pos < lit_end) {
			size_t k =
			    lit_end - pos < READ_CHUNK ? (size_t)(lit_end - pos) : READ_CHUNK;
			b = pass_slot(p);
			ssize_t got = pread(u->fd, b, k, (off_t)pos);
			if (got < 0 && errno == EINTR)
				continue;
			if (got <= 0)
				return ck_error(
				    CK_EIO, "the upload spool could not be read back to hash it");
			pass_put(p, (size_t)got);
			pos += (uint64_t)got;
		}
		if (i == t->nrefs)
			break;
		const struct thin_ref *ref = &t->refs[i];
		struct blob_reader *br = NULL;
		uint32_t crc = 0;
		int err = store_blob_open(&br, u->app->store, &ref->h);
		for (uint64_t off = 0; err == 0 && off < ref->len;) {
			size_t k =
			    ref->len - off < READ_CHUNK ? (size_t)(ref->len - off) : READ_CHUNK;
			b = pass_slot(p);
			if ((err = blob_reader_read(br, b, k, off)) == 0) {
				crc = crc32_update(crc, b, k);
				pass_put(p, k);
				off += k;
			}
		}
		blob_reader_close(br);
		if (err == CK_ENOTFOUND)
			p->lost = i;
		if (err < 0)
			return err;
		u->ref_crc[i] = crc;
		pos += ref->len;
	}
	return 0;
}

static void *pass_thread(void *arg)
{
	struct thin_pass *p = arg;
	int err = pass_read(p);

	pthread_mutex_lock(&p->mu);
	p->err = err;
	if (err < 0)
		snprintf(p->msg, sizeof(p->msg), "%s", ck_errmsg());
	p->done = 1;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* Hashes the file the frames stand for into u->h, each R frame's CRC-32
 * into u->ref_crc; a blob gone (damage: it is held) is noted missing. */
static int thin_pass(struct upload *u)
{
	struct thin_pass p = {.u = u, .lost = (size_t)-1};
	pthread_t th;
	int err = 0;

	for (int i = 0; i < PASS_SLOTS; i++)
		if (!(p.buf[i] = malloc(READ_CHUNK)))
			err = ck_error(CK_ENOMEM, "out of memory");
	if (err == 0) {
		pthread_mutex_init(&p.mu, NULL);
		pthread_cond_init(&p.cv, NULL);
		p.threaded = pthread_create(&th, NULL, pass_thread, &p) == 0;
		if (!p.threaded) {
			err = pass_read(&p);
		} else {
			pthread_mutex_lock(&p.mu);
			for (;;) {
				while (p.consumed == p.produced && !p.done)
					pthread_cond_wait(&p.cv, &p.mu);
				if (p.consumed == p.produced)
					break; /* done, all hashed */
				size_t slot = p.consumed % PASS_SLOTS;
				pthread_mutex_unlock(&p.mu);
				hasher_update(u->h, p.buf[slot], p.len[slot]);
				pthread_mutex_lock(&p.mu);
				p.consumed++;
				pthread_cond_broadcast(&p.cv);
			}
			pthread_mutex_unlock(&p.mu);
			pthread_join(th, NULL);
			if ((err = p.err) < 0)
				ck_error(err, "%s", p.msg);
		}
		pthread_mutex_destroy(&p.mu);
		pthread_cond_destroy(&p.cv);
	}
	for (int i = 0; i < PASS_SLOTS; i++)
		free(p.buf[i]);
	if (err == CK_ENOTFOUND && p.lost != (size_t)-1) { /* lost despite the hold */
		ck_error_clear();
		return add_missing(u, &u->t.refs[p.lost].h);
	}
	return err;
}

/* A thin upload's end: the spool sized (it may end in a hole), the
 * referenced blobs held against deletes and checked again, then the pass
 * over the file the frames stand for (thin_pass). A blob gone meanwhile is
 * noted missing (409). */
static int thin_end(struct upload *u)
{
	struct store *s = u->app->store;
	const struct thin *t = &u->t;
	size_t n = t->nrefs;
	struct hash *hs = malloc((n ? n : 1) * sizeof(*hs));
	uint64_t *sizes = malloc((n ? n : 1) * sizeof(*sizes));
	uint8_t *have = malloc(n ? n : 1);
	int err = 0;

	u->ref_crc = calloc(n ? n : 1, sizeof(*u->ref_crc));
	if (!hs || !sizes || !have || !u->ref_crc) {
		err = ck_error(CK_ENOMEM, "out of memory");
		goto out;
	}
	if (u->nmissing) /* upload_thin_missing answers */
		goto out;
	if (ftruncate(u->fd, (off_t)u->size) < 0) {
		err = ck_error(errno == ENOSPC ? CK_ENOSPC : CK_EIO,
			       "cannot size the upload spool: %s", strerror(errno));
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		hs[i] = t->refs[i].h;
		sizes[i] = t->refs[i].len;
	}
	if (n && ((err = store_hold(&u->hold, s, hs, n)) < 0 ||
		  (err = store_blobs_have(have, s, hs, sizes, n)) < 0))
		goto out;
	for (size_t i = 0; i < n && !err; i++)
		if (!have[i])
			err = add_missing(u, &hs[i]);
	if (err < 0 || u->nmissing)
		goto out;
	err = thin_pass(u);
out:
	free(hs);
	free(sizes);
	free(have);
	return err;
}

/* The body is whole: an extent still open ends with it, each is cut to
 * its payload (the descriptor bytes written past it are in the spool), the
 * spool gets its full size (it may end in a hole), and the view for
 * ck_input is made. */
static int extents_settle(struct upload *u)
{
	if (!u->nx)
		return 0;
	if (u->cur >= 0) {
		u->x[u->cur].len = u->size - u->x[u->cur].off;
		u->x[u->cur].open = 0;
		u->cur = -1;
	}
	if (!(u->view = calloc(u->nx, sizeof(*u->view))))
		return ck_error(CK_ENOMEM, "out of memory");
	for (size_t i = 0; i < u->nx; i++) {
		if (ftruncate(u->x[i].fd, (off_t)u->x[i].len) < 0)
			return ck_error(CK_EIO, "cannot cut a tensor's file: %s", strerror(errno));
		u->view[i] = (struct ck_extent){u->x[i].off, u->x[i].len, u->x[i].fd};
	}
	if (ftruncate(u->fd, (off_t)u->size) < 0)
		return ck_error(errno == ENOSPC ? CK_ENOSPC : CK_EIO,
				"cannot size the upload spool: %s", strerror(errno));
	return 0;
}

/* Copies extent x's bytes into the spool's hole. */
static int extent_fill(struct upload *u, const struct extent *x)
{
	return copy_at(u->fd, x->off, x->fd, 0, x->open ? u->size - x->off : x->len);
}

/* Ends the extents (their files go unless a commit took them). The jobs
 * must have been claimed. */
static void extents_free(struct upload *u)
{
	pthread_mutex_lock(&u->xmu);
	for (size_t i = 0; i < u->nx; i++)
		store_direct_free(u->x[i].d);
	free(u->x);
	u->x = NULL;
	u->nx = u->xcap = 0;
	u->cur = -1;
	free(u->view);
	u->view = NULL;
	pthread_mutex_unlock(&u->xmu);
}

int api_upload_end(struct req *r)
{
	struct upload *u = r->upload;
	uint8_t *buf = NULL;
	int err = 0;

	u->ended = 1;
	if (u->thin) {
		if ((err = thin_finish(&u->t)) < 0 || (err = thin_end(u)) < 0)
			return err;
		hasher_final(u->h, &r->body_sha256, NULL);
		r->body_size = u->size;
		return 0;
	}
	claim(u);
	if (((!u->first_job && u->job[0].done < u->size) || u->job[1].done < u->size) &&
	    !(buf = malloc(READ_CHUNK)))
		u->job[1].err = CK_ENOMEM;
	else if (buf)
		catch_up(u, buf, u->first_job);
	free(buf);
	for (int i = u->first_job; i < 2; i++)
		if (u->job[i].err && !err)
			err = u->job[i].err;
	hasher_final(u->h, &r->body_sha256, NULL);
	r->body_size = u->size;
	if (err)
		return ck_error(err == CK_ENOMEM ? CK_ENOMEM : CK_EIO,
				"the upload spool could not be read back to hash it");
	return extents_settle(u);
}

/* A body that broke off (neither ended nor refused): the storages that
 * arrived whole stay for the retry (store_keep), once the scan has caught
 * up with what arrived. */
static void keep_broken_off(struct upload *u)
{
	struct app *app = u->app;
	/* the grace counts from the cut, not from when the storing ends */
	int64_t until = (int64_t)time(NULL) + app->cfg.resume_grace;

	if (u->ended || u->failed || u->thin || app->cfg.resume_grace <= 0 || u->size == 0)
		return;
	store_keep_begin(app->store);
	if (u->job[1].done < u->size) {
		uint8_t *buf = malloc(READ_CHUNK);
		if (buf)
			catch_up(u, buf, 1);
		free(buf);
	}
	for (size_t i = 0; u->npieces && i < u->nx; i++)
		if (extent_fill(u, &u->x[i]) < 0) {
			fprintf(stderr,
				"ckptd: the tensors of an upload cut off are not kept: %s\n",
				ck_errmsg());
			u->npieces = 0;
		}
	if (u->npieces && store_keep(app->store, u->fd, u->pieces, u->npieces, until) < 0)
		fprintf(stderr, "ckptd: the %zu tensors of an upload cut off are not kept: %s\n",
			u->npieces, ck_errmsg());
	store_keep_end(app->store);
}

void api_upload_free(struct req *r)
{
	struct upload *u = r->upload;

	if (u && u->file_of && !u->written)
		store_file_write_end(u->app->store, u->file_of, u->token);
	if (u) { /* its jobs read the spool: take them back first */
		claim(u);
		/* kept before the early sends are undone, so what those stored
		 * is claimed and stays rather than being removed and sent again */
		keep_broken_off(u);
		store_early_free(u->early); /* it reads the spool too */
		extents_free(u);
	}
	if (r->body_fd >= 0)
		close(r->body_fd);
	r->body_fd = -1;
	if (!u)
		return;
	pthread_mutex_lock(&u->pool->lock); /* counted by api_upload_begin */
	u->pool->uploads--;
	pthread_mutex_unlock(&u->pool->lock);
	hasher_free(u->h);
	zip_scan_free(u->scan);
	zip_scan_free(u->split);
	pthread_mutex_destroy(&u->xmu);
	thin_free(&u->t);
	free(u->missing);
	store_hold_end(u->hold);
	free(u->ref_crc);
	free(u->pieces);
	free(u);
	r->upload = NULL;
}

const struct zip_scan *upload_zip_scan(const struct req *r)
{
	const struct upload *u = r->upload;

	return u ? u->scan : NULL;
}

struct store_early *upload_early(const struct req *r)
{
	const struct upload *u = r->upload;

	return u ? u->early : NULL;
}

void upload_early_end(struct req *r)
{
	struct upload *u = r->upload;

	if (u && u->ended) {
		store_early_free(u->early);
		u->early = NULL;
		extents_free(u);
	}
}

void upload_view(const struct req *r, const struct ck_extent **ext, size_t *n)
{
	const struct upload *u = r->upload;

	*ext = u && u->view ? u->view : NULL;
	*n = u && u->view ? u->nx : 0;
}

int upload_direct(struct req *r, struct store_direct **direct, const struct index_storage *stor,
		  size_t n)
{
	struct upload *u = r->upload;
	uint8_t *used;
	int err = 0;

	for (size_t i = 0; i < n; i++)
		direct[i] = NULL;
	if (!u || !u->view)
		return 0;
	if (!(used = calloc(u->nx, 1)))
		return ck_error(CK_ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		size_t lo = 0, hi = u->nx;
		while (lo < hi) {
			size_t mid = (lo + hi) / 2;
			if (u->x[mid].off < stor[i].file_off)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo < u->nx && u->x[lo].off == stor[i].file_off &&
		    u->x[lo].len == stor[i].raw_size) {
			direct[i] = u->x[lo].d;
			used[lo] = 1;
		}
	}
	/* the rest is read from the spool by the commit: filled first */
	for (size_t k = 0; k < u->nx && !err; k++)
		if (!used[k])
			err = extent_fill(u, &u->x[k]);
	free(used);
	return err;
}

int upload_hash_range(struct hash *h, uint32_t *crc, struct req *r, uint64_t off, uint64_t len)
{
	struct upload *u = r->upload;
	struct hasher *hs;
	uint8_t *buf;
	int err = 0;

	if (!u || !u->view)
		return hash_fd_range(h, crc, r->body_fd, off, len);
	struct ck_input in = {NULL, u->fd, u->size, 0, u->view, u->nx};
	if (!(hs = hasher_new()) || !(buf = malloc(READ_CHUNK))) {
		hasher_free(hs);
		return ck_error(CK_ENOMEM, "out of memory hashing a blob");
	}
	while (len > 0 && !err) {
		size_t k = len < READ_CHUNK ? (size_t)len : READ_CHUNK;
		if ((err = ck_input_read(&in, buf, k, off, "tensor data")) == 0) {
			hasher_update(hs, buf, k);
			off += k;
			len -= k;
		}
	}
	if (!err)
		hasher_final(hs, h, crc);
	free(buf);
	hasher_free(hs);
	return err;
}

int upload_thin_missing(struct resp *out, const struct req *r)
{
	struct upload *u = r->upload;
	json_t *list, *body;
	size_t n = 0;

	if (!u || !u->thin || !u->nmissing)
		return 0;
	qsort(u->missing, u->nmissing, sizeof(*u->missing), hash_cmp);
	if (!(list = json_array()))
		return ck_error(CK_ENOMEM, "out of memory");
	for (size_t i = 0; i < u->nmissing; i++) {
		char hex[65];
		if (i && !hash_cmp(&u->missing[i], &u->missing[i - 1]))
			continue;
		hash_to_hex(hex, &u->missing[i]);
		json_array_append_new(list, json_string(hex));
		n++;
	}
	body =
	    json_pack("{s:s, s:s+, s:o}", "error", "missing_blobs", "message",
		      "the thin upload refers to blobs this store lacks: send them as literal "
		      "bytes (L frames), or send the plain file; ",
		      n == 1 ? "1 blob is missing" : "several blobs are missing", "missing", list);
	if (!body)
		return ck_error(CK_ENOMEM, "out of memory");
	json_reply(out, 409, body);
	return 1;
}

int upload_thin_fill(struct req *r)
{
	struct upload *u = r->upload;
	uint8_t *buf;
	int err = 0;

	if (!u || !u->thin || u->filled || !u->t.nrefs || u->nmissing)
		return 0;
	if (!(buf = malloc(READ_CHUNK)))
		return ck_error(CK_ENOMEM, "out of memory");
	for (size_t i = 0; i < u->t.nrefs && !err; i++) {
		const struct thin_ref *ref = &u->t.refs[i];
		struct blob_reader *br = NULL;
		err = store_blob_open(&br, u->app->store, &ref->h);
		for (uint64_t off = 0; err == 0 && off < ref->len;) {
			size_t k =
			    ref->len - off < READ_CHUNK ? (size_t)(ref->len - off) : READ_CHUNK;
			if ((err = blob_reader_read(br, buf, k, off)) < 0)
				break;
			ssize_t w = pwrite(u->fd, buf, k, (off_t)(ref->off + off));
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				err = ck_error(errno == ENOSPC ? CK_ENOSPC : CK_EIO,
					       "cannot spool the upload: %s", strerror(errno));
			else
				off += (uint64_t)w;
		}
		blob_reader_close(br);
	}
	free(buf);
	if (err < 0)
		return err;
	u->filled = 1;
	return 1;
}

int upload_thin_check_hash(const struct req *r)
{
	const struct upload *u = r->upload;
	char want[65], got[65];

	if (!u || !u->thin || !memcmp(u->t.end.b, r->body_sha256.b, 32))
		return 0;
	hash_to_hex(want, &u->t.end);
	hash_to_hex(got, &r->body_sha256);
	return ck_error(CK_ECORRUPT,
			"thin upload: the frames stand for a file whose SHA-256 is %s, not the "
			"%s its E frame names; nothing was stored",
			got, want);
}

int upload_thin_storage(const struct req *r, uint64_t off, uint64_t len, struct hash *h,
			uint32_t *crc)
{
	const struct upload *u = r->upload;
	size_t lo = 0, hi;

	if (!u || !u->thin || !u->ended || u->nmissing || !u->ref_crc)
		return 0;
	hi = u->t.nrefs;
	while (lo < hi) { /* the first R frame at or after off */
		size_t mid = lo + (hi - lo) / 2;
		if (u->t.refs[mid].off < off)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < u->t.nrefs && u->t.refs[lo].off == off; lo++)
		if (u->t.refs[lo].len == len) {
			*h = u->t.refs[lo].h;
			*crc = u->ref_crc[lo];
			return 1;
		}
	return 0;
}

int upload_thin_check_refs(const struct req *r, const struct fmt_ckpt *ck)
{
	const struct upload *u = r->upload;
	size_t k = 0;

	if (!u || !u->thin)
		return 0;
	/* both in file order (checkpoint.h: storages sorted by file_off) */
	for (size_t i = 0; i < u->t.nrefs; i++) {
		const struct thin_ref *ref = &u->t.refs[i];
		size_t m;
		while (k < ck->nstorages && ck->storages[k].file_off < ref->off)
			k++;
		/* an empty storage may share its offset with the next one */
		for (m = k; m < ck->nstorages && ck->storages[m].file_off == ref->off &&
			    ck->storages[m].nbytes != ref->len;
		     m++)
			;
		if (m == ck->nstorages || ck->storages[m].file_off != ref->off)
			return ck_error(
			    CK_ECORRUPT,
			    "thin upload: the R frame for bytes %llu to %llu of the file "
			    "is not one storage of it (a zip record's data or a "
			    "safetensors tensor); nothing was stored",
			    (unsigned long long)ref->off,
			    (unsigned long long)(ref->off + ref->len));
	}
	/* a storage that covers part of a hole (an R frame's bytes are not in
	 * the spool) but is not that R frame would be read from it */
	for (size_t i = 0, j = 0; i < ck->nstorages; i++) {
		const struct fmt_storage *st = &ck->storages[i];
		while (j < u->t.nrefs && u->t.refs[j].off + u->t.refs[j].len <= st->file_off)
			j++;
		for (size_t m = j; m < u->t.nrefs && u->t.refs[m].off < st->file_off + st->nbytes;
		     m++) {
			const struct thin_ref *ref = &u->t.refs[m];
			if (ref->len && (ref->off != st->file_off || ref->len != st->nbytes))
				return ck_error(
				    CK_ECORRUPT,
				    "thin upload: storage '%s' (bytes %llu to %llu of the "
				    "file) overlaps the R frame for bytes %llu to %llu "
				    "without being it; nothing was stored",
				    st->key ? st->key : "?", (unsigned long long)st->file_off,
				    (unsigned long long)(st->file_off + st->nbytes),
				    (unsigned long long)ref->off,
				    (unsigned long long)(ref->off + ref->len));
		}
	}
	return 0;
}
