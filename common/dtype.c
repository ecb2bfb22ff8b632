/*
 * dtype.c: dtype names, element sizes and torch's legacy storage class names
 * (see dtype.h).
 */
#include "dtype.h"

#include <string.h>

static const struct {
	const char *name;
	size_t size;
	const char *storage; /* torch's typed storage class, or NULL */
	int is_float;
} dtypes[DT__COUNT] = {
    [DT_INVALID] = {"invalid", 0, NULL, 0},
    [DT_FLOAT64] = {"float64", 8, "DoubleStorage", 1},
    [DT_FLOAT32] = {"float32", 4, "FloatStorage", 1},
    [DT_FLOAT16] = {"float16", 2, "HalfStorage", 1},
    [DT_BFLOAT16] = {"bfloat16", 2, "BFloat16Storage", 1},
    [DT_FLOAT8_E4M3FN] = {"float8_e4m3fn", 1, NULL, 1},
    [DT_FLOAT8_E5M2] = {"float8_e5m2", 1, NULL, 1},
    [DT_FLOAT8_E4M3FNUZ] = {"float8_e4m3fnuz", 1, NULL, 1},
    [DT_FLOAT8_E5M2FNUZ] = {"float8_e5m2fnuz", 1, NULL, 1},
    [DT_INT64] = {"int64", 8, "LongStorage", 0},
    [DT_INT32] = {"int32", 4, "IntStorage", 0},
    [DT_INT16] = {"int16", 2, "ShortStorage", 0},
    [DT_INT8] = {"int8", 1, "CharStorage", 0},
    [DT_UINT8] = {"uint8", 1, "ByteStorage", 0},
    [DT_UINT16] = {"uint16", 2, NULL, 0},
    [DT_UINT32] = {"uint32", 4, NULL, 0},
    [DT_UINT64] = {"uint64", 8, NULL, 0},
    [DT_BOOL] = {"bool", 1, "BoolStorage", 0},
    [DT_COMPLEX64] = {"complex64", 8, "ComplexFloatStorage", 0},
    [DT_COMPLEX128] = {"complex128", 16, "ComplexDoubleStorage", 0},
    [DT_COMPLEX32] = {"complex32", 4, NULL, 0},
    [DT_QINT8] = {"qint8", 1, "QInt8Storage", 0},
    [DT_QUINT8] = {"quint8", 1, "QUInt8Storage", 0},
    [DT_QINT32] = {"qint32", 4, "QInt32Storage", 0},
    [DT_QUINT4X2] = {"quint4x2", 1, "QUInt4x2Storage", 0},
    [DT_QUINT2X4] = {"quint2x4", 1, "QUInt2x4Storage", 0},
};

const char *dtype_name(enum dtype dt)
{
	if ((int)dt <= DT_INVALID || dt >= DT__COUNT)
		return "invalid";
	return dtypes[dt].name;
}

enum dtype dtype_from_name(const char *name)
{
	for (int i = 1; i < DT__COUNT; i++)
		if (!strcmp(dtypes[i].name, name))
			return (enum dtype)i;
	return DT_INVALID;
}

size_t dtype_size(enum dtype dt)
{
	if ((int)dt <= DT_INVALID || dt >= DT__COUNT)
		return 0;
	return dtypes[dt].size;
}

const char *dtype_storage_class(enum dtype dt)
{
	if ((int)dt <= DT_INVALID || dt >= DT__COUNT)
		return NULL;
	return dtypes[dt].storage;
}

enum dtype dtype_from_storage_class(const char *cls)
{
	for (int i = 1; i < DT__COUNT; i++)
		if (dtypes[i].storage && !strcmp(dtypes[i].storage, cls))
			return (enum dtype)i;
	return DT_INVALID;
}

int dtype_is_float(enum dtype dt)
{
	if ((int)dt <= DT_INVALID || dt >= DT__COUNT)
		return 0;
	return dtypes[dt].is_float;
}
