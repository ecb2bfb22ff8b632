/*
 * test_index.c: the index interface, run against every backend: SQLite
 * always, PostgreSQL when CKPTD_TEST_PG_URL names a server (make test starts
 * one with tests/services/pg.sh). Inserting checkpoints with their blob
 * references, resolving best/latest, listing, layouts, deleting and the blobs
 * freed by it, patching with the metric cap, retention victims, claims and
 * reaping, the generation counter, and migrating a store of schema 1.
 */
#include <check.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../common/err.h"
#include "../../storage/index.h"
#include "check_main.h"

static char dir[64];
static struct index *idx;
static const char *backend; /* "sqlite" or "postgresql" for this run */

/* Empties the PostgreSQL database the tests use. */
static void pg_reset(const char *url)
{
	PGconn *c = PQconnectdb(url);
	PGresult *r;

	ck_assert_msg(PQstatus(c) == CONNECTION_OK, "cannot connect to %s: %s", url,
		      PQerrorMessage(c));
	r = PQexec(c, "SET client_min_messages = warning;"
		      "DROP SCHEMA public CASCADE; CREATE SCHEMA public;");
	ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "reset: %s", PQerrorMessage(c));
	PQclear(r);
	PQfinish(c);
}

static void setup(void)
{
	char url[160];

	snprintf(dir, sizeof(dir), "/tmp/ckptd-test-index-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	if (!strcmp(backend, "postgresql")) {
		pg_reset(getenv("CKPTD_TEST_PG_URL"));
		snprintf(url, sizeof(url), "%s", getenv("CKPTD_TEST_PG_URL"));
	} else {
		snprintf(url, sizeof(url), "sqlite:%s/index.sqlite", dir);
	}
	ck_assert_msg(index_open(&idx, url) == 0, "%s", ck_errmsg());
	ck_assert_str_eq(index_kind(idx), backend);
}

static void teardown(void)
{
	char cmd[128];

	index_close(idx);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}

static struct hash H(int n) {
	struct hash h;

	memset(h.b, 0, 32);
	h.b[0] = (uint8_t)n;
	h.b[31] = 0xab;
	return h;
}

/* Blobs the next insert's storages need (index_new_checkpoint.extra). */
static const struct index_storage *next_extra;
static size_t next_nextra;

/* Inserts a checkpoint of model m with storages named by blob numbers and an
 * optional metric. */
static int64_t insert_m(const char *m, const char *run, double loss, int epoch, const int *blobs,
			size_t n, int skel, struct index_dedup *dedup_out, const char *metric,
			double mval)
{
	struct index_storage st[8];
	struct index_tensor t[8];
	struct index_metric met[1];
	int64_t shape[1] = {4}, strides[1] = {1};
	char names[8][16];
	struct index_new_checkpoint k = {0};
	struct index_dedup dedup;
	int64_t id = -1;

	for (size_t i = 0; i < n; i++) {
		st[i] = (struct index_storage){H(blobs[i]), 16,		16,	     0x1234,
					       0,	    DT_FLOAT32, 100 + 16 * i};
		snprintf(names[i], sizeof(names[i]), "/w%zu", i);
		t[i] = (struct index_tensor){names[i], DT_FLOAT32, 1, shape, strides, 0, i, 16};
	}
	k.model = m;
	k.run = run;
	k.has_epoch = 1;
	k.epoch = epoch;
	k.has_loss = loss >= 0;
	k.loss = loss;
	if (metric) {
		snprintf(met[0].name, sizeof(met[0].name), "%s", metric);
		met[0].value = mval;
		k.metrics = met;
		k.nmetrics = 1;
	}
	k.format = "torch-zip";
	k.size = 100 + 16 * n + 50;
	k.sha256 = H(200);
	k.skeleton = H(skel);
	k.skeleton_size = 150;
	k.storages = st;
	k.nstorages = n;
	k.tensors = t;
	k.ntensors = n;
	k.extra = next_extra;
	k.nextra = next_nextra;
	next_extra = NULL;
	next_nextra = 0;
	ck_assert_msg(index_checkpoint_insert(&id, &dedup, idx, &k) == 0, "%s", ck_errmsg());
	if (dedup_out)
		*dedup_out = dedup;
	return id;
}

static int64_t insert(const char *m, const char *run, double loss, int epoch, const int *blobs,
		      size_t n, int skel, struct index_dedup *dedup_out)
{
	return insert_m(m, run, loss, epoch, blobs, n, skel, dedup_out, NULL, 0);
}

START_TEST(test_index_insert_counts_new_bytes_once)
{
	int a[] = {1, 2}, b[] = {1, 3};
	struct index_dedup d1, d2;

	insert("m", "default", 0.5, 1, a, 2, 100, &d1);
	insert("m2", "default", 0.4, 2, b, 2, 100, &d2);
	ck_assert_int_eq(d1.new_bytes, 32);
	ck_assert_int_eq(d2.new_bytes, 16);
	ck_assert_int_eq(d2.new_tensors, 1);
	ck_assert_int_eq(d2.bytes, 32);
}
END_TEST

START_TEST(test_index_resolves_best_latest_and_ids)
{
	int a[] = {1};
	int64_t id1 = insert("m", "r1", 0.9, 1, a, 1, 100, NULL);
	int64_t id2 = insert("m", "r1", 0.3, 2, a, 1, 100, NULL);
	int64_t id3 = insert("m", "r2", 0.5, 3, a, 1, 100, NULL);
	int64_t got;
	char ref[32];

	ck_assert_int_eq(index_checkpoint_resolve(&got, idx, "m", "best", NULL, NULL, 0), 0);
	ck_assert_int_eq(got, id2);
	ck_assert_int_eq(index_checkpoint_resolve(&got, idx, "m", "latest", NULL, NULL, 0), 0);
	ck_assert_int_eq(got, id3);
	ck_assert_int_eq(index_checkpoint_resolve(&got, idx, "m", "best", "r2", NULL, 0), 0);
	ck_assert_int_eq(got, id3);
	ck_assert_int_eq(index_checkpoint_resolve(&got, idx, "m", "best", NULL, NULL, 1), 0);
	ck_assert_int_eq(got, id1);
	snprintf(ref, sizeof(ref), "%lld", (long long)id1);
	ck_assert_int_eq(index_checkpoint_resolve(&got, idx, "m", ref, NULL, NULL, 0), 0);
	ck_assert_int_eq(got, id1);
	ck_assert_int_eq(index_checkpoint_resolve(&got, idx, "m", "999", NULL, NULL, 0),
			 CK_ENOTFOUND);
	ck_assert_int_eq(index_checkpoint_resolve(&got, idx, "nope", "best", NULL, NULL, 0),
			 CK_ENOTFOUND);
	ck_assert_int_eq(index_checkpoint_resolve(&got, idx, "m", "bogus", NULL, NULL, 0),
			 CK_EINVALID);
}
END_TEST

START_TEST(test_index_resolves_best_by_a_metric_either_way)
{
	int a[] = {1};
	int64_t lo = insert_m("m", "r", 0.5, 1, a, 1, 100, NULL, "acc", 0.2);
	int64_t hi = insert_m("m", "r", 0.5, 2, a, 1, 100, NULL, "acc", 0.9);
	int64_t got;

	insert("m", "r", 0.5, 3, a, 1, 100, NULL); /* no acc: never best by it */
	ck_assert_int_eq(index_checkpoint_resolve(&got, idx, "m", "best", NULL, "acc", 1), 0);
	ck_assert_int_eq(got, hi);
	ck_assert_int_eq(index_checkpoint_resolve(&got, idx, "m", "best", NULL, "acc", 0), 0);
	ck_assert_int_eq(got, lo);
	ck_assert_int_eq(index_checkpoint_resolve(&got, idx, "m", "best", NULL, "f1", 0),
			 CK_ENOTFOUND);
}
END_TEST

START_TEST(test_index_lists_with_filters_and_order)
{
	int a[] = {1};
	struct index_checkpoint_list *l;
	struct index_list_query q = {.model = "m", .limit = 10, .order = "-loss"};

	insert("m", "r1", 0.9, 1, a, 1, 100, NULL);
	insert("m", "r1", 0.3, 2, a, 1, 100, NULL);
	insert_m("m", "r2", 0.5, 3, a, 1, 100, NULL, "acc", 0.7);
	ck_assert_int_eq(index_checkpoint_list(&l, idx, &q), 0);
	ck_assert_int_eq(l->total, 3);
	ck_assert_int_eq(l->nitems, 3);
	ck_assert_double_eq_tol(l->items[0].loss, 0.9, 1e-9);
	ck_assert_str_eq(l->items[2].run, "r1");
	index_checkpoint_list_free(l);
	q.order = "-metric.acc";
	ck_assert_int_eq(index_checkpoint_list(&l, idx, &q), 0);
	ck_assert_int_eq(l->items[0].epoch, 3);
	ck_assert_int_eq(l->items[0].nmetrics, 1);
	ck_assert_str_eq(l->items[0].metrics[0].name, "acc");
	ck_assert_double_eq(l->items[0].metrics[0].value, 0.7);
	index_checkpoint_list_free(l);
	q.run = "r1";
	q.order = "epoch";
	q.limit = 1;
	q.offset = 1;
	ck_assert_int_eq(index_checkpoint_list(&l, idx, &q), 0);
	ck_assert_int_eq(l->total, 2);
	ck_assert_int_eq(l->nitems, 1);
	ck_assert_int_eq(l->items[0].epoch, 2);
	index_checkpoint_list_free(l);
	q.run = "nosuchrun";
	ck_assert_int_eq(index_checkpoint_list(&l, idx, &q), 0);
	ck_assert_int_eq(l->nitems, 0);
	index_checkpoint_list_free(l);
	q.order = "sideways";
	ck_assert_int_eq(index_checkpoint_list(&l, idx, &q), CK_EINVALID);
}
END_TEST

START_TEST(test_index_layout_interleaves_skeleton_and_storages)
{
	int a[] = {1, 2};
	struct index_layout *l;
	int64_t id = insert("m", "default", 0.5, 1, a, 2, 100, NULL);

	ck_assert_int_eq(index_checkpoint_layout(&l, idx, id), 0);
	/* skeleton [0,100), w0 [100,116), w1 [116,132), skeleton [132,182) */
	ck_assert_int_eq(l->nparts, 4);
	ck_assert_int_eq(l->parts[0].size, 100);
	ck_assert_int_eq(l->parts[1].file_off, 100);
	ck_assert_int_eq(l->parts[1].blob.b[0], 1);
	ck_assert_int_eq(l->parts[3].src_off, 100);
	ck_assert_int_eq(l->parts[3].size, 50);
	index_layout_free(l);
}
END_TEST

START_TEST(test_index_tensors_carry_geometry_and_blob_refcounts)
{
	int a[] = {1, 2}, b[] = {2};
	struct index_tensors *t;
	int64_t id = insert("m", "default", 0.5, 1, a, 2, 100, NULL);

	insert("m", "default", 0.5, 2, b, 1, 100, NULL);
	ck_assert_int_eq(index_checkpoint_tensors(&t, idx, id), 0);
	ck_assert_int_eq(t->ntensors, 2);
	ck_assert_str_eq(t->tensors[1].path, "/w1");
	ck_assert_int_eq(t->tensors[1].ndim, 1);
	ck_assert_int_eq(t->tensors[1].shape[0], 4);
	ck_assert_int_eq(t->tensors[1].nbytes, 16);
	ck_assert_int_eq(t->storages[0].refcount, 1);
	ck_assert_int_eq(t->storages[1].refcount, 2);
	index_tensors_free(t);
}
END_TEST

START_TEST(test_index_delete_frees_only_unshared_blobs)
{
	int a[] = {1, 2}, b[] = {2, 3};
	struct index_freed freed = {0};
	struct index_blob row;
	struct index_stats st;
	int64_t id1 = insert("m", "default", 0.5, 1, a, 2, 100, NULL);

	insert("m", "default", 0.4, 2, b, 2, 100, NULL);
	ck_assert_int_eq(index_checkpoint_delete(&freed, idx, "m", id1), 0);
	ck_assert_int_eq(freed.n, 1); /* blob 1 only: 2 and the skeleton are shared */
	ck_assert_int_eq(freed.v[0].b[0], 1);
	index_freed_clear(&freed);
	struct hash h1 = H(1), h2 = H(2);
	ck_assert_int_eq(index_blob_get(&row, idx, &h1), CK_ENOTFOUND);
	ck_assert_int_eq(index_blob_get(&row, idx, &h2), 0);
	ck_assert_int_eq(row.refcount, 1);
	ck_assert_int_eq(index_checkpoint_delete(&freed, idx, "m", id1), CK_ENOTFOUND);
	ck_assert_int_eq(index_model_delete(&freed, idx, "m"), 0);
	ck_assert_int_eq(freed.n, 3);
	index_freed_clear(&freed);
	ck_assert_int_eq(index_stats(&st, idx), 0);
	ck_assert_int_eq(st.blobs, 0);
	ck_assert_int_eq(st.checkpoints, 0);
	ck_assert_int_eq(st.models, 0);
}
END_TEST

START_TEST(test_index_extra_blobs_live_with_the_checkpoint_and_stay_out_of_its_files)
{
	/* checkpoint 2's storage is a delta against blob 1, checkpoint 1's */
	int a[] = {1}, b[] = {2};
	struct index_storage extra = {H(1), 16, 16, 0x1234, 0, DT_FLOAT32, 0};
	struct index_dedup dd;
	struct index_layout *l;
	struct index_tensors *t;
	struct index_freed freed = {0};
	struct index_blob row;
	struct hash h1 = H(1);
	int64_t id1 = insert("m", "default", 0.5, 1, a, 1, 100, NULL), id2;

	next_extra = &extra;
	next_nextra = 1;
	id2 = insert("m", "default", 0.4, 2, b, 1, 100, &dd);
	/* counted as a reference, not as one of the checkpoint's tensors */
	ck_assert_int_eq(dd.tensors, 1);
	ck_assert_int_eq(dd.new_tensors, 1);
	ck_assert_int_eq(dd.new_bytes, 16);
	ck_assert_int_eq(index_blob_get(&row, idx, &h1), 0);
	ck_assert_int_eq(row.refcount, 2);
	ck_assert_int_eq(index_checkpoint_layout(&l, idx, id2), 0);
	ck_assert_int_eq(l->nparts, 3); /* skeleton, blob 2, skeleton */
	ck_assert_int_eq(l->parts[1].blob.b[0], 2);
	index_layout_free(l);
	ck_assert_int_eq(index_checkpoint_tensors(&t, idx, id2), 0);
	ck_assert_int_eq(t->nstorages, 1);
	ck_assert_int_eq(t->storages[0].blob.b[0], 2);
	index_tensors_free(t);
	/* deleting the base's checkpoint keeps the base */
	ck_assert_int_eq(index_checkpoint_delete(&freed, idx, "m", id1), 0);
	ck_assert_int_eq(freed.n, 0);
	ck_assert_int_eq(index_blob_get(&row, idx, &h1), 0);
	ck_assert_int_eq(row.refcount, 1);
	/* and the delta's frees it */
	ck_assert_int_eq(index_checkpoint_delete(&freed, idx, "m", id2), 0);
	ck_assert_int_eq(freed.n, 3);
	index_freed_clear(&freed);
	ck_assert_int_eq(index_blob_get(&row, idx, &h1), CK_ENOTFOUND);
}
END_TEST

START_TEST(test_index_patch_merges_metrics_and_caps_them)
{
	int a[] = {1};
	int64_t id = insert_m("m", "default", 0.5, 1, a, 1, 100, NULL, "acc", 0.1);
	static struct index_metric set[INDEX_MAX_METRICS];
	const char *rm[] = {"acc"};
	struct index_patch p = {0};
	struct index_checkpoint *c;

	for (int i = 0; i < INDEX_MAX_METRICS; i++) {
		snprintf(set[i].name, sizeof(set[i].name), "m%d", i);
		set[i].value = i;
	}
	/* 256 new names + acc already there: over the cap, nothing changes */
	p.set = set;
	p.nset = INDEX_MAX_METRICS;
	ck_assert_int_eq(index_checkpoint_patch(idx, id, &p), CK_EINVALID);
	ck_assert_int_eq(index_checkpoint_get(&c, idx, id), 0);
	ck_assert_int_eq(c->nmetrics, 1);
	index_checkpoint_free(c);
	/* dropping acc makes room */
	p.remove = rm;
	p.nremove = 1;
	p.has_pinned = 1;
	p.pinned = 1;
	ck_assert_int_eq(index_checkpoint_patch(idx, id, &p), 0);
	ck_assert_int_eq(index_checkpoint_get(&c, idx, id), 0);
	ck_assert_int_eq(c->nmetrics, INDEX_MAX_METRICS);
	ck_assert_int_eq(c->pinned, 1);
	index_checkpoint_free(c);
	ck_assert_int_eq(index_checkpoint_patch(idx, 999, &p), CK_ENOTFOUND);
}
END_TEST

START_TEST(test_index_retention_keeps_best_last_and_pinned)
{
	int a[] = {1};
	double losses[] = {0.9, 0.2, 0.8, 0.1, 0.7, 0.6};
	int64_t ids[6], *victims = NULL;
	size_t n = 0;
	struct index_patch pin = {.has_pinned = 1, .pinned = 1};
	struct index_retention pol = {2, 1, "loss", 0};

	for (int i = 0; i < 6; i++)
		ids[i] = insert("m", "default", losses[i], i, a, 1, 100, NULL);
	ck_assert_int_eq(index_checkpoint_patch(idx, ids[0], &pin), 0);
	ck_assert_int_eq(index_retention_set(idx, "m", &pol), 0);
	ck_assert_int_eq(index_retention_victims(&victims, &n, idx, "m"), 0);
	/* kept: pinned ids[0], best ids[3] (0.1) and ids[1] (0.2), last ids[5] */
	ck_assert_int_eq(n, 2);
	ck_assert_int_eq(victims[0], ids[2]);
	ck_assert_int_eq(victims[1], ids[4]);
	free(victims);
}
END_TEST

START_TEST(test_index_retention_never_removes_for_a_missing_metric_or_the_newest)
{
	int a[] = {1};
	int64_t *victims = NULL, n_acc;
	size_t n = 0;
	struct index_retention pol = {1, 0, "acc", 1};

	insert_m("m", "d", -1, 1, a, 1, 100, NULL, "accuracy", 0.5);
	insert_m("m", "d", -1, 2, a, 1, 100, NULL, "accuracy", 0.6);
	ck_assert_int_eq(index_retention_set(idx, "m", &pol), 0);
	ck_assert_int_eq(index_metric_count(&n_acc, idx, "m", "acc"), 0);
	ck_assert_int_eq(n_acc, 0);
	ck_assert_int_eq(index_retention_victims(&victims, &n, idx, "m"), 0);
	ck_assert_int_eq(n, 0);
	free(victims);
	/* ranked by a metric they have, keep_best 1 keeps the best and the
	 * newest */
	snprintf(pol.metric, sizeof(pol.metric), "accuracy");
	pol.maximize = 0;
	ck_assert_int_eq(index_retention_set(idx, "m", &pol), 0);
	insert_m("m", "d", -1, 3, a, 1, 100, NULL, "accuracy", 0.7);
	ck_assert_int_eq(index_retention_victims(&victims, &n, idx, "m"), 0);
	ck_assert_int_eq(n, 1); /* 0.6: neither the best (0.5) nor the newest */
	free(victims);
}
END_TEST

START_TEST(test_index_retention_keeps_what_a_run_resumed_from)
{
	int a[] = {1};
	int64_t *victims = NULL, first, second;
	size_t n = 0;
	struct index_retention pol = {0, 1, "loss", 0};

	first = insert("m", "d", 0.5, 1, a, 1, 100, NULL);
	second = insert("m", "d", 0.5, 2, a, 1, 100, NULL);
	insert("m", "d", 0.5, 3, a, 1, 100, NULL);
	ck_assert_int_eq(index_retention_set(idx, "m", &pol), 0);
	ck_assert_int_eq(index_retention_victims(&victims, &n, idx, "m"), 0);
	ck_assert_int_eq(n, 2);
	free(victims);
	/* a fourth checkpoint whose run resumed from the first */
	struct index_storage st = {H(1), 16, 16, 0x1234, 0, DT_FLOAT32, 100};
	struct index_new_checkpoint k = {.model = "m",
					 .run = "d",
					 .format = "torch-zip",
					 .size = 266,
					 .skeleton = H(100),
					 .skeleton_size = 250,
					 .storages = &st,
					 .nstorages = 1,
					 .resumed_from = first};
	struct index_dedup dd;
	struct index_checkpoint *c = NULL;
	int64_t fourth;
	ck_assert_int_eq(index_checkpoint_insert(&fourth, &dd, idx, &k), 0);
	ck_assert_int_eq(index_checkpoint_get(&c, idx, fourth), 0);
	ck_assert_int_eq(c->resumed_from, first);
	index_checkpoint_free(c);
	ck_assert_int_eq(index_retention_victims(&victims, &n, idx, "m"), 0);
	ck_assert_int_eq(n, 2); /* the second and third; the first stays */
	ck_assert_int_eq(victims[0], second);
	free(victims);
}
END_TEST

START_TEST(test_index_retention_may_come_before_the_first_checkpoint)
{
	struct index_retention pol = {0, 3, "loss", 0}, got;
	int has = 0;

	ck_assert_int_eq(index_retention_get(&got, &has, idx, "new"), CK_ENOTFOUND);
	ck_assert_int_eq(index_retention_set(idx, "new", &pol), 0);
	ck_assert_int_eq(index_retention_get(&got, &has, idx, "new"), 0);
	ck_assert_int_eq(has, 1);
	ck_assert_int_eq(got.keep_last, 3);
	ck_assert_str_eq(got.metric, "loss");
}
END_TEST

static int removed_n;
static struct hash removed_h[16];

static int unlink_record(void *arg, const struct hash *h)
{
	removed_h[removed_n++ % 16] = *h;
	return 0;
}

START_TEST(test_index_reap_spares_named_and_claimed_blobs)
{
	int a[] = {1};
	struct hash hs[3] = {H(1), H(7), H(8)}; /* 1 has a row; 7 is claimed; 8 neither */
	uint64_t removed = 0;

	insert("m", "d", 0.5, 1, a, 1, 100, NULL);
	removed_n = 0;
	ck_assert_int_eq(index_claims_add(idx, "me", 1, &hs[1], 1, 2000000000), 0);
	uint8_t yes[3];
	ck_assert_int_eq(index_blobs_claimed(yes, idx, hs, 3, 1000), 0);
	ck_assert_int_eq(yes[0] * 100 + yes[1] * 10 + yes[2], 10);
	ck_assert_int_eq(index_blobs_claimed(yes, idx, hs, 3, 2000000001), 0);
	ck_assert_int_eq(yes[1], 0); /* expired by then */
	uint64_t sizes[4];
	struct hash asked[4] = {hs[2], hs[0], hs[1], hs[0]}; /* 1 is asked twice */
	ck_assert_int_eq(index_blob_sizes(sizes, idx, asked, 4), 0);
	ck_assert(sizes[0] == INDEX_NO_BLOB && sizes[2] == INDEX_NO_BLOB);
	ck_assert(sizes[1] == 16 && sizes[3] == 16);
	ck_assert_int_eq(index_reap(&removed, idx, hs, 3, 1000, unlink_record, NULL), 0);
	ck_assert_int_eq(removed, 1);
	ck_assert_int_eq(removed_h[0].b[0], 8);
	/* an expired claim holds nothing */
	ck_assert_int_eq(index_reap(&removed, idx, hs, 3, 2000000001, unlink_record, NULL), 0);
	ck_assert_int_eq(removed, 2);
	/* released claims hold nothing either */
	ck_assert_int_eq(index_claims_add(idx, "me", 2, &hs[2], 1, 2000000000), 0);
	ck_assert_int_eq(index_claims_release(NULL, NULL, idx, "me", 2), 0);
	ck_assert_int_eq(index_reap(&removed, idx, &hs[2], 1, 1000, unlink_record, NULL), 0);
	ck_assert_int_eq(removed, 1);
	/* a renewed claim lives on */
	ck_assert_int_eq(index_claims_add(idx, "me", 3, &hs[2], 1, 1500), 0);
	ck_assert_int_eq(index_claims_renew(idx, "me", 3, 3000), 0);
	ck_assert_int_eq(index_reap(&removed, idx, &hs[2], 1, 2000, unlink_record, NULL), 0);
	ck_assert_int_eq(removed, 0);
}
END_TEST

START_TEST(test_index_generation_moves_with_every_change)
{
	int a[] = {1};
	uint64_t g0, g1, g2, g3;
	struct index_patch p = {.has_pinned = 1, .pinned = 1};
	struct index_freed freed = {0};

	ck_assert_int_eq(index_generation(&g0, idx), 0);
	int64_t id = insert("m", "d", 0.5, 1, a, 1, 100, NULL);
	ck_assert_int_eq(index_generation(&g1, idx), 0);
	ck_assert_int_eq(index_checkpoint_patch(idx, id, &p), 0);
	ck_assert_int_eq(index_generation(&g2, idx), 0);
	ck_assert_int_eq(index_checkpoint_delete(&freed, idx, "m", id), 0);
	index_freed_clear(&freed);
	ck_assert_int_eq(index_generation(&g3, idx), 0);
	ck_assert_uint_gt(g1, g0);
	ck_assert_uint_gt(g2, g1);
	ck_assert_uint_gt(g3, g2);
}
END_TEST

struct racer {
	int base;
	int err;
};

static void *race_inserts(void *arg)
{
	struct racer *r = arg;

	for (int i = 0; i < 20 && !r->err; i++) {
		int blobs[] = {1, 2, 3, r->base + i};
		struct index_storage st[4];
		struct index_tensor t[4];
		int64_t shape[1] = {4}, strides[1] = {1}, id;
		struct index_new_checkpoint k = {0};
		struct index_dedup d;
		for (int j = 0; j < 4; j++) {
			st[j] = (struct index_storage){H(blobs[j]),	  16, 16, 1, 0, DT_FLOAT32,
						       (uint64_t)(16 * j)};
			t[j] = (struct index_tensor){"/w",    DT_FLOAT32, 1,	     shape,
						     strides, 0,	  (size_t)j, 16};
		}
		k.model = "race";
		k.run = "default";
		k.format = "torch-zip";
		k.size = 64 + 10;
		k.skeleton = H(100);
		k.skeleton_size = 10;
		k.storages = st;
		k.nstorages = 4;
		k.tensors = t;
		k.ntensors = 4;
		r->err = index_checkpoint_insert(&id, &d, idx, &k);
	}
	return NULL;
}

START_TEST(test_index_concurrent_inserts_of_the_same_blobs_count_every_reference)
{
	pthread_t th[3];
	struct racer r[3] = {{10, 0}, {40, 0}, {70, 0}};
	struct index_blob row;
	struct hash h = H(1), skel = H(100);

	for (int i = 0; i < 3; i++)
		pthread_create(&th[i], NULL, race_inserts, &r[i]);
	for (int i = 0; i < 3; i++) {
		pthread_join(th[i], NULL);
		ck_assert_msg(r[i].err == 0, "thread %d: %d", i, r[i].err);
	}
	ck_assert_int_eq(index_blob_get(&row, idx, &h), 0);
	ck_assert_int_eq(row.refcount, 60);
	ck_assert_int_eq(index_blob_get(&row, idx, &skel), 0);
	ck_assert_int_eq(row.refcount, 60);
}
END_TEST

START_TEST(test_index_refuses_a_newer_schema)
{
	char path[128], url[160];
	sqlite3 *db;

	if (strcmp(backend, "sqlite"))
		return; /* the same check; made with SQLite's pragma here */
	snprintf(path, sizeof(path), "%s/new.sqlite", dir);
	ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	struct index *other = NULL;
	snprintf(url, sizeof(url), "sqlite:%s", path);
	ck_assert_int_eq(index_open(&other, url), CK_ECORRUPT);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "newer"));
}
END_TEST

START_TEST(test_index_opens_a_store_of_schema_1_and_keeps_its_checkpoints)
{
	/* The tables ckptd 0.1 wrote, with one checkpoint of one storage. */
	static const char *v1 =
	    "CREATE TABLE models(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
	    " created_at TEXT NOT NULL, retention TEXT);"
	    "CREATE TABLE runs(id INTEGER PRIMARY KEY, model_id INTEGER NOT NULL,"
	    " name TEXT NOT NULL, UNIQUE(model_id, name));"
	    "CREATE TABLE blobs(hash BLOB PRIMARY KEY, raw_size INTEGER NOT NULL,"
	    " stored_size INTEGER NOT NULL, codec INTEGER NOT NULL, crc32 INTEGER NOT NULL,"
	    " refcount INTEGER NOT NULL) WITHOUT ROWID;"
	    "CREATE TABLE checkpoints(id INTEGER PRIMARY KEY AUTOINCREMENT,"
	    " model_id INTEGER NOT NULL, run_id INTEGER NOT NULL, epoch INTEGER, step INTEGER,"
	    " loss REAL, metrics TEXT NOT NULL DEFAULT '{}', tags TEXT NOT NULL DEFAULT '[]',"
	    " pinned INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL, format TEXT NOT NULL,"
	    " size INTEGER NOT NULL, sha256 BLOB NOT NULL, tensor_count INTEGER NOT NULL,"
	    " storage_count INTEGER NOT NULL, new_storages INTEGER NOT NULL,"
	    " tensor_bytes INTEGER NOT NULL, new_bytes INTEGER NOT NULL, skeleton BLOB NOT NULL,"
	    " skeleton_size INTEGER NOT NULL);"
	    "CREATE TABLE storages(checkpoint_id INTEGER NOT NULL, idx INTEGER NOT NULL,"
	    " blob BLOB NOT NULL, dtype TEXT NOT NULL, file_off INTEGER NOT NULL,"
	    " nbytes INTEGER NOT NULL, PRIMARY KEY(checkpoint_id, idx)) WITHOUT ROWID;"
	    "CREATE TABLE tensors(checkpoint_id INTEGER NOT NULL, seq INTEGER NOT NULL,"
	    " path TEXT NOT NULL, dtype TEXT NOT NULL, shape TEXT NOT NULL, strides TEXT NOT NULL,"
	    " offset INTEGER NOT NULL, storage_idx INTEGER NOT NULL, nbytes INTEGER NOT NULL,"
	    " PRIMARY KEY(checkpoint_id, seq)) WITHOUT ROWID;"
	    "INSERT INTO models VALUES(1, 'old', '2026-11-01T00:00:00.000Z', NULL);"
	    "INSERT INTO runs VALUES(1, 1, 'default');"
	    "INSERT INTO blobs "
	    "VALUES(x'0100000000000000000000000000000000000000000000000000000000000000', 16, 16, "
	    "0, 1, 1);"
	    "INSERT INTO blobs "
	    "VALUES(x'0200000000000000000000000000000000000000000000000000000000000000', 10, 10, "
	    "0, 2, 1);"
	    "INSERT INTO checkpoints VALUES(7, 1, 1, 3, NULL, 0.25, '{\"acc\":0.5}', '[\"x\"]', 0,"
	    " '2026-11-01T00:00:00.000Z', 'torch-zip', 26, "
	    "x'0300000000000000000000000000000000000000000000000000000000000000', 1, 1, 1, 16, 16, "
	    "x'0200000000000000000000000000000000000000000000000000000000000000', 10);"
	    "INSERT INTO storages VALUES(7, 0, "
	    "x'0100000000000000000000000000000000000000000000000000000000000000', 'float32', 0, "
	    "16);"
	    "INSERT INTO tensors VALUES(7, 0, '/w', 'float32', '[4]', '[1]', 0, 0, 16);"
	    "PRAGMA user_version = 1;";
	char path[128], url[160];
	sqlite3 *db;
	struct index *old = NULL;
	struct index_checkpoint *c = NULL;
	uint64_t gen;
	int64_t got;

	if (strcmp(backend, "sqlite"))
		return; /* PostgreSQL stores start at the current schema */
	snprintf(path, sizeof(path), "%s/v1.sqlite", dir);
	ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db, v1, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	snprintf(url, sizeof(url), "sqlite:%s", path);
	ck_assert_msg(index_open(&old, url) == 0, "%s", ck_errmsg());
	ck_assert_int_eq(index_checkpoint_resolve(&got, old, "old", "best", NULL, NULL, 0), 0);
	ck_assert_int_eq(got, 7);
	ck_assert_int_eq(index_checkpoint_get(&c, old, 7), 0);
	ck_assert_int_eq(c->nmetrics, 1);
	ck_assert_str_eq(c->tags[0], "x");
	index_checkpoint_free(c);
	ck_assert_int_eq(index_generation(&gen, old), 0);
	index_close(old);
}
END_TEST

START_TEST(test_index_damaged_rows_are_errors_not_defaults)
{
	/* a broken policy once read as "no policy", broken dims as [] */
	int a[] = {1};
	struct index_retention pol = {0, 1, "loss", 0}, got;
	struct index_tensors *t = NULL;
	char path[128];
	sqlite3 *db;
	int has = 0;
	int64_t id = insert("m", "d", 0.5, 1, a, 1, 100, NULL);

	if (strcmp(backend, "sqlite"))
		return; /* the rows are damaged through SQLite's own API */
	ck_assert_int_eq(index_retention_set(idx, "m", &pol), 0);
	snprintf(path, sizeof(path), "%s/index.sqlite", dir);
	ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db,
				      "UPDATE models SET retention = '{\"keep_last\": \"two\"}';"
				      "UPDATE tensors SET shape = '[4,';",
				      NULL, NULL, NULL),
			 SQLITE_OK);
	sqlite3_close(db);
	ck_assert_int_eq(index_retention_get(&got, &has, idx, "m"), CK_ECORRUPT);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "retention"));
	ck_assert_int_eq(index_checkpoint_tensors(&t, idx, id), CK_ECORRUPT);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "dims"));
}
END_TEST

static Suite *suite_for(const char *name)
{
	Suite *s = suite_create(name);
	TCase *tc = tcase_create(name);

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_index_insert_counts_new_bytes_once);
	tcase_add_test(tc, test_index_resolves_best_latest_and_ids);
	tcase_add_test(tc, test_index_resolves_best_by_a_metric_either_way);
	tcase_add_test(tc, test_index_lists_with_filters_and_order);
	tcase_add_test(tc, test_index_layout_interleaves_skeleton_and_storages);
	tcase_add_test(tc, test_index_tensors_carry_geometry_and_blob_refcounts);
	tcase_add_test(tc, test_index_delete_frees_only_unshared_blobs);
	tcase_add_test(tc,
		       test_index_extra_blobs_live_with_the_checkpoint_and_stay_out_of_its_files);
	tcase_add_test(tc, test_index_patch_merges_metrics_and_caps_them);
	tcase_add_test(tc, test_index_retention_keeps_best_last_and_pinned);
	tcase_add_test(tc, test_index_retention_never_removes_for_a_missing_metric_or_the_newest);
	tcase_add_test(tc, test_index_retention_keeps_what_a_run_resumed_from);
	tcase_add_test(tc, test_index_retention_may_come_before_the_first_checkpoint);
	tcase_add_test(tc, test_index_reap_spares_named_and_claimed_blobs);
	tcase_add_test(tc, test_index_generation_moves_with_every_change);
	tcase_add_test(tc, test_index_concurrent_inserts_of_the_same_blobs_count_every_reference);
	tcase_add_test(tc, test_index_damaged_rows_are_errors_not_defaults);
	tcase_add_test(tc, test_index_refuses_a_newer_schema);
	tcase_add_test(tc, test_index_opens_a_store_of_schema_1_and_keeps_its_checkpoints);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	int failed;

	backend = "sqlite";
	failed = run_suite(suite_for("index-sqlite"));
	if (getenv("CKPTD_TEST_PG_URL") && *getenv("CKPTD_TEST_PG_URL")) {
		backend = "postgresql";
		failed |= run_suite(suite_for("index-postgresql"));
	} else {
		printf("index-postgresql: skipped (set CKPTD_TEST_PG_URL; make test starts "
		       "PostgreSQL with tests/services/pg.sh)\n");
	}
	return failed;
}
