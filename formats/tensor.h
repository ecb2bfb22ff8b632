/*
 * tensor.h: tensor geometry shared by every format (dtypes: common/dtype.h).
 *
 * dtypes are named as torch names them (float32, bfloat16, ...). A tensor is
 * a view on a storage: shape, strides and offset are in elements, as in torch.
 */
#ifndef CK_TENSOR_H
#define CK_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "../common/dtype.h"

/* Number of elements of shape[0..ndim) into *out; CK_ETOOBIG on overflow of
 * 2^62. An ndim of 0 is a scalar (1 element). */
int tensor_numel(uint64_t *out, int ndim, const int64_t *shape);

/* The storage extent in elements a view needs: offset + 1 + sum((shape-1) *
 * stride), or 0 when the view has no elements. CK_EINVALID on negative
 * sizes/strides or overflow. */
int tensor_extent(uint64_t *out, int ndim, const int64_t *shape, const int64_t *strides,
		  uint64_t offset);

#endif
