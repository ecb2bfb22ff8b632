/*
 * blob_fs.c: the local-directory object store (blob_objstore.h); with the
 * codec layer over it (blob_store.c), the local blob store.
 *
 * Layout under the store's root DIR:
 *
 *   DIR/ab/<62 hex>     a raw blob: exactly its raw bytes (named by the
 *                       SHA-256's hex; "ab" is the first two digits)
 *   DIR/ab/<62 hex>.z   a compressed blob: a codec container (codec.h), whose
 *                       header says zstd or planes
 *   DIR/ab/<62 hex>.d   a delta: a codec container encoded against other
 *                       blobs, which its header names (codec.h)
 *   DIR/tmp/<64 hex>.<instance>.<n>   an object being written by the process
 *                       <instance> ("<host>-<pid>", or the id it was given;
 *                       64 zeros: a raw blob written before its hash is
 *                       known, an upload's tensor as it arrives, tmp_open);
 *                       stores written before instance ids have
 *                       <64 hex>.<pid>.<n> there, cleaned the same way
 *
 * The name alone tells raw from compressed, so a reader needs no index, and
 * raw blobs are plain files a download can sendfile (blob_reader_raw_fd). A
 * blob may exist under both names (the same bytes put once raw, once
 * compressed, e.g. with different dtype hints): both hold the same raw bytes;
 * readers prefer the raw file, list reports the blob once, remove removes
 * both. All 256 shard directories are created (and the root fsynced) at open.
 *
 * Durability (git's way): put writes a temp file in DIR/tmp (a compressed
 * blob is encoded straight into it: stage) and starts its writeback; commit
 * flushes every temp file (fdatasync each, or one syncfs for a batch of many
 * files, which costs one journal commit instead of one per file), renames
 * each into place (an existing target holds the same bytes, so replacing it
 * is harmless; but a delta's ".d" is never replaced: the first in place
 * stays, so the blobs it needs are those its header names, whoever wrote
 * it, renameat2 RENAME_NOREPLACE), then flushes each touched shard directory once (the root too
 * if a shard had to be re-created).
 *
 * The page cache: once flushed, a new blob's pages are dropped
 * (POSIX_FADV_DONTNEED; they are clean then, so this costs no I/O). A store
 * writes gigabytes an epoch and reads few of them back soon, while the
 * training job beside it lives on its own cached files (datasets, shards);
 * keeping every checkpoint cached would grow the page cache by each upload
 * and evict theirs. Pages freed this way are reused by the next upload,
 * which on a virtual machine also spares the host faulting in fresh memory:
 * measured here, 1 GB written + fsync'ed took 4.8-6.6 s into pages the
 * guest had not used and 0.7-0.9 s into pages it had. Reads (downloads,
 * thin uploads' references) go to the disk and are cached as usual.
 *
 * Several processes may share DIR: temp names carry the instance id and a
 * counter, so they never collide, and clean_tmp removes only temp files last
 * written before its cutoff.
 *
 * Thread safety: the store is immutable after open except an atomic counter
 * for temp names, so any number of batches and readers may run at once. Two
 * batches writing the same new blob each write their own temp file and both
 * renames succeed. One batch is used by one thread at a time.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "../common/err.h"
#include "blob.h"
#include "blob_objstore.h"
#include "blob_reader.h"

#define COPY_BUF (1u << 20)
/* Batches with more new files than this are flushed with one syncfs. */
#define SYNC_EACH_MAX 32

struct fs_store {
	struct blob_objstore base;
	char *dir;
	int root; /* the store's directory, O_RDONLY */
	char instance[64];
	atomic_ulong seq;
};

struct pending {
	char tmp[160];	/* relative to the root */
	char final[72]; /* relative to the root */
	int done;	/* renamed into place */
};

struct fs_batch {
	struct fs_store *fs;
	struct pending *items;
	size_t n, cap;
	uint8_t *buf;	       /* copy buffer when copy_file_range cannot */
	int staged_fd;	       /* stage's file, or -1 */
	struct pending staged; /* its names */
};

struct fs_reader {
	struct blob_reader base;
	int fd;
	char name[72];
};

static int sys_error(struct fs_store *fs, int e, const char *what, const char *rel)
{
	if (e == ENOSPC || e == EDQUOT)
		return ck_error(CK_ENOSPC,
				"blob store: out of disk space (%s %s/%s): free space or "
				"raise the quota",
				what, fs->dir, rel);
	return ck_error(CK_EIO, "blob store: %s %s/%s: %s", what, fs->dir, rel, strerror(e));
}

static int fsync_dir(struct fs_store *fs, const char *rel)
{
	int fd = openat(fs->root, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC), err = 0;

	if (fd < 0)
		return sys_error(fs, errno, "opening directory", rel);
	if (fsync(fd) < 0)
		err = sys_error(fs, errno, "flushing directory", rel);
	close(fd);
	return err;
}

/* ---- readers ---- */

static int fs_read(struct blob_reader *br, void *buf, size_t n, uint64_t off)
{
	struct fs_reader *r = (struct fs_reader *)br;
	uint8_t *p = buf;

	while (n > 0) {
		ssize_t got = pread(r->fd, p, n, (off_t)off);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			return ck_error(CK_EIO, "blob %s: read at %llu: %s", r->name,
					(unsigned long long)off, strerror(errno));
		}
		if (got == 0)
			return ck_error(CK_ECORRUPT,
					"blob %s: file ends at %llu, before its size %llu", r->name,
					(unsigned long long)off, (unsigned long long)r->base.size);
		p += got;
		n -= (size_t)got;
		off += (uint64_t)got;
	}
	return 0;
}

static void fs_close(struct blob_reader *br)
{
	struct fs_reader *r = (struct fs_reader *)br;

	close(r->fd);
	free(r);
}

static const struct blob_reader_ops fs_reader_ops = {fs_read, fs_close};

static int fs_open(struct blob_reader **out, struct blob_objstore *o, const struct hash *h,
		   int form)
{
	struct fs_store *fs = (struct fs_store *)o;
	struct fs_reader *r;
	char name[72];
	struct stat st;
	int fd, err;

	*out = NULL;
	blob_object_name(name, h, form);
	fd = openat(fs->root, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? CK_ENOTFOUND : sys_error(fs, errno, "opening", name);
	if (fstat(fd, &st) < 0) {
		err = sys_error(fs, errno, "stat", name);
		close(fd);
		return err;
	}
	if (!(r = calloc(1, sizeof(*r)))) {
		close(fd);
		return ck_error(CK_ENOMEM, "blob: out of memory");
	}
	r->base.ops = &fs_reader_ops;
	r->base.size = (uint64_t)st.st_size;
	r->base.codec = CODEC_RAW;
	r->base.raw_fd = fd;
	r->base.raw_off = 0;
	r->fd = fd;
	snprintf(r->name, sizeof(r->name), "%s", name);
	*out = &r->base;
	return 0;
}

/* ---- lookups ---- */

static int fs_stat(uint64_t *size, struct blob_objstore *o, const struct hash *h, int form)
{
	struct fs_store *fs = (struct fs_store *)o;
	char name[72];
	struct stat st;

	blob_object_name(name, h, form);
	if (fstatat(fs->root, name, &st, 0) < 0)
		return errno == ENOENT ? CK_ENOTFOUND : sys_error(fs, errno, "stat", name);
	*size = (uint64_t)st.st_size;
	return 0;
}

static int fs_remove(struct blob_objstore *o, const struct hash *h, int form)
{
	struct fs_store *fs = (struct fs_store *)o;
	char name[72];

	blob_object_name(name, h, form);
	if (unlinkat(fs->root, name, 0) < 0)
		return errno == ENOENT ? CK_ENOTFOUND : sys_error(fs, errno, "removing", name);
	return 0;
}

static int fs_list(struct blob_objstore *o,
		   int (*cb)(void *arg, const struct hash *h, int64_t mtime), void *arg)
{
	struct fs_store *fs = (struct fs_store *)o;
	static const char digits[] = "0123456789abcdef";
	int ret = 0;

	for (int s = 0; s < 256 && ret == 0; s++) {
		char shard[3] = {digits[s >> 4], digits[s & 15], 0};
		int dfd = openat(fs->root, shard, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		DIR *d;
		struct dirent *de;

		if (dfd < 0) {
			if (errno == ENOENT)
				continue;
			return sys_error(fs, errno, "opening directory", shard);
		}
		if (!(d = fdopendir(dfd))) {
			ret = sys_error(fs, errno, "opening directory", shard);
			close(dfd);
			return ret;
		}
		while (ret == 0 && (errno = 0, de = readdir(d)) != NULL) {
			size_t len = strlen(de->d_name);
			char name[72];
			struct hash h;
			struct stat st;
			int form;

			if (len > 64)
				continue;
			snprintf(name, sizeof(name), "%s/%s", shard, de->d_name);
			if (blob_object_parse(&h, &form, name, len + 3) < 0)
				continue;
			if (form != BLOB_FORM_RAW) {
				char other[72];
				/* stored several ways: reported with the raw name,
				 * else the ".z" one */
				blob_object_name(other, &h, BLOB_FORM_RAW);
				if (fstatat(fs->root, other, &st, 0) == 0)
					continue;
				blob_object_name(other, &h, BLOB_FORM_Z);
				if (form == BLOB_FORM_D && fstatat(fs->root, other, &st, 0) == 0)
					continue;
			}
			if (fstatat(dfd, de->d_name, &st, 0) < 0) {
				if (errno == ENOENT) /* removed meanwhile */
					continue;
				ret = sys_error(fs, errno, "stat", name);
				break;
			}
			ret = cb(arg, &h, (int64_t)st.st_mtime);
		}
		if (ret == 0 && errno != 0)
			ret = sys_error(fs, errno, "reading directory", shard);
		closedir(d);
	}
	return ret;
}

static int fs_clean_tmp(struct blob_objstore *o, int64_t older_than, int mine)
{
	struct fs_store *fs = (struct fs_store *)o;
	int dfd = openat(fs->root, "tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC), err = 0;
	DIR *d;
	struct dirent *de;

	if (dfd < 0)
		return errno == ENOENT ? 0 : sys_error(fs, errno, "opening directory", "tmp");
	if (!(d = fdopendir(dfd))) {
		err = sys_error(fs, errno, "opening directory", "tmp");
		close(dfd);
		return err;
	}
	while ((de = readdir(d)) != NULL) {
		char rel[300];
		struct stat st;

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(rel, sizeof(rel), "tmp/%s", de->d_name);
		if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT && !err)
				err = sys_error(fs, errno, "stat", rel);
			continue;
		}
		/* a younger file may be another process's write in flight,
		 * unless it carries our own name: "<64 hex>.<instance>.<n>" */
		if ((int64_t)st.st_mtime >= older_than &&
		    !(mine && strlen(de->d_name) > 65 && de->d_name[64] == '.' &&
		      !strncmp(de->d_name + 65, fs->instance, strlen(fs->instance)) &&
		      de->d_name[65 + strlen(fs->instance)] == '.'))
			continue;
		if (unlinkat(dfd, de->d_name, 0) < 0 && errno != ENOENT && !err)
			err = sys_error(fs, errno, "removing", rel);
	}
	closedir(d);
	return err;
}

/* ---- batches ---- */

static int fs_batch_begin(struct blob_objbatch **out, struct blob_objstore *o)
{
	struct fs_batch *bt = calloc(1, sizeof(*bt));

	*out = NULL;
	if (!bt)
		return ck_error(CK_ENOMEM, "blob: out of memory");
	bt->fs = (struct fs_store *)o;
	bt->staged_fd = -1;
	*out = (struct blob_objbatch *)bt;
	return 0;
}

/* Creates p's temp file for object (h, form); the fd into *fd. */
static int create_tmp(int *fd, struct pending *p, struct fs_store *fs, const struct hash *h,
		      int form)
{
	char hex[65];

	memset(p, 0, sizeof(*p));
	hash_to_hex(hex, h);
	snprintf(p->tmp, sizeof(p->tmp), "tmp/%s.%s.%lu", hex, fs->instance,
		 (unsigned long)atomic_fetch_add(&fs->seq, 1));
	blob_object_name(p->final, h, form);
	*fd = openat(fs->root, p->tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
	if (*fd < 0 && errno == ENOENT && mkdirat(fs->root, "tmp", 0755) == 0)
		*fd = openat(fs->root, p->tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
	if (*fd < 0)
		return sys_error(fs, errno, "creating", p->tmp);
	return 0;
}

/* Starts writeback of a finished temp file, closes it, and adds it to the
 * batch; on failure removes it. */
static int add_tmp(struct fs_batch *bt, int fd, const struct pending *p)
{
	struct fs_store *fs = bt->fs;
	int err = 0;

	/* Start writeback now so commit's flush has little left to wait for. */
	sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
	if (close(fd) < 0)
		err = sys_error(fs, errno, "closing", p->tmp);
	if (!err && bt->n == bt->cap) {
		size_t cap = bt->cap ? bt->cap * 2 : 16;
		struct pending *it = realloc(bt->items, cap * sizeof(*it));
		if (!it)
			err = ck_error(CK_ENOMEM, "blob: out of memory");
		else {
			bt->items = it;
			bt->cap = cap;
		}
	}
	if (err) {
		unlinkat(fs->root, p->tmp, 0);
		return err;
	}
	bt->items[bt->n++] = *p;
	return 0;
}

/* Copies n bytes of src from off to dst (from 0): copy_file_range, which
 * may share extents or copy in the kernel, else pread/write. */
static int copy_raw(struct fs_batch *bt, int dst, const char *rel, int src, uint64_t off,
		    uint64_t n)
{
	loff_t in = (loff_t)off, outp = 0;
	uint64_t left = n;

	while (left > 0) {
		size_t want = left > (1u << 30) ? (1u << 30) : (size_t)left;
		ssize_t c = copy_file_range(src, &in, dst, &outp, want, 0);
		if (c > 0) {
			left -= (uint64_t)c;
			continue;
		}
		if (c == 0)
			return ck_error(CK_ECORRUPT,
					"blob source ends at offset %llu, %llu bytes short",
					(unsigned long long)in, (unsigned long long)left);
		if (errno == EINTR)
			continue;
		if (errno == ENOSPC || errno == EDQUOT)
			return sys_error(bt->fs, errno, "writing", rel);
		if (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP ||
		    errno == EBADF || errno == ETXTBSY || errno == EPERM || errno == EIO)
			break; /* not supported here: copy through user space */
		return sys_error(bt->fs, errno, "writing", rel);
	}
	if (left > 0 && !bt->buf && !(bt->buf = malloc(COPY_BUF)))
		return ck_error(CK_ENOMEM, "blob: out of memory");
	while (left > 0) {
		size_t want = left > COPY_BUF ? COPY_BUF : (size_t)left;
		ssize_t r = pread(src, bt->buf, want, (off_t)in);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return ck_error(CK_EIO, "blob source: read at offset %llu: %s",
					(unsigned long long)in, strerror(errno));
		if (r == 0)
			return ck_error(CK_ECORRUPT,
					"blob source ends at offset %llu, %llu bytes short",
					(unsigned long long)in, (unsigned long long)left);
		for (ssize_t w = 0; w < r;) {
			ssize_t k = pwrite(dst, bt->buf + w, (size_t)(r - w), (off_t)outp);
			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0)
				return sys_error(bt->fs, errno, "writing", rel);
			w += k;
			outp += k;
		}
		in += r;
		left -= (uint64_t)r;
	}
	return 0;
}

static int fs_put_fd(struct blob_objbatch *b, const struct hash *h, int form, int fd, uint64_t off,
		     uint64_t n)
{
	struct fs_batch *bt = (struct fs_batch *)b;
	struct pending p;
	int tfd, err;

	if ((err = create_tmp(&tfd, &p, bt->fs, h, form)) < 0)
		return err;
	if ((err = copy_raw(bt, tfd, p.tmp, fd, off, n)) < 0) {
		close(tfd);
		unlinkat(bt->fs->root, p.tmp, 0);
		return err;
	}
	return add_tmp(bt, tfd, &p);
}

/* Temporary files of blobs not yet hashed are named as the others, with
 * 64 zeros for the hash, so clean_tmp treats them alike. */
static int fs_tmp_open(struct blob_objstore *o, int *fd, char *name)
{
	struct pending p;
	struct hash zero;
	int err;

	memset(&zero, 0, sizeof(zero));
	if ((err = create_tmp(fd, &p, (struct fs_store *)o, &zero, BLOB_FORM_RAW)) < 0)
		return err;
	snprintf(name, BLOB_TMP_NAME, "%s", p.tmp);
	return 0;
}

static void fs_tmp_remove(struct blob_objstore *o, const char *name)
{
	unlinkat(((struct fs_store *)o)->root, name, 0);
}

static int fs_put_tmp(struct blob_objbatch *b, const struct hash *h, int form, const char *name,
		      int fd, uint64_t n)
{
	struct fs_batch *bt = (struct fs_batch *)b;
	struct fs_store *fs = bt->fs;
	struct pending p;
	struct stat st;

	memset(&p, 0, sizeof(p));
	if (strlen(name) >= sizeof(p.tmp) || strncmp(name, "tmp/", 4) != 0)
		return ck_error(CK_EINVALID, "blob store: %s is not a temporary file", name);
	snprintf(p.tmp, sizeof(p.tmp), "%s", name);
	blob_object_name(p.final, h, form);
	if (fstat(fd, &st) < 0)
		return sys_error(fs, errno, "stat", p.tmp);
	if ((uint64_t)st.st_size < n)
		return ck_error(CK_ECORRUPT, "blob store: %s/%s holds %lld bytes, not %llu",
				fs->dir, p.tmp, (long long)st.st_size, (unsigned long long)n);
	if ((uint64_t)st.st_size > n && ftruncate(fd, (off_t)n) < 0)
		return sys_error(fs, errno, "truncating", p.tmp);
	if (bt->n == bt->cap) {
		size_t cap = bt->cap ? bt->cap * 2 : 16;
		struct pending *it = realloc(bt->items, cap * sizeof(*it));
		if (!it)
			return ck_error(CK_ENOMEM, "blob: out of memory");
		bt->items = it;
		bt->cap = cap;
	}
	/* its writeback may have started already: this only makes sure */
	sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
	bt->items[bt->n++] = p;
	return 0;
}

static int fs_stage(int *fd, struct blob_objbatch *b, const struct hash *h, int form)
{
	struct fs_batch *bt = (struct fs_batch *)b;
	int err;

	*fd = -1;
	if (bt->staged_fd >= 0)
		return ck_error(CK_EINVALID, "blob store: a staged file is already open");
	if ((err = create_tmp(&bt->staged_fd, &bt->staged, bt->fs, h, form)) < 0)
		return err;
	*fd = bt->staged_fd;
	return 0;
}

static int fs_put_staged(struct blob_objbatch *b, uint64_t size)
{
	struct fs_batch *bt = (struct fs_batch *)b;
	int fd = bt->staged_fd;
	struct stat st;

	if (fd < 0)
		return ck_error(CK_EINVALID, "blob store: nothing staged");
	bt->staged_fd = -1;
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != size) {
		int err =
		    ck_error(CK_EIO, "blob store: %s/%s holds %lld bytes, not %llu", bt->fs->dir,
			     bt->staged.tmp, (long long)st.st_size, (unsigned long long)size);
		close(fd);
		unlinkat(bt->fs->root, bt->staged.tmp, 0);
		return err;
	}
	return add_tmp(bt, fd, &bt->staged);
}

static void fs_unstage(struct blob_objbatch *b)
{
	struct fs_batch *bt = (struct fs_batch *)b;

	if (bt->staged_fd < 0)
		return;
	close(bt->staged_fd);
	bt->staged_fd = -1;
	unlinkat(bt->fs->root, bt->staged.tmp, 0);
}

/* Renames p's temp file into place: over an existing object, except a
 * delta's (".d"), which stays as it is (the temp file is then removed). */
static int publish(struct fs_store *fs, struct pending *p)
{
	size_t n = strlen(p->final);

	if (n < 2 || strcmp(p->final + n - 2, ".d") != 0)
		return renameat(fs->root, p->tmp, fs->root, p->final);
	if (renameat2(fs->root, p->tmp, fs->root, p->final, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EEXIST)
		return -1;
	unlinkat(fs->root, p->tmp, 0);
	return 0;
}

static int fs_batch_commit(struct blob_objbatch *b)
{
	struct fs_batch *bt = (struct fs_batch *)b;
	struct fs_store *fs = bt->fs;
	uint8_t touched[256] = {0};
	size_t nnew = 0;
	int root_dirty = 0, err;

	for (size_t i = 0; i < bt->n; i++)
		nnew += !bt->items[i].done;
	if (nnew == 0)
		return 0;

	/* 1. the data; then its pages leave the page cache (see the top: not
	 * worth an open per file for a batch of many, which are small) */
	if (nnew > SYNC_EACH_MAX) {
		if (syncfs(fs->root) < 0)
			return sys_error(fs, errno, "flushing", "tmp");
	} else {
		for (size_t i = 0; i < bt->n; i++) {
			struct pending *p = &bt->items[i];
			int fd;
			if (p->done)
				continue;
			if ((fd = openat(fs->root, p->tmp, O_RDONLY | O_CLOEXEC)) < 0)
				return sys_error(fs, errno, "opening", p->tmp);
			if (fdatasync(fd) < 0) {
				err = sys_error(fs, errno, "flushing", p->tmp);
				close(fd);
				return err;
			}
			posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
			close(fd);
		}
	}

	/* 2. the names */
	for (size_t i = 0; i < bt->n; i++) {
		struct pending *p = &bt->items[i];
		char shard[3] = {p->final[0], p->final[1], 0};
		if (p->done)
			continue;
		if (publish(fs, p) < 0) {
			if (errno != ENOENT || mkdirat(fs->root, shard, 0755) < 0)
				return sys_error(fs, errno, "renaming into place", p->final);
			root_dirty = 1;
			if (publish(fs, p) < 0)
				return sys_error(fs, errno, "renaming into place", p->final);
		}
		p->done = 1;
		touched[strtoul(shard, NULL, 16) & 255] = 1;
	}

	/* 3. the directories */
	if (nnew > SYNC_EACH_MAX) {
		if (syncfs(fs->root) < 0)
			return sys_error(fs, errno, "flushing", ".");
		return 0;
	}
	for (int s = 0; s < 256; s++) {
		char shard[3];
		if (!touched[s])
			continue;
		snprintf(shard, sizeof(shard), "%02x", s);
		if ((err = fsync_dir(fs, shard)) < 0)
			return err;
	}
	if (root_dirty && (err = fsync_dir(fs, ".")) < 0)
		return err;
	return 0;
}

static void fs_batch_free(struct blob_objbatch *b)
{
	struct fs_batch *bt = (struct fs_batch *)b;

	if (!bt)
		return;
	fs_unstage(b);
	for (size_t i = 0; i < bt->n; i++)
		if (!bt->items[i].done)
			unlinkat(bt->fs->root, bt->items[i].tmp, 0);
	free(bt->buf);
	free(bt->items);
	free(bt);
}

static void fs_free(struct blob_objstore *o)
{
	struct fs_store *fs = (struct fs_store *)o;

	if (!fs)
		return;
	if (fs->root >= 0)
		close(fs->root);
	free(fs->dir);
	free(fs);
}

/* mkdir -p; *created is set when the last component was made. */
static int mkdir_p(const char *dir, int *created)
{
	char *p = strdup(dir), *s;
	int err = 0;

	*created = 0;
	if (!p)
		return ck_error(CK_ENOMEM, "blob: out of memory");
	for (s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = 0;
		if (mkdir(p, 0755) < 0 && errno != EEXIST) {
			err = ck_error(CK_EIO, "blob store: creating %s: %s", p, strerror(errno));
			goto out;
		}
		*s = '/';
	}
	if (mkdir(p, 0755) == 0)
		*created = 1;
	else if (errno != EEXIST)
		err = ck_error(errno == ENOSPC ? CK_ENOSPC : CK_EIO, "blob store: creating %s: %s",
			       p, strerror(errno));
out:
	free(p);
	return err;
}

int blob_fs_objstore_open(struct blob_objstore **out, const char *dir, const char *instance)
{
	struct fs_store *fs;
	int created = 0, made_shard = 0, err;
	static const char digits[] = "0123456789abcdef";

	*out = NULL;
	if ((err = mkdir_p(dir, &created)) < 0)
		return err;
	fs = calloc(1, sizeof(*fs));
	if (!fs || !(fs->dir = strdup(dir))) {
		free(fs);
		return ck_error(CK_ENOMEM, "blob: out of memory");
	}
	blob_instance_id(fs->instance, instance);
	atomic_init(&fs->seq, 0);
	fs->root = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fs->root < 0) {
		err = ck_error(CK_EIO, "blob store: opening %s: %s", dir, strerror(errno));
		goto fail;
	}
	if (mkdirat(fs->root, "tmp", 0755) < 0 && errno != EEXIST) {
		err = sys_error(fs, errno, "creating", "tmp");
		goto fail;
	}
	for (int s = 0; s < 256; s++) {
		char shard[3] = {digits[s >> 4], digits[s & 15], 0};
		if (mkdirat(fs->root, shard, 0755) == 0)
			made_shard = 1;
		else if (errno != EEXIST) {
			err = sys_error(fs, errno, "creating", shard);
			goto fail;
		}
	}
	if (made_shard && (err = fsync_dir(fs, ".")) < 0)
		goto fail;
	if (created) { /* make the new directory's own name durable too */
		char *parent = strdup(dir), *slash;
		if (parent && (slash = strrchr(parent, '/')) != NULL) {
			*slash = 0;
			int pfd = open(*parent ? parent : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			if (pfd >= 0) {
				fsync(pfd);
				close(pfd);
			}
		} else if (parent) {
			int pfd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			if (pfd >= 0) {
				fsync(pfd);
				close(pfd);
			}
		}
		free(parent);
	}

	fs->base.name = "fs";
	fs->base.deltas = 1;
	fs->base.stat = fs_stat;
	fs->base.batch_begin = fs_batch_begin;
	fs->base.put_fd = fs_put_fd;
	fs->base.stage = fs_stage;
	fs->base.put_staged = fs_put_staged;
	fs->base.unstage = fs_unstage;
	fs->base.tmp_open = fs_tmp_open;
	fs->base.put_tmp = fs_put_tmp;
	fs->base.tmp_remove = fs_tmp_remove;
	fs->base.batch_commit = fs_batch_commit;
	fs->base.batch_free = fs_batch_free;
	fs->base.open = fs_open;
	fs->base.remove = fs_remove;
	fs->base.list = fs_list;
	fs->base.clean_tmp = fs_clean_tmp;
	fs->base.free = fs_free;
	*out = &fs->base;
	return 0;
fail:
	fs_free(&fs->base);
	return err;
}

int blob_fs_open(struct blob_backend **out, const char *dir, int compress)
{
	struct blob_objstore *o = NULL;
	int err;

	*out = NULL;
	if ((err = blob_fs_objstore_open(&o, dir, NULL)) < 0)
		return err;
	return blob_store_new(out, o, compress);
}
