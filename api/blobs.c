/*
 * blobs.c: POST /blobs/missing (SPEC 3.1): which of the blobs a client is
 * about to send the store lacks, so that a thin upload sends only those.
 */
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "internal.h"

#define MISSING_MAX 100000

int h_blobs_missing(struct resp *out, struct app *app, struct req *r)
{
	json_error_t jerr;
	json_t *body, *blobs, *v, *res = NULL, *list = NULL;
	struct hash *h = NULL;
	uint64_t *size = NULL;
	uint8_t *have = NULL;
	size_t n, i;
	int err = 0;

	body = json_loadb(r->body ? r->body : "", r->body_len, JSON_REJECT_DUPLICATES, &jerr);
	if (!body)
		return ck_error(CK_EINVALID, "the body is not JSON: %s at position %d", jerr.text,
				jerr.position);
	blobs = json_object_get(body, "blobs");
	if (!json_is_array(blobs)) {
		err = ck_error(CK_EINVALID, "the body must be {\"blobs\": [{\"sha256\": HEX, "
					    "\"size\": N}, ...]}");
		goto out;
	}
	n = json_array_size(blobs);
	if (n > MISSING_MAX) {
		err = ck_error(CK_EINVALID,
			       "at most %d blobs in one request (%zu given): ask in parts",
			       MISSING_MAX, n);
		goto out;
	}
	h = calloc(n + 1, sizeof(*h));
	size = calloc(n + 1, sizeof(*size));
	have = calloc(n + 1, 1);
	if (!h || !size || !have) {
		err = ck_error(CK_ENOMEM, "out of memory");
		goto out;
	}
	json_array_foreach(blobs, i, v)
	{
		json_t *hx = json_object_get(v, "sha256"), *sz = json_object_get(v, "size");
		if (!json_is_string(hx) || hash_from_hex(&h[i], json_string_value(hx)) < 0) {
			err = ck_error(CK_EINVALID, "blobs[%zu].sha256 must be 64 hex digits", i);
			goto out;
		}
		if (!json_is_integer(sz) || json_integer_value(sz) < 0) {
			err = ck_error(CK_EINVALID, "blobs[%zu].size must be an integer >= 0", i);
			goto out;
		}
		size[i] = (uint64_t)json_integer_value(sz);
	}
	if ((err = store_blobs_have(have, app->store, h, size, n)) < 0)
		goto out;
	if (!(list = json_array()) || !(res = json_pack("{s:o}", "missing", list))) {
		json_decref(list);
		err = ck_error(CK_ENOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < n; i++) {
		char hex[65];
		if (have[i])
			continue;
		hash_to_hex(hex, &h[i]);
		json_array_append_new(list, json_string(hex));
	}
	err = json_reply(out, 200, res);
	res = NULL;
out:
	json_decref(res);
	json_decref(body);
	free(h);
	free(size);
	free(have);
	return err;
}
