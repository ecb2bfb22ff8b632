/*
 * models.c: the model collection, deleting a model, and its retention
 * policy (SPEC 3).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "internal.h"

int h_models(struct resp *out, struct app *app, struct req *r)
{
	struct index_model_list *l = NULL;
	json_t *v;
	int err = store_models(&l, app->store);

	if (err < 0)
		return err;
	v = render_models(l);
	index_model_list_free(l);
	return v ? json_reply(out, 200, v) : ck_error(CK_ENOMEM, "out of memory");
}

int h_model_delete(struct resp *out, struct app *app, struct req *r)
{
	int err;

	if ((err = name_check("model", r->params[0])) < 0 ||
	    (err = store_model_delete(app->store, r->params[0])) < 0)
		return err;
	out->status = 204;
	return 0;
}

int h_retention_get(struct resp *out, struct app *app, struct req *r)
{
	struct index_retention p;
	int err, has = 0;

	if ((err = name_check("model", r->params[0])) < 0 ||
	    (err = store_retention_get(&p, &has, app->store, r->params[0])) < 0)
		return err;
	return json_reply(out, 200, has ? render_retention(&p) : json_object());
}

/* A policy: keep_best and keep_last (integers >= 0, absent = 0, not both 0),
 * metric ("loss" or a metric name), mode ("min" or "max"). */
static int policy_parse(struct index_retention *p, const json_t *in)
{
	const char *key, *mode = "min";
	json_t *v;
	int err;

	memset(p, 0, sizeof(*p));
	snprintf(p->metric, sizeof(p->metric), "loss");
	if (!json_is_object(in))
		return ck_error(CK_EINVALID, "the body must be a JSON object like "
					     "{\"keep_best\": 2, \"keep_last\": 1, \"metric\": "
					     "\"loss\", \"mode\": \"min\"}");
	json_object_foreach((json_t *)in, key, v)
	{
		if (!strcmp(key, "keep_best") || !strcmp(key, "keep_last")) {
			if (!json_is_integer(v) || json_integer_value(v) < 0 ||
			    json_integer_value(v) > 1000000)
				return ck_error(CK_EINVALID,
						"%s must be an integer from 0 to 1000000", key);
			*(key[5] == 'b' ? &p->keep_best : &p->keep_last) = json_integer_value(v);
		} else if (!strcmp(key, "metric")) {
			const char *metric = json_string_value(v);
			if (!metric)
				return ck_error(CK_EINVALID, "metric must be a string");
			if (strcmp(metric, "loss") && (err = name_check("metric", metric)) < 0)
				return err;
			snprintf(p->metric, sizeof(p->metric), "%s", metric);
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
	p->maximize = !strcmp(mode, "max");
	if (p->keep_best == 0 && p->keep_last == 0)
		return ck_error(CK_EINVALID,
				"a policy that keeps nothing would delete every unpinned "
				"checkpoint: set keep_best or keep_last to at least 1");
	return 0;
}

int h_retention_put(struct resp *out, struct app *app, struct req *r)
{
	struct index_retention p;
	json_error_t jerr;
	json_t *in = NULL, *ans = NULL;
	int64_t with_metric = 0;
	uint64_t removed = 0;
	int err;

	if ((err = name_check("model", r->params[0])) < 0)
		return err;
	in = json_loadb(r->body ? r->body : "", r->body_len, JSON_REJECT_DUPLICATES, &jerr);
	if (!in)
		return ck_error(CK_EINVALID, "the body is not JSON: %s", jerr.text);
	if ((err = policy_parse(&p, in)) < 0 ||
	    (err = store_retention_set(&with_metric, &removed, app->store, r->params[0], &p)) < 0)
		goto out;
	if (!(ans = render_retention(&p))) {
		err = ck_error(CK_ENOMEM, "out of memory");
		goto out;
	}
	/* A metric no checkpoint has ranks nothing: keep_best then keeps
	 * nothing by it (and removes nothing for lacking it). Say so. */
	if (p.keep_best > 0 && with_metric == 0) {
		char msg[400];
		if (!strcmp(p.metric, "loss"))
			snprintf(msg, sizeof(msg),
				 "no checkpoint of model '%s' has a loss yet: keep_best ranks only "
				 "checkpoints that have one, and keeps those that do not",
				 r->params[0]);
		else
			snprintf(
			    msg, sizeof(msg),
			    "no checkpoint of model '%s' has metric '%s' yet: keep_best ranks "
			    "only checkpoints that have it, and keeps those that do not (check "
			    "the metric's name)",
			    r->params[0], p.metric);
		json_object_set_new(ans, "warning", json_string(msg));
	}
	err = json_reply(out, 200, ans);
	ans = NULL;
out:
	json_decref(in);
	json_decref(ans);
	return err;
}
