/*
 * test_dcp.c: torch.distributed.checkpoint's .metadata (formats/dcp.c),
 * from files torch 1.13 wrote (tests/data/dcp/make.py): every key with its
 * dtype, size and chunks, each chunk's file, offset and length; the same
 * Metadata under torch 2.x's module names with planner_data paths; and any
 * cut or damaged file refused with an error, never a crash.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/err.h"
#include "../../formats/dcp.h"
#include "check_main.h"

static const struct dcp_tensor *find(const struct dcp_meta *m, const char *fqn)
{
	for (size_t i = 0; i < m->ntensors; i++)
		if (!strcmp(m->tensors[i].fqn, fqn))
			return &m->tensors[i];
	return NULL;
}

/* What both files hold: the model of tests/integration/lib/dcp.py on 2
 * ranks, its sharded tensors split by rows. */
static void check_model(const struct dcp_meta *m)
{
	const struct dcp_tensor *t;

	ck_assert_uint_eq(m->ntensors, 10);
	ck_assert_uint_eq(m->nbytes, 2);
	ck_assert_str_eq(m->bytes[0].fqn, "optim.step");
	ck_assert_str_eq(m->bytes[1].fqn, "optim.param_groups");
	ck_assert_ptr_nonnull(t = find(m, "embed.weight"));
	ck_assert_int_eq(t->dtype, DT_FLOAT32);
	ck_assert_int_eq(t->ndim, 2);
	ck_assert_int_eq(t->size[0], 250);
	ck_assert_int_eq(t->size[1], 160);
	ck_assert_uint_eq(t->nchunks, 2);
	for (size_t i = 0; i < 2; i++) {
		const struct dcp_chunk *c = &t->chunks[i];
		int rank = c->offsets[0] == 0 ? 0 : 1;
		ck_assert_int_eq(c->offsets[0], rank ? 125 : 0);
		ck_assert_int_eq(c->offsets[1], 0);
		ck_assert_int_eq(c->sizes[0], 125);
		ck_assert_int_eq(c->sizes[1], 160);
		ck_assert_msg(!strncmp(c->file, rank ? "__1_" : "__0_", 4), "file %s", c->file);
		/* one torch.save archive: the data and its zip records */
		ck_assert_uint_gt(c->length, 125 * 160 * 4);
	}
	ck_assert_ptr_nonnull(t = find(m, "norm.bias"));
	ck_assert_int_eq(t->dtype, DT_FLOAT16);
	ck_assert_uint_eq(t->nchunks, 1);
	ck_assert_ptr_nonnull(t = find(m, "pos.ids"));
	ck_assert_int_eq(t->dtype, DT_INT64);
	ck_assert_ptr_nonnull(t = find(m, "scale"));
	ck_assert_int_eq(t->ndim, 0);
	ck_assert_uint_eq(t->nchunks, 1);
}

START_TEST(test_dcp_reads_torch_1_13_metadata)
{
	size_t n;
	uint8_t *b = read_test_file("tests/data/dcp/ws2.metadata", &n);
	struct dcp_meta *m = NULL;

	ck_assert_int_eq(dcp_meta_read(&m, b, n, NULL), 0);
	check_model(m);
	/* 1.13 keeps keys as given: the path is the key */
	ck_assert_str_eq(find(m, "optim.momentum.embed.weight")->path,
			 "/optim.momentum.embed.weight");
	dcp_meta_free(m);
	free(b);
}
END_TEST

START_TEST(test_dcp_reads_torch_2_names_and_planner_paths)
{
	size_t n;
	uint8_t *b = read_test_file("tests/data/dcp/v2.metadata", &n);
	struct dcp_meta *m = NULL;

	ck_assert_int_eq(dcp_meta_read(&m, b, n, NULL), 0);
	check_model(m);
	ck_assert_str_eq(find(m, "optim.momentum.embed.weight")->path,
			 "/optim/momentum.embed.weight");
	ck_assert_str_eq(find(m, "embed.weight")->path, "/embed.weight");
	ck_assert_str_eq(m->bytes[0].path, "/optim/step");
	dcp_meta_free(m);
	free(b);
}
END_TEST

START_TEST(test_dcp_refuses_every_cut_and_damaged_file)
{
	size_t n;
	uint8_t *b = read_test_file("tests/data/dcp/ws2.metadata", &n);
	struct dcp_meta *m = NULL;

	for (size_t len = 0; len < n; len++) {
		int err = dcp_meta_read(&m, b, len, NULL);
		ck_assert_msg(err < 0 && m == NULL, "a file cut at %zu bytes was read", len);
		ck_assert_msg(err == CK_ECORRUPT || err == CK_EFORMAT, "cut at %zu: %d %s", len,
			      err, ck_errmsg());
	}
	/* every byte flipped in turn: an error or a Metadata that passes every
	 * check, never a crash (the sanitizer build runs this too) */
	for (size_t i = 0; i < n; i++) {
		b[i] ^= 0x5a;
		if (dcp_meta_read(&m, b, n, NULL) == 0)
			dcp_meta_free(m);
		else
			ck_error_clear();
		m = NULL;
		b[i] ^= 0x5a;
	}
	free(b);
}
END_TEST

START_TEST(test_dcp_names_what_is_wrong)
{
	size_t n;
	uint8_t *b = read_test_file("tests/data/dcp/ws2.metadata", &n), *p;
	struct dcp_meta *m = NULL;

	/* a chunk's rows moved: embed.weight's second chunk at 124, not 125.
	 * Its offsets are the first "torch.Size((125, 0))" after the key:
	 * BININT1 125 then BININT1 0 (K} ... K\0). Moved in the chunk alone,
	 * storage_data has no entry for it; moved everywhere (the storage keys
	 * and the momentum's chunks too), it overlaps the first chunk; moved to
	 * 126, it reaches past row 250. */
	p = memmem(b, n, "embed.weight", 12);
	ck_assert_ptr_nonnull(p);
	p = memmem(p, n - (size_t)(p - b), "K}K\0", 4);
	ck_assert_ptr_nonnull(p);
	p[1] = 124;
	ck_assert_int_eq(dcp_meta_read(&m, b, n, NULL), CK_ECORRUPT);
	ck_assert_msg(strstr(ck_errmsg(), "'embed.weight'") &&
			  strstr(ck_errmsg(), "chunk 1 at offsets [124, 0] has no storage_data"),
		      "%s", ck_errmsg());
	for (int to = 124; to <= 126; to += 2) {
		for (p = b; (p = memmem(p, n - (size_t)(p - b), "K\0", 2)) != NULL; p++)
			if (p > b && (p[-1] == 125 || p[-1] == 124 || p[-1] == 126) && p[-2] == 'K')
				p[-1] = (uint8_t)to;
		ck_assert_int_eq(dcp_meta_read(&m, b, n, NULL), CK_ECORRUPT);
		ck_assert_msg(
		    strstr(ck_errmsg(), "'embed.weight' (size [250, 160])") &&
			strstr(ck_errmsg(), to == 124 ? "overlaps" : "reaches past the tensor"),
		    "%s", ck_errmsg());
	}
	free(b);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("dcp");
	TCase *tc = tcase_create("dcp");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_dcp_reads_torch_1_13_metadata);
	tcase_add_test(tc, test_dcp_reads_torch_2_names_and_planner_paths);
	tcase_add_test(tc, test_dcp_refuses_every_cut_and_damaged_file);
	tcase_add_test(tc, test_dcp_names_what_is_wrong);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
