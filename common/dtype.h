/*
 * dtype.h: the element types of tensors, named as torch names them (float32,
 * bfloat16, ...), with their sizes. Shared by every layer: formats/ reads and
 * writes them, storage/ records them in the index and lets the codec pick
 * byte planes for floating-point blobs.
 */
#ifndef CK_DTYPE_H
#define CK_DTYPE_H

#include <stddef.h>
#include <stdint.h>

enum dtype {
	DT_INVALID = 0,
	DT_FLOAT64,
	DT_FLOAT32,
	DT_FLOAT16,
	DT_BFLOAT16,
	DT_FLOAT8_E4M3FN,
	DT_FLOAT8_E5M2,
	DT_FLOAT8_E4M3FNUZ,
	DT_FLOAT8_E5M2FNUZ,
	DT_INT64,
	DT_INT32,
	DT_INT16,
	DT_INT8,
	DT_UINT8,
	DT_UINT16,
	DT_UINT32,
	DT_UINT64,
	DT_BOOL,
	DT_COMPLEX64,
	DT_COMPLEX128,
	DT_COMPLEX32,
	DT_QINT8, /* quantized storages: kept and served as bytes */
	DT_QUINT8,
	DT_QINT32,
	DT_QUINT4X2,
	DT_QUINT2X4,
	DT__COUNT
};

#define TENSOR_MAX_NDIM 64

/* torch's name ("float32"); "invalid" for DT_INVALID or out of range. */
const char *dtype_name(enum dtype dt);

/* The dtype named name (torch's name), or DT_INVALID. */
enum dtype dtype_from_name(const char *name);

/* Bytes per element (1 for bool and the 8-bit types), 0 for DT_INVALID. */
size_t dtype_size(enum dtype dt);

/* The legacy typed-storage class name torch pickles for dt ("FloatStorage"),
 * or NULL when torch has none; and the reverse lookup. */
const char *dtype_storage_class(enum dtype dt);
enum dtype dtype_from_storage_class(const char *cls);

/* 1 when dt is a floating-point type (the codec splits these into planes). */
int dtype_is_float(enum dtype dt);

#endif
