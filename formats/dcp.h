/*
 * dcp.h: the .metadata file of a torch.distributed.checkpoint directory,
 * read by the restricted pickle machine (pickle.h), never evaluated.
 *
 * .metadata is a pickled Metadata object (torch 1.13's
 * torch.distributed._shard.checkpoint.metadata classes, 2.x's
 * torch.distributed.checkpoint.metadata ones): for every key of the saved
 * state_dict either a TensorStorageMetadata (dtype, full size, the chunks
 * each rank wrote: offsets and sizes) or a BytesStorageMetadata (a pickled
 * value), and storage_data: where each chunk's bytes are (a file of the
 * directory, an offset and a length: one torch.save archive there). 2.x
 * flattens nested state_dicts and keeps each key's path in planner_data.
 * docs/dcp-format.md has the format as torch writes it.
 *
 * dcp_meta_read checks what 2.x's planner checks and more: every chunk
 * inside its tensor, no two overlapping, together covering every element,
 * each with its storage entry, no duplicate keys. Whether the files hold
 * what the entries say is for the caller, which has them (api/dcp.c).
 */
#ifndef CK_DCP_H
#define CK_DCP_H

#include <stddef.h>
#include <stdint.h>

#include "budget.h"
#include "checkpoint.h"
#include "tensor.h"

struct dcp_chunk {
	int64_t *offsets, *sizes; /* ndim entries each (the tensor's) */
	const char *file;	  /* relative_path: "__0_0.distcp" */
	uint64_t file_off;	  /* where the item (one torch.save archive) starts */
	uint64_t length;	  /* its bytes */
};

struct dcp_tensor {
	const char *fqn;  /* the state_dict key as saved ("model.fc.weight") */
	const char *path; /* JSON Pointer: planner_data's path when there is one */
	enum dtype dtype;
	int ndim;
	int64_t *size; /* ndim entries */
	struct dcp_chunk *chunks;
	size_t nchunks;
};

struct dcp_bytes {
	const char *fqn, *path;
	const char *file;
	uint64_t file_off, length;
};

struct dcp_meta {
	struct dcp_tensor *tensors; /* in the order of state_dict_metadata */
	size_t ntensors;
	struct dcp_bytes *bytes; /* non-tensor values */
	size_t nbytes;
	/* Private: the region everything above lives in, and its budget. */
	struct fmt_region mem;
	struct fmt_budget *budget;
};

/* Reads the .metadata pickle buf[0..len). Errors: CK_ECORRUPT for a damaged
 * pickle or an inconsistent Metadata (the message names what and where:
 * the key, the chunk, its offsets), CK_EFORMAT for what ckptd does not read
 * (not a Metadata; storage transforms of 2.x's extensions), CK_ETOOBIG for
 * a limit (lim as in fmt_read; NULL: defaults), CK_ENOMEM. Free with
 * dcp_meta_free. */
int dcp_meta_read(struct dcp_meta **out, const uint8_t *buf, size_t len,
		  const struct fmt_limits *lim);
void dcp_meta_free(struct dcp_meta *m);

/* 1 when name's last segment is ".metadata" (what DCP names the file). */
int dcp_is_metadata_name(const char *name);

#endif
