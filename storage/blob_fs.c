/*
 * blob_fs.c: the local-directory blob backend.
 *
 * Layout under the store's root DIR:
 *
 *   DIR/ab/<62 hex>     a raw blob: exactly its raw bytes (named by the
 *                       SHA-256's hex; "ab" is the first two digits)
 *   DIR/ab/<62 hex>.z   a compressed blob: a codec container (codec.h), whose
 *                       header says zstd or planes
 *   DIR/tmp/<64 hex>.<pid>.<n>   a blob being written
 *
 * The name alone tells raw from compressed, so a reader needs no index, and
 * raw blobs are plain files a download can sendfile (blob_reader_raw_fd). A
 * blob may exist under both names (the same bytes put once raw, once
 * compressed, e.g. with different dtype hints): both hold the same raw bytes;
 * readers prefer the raw file, foreach reports the blob once, remove removes
 * both. All 256 shard directories are created (and the root fsynced) at open.
 *
 * Durability (git's way): put writes a temp file in DIR/tmp and starts its
 * writeback; commit flushes every temp file (fdatasync each, or one syncfs
 * for a batch of many files, which costs one journal commit instead of one
 * per file), renames each into place (an existing target holds the same
 * bytes, so replacing it is harmless), then flushes each touched shard
 * directory once (the root too if a shard had to be re-created).
 *
 * Thread safety: the backend is immutable after open except an atomic
 * counter for temp names, so any number of batches and readers may run at
 * once. Two batches writing the same new blob each write their own temp file
 * and both renames succeed. One batch is used by one thread at a time.
 */
#include "blob.h"

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
#include "blob_reader.h"
#include "codec.h"

#define COPY_BUF (1u << 20)
/* Batches with more new files than this are flushed with one syncfs. */
#define SYNC_EACH_MAX 32

struct fs_backend {
	struct blob_backend base;
	char *dir;
	int root; /* the store's directory, O_RDONLY */
	int compress;
	atomic_ulong seq;
};

struct pending {
	struct hash h;
	char tmp[96];	/* relative to the root */
	char final[72]; /* relative to the root */
	uint64_t stored_size;
	int codec;
	int done; /* renamed into place */
};

struct fs_batch {
	struct fs_backend *fs;
	struct pending *items;
	size_t n, cap;
	struct codec_enc *enc; /* made on the first compressed put */
	uint8_t *buf;	       /* copy buffer when copy_file_range cannot */
};

struct fs_raw_reader {
	struct blob_reader base;
	int fd;
	char name[72];
};

struct fs_z_reader {
	struct blob_reader base;
	int fd;
	struct codec_reader *cr;
};

static int sys_error(struct fs_backend *fs, int e, const char *what, const char *rel)
{
	if (e == ENOSPC || e == EDQUOT)
		return ck_error(CK_ENOSPC,
				"blob store: out of disk space (%s %s/%s): free space or "
				"raise the quota",
				what, fs->dir, rel);
	return ck_error(CK_EIO, "blob store: %s %s/%s: %s", what, fs->dir, rel, strerror(e));
}

/* "ab/cdef..." (raw) or "ab/cdef....z" into out[72]. */
static void blob_name(char *out, const struct hash *h, int compressed)
{
	char hex[65];

	hash_to_hex(hex, h);
	snprintf(out, 72, "%.2s/%s%s", hex, hex + 2, compressed ? ".z" : "");
}

static int fsync_dir(struct fs_backend *fs, const char *rel)
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

static int raw_read(struct blob_reader *br, void *buf, size_t n, uint64_t off)
{
	struct fs_raw_reader *r = (struct fs_raw_reader *)br;
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

static void raw_close(struct blob_reader *br)
{
	struct fs_raw_reader *r = (struct fs_raw_reader *)br;

	close(r->fd);
	free(r);
}

static const struct blob_reader_ops raw_ops = {raw_read, raw_close};

static int z_read(struct blob_reader *br, void *buf, size_t n, uint64_t off)
{
	struct fs_z_reader *r = (struct fs_z_reader *)br;

	return codec_reader_read(r->cr, buf, n, off);
}

static void z_close(struct blob_reader *br)
{
	struct fs_z_reader *r = (struct fs_z_reader *)br;

	codec_reader_free(r->cr);
	close(r->fd);
	free(r);
}

static const struct blob_reader_ops z_ops = {z_read, z_close};

static int fs_open_reader(struct blob_reader **out, struct blob_backend *b, const struct hash *h)
{
	struct fs_backend *fs = (struct fs_backend *)b;
	char name[72];
	struct stat st;
	int fd, err;

	*out = NULL;
	blob_name(name, h, 0);
	fd = openat(fs->root, name, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		struct fs_raw_reader *r = calloc(1, sizeof(*r));
		if (!r || fstat(fd, &st) < 0) {
			err = r ? sys_error(fs, errno, "stat", name)
				: ck_error(CK_ENOMEM, "blob: out of memory");
			free(r);
			close(fd);
			return err;
		}
		r->base.ops = &raw_ops;
		r->base.size = (uint64_t)st.st_size;
		r->base.codec = CODEC_RAW;
		r->base.raw_fd = fd;
		r->base.raw_off = 0;
		r->fd = fd;
		memcpy(r->name, name, sizeof(name));
		*out = &r->base;
		return 0;
	}
	if (errno != ENOENT)
		return sys_error(fs, errno, "opening", name);
	blob_name(name, h, 1);
	fd = openat(fs->root, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno != ENOENT)
			return sys_error(fs, errno, "opening", name);
		name[65] = 0;
		return ck_error(CK_ENOTFOUND, "blob %.2s%s not found", name, name + 3);
	}
	struct fs_z_reader *r = calloc(1, sizeof(*r));
	if (!r) {
		close(fd);
		return ck_error(CK_ENOMEM, "blob: out of memory");
	}
	if ((err = codec_reader_open_fd(&r->cr, fd)) < 0) {
		char msg[256];
		snprintf(msg, sizeof(msg), "%s", ck_errmsg());
		err = ck_error(err, "blob %s/%s: %s", fs->dir, name, msg);
		free(r);
		close(fd);
		return err;
	}
	r->base.ops = &z_ops;
	r->base.size = codec_reader_size(r->cr);
	r->base.codec = codec_reader_codec(r->cr);
	r->base.raw_fd = -1;
	r->fd = fd;
	*out = &r->base;
	return 0;
}

/* ---- lookups ---- */

/* 0 and the codec and size when stored, CK_ENOTFOUND, CK_EIO. */
static int stat_blob(int *codec, uint64_t *size, struct fs_backend *fs, const struct hash *h)
{
	char name[72];
	struct stat st;

	blob_name(name, h, 0);
	if (fstatat(fs->root, name, &st, 0) == 0) {
		*codec = CODEC_RAW;
		*size = (uint64_t)st.st_size;
		return 0;
	}
	if (errno != ENOENT)
		return sys_error(fs, errno, "stat", name);
	blob_name(name, h, 1);
	if (fstatat(fs->root, name, &st, 0) < 0) {
		if (errno != ENOENT)
			return sys_error(fs, errno, "stat", name);
		return CK_ENOTFOUND;
	}
	*size = (uint64_t)st.st_size;
	*codec = CODEC_ZSTD;
	/* The container's header names its codec (byte 4). */
	int fd = openat(fs->root, name, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		uint8_t hdr[5];
		if (pread(fd, hdr, sizeof(hdr), 0) == (ssize_t)sizeof(hdr) &&
		    hdr[4] == CODEC_PLANES)
			*codec = CODEC_PLANES;
		close(fd);
	}
	return 0;
}

static int fs_exists(struct blob_backend *b, const struct hash *h)
{
	int codec;
	uint64_t size;
	int err = stat_blob(&codec, &size, (struct fs_backend *)b, h);

	if (err == CK_ENOTFOUND) {
		char hex[65];
		hash_to_hex(hex, h);
		return ck_error(CK_ENOTFOUND, "blob %s not found", hex);
	}
	return err;
}

static int fs_remove(struct blob_backend *b, const struct hash *h)
{
	struct fs_backend *fs = (struct fs_backend *)b;
	char name[72];
	int found = 0;

	for (int z = 0; z < 2; z++) {
		blob_name(name, h, z);
		if (unlinkat(fs->root, name, 0) == 0)
			found = 1;
		else if (errno != ENOENT)
			return sys_error(fs, errno, "removing", name);
	}
	if (!found) {
		char hex[65];
		hash_to_hex(hex, h);
		return ck_error(CK_ENOTFOUND, "blob %s not found", hex);
	}
	return 0;
}

static int is_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

static int fs_foreach(struct blob_backend *b, int (*cb)(void *arg, const struct hash *h), void *arg)
{
	struct fs_backend *fs = (struct fs_backend *)b;
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
			char hex[65];
			struct hash h;
			struct stat st;

			if (len == 64 && memcmp(de->d_name + 62, ".z", 2) == 0) {
				char raw[63];
				memcpy(raw, de->d_name, 62);
				raw[62] = 0;
				/* stored both ways: reported with the raw name */
				if (is_hex(raw, 62) && fstatat(dfd, raw, &st, 0) == 0)
					continue;
			} else if (len != 62) {
				continue;
			}
			if (!is_hex(de->d_name, 62))
				continue;
			memcpy(hex, shard, 2);
			memcpy(hex + 2, de->d_name, 62);
			hex[64] = 0;
			if (hash_from_hex(&h, hex) < 0)
				continue;
			ret = cb(arg, &h);
		}
		if (ret == 0 && errno != 0)
			ret = sys_error(fs, errno, "reading directory", shard);
		closedir(d);
	}
	return ret;
}

static int fs_clean_tmp(struct blob_backend *b)
{
	struct fs_backend *fs = (struct fs_backend *)b;
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
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (unlinkat(dfd, de->d_name, 0) < 0 && errno != ENOENT && !err) {
			char rel[300];
			snprintf(rel, sizeof(rel), "tmp/%s", de->d_name);
			err = sys_error(fs, errno, "removing", rel);
		}
	}
	closedir(d);
	return err;
}

/* ---- batches ---- */

static int fs_batch_begin(struct blob_batch **out, struct blob_backend *b)
{
	struct fs_batch *bt = calloc(1, sizeof(*bt));

	*out = NULL;
	if (!bt)
		return ck_error(CK_ENOMEM, "blob: out of memory");
	bt->fs = (struct fs_backend *)b;
	*out = (struct blob_batch *)bt;
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

static int fs_batch_put_fd(struct blob_batch *b, struct blob_meta *meta, int fd, uint64_t off,
			   enum dtype hint)
{
	struct fs_batch *bt = (struct fs_batch *)b;
	struct fs_backend *fs = bt->fs;
	struct pending p;
	char hex[65];
	int tfd = -1, err, codec = CODEC_RAW;
	uint64_t stored = meta->raw_size;

	/* The same bytes twice in one batch: stored once. */
	for (size_t i = 0; i < bt->n; i++) {
		if (memcmp(bt->items[i].h.b, meta->hash.b, sizeof(meta->hash.b)) == 0) {
			meta->existed = 1;
			meta->codec = bt->items[i].codec;
			meta->stored_size = bt->items[i].stored_size;
			return 0;
		}
	}
	err = stat_blob(&meta->codec, &meta->stored_size, fs, &meta->hash);
	if (err == 0) {
		meta->existed = 1;
		return 0;
	}
	if (err != CK_ENOTFOUND)
		return err;
	meta->existed = 0;

	if (bt->n == bt->cap) {
		size_t cap = bt->cap ? bt->cap * 2 : 16;
		struct pending *it = realloc(bt->items, cap * sizeof(*it));
		if (!it)
			return ck_error(CK_ENOMEM, "blob: out of memory");
		bt->items = it;
		bt->cap = cap;
	}
	memset(&p, 0, sizeof(p));
	p.h = meta->hash;
	hash_to_hex(hex, &meta->hash);
	snprintf(p.tmp, sizeof(p.tmp), "tmp/%s.%ld.%lu", hex, (long)getpid(),
		 (unsigned long)atomic_fetch_add(&fs->seq, 1));
	tfd = openat(fs->root, p.tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
	if (tfd < 0 && errno == ENOENT && mkdirat(fs->root, "tmp", 0755) == 0)
		tfd = openat(fs->root, p.tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
	if (tfd < 0)
		return sys_error(fs, errno, "creating", p.tmp);

	if (fs->compress && meta->raw_size > 0) {
		if (!bt->enc && (err = codec_enc_new(&bt->enc)) < 0)
			goto fail;
		err = codec_encode_fd(&codec, &stored, bt->enc, tfd, fd, off, meta->raw_size, hint);
		if (err < 0) {
			if (err == CK_ENOSPC || err == CK_EIO) {
				char msg[256];
				snprintf(msg, sizeof(msg), "%s", ck_errmsg());
				err = ck_error(err, "%s (%s/%s)", msg, fs->dir, p.tmp);
			}
			goto fail;
		}
		if (codec == CODEC_RAW && ftruncate(tfd, 0) < 0) {
			err = sys_error(fs, errno, "truncating", p.tmp);
			goto fail;
		}
	}
	if (codec == CODEC_RAW) {
		stored = meta->raw_size;
		if ((err = copy_raw(bt, tfd, p.tmp, fd, off, meta->raw_size)) < 0)
			goto fail;
	}
	/* Start writeback now so commit's flush has little left to wait for. */
	sync_file_range(tfd, 0, 0, SYNC_FILE_RANGE_WRITE);
	if (close(tfd) < 0) {
		tfd = -1;
		err = sys_error(fs, errno, "closing", p.tmp);
		goto fail;
	}
	tfd = -1;
	blob_name(p.final, &meta->hash, codec != CODEC_RAW);
	p.codec = codec;
	p.stored_size = stored;
	bt->items[bt->n++] = p;
	meta->codec = codec;
	meta->stored_size = stored;
	return 0;
fail:
	if (tfd >= 0)
		close(tfd);
	unlinkat(fs->root, p.tmp, 0);
	return err;
}

static int fs_batch_commit(struct blob_batch *b)
{
	struct fs_batch *bt = (struct fs_batch *)b;
	struct fs_backend *fs = bt->fs;
	uint8_t touched[256] = {0};
	size_t nnew = 0;
	int root_dirty = 0, err;

	for (size_t i = 0; i < bt->n; i++)
		nnew += !bt->items[i].done;
	if (nnew == 0)
		return 0;

	/* 1. the data */
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
			close(fd);
		}
	}

	/* 2. the names */
	for (size_t i = 0; i < bt->n; i++) {
		struct pending *p = &bt->items[i];
		char shard[3] = {p->final[0], p->final[1], 0};
		if (p->done)
			continue;
		if (renameat(fs->root, p->tmp, fs->root, p->final) < 0) {
			if (errno != ENOENT || mkdirat(fs->root, shard, 0755) < 0)
				return sys_error(fs, errno, "renaming into place", p->final);
			root_dirty = 1;
			if (renameat(fs->root, p->tmp, fs->root, p->final) < 0)
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

static void fs_batch_free(struct blob_batch *b)
{
	struct fs_batch *bt = (struct fs_batch *)b;

	if (!bt)
		return;
	for (size_t i = 0; i < bt->n; i++)
		if (!bt->items[i].done)
			unlinkat(bt->fs->root, bt->items[i].tmp, 0);
	codec_enc_free(bt->enc);
	free(bt->buf);
	free(bt->items);
	free(bt);
}

static void fs_free(struct blob_backend *b)
{
	struct fs_backend *fs = (struct fs_backend *)b;

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

int blob_fs_open(struct blob_backend **out, const char *dir, int compress)
{
	struct fs_backend *fs;
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
	fs->compress = compress;
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
	fs->base.batch_begin = fs_batch_begin;
	fs->base.batch_put_fd = fs_batch_put_fd;
	fs->base.batch_commit = fs_batch_commit;
	fs->base.batch_free = fs_batch_free;
	fs->base.exists = fs_exists;
	fs->base.open = fs_open_reader;
	fs->base.remove = fs_remove;
	fs->base.foreach = fs_foreach;
	fs->base.clean_tmp = fs_clean_tmp;
	fs->base.free = fs_free;
	*out = &fs->base;
	return 0;
fail:
	fs_free(&fs->base);
	return err;
}
