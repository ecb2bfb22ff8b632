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
#include <stddef.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../common/err.h"
#include "../formats/zip_scan.h"
#include "../formats/dcp.h"
#include "../formats/le.h"
#include "internal.h"

struct fields {
	const char *run;
	int has_epoch, has_step, has_loss, pinned;
	int64_t epoch, step, resumed_from;
	double loss;
	struct index_metric metrics[INDEX_MAX_METRICS];
	size_t nmetrics;
	const char *tags[INDEX_MAX_TAGS];
	size_t ntags;
};

int tag_check(const char *t)
{
	size_t n = strlen(t);

	if (n == 0 || n > INDEX_MAX_TAG_LEN)
		return ck_error(CK_EINVALID, "a tag must have 1 to %d characters",
				INDEX_MAX_TAG_LEN);
	if (!utf8_valid(t))
		return ck_error(CK_EINVALID, "a tag must be UTF-8 text");
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)t[i] < 0x20 || t[i] == 0x7f)
			return ck_error(CK_EINVALID, "a tag must not hold control characters");
	return 0;
}

/* The upload's fields (query or form). Borrows strings from r. */
static int fields_parse(struct fields *f, const struct req *r)
{
	int err;

	memset(f, 0, sizeof(*f));
	f->run = "default";
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
			size_t j;
			if ((err = name_check("metric", k + 7)) < 0 ||
			    (err = parse_f64(&m, k, v)) < 0)
				return err;
			for (j = 0; j < f->nmetrics; j++) /* a repeated name: the last wins */
				if (!strcmp(f->metrics[j].name, k + 7))
					break;
			if (j == f->nmetrics && f->nmetrics == INDEX_MAX_METRICS)
				return ck_error(CK_EINVALID, "at most %d metrics",
						INDEX_MAX_METRICS);
			snprintf(f->metrics[j].name, sizeof(f->metrics[j].name), "%s", k + 7);
			f->metrics[j].value = m;
			if (j == f->nmetrics)
				f->nmetrics++;
		} else if (!strcmp(k, "tag")) {
			if ((err = tag_check(v)) < 0)
				return err;
			if (f->ntags == INDEX_MAX_TAGS)
				return ck_error(CK_EINVALID, "at most %d tags", INDEX_MAX_TAGS);
			f->tags[f->ntags++] = v;
		} else if (!strcmp(k, "resumed_from")) {
			if ((err = parse_i64(&f->resumed_from, "resumed_from", v)) < 0)
				return err;
			if (f->resumed_from < 1)
				return ck_error(
				    CK_EINVALID,
				    "resumed_from must be the id of a checkpoint (from 1)");
		} else if (!strcmp(k, "pin")) {
			f->pinned = !strcmp(v, "1") || !strcmp(v, "true");
		}
	}
	return 0;
}

/* A file of a staged checkpoint (ingest_file): what it belongs to. */
struct part_of {
	int64_t id, token;
	const char *name, *run;
};

/* A torch.distributed.checkpoint data file (formats/items.c) as one parsed
 * checkpoint of our own making (no budget: free with distcp_free): every
 * archive's storages at their place in the file, its tensors named by the
 * archive's offset ("/1024" for a tensor saved alone, "/1024/x" within a
 * dict). Its tensors are only chunks: what they are the checkpoint's
 * .metadata says. */
struct distcp {
	struct fmt_ckpt ck; /* first: freed through it */
	struct fmt_item *items;
	size_t nitems;
};

static void distcp_free(struct fmt_ckpt *ck)
{
	struct distcp *d = (struct distcp *)ck;

	if (!d)
		return;
	for (size_t i = 0; i < d->ck.ntensors; i++)
		free(d->ck.tensors[i].path);
	free(d->ck.tensors);
	free(d->ck.storages);
	fmt_items_free(d->items, d->nitems);
	free(d);
}

/* A .distcp file's archives; the payloads the upload's scanner hashed as
 * they arrived are not read again to find them (fmt_read_items_past). */
static int distcp_read(struct fmt_ckpt **out, const struct ck_input *in,
		       const struct fmt_limits *lim, const struct zip_scan *scan)
{
	struct distcp *d = calloc(1, sizeof(*d));
	size_t ns = 0, nt = 0, nskip = scan ? zip_scan_count(scan) : 0;
	struct fmt_span *skip = calloc(nskip + 1, sizeof(*skip));
	int err;

	*out = NULL;
	if (!d || !skip) {
		free(d);
		free(skip);
		return ck_error(CK_ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < nskip; i++)
		zip_scan_span(scan, i, &skip[i].off, &skip[i].len);
	err = fmt_read_items_past(&d->items, &d->nitems, in, lim, skip, nskip);
	free(skip);
	if (err < 0) {
		free(d);
		return err;
	}
	for (size_t i = 0; i < d->nitems; i++) {
		ns += d->items[i].ck->nstorages;
		nt += d->items[i].ck->ntensors;
	}
	d->ck.storages = calloc(ns + 1, sizeof(*d->ck.storages));
	d->ck.tensors = calloc(nt + 1, sizeof(*d->ck.tensors));
	if (!d->ck.storages || !d->ck.tensors) {
		distcp_free(&d->ck);
		return ck_error(CK_ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < d->nitems; i++) {
		const struct fmt_item *it = &d->items[i];
		size_t first = d->ck.nstorages;
		for (size_t k = 0; k < it->ck->nstorages; k++) {
			struct fmt_storage *st = &d->ck.storages[d->ck.nstorages++];
			*st = it->ck->storages[k];
			st->file_off += it->off;
		}
		for (size_t k = 0; k < it->ck->ntensors; k++) {
			struct fmt_tensor *t = &d->ck.tensors[d->ck.ntensors];
			const char *p = it->ck->tensors[k].path;
			size_t len = strlen(p) + 24;
			*t = it->ck->tensors[k];
			t->storage += first;
			if (!(t->path = malloc(len))) {
				distcp_free(&d->ck);
				return ck_error(CK_ENOMEM, "out of memory");
			}
			snprintf(t->path, len, "/%llu%s", (unsigned long long)it->off, p);
			d->ck.ntensors++;
		}
	}
	*out = &d->ck;
	return 0;
}

static int has_suffix(const char *name, const char *suffix)
{
	size_t n = strlen(name), m = strlen(suffix);

	return n >= m && !strcmp(name + n - m, suffix);
}

static int is_distcp(const char *name)
{
	return has_suffix(name, ".distcp");
}

/* Whether a file of a checkpoint of several files is kept as bytes only:
 * no format ckptd reads. Any file may be in a directory checkpoint, so a
 * file is safetensors by its first bytes (a JSON object after an 8-byte
 * length) only when that length fits in it or its name says .safetensors:
 * one file of random bytes in 256 has a '{' at byte 8, and a directory
 * pushed whole must not be refused for it. (A single upload keeps the
 * stricter reading: a damaged safetensors file answers 4xx.) */
static int raw_file(const struct ck_input *in, const char *name)
{
	enum fmt_kind k = FMT_UNKNOWN;
	uint8_t b[8];

	if (fmt_detect(&k, in) < 0) {
		ck_error_clear();
		return 1;
	}
	if (k == FMT_SAFETENSORS && !has_suffix(name, ".safetensors")) {
		if (ck_input_read(in, b, 8, 0, "file header") < 0) {
			ck_error_clear();
			return 1;
		}
		return le64(b) > in->size - 8;
	}
	return k == FMT_UNKNOWN;
}

/* Parses r's body as the file part names (or as an upload of one file):
 * *ck and *raw (1: a struct distcp, kept as bytes; 0: fmt_read's). On
 * failure *ck is NULL. */
static int parse_body(struct fmt_ckpt **ck, int *raw, struct app *app, struct req *r,
		      const struct part_of *part)
{
	struct ck_input in = {NULL, r->body_fd, r->body_size, 0, NULL, 0};
	int err = 0;

	upload_view(r, &in.ext, &in.next); /* large payloads written to files of their own */

	*ck = NULL;
	*raw = 0;
	if (part && dcp_is_metadata_name(part->name)) { /* DCP's: checked, kept as bytes */
		if ((err = tview_metadata_check(app, &in)) < 0)
			return err;
		*raw = 1;
	} else if (part && is_distcp(part->name)) { /* torch.save archives one after another */
		if ((err = distcp_read(ck, &in, &app->limits, upload_zip_scan(r))) < 0)
			return err;
		*raw = 1;
		return 0;
	} else if (part && raw_file(&in, part->name)) { /* kept byte for byte, no tensors */
		*raw = 1;
	} else if ((err = fmt_read(ck, &in, &app->limits)) == CK_EFORMAT && part) {
		/* a file of no format ckptd reads (a pickle that is no torch
		 * file, DCP's .metadata): its bytes */
		ck_error_clear();
		*raw = 1;
	} else {
		return err;
	}
	if (!(*ck = calloc(1, sizeof(struct distcp))))
		return ck_error(CK_ENOMEM, "out of memory");
	return 0;
}

static int ingest(json_t **out, int64_t *id_out, struct app *app, struct req *r,
		  const struct part_of *part)
{
	const char *model = r->params[0];
	struct fields *f = NULL;
	struct fmt_ckpt *ck = NULL;
	struct index_storage *stor = NULL;
	struct index_tensor *tens = NULL;
	uint8_t *referenced = NULL;
	struct store_direct **direct = NULL;
	struct store_upload u;
	struct index_dedup dedup;
	struct index_checkpoint *row = NULL;
	int64_t id = 0;
	int err, raw = 0;

	if (!(f = malloc(sizeof(*f))))
		return ck_error(CK_ENOMEM, "out of memory");
	if ((err = fields_parse(f, r)) < 0 || (err = name_check("model", model)) < 0)
		goto out;
	if (r->body_fd < 0 || (r->body_size == 0 && !part)) {
		err = ck_error(CK_EINVALID, "the request has no checkpoint: send the file as the "
					    "body (curl --data-binary @ckpt.pth URL) or as the "
					    "'file' part of a multipart form");
		goto out;
	}
	if ((err = upload_thin_check_hash(r)) < 0)
		goto out;
	/* A thin upload's spool has holes where its R frames' bytes are, and
	 * the parsers never read a storage's bytes; a parse that fails may
	 * have read a hole (an R frame over bytes that are no storage), so the
	 * holes are filled from the store and it is parsed again, for the
	 * error it would give on the real file. */
	if ((err = parse_body(&ck, &raw, app, r, part)) < 0 && err != CK_ENOMEM &&
	    upload_thin_fill(r) > 0) {
		ck_error_clear();
		err = parse_body(&ck, &raw, app, r, part);
	}
	if (err < 0)
		goto out;
	if ((err = upload_thin_check_refs(r, ck)) < 0)
		goto out;

	stor = calloc(ck->nstorages + 1, sizeof(*stor));
	tens = calloc(ck->ntensors + 1, sizeof(*tens));
	referenced = calloc(ck->nstorages + 1, 1);
	if (!stor || !tens || !referenced) {
		err = ck_error(CK_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < ck->nstorages; i++) {
		const struct fmt_storage *s = &ck->storages[i];
		const struct zip_scan *scan = upload_zip_scan(r);
		if (upload_thin_storage(r, s->file_off, s->nbytes, &stor[i].blob, &stor[i].crc32)) {
			referenced[i] = 1; /* a thin upload's R frame: not in the spool */
		} else if ((!scan || zip_scan_lookup(scan, s->file_off, s->nbytes, &stor[i].blob,
						     &stor[i].crc32) < 0) &&
			   (err = upload_hash_range(&stor[i].blob, &stor[i].crc32, r, s->file_off,
						    s->nbytes)) < 0) {
			goto out;
		}
		if (s->zip_crc && s->zip_crc != stor[i].crc32) {
			err = ck_error(CK_ECORRUPT,
				       "record '%s' at offset %llu: CRC-32 is %08x but the zip "
				       "directory says %08x: the file is damaged",
				       s->key, (unsigned long long)s->file_off, stor[i].crc32,
				       s->zip_crc);
			goto out;
		}
		stor[i].raw_size = s->nbytes;
		stor[i].dtype = s->dtype;
		stor[i].file_off = s->file_off;
	}
	for (size_t i = 0; i < ck->ntensors; i++) {
		const struct fmt_tensor *t = &ck->tensors[i];
		uint64_t numel;
		if ((err = tensor_numel(&numel, t->ndim, t->shape)) < 0) {
			ck_error_prefix(err, "tensor %s: ", t->path);
			goto out;
		}
		tens[i] = (struct index_tensor){
		    t->path,	t->dtype,  t->ndim,    t->shape,
		    t->strides, t->offset, t->storage, numel * dtype_size(t->dtype)};
	}
	if (!(direct = calloc(ck->nstorages + 1, sizeof(*direct)))) {
		err = ck_error(CK_ENOMEM, "out of memory");
		goto out;
	}
	if ((err = upload_direct(r, direct, stor, ck->nstorages)) < 0)
		goto out;
	memset(&u, 0, sizeof(u));
	u.fd = r->body_fd;
	u.direct = direct;
	u.early = upload_early(r);
	u.ck.model = model;
	u.ck.run = f->run;
	u.ck.has_epoch = f->has_epoch || ck->has_epoch;
	u.ck.epoch = f->has_epoch ? f->epoch : ck->epoch;
	u.ck.has_step = f->has_step || ck->has_step;
	u.ck.step = f->has_step ? f->step : ck->step;
	u.ck.has_loss = f->has_loss || ck->has_loss;
	u.ck.loss = f->has_loss ? f->loss : ck->loss;
	u.ck.metrics = f->metrics;
	u.ck.nmetrics = f->nmetrics;
	u.ck.tags = f->tags;
	u.ck.ntags = f->ntags;
	u.ck.pinned = f->pinned;
	u.ck.resumed_from = f->resumed_from;
	u.ck.format = part && is_distcp(part->name)	? "distcp"
		      : part && ck->kind == FMT_UNKNOWN ? "raw"
							: fmt_kind_name(ck->kind);
	if (part) { /* the checkpoint's fields are its own, not its files' */
		memset(&u.ck, 0, offsetof(struct index_new_checkpoint, format));
		u.ck.model = model;
		u.ck.run = part->run;
		u.ck.part_of = part->id;
		u.ck.file_name = part->name;
		u.ck.write_token = part->token;
	}
	u.ck.size = r->body_size;
	u.ck.sha256 = r->body_sha256;
	u.ck.storages = stor;
	u.ck.nstorages = ck->nstorages;
	u.ck.tensors = tens;
	u.ck.ntensors = ck->ntensors;
	u.fd_disposable = 1; /* the spool: nothing reads it after the commit */
	u.referenced = referenced;
	if ((err = store_commit(&id, &dedup, app->store, &u)) < 0)
		goto out;
	/* The committed row as stored; retention never removes the checkpoint
	 * its own upload made, so this finds it unless a concurrent delete
	 * removed it meanwhile (then the answer says so: 404). */
	if ((err = store_checkpoint(&row, app->store, id)) < 0)
		goto out;
	if (part) {
		upload_file_written(r);
		*out = render_file(part->name, row);
	} else {
		*out = render_checkpoint(row);
	}
	if (!*out) {
		err = ck_error(CK_ENOMEM, "out of memory");
		goto out;
	}
	json_object_set_new(*out, "dedup", render_dedup(&dedup));
	*id_out = id;
out:
	upload_early_end(r);
	free(direct);
	index_checkpoint_free(row);
	free(stor);
	free(referenced);
	free(tens);
	free(f);
	if (raw) /* not the parser's: no budget */
		distcp_free(ck);
	else
		fmt_ckpt_free(ck);
	return err;
}

int ingest_upload(json_t **out, int64_t *id, struct app *app, struct req *r)
{
	return ingest(out, id, app, r, NULL);
}

int ingest_file(json_t **out, struct app *app, struct req *r)
{
	struct index_checkpoint *parent = NULL;
	struct part_of part = {0};
	int64_t id;
	int err;

	if ((err = staged_id(&part.id, r->params[1])) < 0 ||
	    (err = upload_file_token(r, &part.token)) < 0 ||
	    (err = store_checkpoint(&parent, app->store, part.id)) < 0)
		goto out;
	part.name = r->params[2];
	part.run = parent->run;
	err = ingest(out, &id, app, r, &part);
out:
	index_checkpoint_free(parent);
	return err;
}

int ingest_staged_open(json_t **out, int64_t *id_out, struct app *app, struct req *r)
{
	const char *model = r->params[0];
	struct fields *f = NULL;
	struct index_checkpoint *row = NULL;
	struct index_new_checkpoint k;
	int64_t id = 0;
	int err;

	if (!(f = malloc(sizeof(*f))))
		return ck_error(CK_ENOMEM, "out of memory");
	if ((err = fields_parse(f, r)) < 0 || (err = name_check("model", model)) < 0)
		goto out;
	if (r->body_size > 0) {
		err = ck_error(CK_EINVALID,
			       "?staged=1 opens a checkpoint of several files and takes no body: "
			       "PUT each file to .../checkpoints/{id}/files/{name}, then POST "
			       ".../checkpoints/{id}/commit");
		goto out;
	}
	memset(&k, 0, sizeof(k));
	k.model = model;
	k.run = f->run;
	k.has_epoch = f->has_epoch;
	k.epoch = f->epoch;
	k.has_step = f->has_step;
	k.step = f->step;
	k.has_loss = f->has_loss;
	k.loss = f->loss;
	k.metrics = f->metrics;
	k.nmetrics = f->nmetrics;
	k.tags = f->tags;
	k.ntags = f->ntags;
	k.pinned = f->pinned;
	k.resumed_from = f->resumed_from;
	k.stage_until = (int64_t)time(NULL) + app->cfg.stage_timeout;
	if ((err = store_staged_open(&id, app->store, &k)) < 0 ||
	    (err = store_checkpoint(&row, app->store, id)) < 0)
		goto out;
	if (!(*out = render_checkpoint(row))) {
		err = ck_error(CK_ENOMEM, "out of memory");
		goto out;
	}
	*id_out = id;
out:
	index_checkpoint_free(row);
	free(f);
	return err;
}
