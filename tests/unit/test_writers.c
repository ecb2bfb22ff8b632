/*
 * test_writers.c: the output writers (formats/writers.c, zip_write.c,
 * pickle_write.c, plan.c).
 *
 * Each test builds plans over small in-memory storages, materializes them to a
 * temp file by walking the segments (literal bytes, storage ranges, and
 * gathers done here independently of the writers), and has /usr/bin/python3
 * check the file with the real readers: torch.load(weights_only=True) for
 * .pth, numpy.load for .npy, and a safetensors reader written in Python below
 * (json header + numpy.frombuffer) for .safetensors.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "../../common/err.h"
#include "../../formats/checkpoint.h"
#include "../../formats/plan.h"
#include "../../formats/tensor.h"
#include "../../formats/zip_write.h"
#include "check_main.h"

#define PY "/usr/bin/python3"

/* ---- fixtures: storages in memory ---- */

struct mem_storage {
	uint8_t *data;
	struct plan_storage st;
};

static struct mem_storage mk_storage(enum dtype dt, const void *data, size_t nbytes)
{
	struct mem_storage m;

	m.data = malloc(nbytes ? nbytes : 1);
	ck_assert_ptr_nonnull(m.data);
	if (nbytes)
		memcpy(m.data, data, nbytes);
	m.st.dtype = dt;
	m.st.nbytes = nbytes;
	m.st.crc32 = (uint32_t)crc32(crc32(0L, Z_NULL, 0), m.data, (uInt)nbytes);
	return m;
}

/* The elements of v in C order, appended to f. */
static void gather(FILE *f, const struct plan_view *v, const uint8_t *base)
{
	int64_t idx[TENSOR_MAX_NDIM] = {0};
	size_t esz = dtype_size(v->dtype);
	int64_t i;
	int d;

	for (d = 0; d < v->ndim; d++)
		if (v->shape[d] == 0)
			return;
	for (;;) {
		uint64_t off = v->offset;
		for (d = 0; d < v->ndim; d++)
			off += (uint64_t)(idx[d] * v->strides[d]);
		ck_assert_uint_eq(fwrite(base + off * esz, 1, esz, f), esz);
		for (d = v->ndim - 1; d >= 0; d--) {
			if (++idx[d] < v->shape[d])
				break;
			idx[d] = 0;
		}
		if (d < 0)
			break;
	}
	(void)i;
}

/* Writes the plan's bytes to path and checks the total. */
static void materialize(const char *path, const struct plan *p, const struct plan_view *views,
			const struct mem_storage *ms)
{
	FILE *f = fopen(path, "wb");
	size_t i;
	long end;

	ck_assert_ptr_nonnull(f);
	for (i = 0; i < p->nsegs; i++) {
		const struct plan_seg *s = &p->segs[i];
		switch (s->kind) {
		case PLAN_LITERAL: ck_assert_uint_eq(fwrite(s->lit, 1, s->len, f), s->len); break;
		case PLAN_RANGE:
			ck_assert_uint_le(s->src_off + s->len, ms[s->storage].st.nbytes);
			ck_assert_uint_eq(fwrite(ms[s->storage].data + s->src_off, 1, s->len, f),
					  s->len);
			break;
		case PLAN_GATHER:
			gather(f, &views[s->view], ms[views[s->view].storage].data);
			break;
		}
	}
	end = ftell(f);
	fclose(f);
	ck_assert_int_eq((long)p->total, end);
}

/* Runs script (Python source) with path as its argument; returns its exit
 * status (0 when every check passed). */
static int run_py(const char *script, const char *path)
{
	char spath[] = "/tmp/ckptd_test_py_XXXXXX";
	char cmd[512];
	int fd = mkstemp(spath), rc;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, script, strlen(script)), (ssize_t)strlen(script));
	close(fd);
	snprintf(cmd, sizeof(cmd), PY " %s %s", spath, path);
	rc = system(cmd);
	unlink(spath);
	return rc;
}

static void tmp_path(char *buf, size_t n, const char *suffix)
{
	static int seq;
	snprintf(buf, n, "/tmp/ckptd_test_writers_%d_%d%s", (int)getpid(), seq++, suffix);
}

static uint16_t bf16(float x)
{
	uint32_t u;
	memcpy(&u, &x, 4);
	return (uint16_t)(u >> 16);
}

/* ---- the shared torch fixture ---- */

enum { NS = 8 };
static struct mem_storage ms[NS];
static struct plan_storage sts[NS];

static const int64_t sh34[] = {3, 4}, st34[] = {4, 1};
static const int64_t sh43[] = {4, 3}, st43[] = {1, 4};
static const int64_t sh4[] = {4}, st1[] = {1};
static const int64_t sh23[] = {2, 3}, st23[] = {3, 1};
static const int64_t sh5[] = {5}, sh3[] = {3};
static const int64_t sh03[] = {0, 3}, st03[] = {3, 1};
static const int64_t sh5d[] = {2, 2, 2, 2, 2}, st5d[] = {16, 8, 4, 2, 1};
static const int64_t sh22[] = {2, 2}, st22[] = {1, 2};

static struct plan_view views[] = {
    {"w", DT_FLOAT32, 2, sh34, st34, 0, 0},	 {"t", DT_FLOAT32, 2, sh43, st43, 0, 0},
    {"row1", DT_FLOAT32, 1, sh4, st1, 4, 0},	 {"tied", DT_FLOAT32, 2, sh34, st34, 0, 0},
    {"bf", DT_BFLOAT16, 2, sh23, st23, 0, 1},	 {"mask", DT_BOOL, 1, sh5, st1, 0, 2},
    {"big", DT_INT64, 1, sh3, st1, 0, 3},	 {"special", DT_FLOAT32, 1, sh4, st1, 0, 4},
    {"empty", DT_FLOAT32, 2, sh03, st03, 0, 5},	 {"scalar", DT_FLOAT64, 0, NULL, NULL, 0, 6},
    {"five_d", DT_FLOAT32, 5, sh5d, st5d, 0, 7}, {"strided.view", DT_FLOAT32, 2, sh22, st22, 3, 7},
};
#define NV (sizeof(views) / sizeof(views[0]))

static void setup_torch(void)
{
	float f12[12], f32[32], sp[4] = {NAN, INFINITY, -INFINITY, -0.0f};
	float bfv[6] = {1.0f, -2.0f, 0.5f, 3.0f, 1024.0f, -0.125f};
	uint16_t b6[6];
	uint8_t mask[5] = {1, 0, 1, 1, 0};
	int64_t big[3] = {(int64_t)1 << 40, -5, INT64_MAX};
	double sc = 3.25;
	int i;

	for (i = 0; i < 12; i++)
		f12[i] = (float)i;
	for (i = 0; i < 32; i++)
		f32[i] = (float)i * 0.5f;
	for (i = 0; i < 6; i++)
		b6[i] = bf16(bfv[i]);
	ms[0] = mk_storage(DT_FLOAT32, f12, sizeof(f12));
	ms[1] = mk_storage(DT_BFLOAT16, b6, sizeof(b6));
	ms[2] = mk_storage(DT_BOOL, mask, sizeof(mask));
	ms[3] = mk_storage(DT_INT64, big, sizeof(big));
	ms[4] = mk_storage(DT_FLOAT32, sp, sizeof(sp));
	ms[5] = mk_storage(DT_FLOAT32, NULL, 0);
	ms[6] = mk_storage(DT_FLOAT64, &sc, sizeof(sc));
	ms[7] = mk_storage(DT_FLOAT32, f32, sizeof(f32));
	for (i = 0; i < NS; i++)
		sts[i] = ms[i].st;
}

static void teardown_torch(void)
{
	int i;
	for (i = 0; i < NS; i++)
		free(ms[i].data);
}

static const char *torch_check =
    "import sys, math, zipfile, struct, torch\n"
    "p = sys.argv[1]\n"
    "z = zipfile.ZipFile(p)\n"
    "assert z.testzip() is None\n"
    "names = [i.filename for i in z.infolist()]\n"
    "assert names == ['archive/data.pkl', 'archive/byteorder'] + ['archive/data/%d' % k for k in "
    "sorted(range(8), key=str)] + ['archive/version'], names\n"
    "assert z.read('archive/version') == b'3\\n' and z.read('archive/byteorder') == b'little'\n"
    "raw = open(p, 'rb').read()\n"
    "for i in z.infolist():\n"
    "    assert i.compress_type == 0\n"
    "    h = i.header_offset\n"
    "    assert raw[h:h+4] == b'PK\\x03\\x04'\n"
    "    n, e = struct.unpack('<HH', raw[h+26:h+30])\n"
    "    assert (h + 30 + n + e) % 64 == 0, i.filename\n"
    "    crc, cs, us = struct.unpack('<III', raw[h+14:h+26])\n"
    "    assert crc == i.CRC and cs in (i.compress_size, 0xFFFFFFFF) and us in (i.file_size, "
    "0xFFFFFFFF), i.filename\n"
    "sd = torch.load(p, weights_only=True)\n"
    "assert list(sd.keys()) == ['w', 't', 'row1', 'tied', 'bf', 'mask', 'big', 'special', "
    "'empty', 'scalar', 'five_d', 'strided.view'], list(sd.keys())\n"
    "a = torch.arange(12, dtype=torch.float32).reshape(3, 4)\n"
    "assert torch.equal(sd['w'], a) and sd['w'].stride() == (4, 1)\n"
    "assert torch.equal(sd['t'], a.t()) and sd['t'].stride() == (1, 4)\n"
    "assert torch.equal(sd['row1'], a[1]) and sd['row1'].storage_offset() == 4\n"
    "assert sd['tied'].data_ptr() == sd['w'].data_ptr() == sd['t'].data_ptr()\n"
    "sd['w'][0, 1] = 42.0\n"
    "assert sd['tied'][0, 1].item() == 42.0 and sd['t'][1, 0].item() == 42.0\n"
    "assert sd['bf'].dtype == torch.bfloat16 and sd['bf'].shape == (2, 3)\n"
    "assert sd['bf'].float().flatten().tolist() == [1.0, -2.0, 0.5, 3.0, 1024.0, -0.125]\n"
    "assert sd['mask'].dtype == torch.bool and sd['mask'].tolist() == [True, False, True, True, "
    "False]\n"
    "assert sd['big'].dtype == torch.int64 and sd['big'].tolist() == [1 << 40, -5, 2**63 - 1]\n"
    "s = sd['special'].tolist()\n"
    "assert math.isnan(s[0]) and s[1] == math.inf and s[2] == -math.inf and s[3] == 0.0 and "
    "math.copysign(1, s[3]) < 0\n"
    "assert sd['empty'].shape == (0, 3) and sd['empty'].dtype == torch.float32\n"
    "assert sd['scalar'].dim() == 0 and sd['scalar'].dtype == torch.float64 and "
    "sd['scalar'].item() == 3.25\n"
    "f = torch.arange(32, dtype=torch.float32) * 0.5\n"
    "assert torch.equal(sd['five_d'], f.reshape(2, 2, 2, 2, 2))\n"
    "assert torch.equal(sd['strided.view'], f[3:7].reshape(2, 2).t())\n"
    "assert sd['strided.view'].data_ptr() - 12 == sd['five_d'].data_ptr()\n"
    "m = torch.nn.Linear(4, 3)\n"
    "m.load_state_dict({'weight': sd['w'], 'bias': sd['big'].float()})\n";

START_TEST(test_torch_zip_loads_views_ties_and_dtypes_in_torch)
{
	struct plan *p = NULL;
	char path[128];

	setup_torch();
	ck_assert_int_eq(plan_torch_zip(&p, views, NV, sts, NS, "archive"), 0);
	tmp_path(path, sizeof(path), ".pth");
	materialize(path, p, views, ms);
	ck_assert_int_eq(run_py(torch_check, path), 0);
	unlink(path);
	plan_free(p);
	teardown_torch();
}
END_TEST

START_TEST(test_torch_zip64_records_still_load_in_torch)
{
	struct plan *p = NULL;
	char path[128];
	int rc;

	setup_torch();
	zip_write_zip64_threshold = 0;
	rc = plan_torch_zip(&p, views, NV, sts, NS, NULL);
	zip_write_zip64_threshold = 0xFFFFFFFFu;
	ck_assert_int_eq(rc, 0);
	tmp_path(path, sizeof(path), ".pth");
	materialize(path, p, views, ms);
	ck_assert_int_eq(run_py("import sys, zipfile, struct\n"
				"raw = open(sys.argv[1], 'rb').read()\n"
				"assert b'PK\\x06\\x06' in raw and b'PK\\x06\\x07' in raw\n"
				"z = zipfile.ZipFile(sys.argv[1])\n"
				"assert z.testzip() is None\n"
				"for i in z.infolist():\n"
				"    h = i.header_offset\n"
				"    n, e = struct.unpack('<HH', raw[h+26:h+30])\n"
				"    assert (h + 30 + n + e) % 64 == 0\n"
				"    assert struct.unpack('<I', raw[h+22:h+26])[0] == 0xFFFFFFFF\n",
				path),
			 0);
	ck_assert_int_eq(run_py(torch_check, path), 0);
	unlink(path);
	plan_free(p);
	teardown_torch();
}
END_TEST

START_TEST(test_torch_zip_writes_no_storage_unless_used)
{
	struct plan *p = NULL;
	char path[128];

	setup_torch();
	/* Only "bf" (storage 1): one record, keyed "0". */
	ck_assert_int_eq(plan_torch_zip(&p, &views[4], 1, sts, NS, "mine"), 0);
	tmp_path(path, sizeof(path), ".pth");
	materialize(path, p, views + 4, ms);
	ck_assert_int_eq(run_py("import sys, zipfile, torch\n"
				"z = zipfile.ZipFile(sys.argv[1])\n"
				"assert [i.filename for i in z.infolist()] == ['mine/data.pkl', "
				"'mine/byteorder', 'mine/data/0', 'mine/version']\n"
				"sd = torch.load(sys.argv[1], weights_only=True)\n"
				"assert list(sd) == ['bf'] and sd['bf'].dtype == torch.bfloat16\n",
				path),
			 0);
	unlink(path);
	plan_free(p);
	teardown_torch();
}
END_TEST

START_TEST(test_torch_zip_of_nothing_loads_as_empty_dict)
{
	struct plan *p = NULL;
	char path[128];

	ck_assert_int_eq(plan_torch_zip(&p, NULL, 0, NULL, 0, "archive"), 0);
	tmp_path(path, sizeof(path), ".pth");
	materialize(path, p, NULL, NULL);
	ck_assert_int_eq(run_py("import sys, torch, collections\n"
				"sd = torch.load(sys.argv[1], weights_only=True)\n"
				"assert isinstance(sd, collections.OrderedDict) and len(sd) == 0\n",
				path),
			 0);
	unlink(path);
	plan_free(p);
}
END_TEST

START_TEST(test_torch_zip_with_many_tensors_uses_long_memo_indices)
{
	/* 300 names over two storages: memo indices pass 255. */
	enum { N = 300 };
	static char names[N][16];
	static struct plan_view vs[N];
	struct plan *p = NULL;
	char path[128];
	int i;

	setup_torch();
	for (i = 0; i < N; i++) {
		snprintf(names[i], sizeof(names[i]), "layer%d.w", i);
		vs[i] = views[i % 2 ? 2 : 6];
		vs[i].name = names[i];
	}
	ck_assert_int_eq(plan_torch_zip(&p, vs, N, sts, NS, "archive"), 0);
	tmp_path(path, sizeof(path), ".pth");
	materialize(path, p, vs, ms);
	ck_assert_int_eq(
	    run_py("import sys, torch\n"
		   "sd = torch.load(sys.argv[1], weights_only=True)\n"
		   "assert list(sd) == ['layer%d.w' % i for i in range(300)]\n"
		   "for i in range(300):\n"
		   "    want = [4., 5., 6., 7.] if i % 2 else [1 << 40, -5, 2**63 - 1]\n"
		   "    assert sd['layer%d.w' % i].tolist() == want, i\n"
		   "assert sd['layer1.w'].data_ptr() == sd['layer299.w'].data_ptr()\n",
		   path),
	    0);
	unlink(path);
	plan_free(p);
	teardown_torch();
}
END_TEST

START_TEST(test_torch_zip_rejects_view_past_its_storage)
{
	struct plan *p = (struct plan *)1;
	struct plan_view v = views[0];

	setup_torch();
	v.offset = 1; /* 3x4 from offset 1 needs 13 elements of 12 */
	ck_assert_int_eq(plan_torch_zip(&p, &v, 1, sts, NS, "archive"), CK_EINVALID);
	ck_assert_ptr_null(p);
	v = views[0];
	v.storage = NS;
	ck_assert_int_eq(plan_torch_zip(&p, &v, 1, sts, NS, "archive"), CK_EINVALID);
	v = views[0];
	v.dtype = DT_INT32; /* a float32 storage */
	ck_assert_int_eq(plan_torch_zip(&p, &v, 1, sts, NS, "archive"), CK_EINVALID);
	{
		/* Quantized storages have no plain rebuild: refused, not
		 * written as a file torch cannot load. */
		struct plan_storage q = {DT_QINT8, 12, 0};
		v = views[0];
		v.dtype = DT_QINT8;
		v.storage = 0;
		ck_assert_int_eq(plan_torch_zip(&p, &v, 1, &q, 1, "archive"), CK_EINVALID);
		ck_assert_ptr_nonnull(strstr(ck_errmsg(), "quantized"));
	}
	teardown_torch();
}
END_TEST

START_TEST(test_plan_uses_range_for_contiguous_and_gather_for_strided_views)
{
	struct plan *p = NULL;
	size_t i, ranges = 0, gathers = 0;

	setup_torch();
	/* row1: contiguous at element 4; t: transposed; empty: nothing. */
	{
		struct plan_view vs[3] = {views[2], views[1], views[8]};
		ck_assert_int_eq(plan_safetensors(&p, vs, 3, sts, NS), 0);
	}
	for (i = 0; i < p->nsegs; i++) {
		if (p->segs[i].kind == PLAN_RANGE) {
			ranges++;
			ck_assert_uint_eq(p->segs[i].src_off, 16);
			ck_assert_uint_eq(p->segs[i].len, 16);
			ck_assert_uint_eq(p->segs[i].storage, 0);
		} else if (p->segs[i].kind == PLAN_GATHER) {
			gathers++;
			ck_assert_uint_eq(p->segs[i].view, 1);
			ck_assert_uint_eq(p->segs[i].len, 48);
		}
	}
	ck_assert_uint_eq(ranges, 1);
	ck_assert_uint_eq(gathers, 1);
	ck_assert_uint_eq(p->nsegs, 3);
	plan_free(p);
	teardown_torch();
}
END_TEST

/* ---- safetensors ---- */

/* Storage i holds bytes (i * 7 + j * 13 + 1) & 0xff, j the byte index; the
 * Python side rebuilds it and takes the views with numpy as_strided. */
static const char *st_check =
    "import sys, json, struct, numpy as np\n"
    "p = sys.argv[1]\n"
    "raw = open(p, 'rb').read()\n"
    "n = struct.unpack('<Q', raw[:8])[0]\n"
    "assert n % 8 == 0 and 8 + n <= len(raw)\n"
    "hdr = json.loads(raw[8:8 + n].decode('utf-8'))\n"
    "assert raw[8:8 + n].rstrip(b' ').endswith(b'}')\n"
    "meta = hdr.pop('__metadata__')\n"
    "assert meta == {'format': 'pt'}\n"
    "data = raw[8 + n:]\n"
    "exp = json.loads(open(p + '.expect').read())\n"
    "assert list(hdr.keys()) == [e['name'] for e in exp], list(hdr.keys())\n"
    "npt = {'F64': 'f8', 'F32': 'f4', 'F16': 'f2', 'BF16': 'u2', 'F8_E4M3': 'u1', 'F8_E5M2': "
    "'u1', 'I64': 'i8', 'I32': 'i4', 'I16': 'i2', 'I8': 'i1', 'U8': 'u1', 'U16': 'u2', 'U32': "
    "'u4', 'U64': 'u8', 'BOOL': 'u1', 'C64': 'c8'}\n"
    "pos = 0\n"
    "for e in exp:\n"
    "    h = hdr[e['name']]\n"
    "    assert h['dtype'] == e['st'], (h, e)\n"
    "    assert h['shape'] == e['shape']\n"
    "    b, t = h['data_offsets']\n"
    "    assert b == pos\n"
    "    dt = np.dtype('<' + npt[h['dtype']])\n"
    "    got = np.frombuffer(data[b:t], dtype=dt).reshape(h['shape'])\n"
    "    i = e['storage']\n"
    "    st = bytes(((i * 7 + j * 13 + 1) & 0xff) for j in range(e['nbytes']))\n"
    "    base = np.frombuffer(st, dtype=dt)\n"
    "    want = np.lib.stride_tricks.as_strided(base[e['offset']:], shape=e['shape'], "
    "strides=[s * dt.itemsize for s in e['strides']])\n"
    "    assert got.tobytes() == np.ascontiguousarray(want).tobytes(), e['name']\n"
    "    pos = t\n"
    "assert pos == len(data)\n";

static const struct {
	enum dtype dt;
	const char *st;
} st_types[] = {
    {DT_FLOAT64, "F64"},
    {DT_FLOAT32, "F32"},
    {DT_FLOAT16, "F16"},
    {DT_BFLOAT16, "BF16"},
    {DT_FLOAT8_E4M3FN, "F8_E4M3"},
    {DT_FLOAT8_E5M2, "F8_E5M2"},
    {DT_INT64, "I64"},
    {DT_INT32, "I32"},
    {DT_INT16, "I16"},
    {DT_INT8, "I8"},
    {DT_UINT8, "U8"},
    {DT_UINT16, "U16"},
    {DT_UINT32, "U32"},
    {DT_UINT64, "U64"},
    {DT_BOOL, "BOOL"},
    {DT_COMPLEX64, "C64"},
};
#define NT (sizeof(st_types) / sizeof(st_types[0]))

START_TEST(test_safetensors_output_parses_for_every_dtype)
{
	/* Per dtype: a contiguous 2x3, a transposed 3x2 from offset 1, and for
	 * the first dtype a 0-element tensor and a name needing escapes. */
	static const int64_t s23[] = {2, 3}, t23[] = {3, 1}, s32[] = {3, 2}, t32[] = {1, 3};
	static const int64_t s0[] = {0};
	struct mem_storage m[NT];
	struct plan_storage st[NT];
	struct plan_view v[2 * NT + 1];
	char names[2 * NT + 1][32], path[128], epath[160];
	struct plan *p = NULL;
	size_t i, nv = 0;
	FILE *f;

	for (i = 0; i < NT; i++) {
		size_t esz = dtype_size(st_types[i].dt), nb = 8 * esz, j;
		uint8_t buf[256];
		for (j = 0; j < nb; j++)
			buf[j] = (uint8_t)((i * 7 + j * 13 + 1) & 0xff);
		m[i] = mk_storage(st_types[i].dt, buf, nb);
		st[i] = m[i].st;
	}
	tmp_path(path, sizeof(path), ".safetensors");
	snprintf(epath, sizeof(epath), "%s.expect", path);
	f = fopen(epath, "w");
	ck_assert_ptr_nonnull(f);
	fputs("[", f);
	for (i = 0; i < NT; i++) {
		size_t nb = m[i].st.nbytes;
		snprintf(names[nv], 32, "c_%s", st_types[i].st);
		v[nv] = (struct plan_view){names[nv], st_types[i].dt, 2, s23, t23, 0, i};
		fprintf(f,
			"%s{\"name\":\"%s\",\"st\":\"%s\",\"shape\":[2,3],\"strides\":[3,1],"
			"\"offset\":0,\"storage\":%zu,\"nbytes\":%zu}",
			i ? "," : "", names[nv], st_types[i].st, i, nb);
		nv++;
		snprintf(names[nv], 32, "t_%s", st_types[i].st);
		v[nv] = (struct plan_view){names[nv], st_types[i].dt, 2, s32, t32, 1, i};
		fprintf(f,
			",{\"name\":\"%s\",\"st\":\"%s\",\"shape\":[3,2],\"strides\":[1,3],"
			"\"offset\":1,\"storage\":%zu,\"nbytes\":%zu}",
			names[nv], st_types[i].st, i, nb);
		nv++;
	}
	v[nv] = (struct plan_view){"odd \"name\"\\/\x01", DT_FLOAT32, 1, s0, t23, 0, 1};
	fprintf(f, ",{\"name\":\"odd \\\"name\\\"\\\\/\\u0001\",\"st\":\"F32\",\"shape\":[0],"
		   "\"strides\":[1],\"offset\":0,\"storage\":1,\"nbytes\":0}]");
	nv++;
	fclose(f);
	ck_assert_int_eq(plan_safetensors(&p, v, nv, st, NT), 0);
	materialize(path, p, v, m);
	ck_assert_int_eq(run_py(st_check, path), 0);
	{
		/* ckptd's own reader takes it back. */
		FILE *rf = fopen(path, "rb");
		static uint8_t raw[1 << 16];
		struct ck_input in = {raw, -1, 0, 0, NULL, 0};
		struct fmt_ckpt *c = NULL;

		ck_assert_ptr_nonnull(rf);
		in.size = fread(raw, 1, sizeof(raw), rf);
		fclose(rf);
		ck_assert_int_eq(safetensors_read(&c, &in, NULL), 0);
		ck_assert_uint_eq(c->ntensors, nv);
		ck_assert_str_eq(c->tensors[0].path, "/c_F64");
		ck_assert_int_eq(c->tensors[nv - 2].dtype, DT_COMPLEX64);
		fmt_ckpt_free(c);
	}
	unlink(path);
	unlink(epath);
	plan_free(p);
	for (i = 0; i < NT; i++)
		free(m[i].data);
}
END_TEST

START_TEST(test_safetensors_rejects_duplicate_names_and_unnamed_dtypes)
{
	struct plan *p = (struct plan *)1;
	struct plan_view v[2];
	struct plan_storage st = {DT_FLOAT32, 48, 0};
	struct plan_storage qst = {DT_QINT8, 12, 0};

	v[0] = views[0];
	v[1] = views[0];
	ck_assert_int_eq(plan_safetensors(&p, v, 2, &st, 1), CK_EINVALID);
	ck_assert_ptr_null(p);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "\"w\""));
	v[0] = views[0];
	v[0].dtype = DT_QINT8;
	ck_assert_int_eq(plan_safetensors(&p, v, 1, &qst, 1), CK_EINVALID);
	ck_assert_ptr_nonnull(strstr(ck_errmsg(), "w"));
	v[0] = views[0];
	v[0].dtype = DT_COMPLEX128;
	ck_assert_int_eq(plan_safetensors(&p, v, 1, &st, 1), CK_EINVALID);
}
END_TEST

/* ---- npy ---- */

START_TEST(test_npy_output_loads_in_numpy)
{
	static const struct {
		enum dtype dt;
		const char *np;
	} types[] = {
	    {DT_FLOAT32, "<f4"},   {DT_FLOAT64, "<f8"},	    {DT_FLOAT16, "<f2"}, {DT_INT64, "<i8"},
	    {DT_INT8, "|i1"},	   {DT_UINT8, "|u1"},	    {DT_UINT16, "<u2"},	 {DT_BOOL, "|b1"},
	    {DT_COMPLEX64, "<c8"}, {DT_COMPLEX128, "<c16"},
	};
	static const int64_t s32[] = {3, 2}, t32[] = {1, 3}, s6[] = {6}, one[] = {1};
	static const int64_t s0[] = {2, 0};
	size_t k;

	for (k = 0; k < sizeof(types) / sizeof(types[0]); k++) {
		size_t esz = dtype_size(types[k].dt), j;
		uint8_t buf[6 * 16];
		struct mem_storage m;
		struct plan_view vs[4] = {
		    {"t", types[k].dt, 2, s32, t32, 0, 0},
		    {"flat", types[k].dt, 1, s6, one, 0, 0},
		    {"scalar", types[k].dt, 0, NULL, NULL, 5, 0},
		    {"none", types[k].dt, 2, s0, one, 0, 0},
		};
		const char *shapes[4] = {"(3, 2)", "(6,)", "()", "(2, 0)"};
		int q;

		for (j = 0; j < 6 * esz; j++)
			buf[j] = types[k].dt == DT_BOOL ? (uint8_t)(j % 2) : (uint8_t)(j * 13 + 1);
		m = mk_storage(types[k].dt, buf, 6 * esz);
		for (q = 0; q < 4; q++) {
			struct plan *p = NULL;
			char path[128], script[2048];
			int64_t st2[2] = {0, 1};

			if (q == 3)
				vs[3].strides = st2;
			ck_assert_int_eq(plan_npy(&p, &vs[q], &m.st, 1), 0);
			tmp_path(path, sizeof(path), ".npy");
			materialize(path, p, &vs[q], &m);
			snprintf(
			    script, sizeof(script),
			    "import sys, numpy as np\n"
			    "raw = open(sys.argv[1], 'rb').read()\n"
			    "hl = raw[8] | raw[9] << 8\n"
			    "assert raw[:8] == b'\\x93NUMPY\\x01\\x00' and (10 + hl) %% 64 == 0 "
			    "and raw[9 + hl] == 10\n"
			    "a = np.load(sys.argv[1])\n"
			    "dt = np.dtype('%s')\n"
			    "assert a.dtype == dt and a.shape == %s, (a.dtype, a.shape)\n"
			    "st = bytes((j %% 2) if %d else ((j * 13 + 1) & 0xff) "
			    "for j in range(6 * dt.itemsize))\n"
			    "base = np.frombuffer(st, dtype=dt)\n"
			    "want = {0: base.reshape(2, 3).T, 1: base, 2: base[5], 3: "
			    "base[:0].reshape(2, 0)}[%d]\n"
			    "assert np.ascontiguousarray(want).tobytes() == a.tobytes()\n",
			    types[k].np, shapes[q], types[k].dt == DT_BOOL, q);
			ck_assert_int_eq(run_py(script, path), 0);
			unlink(path);
			plan_free(p);
		}
		free(m.data);
	}
}
END_TEST

START_TEST(test_npy_rejects_bfloat16_and_float8)
{
	struct plan *p = (struct plan *)1;
	static const int64_t s2[] = {2}, one[] = {1};
	struct plan_storage st = {DT_BFLOAT16, 4, 0};
	struct plan_view v = {"x", DT_BFLOAT16, 1, s2, one, 0, 0};

	ck_assert_int_eq(plan_npy(&p, &v, &st, 1), CK_EINVALID);
	ck_assert_ptr_null(p);
	st.dtype = v.dtype = DT_FLOAT8_E4M3FN;
	ck_assert_int_eq(plan_npy(&p, &v, &st, 1), CK_EINVALID);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("writers");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_torch_zip_loads_views_ties_and_dtypes_in_torch);
	tcase_add_test(tc, test_torch_zip64_records_still_load_in_torch);
	tcase_add_test(tc, test_torch_zip_writes_no_storage_unless_used);
	tcase_add_test(tc, test_torch_zip_of_nothing_loads_as_empty_dict);
	tcase_add_test(tc, test_torch_zip_with_many_tensors_uses_long_memo_indices);
	tcase_add_test(tc, test_torch_zip_rejects_view_past_its_storage);
	tcase_add_test(tc, test_plan_uses_range_for_contiguous_and_gather_for_strided_views);
	tcase_add_test(tc, test_safetensors_output_parses_for_every_dtype);
	tcase_add_test(tc, test_safetensors_rejects_duplicate_names_and_unnamed_dtypes);
	tcase_add_test(tc, test_npy_output_loads_in_numpy);
	tcase_add_test(tc, test_npy_rejects_bfloat16_and_float8);
	suite_add_tcase(s, tc);
	return run_suite(s);
}
