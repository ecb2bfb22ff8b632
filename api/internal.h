/*
 * internal.h: what the api/ files share: the app's state, the handler
 * signature and small helpers. Not for use outside api/.
 */
#ifndef CK_API_INTERNAL_H
#define CK_API_INTERNAL_H

#include <jansson.h>
#include <pthread.h>

#include "../formats/checkpoint.h"
#include "../formats/input.h"
#include "../storage/store.h"
#include "api.h"

struct token {
	char *token;
	enum scope scope;
};

struct metrics;
struct json_cache;
struct upload_pool;
struct zip_scan;

struct app {
	struct app_config cfg;
	struct store *store;
	struct token *tokens;
	size_t ntokens;
	struct fmt_limits limits;
	struct metrics *metrics;
	struct json_cache *jcache;
	struct upload_pool *uploads; /* hashing threads shared by uploads */
};

typedef int (*handler_fn)(struct resp *out, struct app *app, struct req *r);

/* Responses. json_reply takes ownership of v. */
int json_reply(struct resp *out, int status, json_t *v);

/* Validation (SPEC 2): model/run/metric names. 0 or CK_EINVALID. */
int name_check(const char *what, const char *s);

/* 1 when s is valid UTF-8; utf8_sanitize replaces each byte that is not
 * part of a valid sequence with '?', in place (JSON strings must be UTF-8,
 * and messages quote what the request or the file held). */
int utf8_valid(const char *s);
void utf8_sanitize(char *s);

/* A tag (SPEC 2): 1 to 128 bytes of UTF-8 text without control characters.
 * 0 or CK_EINVALID (api/ingest.c; PATCH checks tags the same way). */
int tag_check(const char *t);

/* Parses a decimal integer / a finite float query value; CK_EINVALID with a
 * message naming the field. */
int parse_i64(int64_t *out, const char *field, const char *s);
int parse_f64(double *out, const char *field, const char *s);

/* X-Checkpoint-Id: the id a download's {ref} resolved to ("best" and
 * "latest" name one checkpoint now, another later), so a client can record
 * what it resumed from. */
void checkpoint_id_header(struct resp *out, int64_t id);

/* Resolves {model} and {ref} (params 0 and 1) with ?run=, ?metric=, ?mode=. */
int resolve_ref(int64_t *id, struct app *app, struct req *r);

/* Rendered checkpoint JSON, kept between requests (api/checkpoints.c),
 * keyed by the id and the index's generation (store_generation), which
 * every committed change moves, whichever instance made it: no entry
 * outlives a change that could alter it (a PATCH, a delete, or an upload
 * changing how many checkpoints share a blob). Thread-safe. */
int json_cache_new(struct json_cache **out);
void json_cache_free(struct json_cache *c);

/* JSON of the index's structs, as the API shows them (api/render.c). Each
 * returns a new value, or NULL when out of memory. */
json_t *render_checkpoint(const struct index_checkpoint *c);
json_t *render_tensors(const struct index_tensors *t);
json_t *render_checkpoint_list(const struct index_checkpoint_list *l);
json_t *render_models(const struct index_model_list *l);
json_t *render_stats(const struct index_stats *s);
json_t *render_retention(const struct index_retention *p);
json_t *render_dedup(const struct index_dedup *d);
/* One file of a checkpoint of several files (its part's row), and a list. */
json_t *render_file(const char *name, const struct index_checkpoint *part);
json_t *render_files(const struct index_file_list *l);

/* Metrics (api/metrics.c). */
int metrics_new(struct metrics **out);
void metrics_free(struct metrics *m);
int metrics_render(char **out, size_t *len, struct metrics *m, struct app *app);

/* The hashing threads of uploads (api/upload.c): one per CPU (2 to 16),
 * started with the first body byte of the first upload, shared by all.
 * upload_pool_free stops them; every upload must have been freed first. */
int upload_pool_new(struct upload_pool **out);
void upload_pool_free(struct upload_pool *p);

/* The zip records scanned while r's upload streamed in, for
 * zip_scan_lookup; NULL when r has no upload. Valid after api_upload_end,
 * until api_upload_free. */
const struct zip_scan *upload_zip_scan(const struct req *r);
/* A thin upload's verdicts (SPEC 3.1; 0 for any other upload).
 * upload_thin_missing fills out with 409 missing_blobs and returns 1 when
 * its R frames named blobs the store lacks; check_hash: CK_ECORRUPT when
 * the rebuilt file's SHA-256 is not the E frame's; check_refs: CK_ECORRUPT
 * when an R frame is not exactly one storage of the parsed file, or a
 * storage overlaps one without being it. */
int upload_thin_missing(struct resp *out, const struct req *r);
int upload_thin_check_hash(const struct req *r);
int upload_thin_check_refs(const struct req *r, const struct fmt_ckpt *ck);
/* 1 when [off, off+len) of a thin upload is exactly one of its R frames,
 * whose bytes are not in the spool: *h is its blob, *crc the CRC-32 of its
 * bytes (read at api_upload_end); 0 otherwise. */
int upload_thin_storage(const struct req *r, uint64_t off, uint64_t len, struct hash *h,
			uint32_t *crc);
/* Writes a thin upload's R frames' bytes into the holes of its spool (for
 * a parse that failed, to be run again on the real file) -> 1 when it did,
 * 0 when there was nothing to fill, or an error. */
int upload_thin_fill(struct req *r);
/* What the upload's store sent while it arrived (store.h), or NULL. */
struct store_early *upload_early(const struct req *r);
/* Ends those sends (store_early_free) once the body has been parsed and
 * committed or refused, before the answer: a client told "refused" finds
 * nothing of its upload left in the store. */
void upload_early_end(struct req *r);

/* Writing once (api/upload.c): the ranges of r's upload written to files
 * of their own, for its ck_input (NULL, 0: none); upload_direct puts into
 * direct[i] the file that is exactly storage i (NULL: the storage's bytes
 * are in the spool) and copies every other such range back into the spool;
 * upload_hash_range hashes a range of the file wherever its bytes are. */
void upload_view(const struct req *r, const struct ck_extent **ext, size_t *n);
int upload_direct(struct req *r, struct store_direct **direct, const struct index_storage *stor,
		  size_t n);
int upload_hash_range(struct hash *h, uint32_t *crc, struct req *r, uint64_t off, uint64_t len);

/* The upload pipeline (api/ingest.c): parse the spooled body, then commit
 * it through the store (which applies retention). *out is the checkpoint
 * JSON with its dedup counters. */
int ingest_upload(json_t **out, int64_t *id, struct app *app, struct req *r);
/* Checkpoints of several files (SPEC 3.2): open a staged one (?staged=1,
 * no body; *out its JSON), and store one file of it (PUT .../files/NAME;
 * *out the file's JSON with its dedup counters). A file in no format ckptd
 * reads, or a .distcp file, is kept as bytes ("raw"). */
int ingest_staged_open(json_t **out, int64_t *id, struct app *app, struct req *r);
int ingest_file(json_t **out, struct app *app, struct req *r);

/* A file upload's write mark (api/upload.c): its token, and the note that
 * the file's commit ended the mark (so api_upload_free leaves it). */
int upload_file_token(const struct req *r, int64_t *token);
void upload_file_written(struct req *r);
/* A file refused: its write mark goes before the answer, so that a commit
 * sent once the answer is in does not see it written still. */
void upload_file_failed(struct req *r);

/* {id} of a staged checkpoint: a decimal id from 1 (CK_EINVALID). */
int staged_id(int64_t *id, const char *s);
/* A file's name in a checkpoint of several files: a relative path of 1 to
 * 1024 bytes of UTF-8, no control character or backslash, no empty, "." or
 * ".." segment, no leading or trailing '/' (CK_EINVALID). */
int file_name_check(const char *name);
/* The name of a single upload's one file, as /file's Content-Disposition
 * and /files give it ({model}-epoch{N}.pth, else {model}-{id}.pth;
 * .safetensors for safetensors). */
void single_file_name(char *out, size_t n, const char *model, int has_epoch, int64_t epoch,
		      int64_t id, const char *format);

/* /file's generator (api/checkpoints.c) over layout l (taken over, freed
 * with the generator): the rebuilt file, each blob checked as it streams.
 * hold_id >= 0: its blobs are held against deletes (a GET; not a HEAD). */
struct file_gen;
int file_gen_new(struct file_gen **out, struct app *app, struct index_layout *l, int64_t hold_id);
long file_gen_read(void *ctx, uint64_t pos, uint8_t *buf, size_t n);
void file_gen_free(void *ctx);
void file_gen_ranged(void *ctx);

/* Holds blobs[0..n) (duplicates allowed) of checkpoint id against deletes
 * for a download (store_hold), then checks that the checkpoint still exists:
 * a delete between reading its rows and the hold may have freed them
 * (CK_ENOTFOUND then). End the hold with store_hold_end. */
int hold_blobs(struct store_hold **out, struct app *app, int64_t id, const struct hash *blobs,
	       size_t n);

/* The tensors a checkpoint serves (api/dcp.c): a torch.distributed.checkpoint
 * checkpoint's full tensors, assembled from every rank's chunks; any other
 * checkpoint's stored tensors. An assembled tensor's storage (a row of t
 * with comp[row] set) is made of pieces of src's storages: bytes [at, at +
 * len) of it are bytes [src_off, src_off + len) of src storage src. Its
 * "blob" is no stored blob: a hash of its pieces, equal when they are. */
struct tview_piece {
	uint64_t at, len;
	size_t src;
	uint64_t src_off;
};
struct tview_comp {
	struct tview_piece *p; /* in the order of at, tiling the storage */
	size_t n;
	int crc_known; /* the row's crc32 is set (else tview_crc reads the pieces) */
};
struct tview {
	struct index_tensors *t;   /* what the outputs serve */
	struct index_tensors *src; /* a DCP checkpoint's stored tensors, else NULL */
	struct tview_comp **comp;  /* per row of t->storages: pieces, or NULL */
};
/* Loads id's view; for a DCP checkpoint also checks it: CK_ECORRUPT (422)
 * naming the chunk and the file when .metadata and the files disagree. */
int tview_load(struct tview *v, struct app *app, int64_t id);
void tview_free(struct tview *v);
/* Sets the CRC-32 of assembled storage s, reading its pieces if need be. */
int tview_crc(struct tview *v, struct app *app, size_t s);
/* tview_load's checks alone (a commit). */
int tview_check(struct app *app, int64_t id);
/* A .metadata file being uploaded (in any folder: DCP's): a Metadata
 * pickle that dcp_meta_read accepts, else CK_ECORRUPT naming what is wrong. */
struct ck_input;
int tview_metadata_check(struct app *app, const struct ck_input *in);

/* Handlers. */
int h_healthz(struct resp *out, struct app *app, struct req *r);
int h_stats(struct resp *out, struct app *app, struct req *r);
int h_metrics(struct resp *out, struct app *app, struct req *r);
int h_models(struct resp *out, struct app *app, struct req *r);
int h_model_delete(struct resp *out, struct app *app, struct req *r);
int h_retention_get(struct resp *out, struct app *app, struct req *r);
int h_retention_put(struct resp *out, struct app *app, struct req *r);
int h_upload(struct resp *out, struct app *app, struct req *r);
int h_blobs_missing(struct resp *out, struct app *app, struct req *r);
int h_list(struct resp *out, struct app *app, struct req *r);
int h_get(struct resp *out, struct app *app, struct req *r);
int h_patch(struct resp *out, struct app *app, struct req *r);
int h_delete(struct resp *out, struct app *app, struct req *r);
int h_file(struct resp *out, struct app *app, struct req *r);
int h_file_put(struct resp *out, struct app *app, struct req *r);
int h_commit(struct resp *out, struct app *app, struct req *r);
int h_files(struct resp *out, struct app *app, struct req *r);
int h_file_one(struct resp *out, struct app *app, struct req *r);
int h_archive(struct resp *out, struct app *app, struct req *r);
int h_state_dict(struct resp *out, struct app *app, struct req *r);
int h_tensor(struct resp *out, struct app *app, struct req *r);
int h_diff(struct resp *out, struct app *app, struct req *r);
int h_dashboard(struct resp *out, struct app *app, struct req *r);
int h_openapi(struct resp *out, struct app *app, struct req *r);

#endif
