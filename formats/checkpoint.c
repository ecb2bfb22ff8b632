/*
 * checkpoint.c: format detection and dispatch for uploads (see checkpoint.h).
 *
 * Sniffing looks at the first bytes only: "PK\3\4" (or an empty zip's
 * "PK\5\6") is a zip, which ckptd reads as a PyTorch checkpoint; 0x80 (pickle
 * PROTO) is torch's legacy format, whose first pickle is a magic number (the
 * legacy reader answers CK_EFORMAT when it is not); an 8-byte little-endian
 * length followed by '{' is safetensors.
 */
#include "checkpoint.h"

#include <stdlib.h>
#include <string.h>

#include "../common/err.h"

const char *fmt_kind_name(enum fmt_kind k)
{
	switch (k) {
	case FMT_TORCH_ZIP: return "torch-zip";
	case FMT_SAFETENSORS: return "safetensors";
	case FMT_TORCH_LEGACY: return "torch-legacy";
	case FMT_UNKNOWN: break;
	}
	return "unknown";
}

int fmt_detect(enum fmt_kind *out, const struct ck_input *in)
{
	uint8_t b[9];
	size_t n = in->size < sizeof(b) ? (size_t)in->size : sizeof(b);
	int err;

	*out = FMT_UNKNOWN;
	if (n < 2)
		return 0;
	if ((err = ck_input_read(in, b, n, 0, "file header")) < 0)
		return err;
	if (n >= 4 && b[0] == 'P' && b[1] == 'K' &&
	    ((b[2] == 3 && b[3] == 4) || (b[2] == 5 && b[3] == 6)))
		*out = FMT_TORCH_ZIP;
	else if (b[0] == 0x80 && b[1] >= 2 && b[1] <= 5)
		*out = FMT_TORCH_LEGACY;
	/* A JSON object right after an 8-byte length is a safetensors header,
	 * even when the length is wrong: such a file is a damaged safetensors
	 * file (422), not one of another format (415). */
	else if (n == 9 && b[8] == '{')
		*out = FMT_SAFETENSORS;
	return 0;
}

void fmt_limits_default(struct fmt_limits *lim)
{
	lim->max_records = 1u << 18;
	lim->max_pickle_bytes = 64u << 20;
	lim->max_pickle_ops = 1u << 26;
	lim->max_memo = 1u << 22;
	lim->max_depth = 1000;
	lim->max_tensors = 1u << 20;
	lim->max_header_bytes = 100u << 20;
	lim->budget = fmt_budget_process();
}

int fmt_read(struct fmt_ckpt **out, const struct ck_input *in, const struct fmt_limits *lim)
{
	struct fmt_limits def;
	enum fmt_kind kind;
	int err;

	*out = NULL;
	if (!lim) {
		fmt_limits_default(&def);
		lim = &def;
	}
	if ((err = fmt_detect(&kind, in)) < 0)
		return err;
	switch (kind) {
	case FMT_TORCH_ZIP: return torch_zip_read(out, in, lim);
	case FMT_SAFETENSORS: return safetensors_read(out, in, lim);
	case FMT_TORCH_LEGACY: return torch_legacy_read(out, in, lim);
	case FMT_UNKNOWN: break;
	}
	return ck_error(CK_EFORMAT, "not a checkpoint format ckptd reads: it reads " FMT_READS);
}

void fmt_ckpt_keep(struct fmt_ckpt *c, struct fmt_meter *m)
{
	fmt_meter_hand_over(&c->mem, m);
	c->budget = m->budget;
}

void fmt_ckpt_free(struct fmt_ckpt *c)
{
	struct fmt_region mem;

	if (!c || !c->budget)
		return;
	/* c lives in its own region: copy the region out before giving it back */
	mem = c->mem;
	fmt_region_release(&mem, c->budget);
}
