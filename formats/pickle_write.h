/*
 * pickle_write.h: a small pickle writer (protocol 2), enough to emit what
 * torch.save writes for a flat state_dict.
 *
 * The low-level calls append one opcode each to a growing buffer; errors are
 * sticky (checked once by pickle_writer_finish). pickle_write_state_dict
 * emits the whole data.pkl of a torch zip file:
 *
 *   collections.OrderedDict() then, per tensor, name ->
 *   torch._utils._rebuild_tensor_v2(
 *       BINPERSID(('storage', torch.<Class>Storage, key, 'cpu', numel)),
 *       storage_offset, size, stride, False, collections.OrderedDict())
 *
 * The persistent id tuple of each storage is memoized, so views of one
 * storage (tied weights) name one key, as torch.save does.
 */
#ifndef CK_PICKLE_WRITE_H
#define CK_PICKLE_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "plan.h"

struct pickle_writer;

/* A new empty writer in *out (the caller's, free with pickle_writer_free).
 * Returns 0 or CK_ENOMEM. */
int pickle_writer_new(struct pickle_writer **out);
void pickle_writer_free(struct pickle_writer *w);

void pickle_proto(struct pickle_writer *w, int version);
void pickle_global(struct pickle_writer *w, const char *module, const char *name);
/* Memoizes the top of the stack; returns the memo index. */
uint32_t pickle_put(struct pickle_writer *w);
void pickle_get(struct pickle_writer *w, uint32_t idx);
void pickle_mark(struct pickle_writer *w);
/* A tuple of the top n items (n <= 3 without a mark) or, with n < 0, of the
 * items above the last mark. */
void pickle_tuple(struct pickle_writer *w, int n);
void pickle_int(struct pickle_writer *w, int64_t v);
void pickle_uint(struct pickle_writer *w, uint64_t v);
void pickle_unicode(struct pickle_writer *w, const char *s, size_t len);
void pickle_bool(struct pickle_writer *w, int v);
void pickle_none(struct pickle_writer *w);
void pickle_reduce(struct pickle_writer *w);
void pickle_binpersid(struct pickle_writer *w);
void pickle_setitems(struct pickle_writer *w);
void pickle_stop(struct pickle_writer *w);

/* Hands the bytes to *out / *outlen (the caller's, free()) and frees w.
 * Returns 0 or the first error (then *out is NULL). */
int pickle_writer_finish(uint8_t **out, size_t *outlen, struct pickle_writer *w);

/* The data.pkl of a torch zip holding views[0..nviews) as a flat
 * OrderedDict. keys[i] is the record key of storages[i] (NULL for a storage
 * no view uses). Each view's dtype must be its storage's, and torch must have
 * a storage class for it (CK_EINVALID naming the tensor otherwise). *out is
 * the caller's (free()). */
int pickle_write_state_dict(uint8_t **out, size_t *outlen, const struct plan_view *views,
			    size_t nviews, const struct plan_storage *storages, size_t nstorages,
			    char *const *keys);

#endif
