#!/usr/bin/env python3
"""Writes the safetensors parser cases in valid/ and invalid/ by hand
(struct.pack('<Q', n) + header + data), without the safetensors package, so
each file is exactly what its name says. Run from anywhere; rewrites both
folders. The invalid/ files also seed the fuzzer's corpus."""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def pad(h):
    h = h.encode('utf-8') if isinstance(h, str) else h
    return h + b' ' * (-len(h) % 8)


def st(header, data=b'', raw_header=False, n=None):
    h = header if raw_header else pad(json.dumps(header, separators=(',', ':')))
    if isinstance(h, str):
        h = h.encode('utf-8')
    return struct.pack('<Q', len(h) if n is None else n) + h + data


def write(kind, name, blob):
    os.makedirs(os.path.join(HERE, kind), exist_ok=True)
    with open(os.path.join(HERE, kind, name), 'wb') as f:
        f.write(blob)


f32 = struct.pack('<6f', 0, 1, 2, 3, 4, 5)
i64 = struct.pack('<2q', -7, 1 << 40)

# ---- valid ----
write('valid', 'simple.safetensors', st(
    {'__metadata__': {'format': 'pt'},
     'weight': {'dtype': 'F32', 'shape': [2, 3], 'data_offsets': [0, 24]},
     'steps': {'dtype': 'I64', 'shape': [2], 'data_offsets': [24, 40]}}, f32 + i64))

sizes = [('F64', 8), ('F32', 4), ('F16', 2), ('BF16', 2), ('F8_E4M3', 1), ('F8_E5M2', 1),
         ('I64', 8), ('I32', 4), ('I16', 2), ('I8', 1), ('U8', 1), ('U16', 2), ('U32', 4),
         ('U64', 8), ('BOOL', 1), ('C64', 8)]
hdr, data = {}, b''
for dt, sz in sizes:
    hdr['t_' + dt] = {'dtype': dt, 'shape': [3], 'data_offsets': [len(data), len(data) + 3 * sz]}
    data += bytes((len(data) + k) & 0xff for k in range(3 * sz))
write('valid', 'all_dtypes.safetensors', st(hdr, data))

write('valid', 'empty.safetensors', st({}))

# A 0-element tensor and a scalar share offset 0..0 and 0..4.
write('valid', 'zero_and_scalar.safetensors', st(
    {'none': {'dtype': 'F32', 'shape': [2, 0], 'data_offsets': [0, 0]},
     'scalar': {'dtype': 'F32', 'shape': [], 'data_offsets': [0, 4]}}, struct.pack('<f', 2.5)))

# Names needing JSON Pointer escapes, listed in another order than the data.
write('valid', 'escaped_out_of_order.safetensors', st(
    {'b': {'dtype': 'U8', 'shape': [2], 'data_offsets': [2, 4]},
     'a/b~c': {'dtype': 'U8', 'shape': [2], 'data_offsets': [0, 2]}}, b'\x01\x02\x03\x04'))

# ---- invalid ----
one = {'x': {'dtype': 'F32', 'shape': [2], 'data_offsets': [0, 8]}}
write('invalid', 'too_short.safetensors', b'\x10\x00\x00')
write('invalid', 'huge_header_length.safetensors', st(one, b'\0' * 8, n=1 << 63))
write('invalid', 'header_past_end.safetensors', st(one, b'\0' * 8, n=4096))
write('invalid', 'overlapping_offsets.safetensors', st(
    {'x': {'dtype': 'F32', 'shape': [2], 'data_offsets': [0, 8]},
     'y': {'dtype': 'F32', 'shape': [2], 'data_offsets': [4, 12]}}, b'\0' * 12))
write('invalid', 'gap_between_tensors.safetensors', st(
    {'x': {'dtype': 'F32', 'shape': [2], 'data_offsets': [0, 8]},
     'y': {'dtype': 'F32', 'shape': [2], 'data_offsets': [12, 20]}}, b'\0' * 20))
write('invalid', 'not_starting_at_zero.safetensors', st(
    {'x': {'dtype': 'F32', 'shape': [2], 'data_offsets': [4, 12]}}, b'\0' * 12))
write('invalid', 'short_data.safetensors', st(one, b'\0' * 5))
write('invalid', 'trailing_bytes.safetensors', st(one, b'\0' * 9))
write('invalid', 'wrong_size_for_shape.safetensors', st(
    {'x': {'dtype': 'F32', 'shape': [2, 3], 'data_offsets': [0, 20]}}, b'\0' * 20))
write('invalid', 'duplicate_keys.safetensors', st(
    '{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
    '"x":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', b'\0\0', raw_header=True))
write('invalid', 'not_json.safetensors', st(pad('{"x": {"dtype": "U8", '), b'\0', raw_header=True))
write('invalid', 'not_an_object.safetensors', st(pad('[1, 2]'), raw_header=True))
write('invalid', 'unknown_dtype.safetensors', st(
    {'x': {'dtype': 'F7', 'shape': [2], 'data_offsets': [0, 2]}}, b'\0\0'))
write('invalid', 'negative_shape.safetensors', st(
    {'x': {'dtype': 'U8', 'shape': [-1], 'data_offsets': [0, 0]}}))
write('invalid', 'float_shape.safetensors', st(
    {'x': {'dtype': 'U8', 'shape': [2.0], 'data_offsets': [0, 2]}}, b'\0\0'))
write('invalid', 'reversed_offsets.safetensors', st(
    {'x': {'dtype': 'U8', 'shape': [0], 'data_offsets': [2, 0]}}, b'\0\0'))
write('invalid', 'missing_offsets.safetensors', st(
    {'x': {'dtype': 'U8', 'shape': [2]}}, b'\0\0'))
write('invalid', 'metadata_not_strings.safetensors', st(
    {'__metadata__': {'epoch': 3}, **one}, b'\0' * 8))
write('invalid', 'invalid_utf8.safetensors', st(
    pad(b'{"\xff\xfe":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'), b'\0', raw_header=True))
write('invalid', 'shape_overflow.safetensors', st(
    {'x': {'dtype': 'F64', 'shape': [1 << 40, 1 << 40, 16], 'data_offsets': [0, 0]}}))
write('invalid', 'entry_not_object.safetensors', st({'x': [1, 2]}))
