/*
 * checkpoint.h: what a parsed upload looks like to the rest of ckptd,
 * whatever its format.
 *
 * A checkpoint file is split into storages (byte ranges of the upload that hold
 * tensor data: one torch storage record, or one safetensors tensor) and
 * everything else (the "skeleton": zip headers, data.pkl, small records, the
 * safetensors header). The storages become content-addressed blobs; the
 * skeleton is kept so the upload can be rebuilt byte for byte by interleaving
 * the two in file order. Tensors are views on storages, named by JSON Pointer
 * paths (SPEC 2).
 *
 * The formats module never touches SQLite, the disk layout or HTTP.
 */
#ifndef CK_CHECKPOINT_H
#define CK_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "input.h"
#include "tensor.h"

enum fmt_kind {
	FMT_UNKNOWN = 0,
	FMT_TORCH_ZIP,
	FMT_SAFETENSORS,
	FMT_TORCH_LEGACY,
};

/* "torch-zip", "safetensors", "torch-legacy", "unknown". */
const char *fmt_kind_name(enum fmt_kind k);

/* Sniffs the first bytes: zip local-header magic -> FMT_TORCH_ZIP; pickle
 * protocol opcode (0x80) or the legacy magic number -> FMT_TORCH_LEGACY;
 * 8-byte little-endian length followed by '{' -> FMT_SAFETENSORS. */
enum fmt_kind fmt_detect(const struct ck_input *in);

struct fmt_storage {
	char *key;	   /* record key ("0", "1") or safetensors tensor name */
	enum dtype dtype;  /* element type the storage was saved with */
	uint64_t file_off; /* offset of the payload's first byte in the upload */
	uint64_t nbytes;   /* payload length in bytes */
	uint32_t zip_crc;  /* CRC-32 the zip directory declares; 0 = none */
};

struct fmt_tensor {
	char *path; /* JSON Pointer: "/model_state_dict/conv1.weight" */
	enum dtype dtype;
	int ndim;
	int64_t *shape;	  /* ndim entries (NULL when ndim is 0) */
	int64_t *strides; /* ndim entries, in elements */
	uint64_t offset;  /* storage offset in elements */
	size_t storage;	  /* index into fmt_ckpt.storages */
};

struct fmt_ckpt {
	enum fmt_kind kind;
	struct fmt_storage *storages; /* sorted by file_off, non-overlapping */
	size_t nstorages;
	struct fmt_tensor *tensors; /* in the order the file holds them */
	size_t ntensors;
	/* From the top-level dict when it has them (SPEC 2): epoch; step or
	 * global_step; loss or val_loss (a float or a 0-d tensor's value). */
	int has_epoch, has_step, has_loss;
	int64_t epoch, step;
	double loss;
};

/* Limits checked before any allocation. fmt_limits_default fills safe values. */
struct fmt_limits {
	uint64_t max_records;	   /* zip entries */
	uint64_t max_pickle_bytes; /* size of data.pkl read into memory */
	uint64_t max_pickle_ops;   /* opcodes executed */
	uint64_t max_memo;	   /* memo entries */
	uint64_t max_depth;	   /* stack/container nesting */
	uint64_t max_tensors;
	uint64_t max_header_bytes; /* safetensors JSON header */
};
void fmt_limits_default(struct fmt_limits *lim);

/* Parses in as whatever format fmt_detect finds. On success *out belongs to
 * the caller (free with fmt_ckpt_free). Errors: CK_EFORMAT for a format not
 * read (the message names the formats that are, and for legacy torch files
 * says to re-save them with torch >= 1.6's default zip format), CK_ECORRUPT
 * for a damaged file (message names what and the byte offset), CK_ETOOBIG for
 * a limit, CK_ENOMEM, CK_EIO. Thread-safe: no shared state. */
int fmt_read(struct fmt_ckpt **out, const struct ck_input *in, const struct fmt_limits *lim);

/* The torch zip reader alone (formats/torch.c). */
int torch_zip_read(struct fmt_ckpt **out, const struct ck_input *in, const struct fmt_limits *lim);

/* The safetensors reader alone (formats/safetensors.c): validates like the
 * reference implementation (header size limit, dtype x shape = byte length,
 * contiguous non-overlapping offsets, no duplicate names). */
int safetensors_read(struct fmt_ckpt **out, const struct ck_input *in,
		     const struct fmt_limits *lim);

/* Frees c and everything it owns; accepts NULL. */
void fmt_ckpt_free(struct fmt_ckpt *c);

#endif
