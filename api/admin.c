/*
 * admin.c: the store maintenance behind the ckptd subcommands verify, gc,
 * stats and migrate (the daemon itself runs none of these). On a terminal,
 * long commands show their progress on stderr as curl does (done, rate, time
 * left), at most ten times a second; silent otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

struct meter {
	int on;		    /* stderr is a terminal */
	double start, last; /* seconds */
	uint64_t total;	    /* bytes expected, 0 = unknown */
	const char *what;
};

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* One progress line: "what: 1.2 GB of 4.0 GB (30%), 210 MB/s, 13 s left, extra". */
static void meter_show(struct meter *m, uint64_t bytes, const char *extra, int force)
{
	double t = now_s(), rate;

	if (!m->on || (!force && t - m->last < 0.1))
		return;
	m->last = t;
	rate = t > m->start ? (double)bytes / (t - m->start) : 0;
	fprintf(stderr, "\r\033[K%s: %.1f MB", m->what, (double)bytes / 1e6);
	if (m->total)
		fprintf(stderr, " of %.1f MB (%.0f%%)", (double)m->total / 1e6,
			100.0 * (double)bytes / (double)m->total);
	fprintf(stderr, ", %.1f MB/s", rate / 1e6);
	if (m->total && rate > 0 && bytes <= m->total)
		fprintf(stderr, ", %.0f s left", (double)(m->total - bytes) / rate);
	if (extra && *extra)
		fprintf(stderr, ", %s", extra);
}

static void meter_end(struct meter *m)
{
	if (m->on)
		fprintf(stderr, "\r\033[K");
}

static void print_progress(void *arg, uint64_t done, uint64_t bytes)
{
	struct meter *m = arg;
	char extra[64];

	snprintf(extra, sizeof(extra), "%llu blobs", (unsigned long long)done);
	meter_show(m, bytes, extra, 0);
}

static void print_bad_metered(void *arg, const struct hash *h, const char *why)
{
	int on = ((struct meter *)arg)->on;

	print_bad(&on, h, why);
}

static int verify_store_metered(struct verify_report *rep, struct store *s, int progress)
{
	struct index_stats st;
	struct meter m = {progress, now_s(), 0, 0, "verify"};
	int err;

	if (store_stats(&st, s) == 0)
		m.total = st.unique_bytes;
	err = store_verify(rep, s, print_bad_metered, print_progress, &m);
	meter_end(&m);
	return err;
}

int app_verify(struct app *app, int progress)
{
	struct verify_report rep;
	int err = verify_store_metered(&rep, app->store, progress);

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

static void migrate_progress(void *arg, const struct store_migrate_report *r)
{
	char extra[160];

	snprintf(extra, sizeof(extra), "%llu of %llu checkpoints, %llu blobs copied, %llu there",
		 (unsigned long long)r->checkpoints, (unsigned long long)r->total,
		 (unsigned long long)r->blobs_copied, (unsigned long long)r->blobs_present);
	meter_show(arg, r->bytes_copied, extra, 0);
}

int app_migrate(struct app *app, const struct app_config *to, int progress)
{
	struct store_config sc = {0};
	struct store *dst = NULL;
	struct store_migrate_report rep;
	struct verify_report vr;
	struct meter m = {progress, now_s(), 0, 0, "migrate"};
	int err;

	sc.data_dir = to->data_dir;
	sc.index_url = to->index_url;
	sc.blobs_url = to->blobs_url;
	sc.s3_endpoint = to->s3_endpoint;
	sc.s3_region = to->s3_region;
	sc.compress = to->compress;
	sc.lease = to->lease;
	if ((err = store_open(&dst, &sc)) < 0)
		return err;
	err = store_migrate(&rep, app->store, dst, migrate_progress, &m);
	meter_end(&m);
	printf("migrate: %llu checkpoints (%llu were there from an earlier run), %llu blobs "
	       "copied (%llu bytes), %llu already in the target\n",
	       (unsigned long long)rep.checkpoints, (unsigned long long)rep.skipped,
	       (unsigned long long)rep.blobs_copied, (unsigned long long)rep.bytes_copied,
	       (unsigned long long)rep.blobs_present);
	fflush(stdout);
	if (err == 0) { /* verified at the end: every blob of the target re-hashed */
		err = verify_store_metered(&vr, dst, progress);
		if (err == 0) {
			printf(
			    "verify: %llu blobs, %llu bytes checked in the target: %llu damaged, "
			    "%llu missing\n",
			    (unsigned long long)vr.blobs, (unsigned long long)vr.bytes,
			    (unsigned long long)vr.damaged, (unsigned long long)vr.missing);
			if (vr.damaged + vr.missing)
				err = ck_error(CK_ECORRUPT,
					       "the target failed its verification: run migrate "
					       "again or check the target store");
		}
	}
	store_close(dst);
	return err;
}
