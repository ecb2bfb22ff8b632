/*
 * render.c: the JSON the HTTP API answers (SPEC 3), made from the index's C
 * structs. The one place where a checkpoint, a model or the store's sizes
 * become JSON; key order is the order users see.
 */
#include "../common/err.h"
#include "internal.h"

static json_t *hash_json(const struct hash *h)
{
	char hex[65];

	hash_to_hex(hex, h);
	return json_string(hex);
}

static json_t *opt_int(int has, int64_t v)
{
	return has ? json_integer(v) : json_null();
}

static json_t *dims_json(int ndim, const int64_t *v)
{
	json_t *a = json_array();

	for (int i = 0; a && i < ndim; i++)
		json_array_append_new(a, json_integer(v[i]));
	return a;
}

static json_t *dedup_json(const struct index_dedup *d)
{
	return json_pack("{sI sI sI sI}", "tensors", (json_int_t)d->tensors, "new_tensors",
			 (json_int_t)d->new_tensors, "bytes", (json_int_t)d->bytes, "new_bytes",
			 (json_int_t)d->new_bytes);
}

json_t *render_checkpoint(const struct index_checkpoint *c)
{
	json_t *o = json_object(), *m = json_object(), *t = json_array();

	if (!o || !m || !t) {
		json_decref(o);
		json_decref(m);
		json_decref(t);
		return NULL;
	}
	for (size_t i = 0; i < c->nmetrics; i++)
		json_object_set_new(m, c->metrics[i].name, json_real(c->metrics[i].value));
	for (size_t i = 0; i < c->ntags; i++)
		json_array_append_new(t, json_string(c->tags[i]));
	json_object_set_new(o, "id", json_integer(c->id));
	json_object_set_new(o, "model", json_string(c->model));
	json_object_set_new(o, "run", json_string(c->run));
	json_object_set_new(o, "epoch", opt_int(c->has_epoch, c->epoch));
	json_object_set_new(o, "step", opt_int(c->has_step, c->step));
	json_object_set_new(o, "loss", c->has_loss ? json_real(c->loss) : json_null());
	json_object_set_new(o, "metrics", m);
	json_object_set_new(o, "tags", t);
	json_object_set_new(o, "pinned", json_boolean(c->pinned));
	json_object_set_new(o, "created_at", json_string(c->created_at));
	json_object_set_new(o, "format", json_string(c->format));
	json_object_set_new(o, "size", json_integer((json_int_t)c->size));
	json_object_set_new(o, "sha256", hash_json(&c->sha256));
	json_object_set_new(o, "tensor_count", json_integer((json_int_t)c->tensor_count));
	json_object_set_new(o, "dedup", dedup_json(&c->dedup));
	json_object_set_new(o, "resumed_from", opt_int(c->resumed_from > 0, c->resumed_from));
	if (c->stage_until > 0) { /* SPEC 3.2: open for files until committed */
		json_object_set_new(o, "state", json_string("staged"));
		json_object_set_new(o, "stage_until", json_integer(c->stage_until));
	}
	return o;
}

json_t *render_file(const char *name, const struct index_checkpoint *part)
{
	json_t *o = json_object();

	if (!o)
		return NULL;
	json_object_set_new(o, "name", json_string(name));
	json_object_set_new(o, "size", json_integer((json_int_t)part->size));
	json_object_set_new(o, "sha256", hash_json(&part->sha256));
	json_object_set_new(o, "format", json_string(part->format));
	json_object_set_new(o, "tensor_count", json_integer((json_int_t)part->tensor_count));
	return o;
}

json_t *render_files(const struct index_file_list *l)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < l->nitems; i++) {
		const struct index_file *f = &l->items[i];
		json_t *o = json_object();
		if (!o || json_array_append_new(a, o) < 0) {
			json_decref(a);
			return NULL;
		}
		json_object_set_new(o, "name", json_string(f->name));
		json_object_set_new(o, "size", json_integer((json_int_t)f->size));
		json_object_set_new(o, "sha256", hash_json(&f->sha256));
		json_object_set_new(o, "format", json_string(f->format));
		json_object_set_new(o, "tensor_count", json_integer((json_int_t)f->tensor_count));
	}
	return a;
}

json_t *render_tensors(const struct index_tensors *t)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < t->ntensors; i++) {
		const struct index_tensor_row *r = &t->tensors[i];
		const struct index_storage_row *s = &t->storages[r->storage];
		json_t *o = json_object();
		if (!o) {
			json_decref(a);
			return NULL;
		}
		json_object_set_new(o, "path", json_string(r->path));
		json_object_set_new(o, "dtype", json_string(dtype_name(r->dtype)));
		json_object_set_new(o, "shape", dims_json(r->ndim, r->shape));
		json_object_set_new(o, "strides", dims_json(r->ndim, r->strides));
		json_object_set_new(o, "offset", json_integer((json_int_t)r->offset));
		json_object_set_new(o, "nbytes", json_integer((json_int_t)r->nbytes));
		json_object_set_new(o, "blob", hash_json(&s->blob));
		json_object_set_new(o, "refs", json_integer(s->refcount));
		json_array_append_new(a, o);
	}
	return a;
}

json_t *render_checkpoint_list(const struct index_checkpoint_list *l)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < l->nitems; i++)
		json_array_append_new(a, render_checkpoint(&l->items[i]));
	return json_pack("{so sI}", "checkpoints", a ? a : json_array(), "total",
			 (json_int_t)l->total);
}

json_t *render_models(const struct index_model_list *l)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < l->nitems; i++) {
		const struct index_model *m = &l->items[i];
		json_t *o = json_object(), *runs = json_array();
		for (size_t k = 0; runs && k < m->nruns; k++)
			json_array_append_new(runs, json_string(m->runs[k]));
		if (!o || !runs) {
			json_decref(o);
			json_decref(runs);
			json_decref(a);
			return NULL;
		}
		json_object_set_new(o, "name", json_string(m->name));
		json_object_set_new(o, "created_at", json_string(m->created_at));
		json_object_set_new(o, "checkpoints", json_integer(m->checkpoints));
		json_object_set_new(o, "runs", runs);
		json_object_set_new(o, "best", opt_int(m->has_best, m->best));
		json_object_set_new(o, "best_loss",
				    m->has_best_loss ? json_real(m->best_loss) : json_null());
		json_object_set_new(o, "latest", opt_int(m->has_latest, m->latest));
		json_object_set_new(o, "latest_epoch",
				    opt_int(m->has_latest_epoch, m->latest_epoch));
		json_object_set_new(o, "max_epoch", opt_int(m->has_max_epoch, m->max_epoch));
		json_object_set_new(o, "bytes", json_integer((json_int_t)m->bytes));
		json_object_set_new(o, "bytes_added", json_integer((json_int_t)m->bytes_added));
		json_object_set_new(o, "updated_at",
				    m->has_updated ? json_string(m->updated_at) : json_null());
		json_array_append_new(a, o);
	}
	return a ? json_pack("{so}", "models", a) : NULL;
}

json_t *render_stats(const struct index_stats *s)
{
	double logical = (double)s->logical_bytes, unique = (double)s->unique_bytes,
	       stored = (double)s->stored_bytes;

	return json_pack("{sI sI sI sI sI sI sf sf sf}", "models", (json_int_t)s->models,
			 "checkpoints", (json_int_t)s->checkpoints, "logical_bytes",
			 (json_int_t)s->logical_bytes, "unique_bytes", (json_int_t)s->unique_bytes,
			 "stored_bytes", (json_int_t)s->stored_bytes, "blobs", (json_int_t)s->blobs,
			 "dedup_ratio", unique > 0 ? logical / unique : 1.0, "compression_ratio",
			 unique > 0 ? stored / unique : 1.0, "overall_ratio",
			 logical > 0 ? stored / logical : 1.0);
}

json_t *render_retention(const struct index_retention *p)
{
	return json_pack("{sI sI ss ss}", "keep_best", (json_int_t)p->keep_best, "keep_last",
			 (json_int_t)p->keep_last, "metric", p->metric, "mode",
			 p->maximize ? "max" : "min");
}

json_t *render_dedup(const struct index_dedup *d)
{
	return dedup_json(d);
}
