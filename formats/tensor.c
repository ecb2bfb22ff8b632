/*
 * tensor.c: view geometry (see tensor.h); dtypes live in common/dtype.c.
 */
#include "tensor.h"

#include <string.h>

#include "../common/err.h"

#define NUMEL_MAX (UINT64_C(1) << 62)

int tensor_numel(uint64_t *out, int ndim, const int64_t *shape)
{
	uint64_t n = 1;

	*out = 0;
	if (ndim < 0 || ndim > TENSOR_MAX_NDIM)
		return ck_error(CK_EINVALID, "tensor: %d dimensions", ndim);
	for (int i = 0; i < ndim; i++) {
		if (shape[i] < 0)
			return ck_error(CK_EINVALID, "tensor: negative size %lld in dimension %d",
					(long long)shape[i], i);
		if (shape[i] == 0) {
			n = 0;
			continue;
		}
		if (n != 0 && (uint64_t)shape[i] > NUMEL_MAX / n)
			return ck_error(CK_ETOOBIG, "tensor: element count overflows 2^62");
		n *= (uint64_t)shape[i];
	}
	*out = n;
	return 0;
}

int tensor_extent(uint64_t *out, int ndim, const int64_t *shape, const int64_t *strides,
		  uint64_t offset)
{
	uint64_t ext;

	*out = 0;
	if (ndim < 0 || ndim > TENSOR_MAX_NDIM)
		return ck_error(CK_EINVALID, "tensor: %d dimensions", ndim);
	for (int i = 0; i < ndim; i++) {
		if (shape[i] < 0 || strides[i] < 0)
			return ck_error(CK_EINVALID,
					"tensor: negative size or stride in dimension %d", i);
		if (shape[i] == 0)
			return 0;
	}
	if (offset > NUMEL_MAX)
		return ck_error(CK_EINVALID, "tensor: storage offset %llu too large",
				(unsigned long long)offset);
	ext = offset + 1;
	for (int i = 0; i < ndim; i++) {
		uint64_t d = (uint64_t)shape[i] - 1, s = (uint64_t)strides[i];

		if (d != 0 && s > NUMEL_MAX / d)
			return ck_error(CK_EINVALID, "tensor: view extent overflows");
		if (d * s > NUMEL_MAX - ext)
			return ck_error(CK_EINVALID, "tensor: view extent overflows");
		ext += d * s;
	}
	*out = ext;
	return 0;
}
