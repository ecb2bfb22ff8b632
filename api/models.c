/*
 * models.c: the model collection, deleting a model, and its retention
 * policy (SPEC 3).
 */
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "internal.h"

int h_models(struct resp *out, struct app *app, struct req *r)
{
	json_t *v;
	int err = index_models_json(&v, app->idx);

	return err < 0 ? err : json_reply(out, 200, v);
}

int h_model_delete(struct resp *out, struct app *app, struct req *r)
{
	struct hash *freed = NULL;
	size_t n = 0;
	int err;

	if ((err = name_check("model", r->params[0])) < 0 ||
	    (err = index_model_delete(&freed, &n, app->idx, r->params[0])) < 0)
		return err;
	err = gc_unlink_freed(app->gc, app->idx, app->blobs, freed, n);
	free(freed);
	if (err < 0)
		return err;
	out->status = 204;
	return 0;
}

int h_retention_get(struct resp *out, struct app *app, struct req *r)
{
	json_t *p = NULL;
	int err;

	if ((err = name_check("model", r->params[0])) < 0 ||
	    (err = index_retention_get(&p, app->idx, r->params[0])) < 0)
		return err;
	return json_reply(out, 200, p ? p : json_object());
}

/* A policy: keep_best and keep_last (integers >= 0, absent = 0), metric
 * ("loss" or a metric name), mode ("min" or "max"). An empty object removes
 * the policy's effect: nothing is kept by it, so nothing is removed either
 * (a policy with both counts 0 is stored as "none"). */
static int policy_parse(json_t **out, const json_t *in)
{
	const char *key, *metric = "loss", *mode = "min";
	json_int_t best = 0, last = 0;
	json_t *v;
	int err;

	if (!json_is_object(in))
		return ck_error(CK_EINVALID, "the body must be a JSON object like "
					     "{\"keep_best\": 2, \"keep_last\": 1, \"metric\": "
					     "\"loss\", \"mode\": \"min\"}");
	json_object_foreach((json_t *)in, key, v)
	{
		if (!strcmp(key, "keep_best") || !strcmp(key, "keep_last")) {
			if (!json_is_integer(v) || json_integer_value(v) < 0 ||
			    json_integer_value(v) > 1000000)
				return ck_error(CK_EINVALID, "%s must be an integer from 0", key);
			*(key[5] == 'b' ? &best : &last) = json_integer_value(v);
		} else if (!strcmp(key, "metric")) {
			if (!json_is_string(v))
				return ck_error(CK_EINVALID, "metric must be a string");
			metric = json_string_value(v);
			if (strcmp(metric, "loss") && (err = name_check("metric", metric)) < 0)
				return err;
		} else if (!strcmp(key, "mode")) {
			mode = json_string_value(v);
			if (!mode || (strcmp(mode, "min") && strcmp(mode, "max")))
				return ck_error(CK_EINVALID, "mode must be \"min\" or \"max\"");
		} else {
			return ck_error(CK_EINVALID,
					"unknown retention field '%s': use keep_best, keep_last, "
					"metric, mode",
					key);
		}
	}
	if (best == 0 && last == 0)
		return ck_error(CK_EINVALID,
				"a policy that keeps nothing would delete every unpinned "
				"checkpoint: set keep_best or keep_last to at least 1");
	*out = json_pack("{sI sI ss ss}", "keep_best", best, "keep_last", last, "metric", metric,
			 "mode", mode);
	return *out ? 0 : ck_error(CK_ENOMEM, "out of memory");
}

int h_retention_put(struct resp *out, struct app *app, struct req *r)
{
	json_error_t jerr;
	json_t *in = NULL, *pol = NULL;
	int err;

	if ((err = name_check("model", r->params[0])) < 0)
		return err;
	in = json_loadb(r->body ? r->body : "", r->body_len, JSON_REJECT_DUPLICATES, &jerr);
	if (!in)
		return ck_error(CK_EINVALID, "the body is not JSON: %s", jerr.text);
	if ((err = policy_parse(&pol, in)) < 0 ||
	    (err = index_retention_set(app->idx, r->params[0], pol)) < 0 ||
	    (err = apply_retention(app, r->params[0])) < 0)
		goto out;
	err = json_reply(out, 200, pol);
	pol = NULL;
out:
	json_decref(in);
	json_decref(pol);
	return err;
}
