/*
 * admin.c: the store maintenance behind the ckptd subcommands verify, gc and
 * stats (the daemon itself runs none of these).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "../storage/verify.h"
#include "internal.h"

static void print_bad(void *arg, const struct hash *h, const char *why)
{
	char hex[65];

	hash_to_hex(hex, h);
	if (*(int *)arg)
		fprintf(stderr, "\r\033[K");
	printf("damaged: blob %s %s\n", hex, why);
	fflush(stdout);
}

static void print_progress(void *arg, uint64_t done, uint64_t bytes)
{
	if (*(int *)arg && (done % 16 == 0))
		fprintf(stderr, "\rverify: %llu blobs, %.1f MB checked", (unsigned long long)done,
			(double)bytes / 1e6);
}

int app_verify(struct app *app, int progress)
{
	struct verify_report rep;
	int err = store_verify(&rep, app->store, print_bad, print_progress, &progress);

	if (progress)
		fprintf(stderr, "\r\033[K");
	if (err < 0)
		return err;
	printf("verify: %llu blobs, %llu bytes checked: %llu damaged, %llu missing\n",
	       (unsigned long long)rep.blobs, (unsigned long long)rep.bytes,
	       (unsigned long long)rep.damaged, (unsigned long long)rep.missing);
	return (int)(rep.damaged + rep.missing > 0x7fffffff ? 0x7fffffff
							    : rep.damaged + rep.missing);
}

int app_gc(struct app *app, uint64_t *removed)
{
	return store_gc(removed, app->store);
}

int app_stats_text(char **out, struct app *app)
{
	struct index_stats st;
	json_t *v;
	int err = store_stats(&st, app->store);

	if (err < 0)
		return err;
	if (!(v = render_stats(&st)))
		return ck_error(CK_ENOMEM, "out of memory");
	*out = json_dumps(v, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(v);
	return *out ? 0 : ck_error(CK_ENOMEM, "out of memory");
}
