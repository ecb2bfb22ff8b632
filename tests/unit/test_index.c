/*
 * test_index.c: the SQLite index: inserting checkpoints with their blob
 * references, resolving best/latest, listing, layouts, deleting and the
 * blobs freed by it, retention victims.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../common/err.h"
#include "../../storage/index.h"
#include "check_main.h"

static char dir[64];
static struct index *idx;

static void setup(void)
{
	char path[128];

	snprintf(dir, sizeof(dir), "/tmp/ckptd-test-index-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/index.sqlite", dir);
	ck_assert_int_eq(index_open(&idx, path), 0);
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

/* Inserts a checkpoint of model m with storages named by blob numbers. */
static int64_t
insert(const char *m, const char *run, double loss, int epoch, const int *blobs, size_t n, int skel,
       json_t **dedup_out)
{
	struct index_storage st[8];
	struct index_tensor t[8];
	int64_t shape[1] = {4}, strides[1] = {1};
	char names[8][16];
	struct index_new_checkpoint k = {0};
	json_t *dedup = NULL;
	int64_t id = -1;

	for (size_t i = 0; i < n; i++) {
		st[i] = (struct index_storage){H(blobs[i]), 16,		16,	     0x1234,
					       0,	    DT_FLOAT32, 100 + 16 * i};
		snprintf(names[i], sizeof(names[i]), "/w%zu", i);
		t[i] = (struct index_tensor){names[i], DT_FLOAT32, 1, shape, strides, 0, i};
	}
	k.model = m;
	k.run = run;
	k.has_epoch = 1;
	k.epoch = epoch;
	k.has_loss = loss >= 0;
	k.loss = loss;
	k.format = "torch-zip";
	k.size = 100 + 16 * n + 50;
	k.sha256 = H(200);
	k.skeleton = H(skel);
	k.skeleton_size = 150;
	k.storages = st;
	k.nstorages = n;
	k.tensors = t;
	k.ntensors = n;
	ck_assert_int_eq(index_checkpoint_insert(&id, &dedup, idx, &k), 0);
	if (dedup_out)
		*dedup_out = dedup;
	else
		json_decref(dedup);
	return id;
}

START_TEST(test_index_insert_counts_new_bytes_once)
{
	int a[] = {1, 2}, b[] = {1, 3};
	json_t *d1, *d2;

	insert("m", "default", 0.5, 1, a, 2, 100, &d1);
	insert("m2", "default", 0.4, 2, b, 2, 100, &d2);
	ck_assert_int_eq(json_integer_value(json_object_get(d1, "new_bytes")), 32);
	ck_assert_int_eq(json_integer_value(json_object_get(d2, "new_bytes")), 16);
	ck_assert_int_eq(json_integer_value(json_object_get(d2, "new_tensors")), 1);
	ck_assert_int_eq(json_integer_value(json_object_get(d2, "bytes")), 32);
	json_decref(d1);
	json_decref(d2);
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

START_TEST(test_index_lists_with_filters_and_order)
{
	int a[] = {1};
	json_t *res;
	struct index_list_query q = {.model = "m", .limit = 10, .order = "-loss"};

	insert("m", "r1", 0.9, 1, a, 1, 100, NULL);
	insert("m", "r1", 0.3, 2, a, 1, 100, NULL);
	insert("m", "r2", 0.5, 3, a, 1, 100, NULL);
	ck_assert_int_eq(index_checkpoint_list(&res, idx, &q), 0);
	ck_assert_int_eq(json_integer_value(json_object_get(res, "total")), 3);
	json_t *items = json_object_get(res, "checkpoints");
	ck_assert_double_eq_tol(json_real_value(json_object_get(json_array_get(items, 0), "loss")),
				0.9, 1e-9);
	json_decref(res);
	q.run = "r1";
	q.order = "epoch";
	q.limit = 1;
	q.offset = 1;
	ck_assert_int_eq(index_checkpoint_list(&res, idx, &q), 0);
	ck_assert_int_eq(json_integer_value(json_object_get(res, "total")), 2);
	items = json_object_get(res, "checkpoints");
	ck_assert_int_eq(json_array_size(items), 1);
	ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(items, 0), "epoch")), 2);
	json_decref(res);
	q.order = "sideways";
	ck_assert_int_eq(index_checkpoint_list(&res, idx, &q), CK_EINVALID);
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

START_TEST(test_index_delete_frees_only_unshared_blobs)
{
	int a[] = {1, 2}, b[] = {2, 3};
	struct hash *freed = NULL;
	size_t n = 0;
	int64_t id1 = insert("m", "default", 0.5, 1, a, 2, 100, NULL);
	int64_t id2 = insert("m", "default", 0.4, 2, b, 2, 100, NULL);

	ck_assert_int_eq(index_checkpoint_delete(&freed, &n, idx, "m", id1), 0);
	ck_assert_int_eq(n, 1); /* blob 1 only: 2 and the skeleton are shared */
	ck_assert_int_eq(freed[0].b[0], 1);
	free(freed);
	ck_assert_int_eq(index_blob_exists(idx, &(struct hash){{0}}), CK_ENOTFOUND);
	struct hash h2 = H(2);
	ck_assert_int_eq(index_blob_exists(idx, &h2), 0);
	ck_assert_int_eq(index_checkpoint_delete(&freed, &n, idx, "m", id1), CK_ENOTFOUND);
	ck_assert_int_eq(index_model_delete(&freed, &n, idx, "m"), 0);
	ck_assert_int_eq(n, 3);
	free(freed);
	json_t *st;
	ck_assert_int_eq(index_stats_json(&st, idx), 0);
	ck_assert_int_eq(json_integer_value(json_object_get(st, "blobs")), 0);
	ck_assert_int_eq(json_integer_value(json_object_get(st, "checkpoints")), 0);
	json_decref(st);
	(void)id2;
}
END_TEST

START_TEST(test_index_retention_keeps_best_last_and_pinned)
{
	int a[] = {1};
	double losses[] = {0.9, 0.2, 0.8, 0.1, 0.7, 0.6};
	int64_t ids[6], *victims = NULL;
	size_t n = 0;

	for (int i = 0; i < 6; i++)
		ids[i] = insert("m", "default", losses[i], i, a, 1, 100, NULL);
	json_t *pin = json_pack("{sb}", "pinned", 1);
	ck_assert_int_eq(index_checkpoint_patch(idx, ids[0], pin), 0);
	json_decref(pin);
	json_t *pol = json_pack("{sI sI ss ss}", "keep_best", (json_int_t)2, "keep_last",
				(json_int_t)1, "metric", "loss", "mode", "min");
	ck_assert_int_eq(index_retention_set(idx, "m", pol), 0);
	json_decref(pol);
	ck_assert_int_eq(index_retention_victims(&victims, &n, idx, "m"), 0);
	/* kept: pinned ids[0], best ids[3] (0.1) and ids[1] (0.2), last ids[5] */
	ck_assert_int_eq(n, 2);
	ck_assert_int_eq(victims[0], ids[2]);
	ck_assert_int_eq(victims[1], ids[4]);
	free(victims);
}
END_TEST

START_TEST(test_index_refuses_a_newer_schema)
{
	char path[128], cmd[256];

	snprintf(path, sizeof(path), "%s/new.sqlite", dir);
	snprintf(cmd, sizeof(cmd), "sqlite3 %s 'PRAGMA user_version = 99' 2>/dev/null", path);
	if (system(cmd) != 0)
		return; /* no sqlite3 shell: nothing to check with */
	struct index *other = NULL;
	ck_assert_int_eq(index_open(&other, path), CK_ECORRUPT);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "newer"));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("index");
	TCase *tc = tcase_create("index");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_index_insert_counts_new_bytes_once);
	tcase_add_test(tc, test_index_resolves_best_latest_and_ids);
	tcase_add_test(tc, test_index_lists_with_filters_and_order);
	tcase_add_test(tc, test_index_layout_interleaves_skeleton_and_storages);
	tcase_add_test(tc, test_index_delete_frees_only_unshared_blobs);
	tcase_add_test(tc, test_index_retention_keeps_best_last_and_pinned);
	tcase_add_test(tc, test_index_refuses_a_newer_schema);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
