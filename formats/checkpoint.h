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
 * The parsers' memory is bounded by an absolute budget, per upload and for
 * all uploads at once (budget.h): struct fmt_limits names the budget, and a
 * parsed checkpoint stays charged to it until fmt_ckpt_free.
 *
 * The formats module never touches SQLite, the disk layout or HTTP.
 */
#ifndef CK_CHECKPOINT_H
#define CK_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "budget.h"
#include "input.h"
#include "tensor.h"

enum fmt_kind {
	FMT_UNKNOWN = 0,
	FMT_TORCH_ZIP,
	FMT_SAFETENSORS,
	FMT_TORCH_LEGACY,
};

/* The formats ckptd reads, for the messages of CK_EFORMAT (415). */
#define FMT_READS                                                                                  \
	"PyTorch zip (torch.save since 1.6), PyTorch legacy (torch.save before 1.6, or with "      \
	"_use_new_zipfile_serialization=False) and safetensors"

/* "torch-zip", "safetensors", "torch-legacy", "unknown". */
const char *fmt_kind_name(enum fmt_kind k);

/* Sniffs the first bytes into *out: zip local-header magic -> FMT_TORCH_ZIP;
 * a pickle protocol 2-5 opcode (0x80, 2..5), which opens the legacy format's
 * magic number pickle -> FMT_TORCH_LEGACY; 8-byte little-endian length followed by '{' ->
 * FMT_SAFETENSORS; else FMT_UNKNOWN. Returns 0, or CK_EIO when the bytes
 * cannot be read (never reported as an unknown format). */
int fmt_detect(enum fmt_kind *out, const struct ck_input *in);

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
	/* Private: the memory of everything above (one region, budget.h) and
	 * the budget it stays charged to until fmt_ckpt_free. */
	struct fmt_region mem;
	struct fmt_budget *budget;
};

/* Limits checked before any allocation. fmt_limits_default fills safe values
 * and the process's memory budget (fmt_budget_process). */
struct fmt_limits {
	uint64_t max_records;	   /* zip entries; storages of a legacy torch file */
	uint64_t max_pickle_bytes; /* size of data.pkl (or of one legacy pickle) read into memory */
	uint64_t max_pickle_ops;   /* opcodes executed */
	uint64_t max_memo;	   /* memo entries */
	uint64_t max_depth;	   /* stack/container nesting */
	uint64_t max_tensors;
	uint64_t max_header_bytes; /* safetensors JSON header */
	/* Bytes of memory, per upload and for all at once (budget.h); NULL is
	 * the process's budget: a parse is never unbounded. Borrowed: must
	 * outlive every checkpoint parsed with it. */
	struct fmt_budget *budget;
};
void fmt_limits_default(struct fmt_limits *lim);

/* Parses in as whatever format fmt_detect finds. On success *out belongs to
 * the caller (free with fmt_ckpt_free; its memory stays charged to the
 * budget until then). Errors: CK_EFORMAT for a format not read (the message
 * names the formats that are), CK_ECORRUPT for a damaged
 * file (message names what and the byte offset), CK_ETOOBIG for a limit or
 * the memory budget (the message names which), CK_ENOMEM, CK_EIO. lim NULL:
 * fmt_limits_default. Thread-safe: the only shared state is the budget's
 * atomic counter. */
int fmt_read(struct fmt_ckpt **out, const struct ck_input *in, const struct fmt_limits *lim);

/* The torch zip reader alone (formats/torch.c). */
int torch_zip_read(struct fmt_ckpt **out, const struct ck_input *in, const struct fmt_limits *lim);

/* 1 when a zip record's name is a torch storage's, <top>/data/<key>: what the
 * upload may send ahead while the rest arrives (store_early_offer). */
int torch_zip_storage_name(const char *name, size_t len);

/* The legacy torch reader alone (formats/torch_legacy.c): torch.save before
 * 1.6, or with _use_new_zipfile_serialization=False. Its storages are the
 * storages' data without the element count torch writes before each, so they
 * are the same bytes as the zip format's records. max_records bounds the
 * storage key list. */
int torch_legacy_read(struct fmt_ckpt **out, const struct ck_input *in,
		      const struct fmt_limits *lim);

/* The safetensors reader alone (formats/safetensors.c): validates like the
 * reference implementation (header size limit, dtype x shape = byte length,
 * contiguous non-overlapping offsets, no duplicate names). */
int safetensors_read(struct fmt_ckpt **out, const struct ck_input *in,
		     const struct fmt_limits *lim);

/* A file of several torch.save archives one after another with other
 * bytes between (torch.distributed.checkpoint's .distcp files;
 * formats/items.c): each archive found, [off, off + size) of the file,
 * parsed by torch_zip_read as a file of its own (its storages' file_off
 * count from off). Bytes that are no archive are passed over; a file with
 * none gives n = 0. Errors: CK_ETOOBIG past max_records archives or the
 * memory budget, CK_ENOMEM, CK_EIO; never CK_ECORRUPT (what does not parse
 * is simply not an archive). Free with fmt_items_free. */
struct fmt_item {
	uint64_t off, size;
	struct fmt_ckpt *ck;
};
int fmt_read_items(struct fmt_item **out, size_t *n, const struct ck_input *in,
		   const struct fmt_limits *lim);
/* fmt_read_items, told where record payloads lie: skip holds nskip
 * disjoint spans [off, off + len) of the file in offset order (those
 * formats/zip_scan.c hashed as the upload arrived), inside which no end
 * record is looked for, so the pass reads only the bytes between them. */
struct fmt_span {
	uint64_t off, len;
};
int fmt_read_items_past(struct fmt_item **out, size_t *n, const struct ck_input *in,
			const struct fmt_limits *lim, const struct fmt_span *skip, size_t nskip);
void fmt_items_free(struct fmt_item *v, size_t n);

/* Frees c and everything it owns, and releases its charge; accepts NULL.
 * On a checkpoint a reader has not handed over (fmt_ckpt_keep) it does
 * nothing: that memory goes with the reader's meter. */
void fmt_ckpt_free(struct fmt_ckpt *c);

/* For the readers, before returning c: c, its tables and strings were
 * allocated from m's FMT_RESULT region; the region and its charge move to
 * c, so that they outlive the meter until fmt_ckpt_free. */
void fmt_ckpt_keep(struct fmt_ckpt *c, struct fmt_meter *m);

#endif
