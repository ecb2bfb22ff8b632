/*
 * ingest.c: the upload pipeline, from a spooled body to a committed
 * checkpoint (SPEC 6).
 *
 * 1. The server has spooled the body to an unlinked file while hashing it.
 * 2. formats/ parses it into storages (byte ranges of tensor data) and
 *    tensors; nothing is stored yet, so a damaged file changes nothing.
 * 3. Each storage is hashed (SHA-256 + CRC-32, checked against the zip's CRC
 *    when it declares one), held against the gc, and put into a blob batch;
 *    the skeleton (every other byte, in file order) becomes one more blob.
 * 4. The batch is made durable, then the index rows are committed in one
 *    transaction: the checkpoint becomes visible all at once or not at all.
 *    A crash before the commit leaves only blobs no row names, which the next
 *    start sweeps away.
 * 5. The model's retention policy, if any, is applied.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/err.h"
#include "../formats/zip_scan.h"
#include "internal.h"

#define MAX_TAGS    64
#define MAX_TAG_LEN 128
#define MAX_METRICS 256

struct fields {
	const char *run;
	int has_epoch, has_step, has_loss, pinned;
	int64_t epoch, step;
	double loss;
	json_t *metrics, *tags;
};

static int tag_check(const char *t)
{
	size_t n = strlen(t);

	if (n == 0 || n > MAX_TAG_LEN)
		return ck_error(CK_EINVALID, "a tag must have 1 to %d characters", MAX_TAG_LEN);
	if (!utf8_valid(t))
		return ck_error(CK_EINVALID, "a tag must be UTF-8 text");
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)t[i] < 0x20 || t[i] == 0x7f)
			return ck_error(CK_EINVALID, "a tag must not hold control characters");
	return 0;
}

static int fields_parse(struct fields *f, const struct req *r)
{
	int err;

	memset(f, 0, sizeof(*f));
	f->run = "default";
	f->metrics = json_object();
	f->tags = json_array();
	if (!f->metrics || !f->tags)
		return ck_error(CK_ENOMEM, "out of memory");
	for (size_t i = 0; i < r->nquery; i++) {
		const char *k = r->query[i].key, *v = r->query[i].value ? r->query[i].value : "";
		if (!strcmp(k, "epoch")) {
			if ((err = parse_i64(&f->epoch, "epoch", v)) < 0)
				return err;
			f->has_epoch = 1;
		} else if (!strcmp(k, "step")) {
			if ((err = parse_i64(&f->step, "step", v)) < 0)
				return err;
			f->has_step = 1;
		} else if (!strcmp(k, "loss")) {
			if ((err = parse_f64(&f->loss, "loss", v)) < 0)
				return err;
			f->has_loss = 1;
		} else if (!strcmp(k, "run")) {
			if ((err = name_check("run", v)) < 0)
				return err;
			f->run = v;
		} else if (!strncmp(k, "metric.", 7)) {
			double m;
			if ((err = name_check("metric", k + 7)) < 0 ||
			    (err = parse_f64(&m, k, v)) < 0)
				return err;
			if (json_object_size(f->metrics) >= MAX_METRICS)
				return ck_error(CK_EINVALID, "at most %d metrics", MAX_METRICS);
			json_object_set_new(f->metrics, k + 7, json_real(m));
		} else if (!strcmp(k, "tag")) {
			if ((err = tag_check(v)) < 0)
				return err;
			if (json_array_size(f->tags) >= MAX_TAGS)
				return ck_error(CK_EINVALID, "at most %d tags", MAX_TAGS);
			json_array_append_new(f->tags, json_string(v));
		} else if (!strcmp(k, "pin")) {
			f->pinned = !strcmp(v, "1") || !strcmp(v, "true");
		}
	}
	return 0;
}

/* Copies every byte of the upload outside the storages into a new unlinked
 * file, hashing it on the way. */
static int skeleton_write(int *fd_out, struct blob_meta *meta, struct app *app, int src,
			  uint64_t size, const struct fmt_ckpt *ck)
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
	fd = open(app->tmp_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0) {
		err = ck_error(CK_EIO, "cannot create a temporary file in %s: %m", app->tmp_dir);
		goto out;
	}
	for (size_t i = 0; i <= ck->nstorages; i++) {
		uint64_t end = i < ck->nstorages ? ck->storages[i].file_off : size;
		while (pos < end) {
			size_t n = end - pos < CHUNK ? (size_t)(end - pos) : CHUNK;
			ssize_t got = pread(src, buf, n, (off_t)pos);
			if (got <= 0) {
				err = ck_error(CK_EIO, "reading the upload spool: %m");
				goto out;
			}
			hasher_update(h, buf, (size_t)got);
			if (pwrite(fd, buf, (size_t)got, (off_t)out_off) != got) {
				err = ck_error(errno == ENOSPC ? CK_ENOSPC : CK_EIO,
					       "writing the skeleton: %m");
				goto out;
			}
			pos += (uint64_t)got;
			out_off += (uint64_t)got;
		}
		if (i < ck->nstorages)
			pos = ck->storages[i].file_off + ck->storages[i].nbytes;
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

int ingest_upload(json_t **out, struct app *app, struct req *r)
{
	const char *model = r->params[0];
	struct fields f;
	struct fmt_ckpt *ck = NULL;
	struct blob_meta *metas = NULL, skel = {0};
	struct index_storage *stor = NULL;
	struct index_tensor *tens = NULL;
	struct blob_batch *bt = NULL;
	struct index_new_checkpoint k;
	size_t held = 0;
	int skel_fd = -1, skel_held = 0, committed = 0, err;
	int64_t id = 0;
	json_t *dedup = NULL, *ckpt = NULL;

	if ((err = fields_parse(&f, r)) < 0 || (err = name_check("model", model)) < 0)
		goto out;
	if (r->body_fd < 0 || r->body_size == 0) {
		err = ck_error(CK_EINVALID, "the request has no checkpoint: send the file as the "
					    "body (curl --data-binary @ckpt.pth URL) or as the "
					    "'file' part of a multipart form");
		goto out;
	}
	struct ck_input in = {NULL, r->body_fd, r->body_size};
	if ((err = fmt_read(&ck, &in, &app->limits)) < 0)
		goto out;

	metas = calloc(ck->nstorages + 1, sizeof(*metas));
	stor = calloc(ck->nstorages + 1, sizeof(*stor));
	tens = calloc(ck->ntensors + 1, sizeof(*tens));
	if (!metas || !stor || !tens) {
		err = ck_error(CK_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < ck->nstorages; i++) {
		const struct fmt_storage *s = &ck->storages[i];
		const struct zip_scan *scan = upload_zip_scan(r);
		if ((!scan || zip_scan_lookup(scan, s->file_off, s->nbytes, &metas[i].hash,
					      &metas[i].crc32) < 0) &&
		    (err = hash_fd_range(&metas[i].hash, &metas[i].crc32, r->body_fd, s->file_off,
					 s->nbytes)) < 0)
			goto out;
		if (s->zip_crc && s->zip_crc != metas[i].crc32) {
			err = ck_error(CK_ECORRUPT,
				       "record '%s' at offset %llu: CRC-32 is %08x but the zip "
				       "directory says %08x: the file is damaged",
				       s->key, (unsigned long long)s->file_off, metas[i].crc32,
				       s->zip_crc);
			goto out;
		}
		metas[i].raw_size = s->nbytes;
	}
	if ((err = app->blobs->batch_begin(&bt, app->blobs)) < 0)
		goto out;
	for (size_t i = 0; i < ck->nstorages; i++) {
		if ((err = gc_hold(app->gc, &metas[i].hash)) < 0)
			goto out;
		held++;
		if ((err = app->blobs->batch_put_fd(bt, &metas[i], r->body_fd,
						    ck->storages[i].file_off,
						    ck->storages[i].dtype)) < 0)
			goto out;
	}
	if ((err = skeleton_write(&skel_fd, &skel, app, r->body_fd, r->body_size, ck)) < 0 ||
	    (err = gc_hold(app->gc, &skel.hash)) < 0)
		goto out;
	skel_held = 1;
	if ((err = app->blobs->batch_put_fd(bt, &skel, skel_fd, 0, DT_INVALID)) < 0)
		goto out;
	/* Every byte now lives in the batch: drop the spool's dirty pages, or
	 * a filesystem-wide flush in the commit would write them to disk too
	 * (a second copy of the upload). */
	int dropped = ftruncate(r->body_fd, 0); /* only an optimisation */
	(void)dropped;
	if ((err = app->blobs->batch_commit(bt)) < 0)
		goto out;

	for (size_t i = 0; i < ck->nstorages; i++) {
		stor[i].blob = metas[i].hash;
		stor[i].raw_size = metas[i].raw_size;
		stor[i].stored_size = metas[i].stored_size;
		stor[i].crc32 = metas[i].crc32;
		stor[i].codec = metas[i].codec;
		stor[i].dtype = ck->storages[i].dtype;
		stor[i].file_off = ck->storages[i].file_off;
	}
	for (size_t i = 0; i < ck->ntensors; i++) {
		const struct fmt_tensor *t = &ck->tensors[i];
		tens[i] = (struct index_tensor){t->path,    t->dtype,  t->ndim,	  t->shape,
						t->strides, t->offset, t->storage};
	}
	memset(&k, 0, sizeof(k));
	k.model = model;
	k.run = f.run;
	k.has_epoch = f.has_epoch || ck->has_epoch;
	k.epoch = f.has_epoch ? f.epoch : ck->epoch;
	k.has_step = f.has_step || ck->has_step;
	k.step = f.has_step ? f.step : ck->step;
	k.has_loss = f.has_loss || ck->has_loss;
	k.loss = f.has_loss ? f.loss : ck->loss;
	k.metrics = f.metrics;
	k.tags = f.tags;
	k.pinned = f.pinned;
	k.format = fmt_kind_name(ck->kind);
	k.size = r->body_size;
	k.sha256 = r->body_sha256;
	k.skeleton = skel.hash;
	k.skeleton_size = skel.raw_size;
	k.skeleton_stored = skel.stored_size;
	k.skeleton_crc = skel.crc32;
	k.storages = stor;
	k.nstorages = ck->nstorages;
	k.tensors = tens;
	k.ntensors = ck->ntensors;
	if ((err = index_checkpoint_insert(&id, &dedup, app->idx, &k)) < 0)
		goto out;
	committed = 1;
	if ((err = index_checkpoint_json(&ckpt, app->idx, id, 0)) < 0)
		goto out;
	json_object_set(ckpt, "dedup", dedup);
	*out = ckpt;
	ckpt = NULL;
out:
	for (size_t i = 0; i < held; i++)
		gc_release(app->gc, &metas[i].hash);
	if (skel_held)
		gc_release(app->gc, &skel.hash);
	if (err < 0 && !committed && bt) {
		/* blobs this upload wrote and nobody else holds or names go again */
		int saved = err;
		char msg[1024];
		snprintf(msg, sizeof(msg), "%s", ck_errmsg());
		for (size_t i = 0; i < held; i++)
			if (!metas[i].existed)
				gc_unlink_freed(app->gc, app->idx, app->blobs, &metas[i].hash, 1);
		if (skel_held && !skel.existed)
			gc_unlink_freed(app->gc, app->idx, app->blobs, &skel.hash, 1);
		ck_error(saved, "%s", msg);
	}
	if (bt)
		app->blobs->batch_free(bt);
	if (skel_fd >= 0)
		close(skel_fd);
	json_decref(dedup);
	json_decref(ckpt);
	json_decref(f.metrics);
	json_decref(f.tags);
	free(metas);
	free(stor);
	free(tens);
	fmt_ckpt_free(ck);
	if (committed && err == 0)
		apply_retention(app, model);
	return err;
}
