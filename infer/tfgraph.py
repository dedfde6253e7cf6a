"""TensorFlow GraphDef (.pb) reader built on the protobuf wire format, no TensorFlow needed (the writer, for test
fixtures, is tests/fixtures/tfgraph_write.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from infer.errors import MODEL_HINT, ModelError, unusable_model

# TensorFlow DataType enum values (tensorflow/core/framework/types.proto).
DT_FLOAT = 1
DT_DOUBLE = 2
DT_INT32 = 3
DT_UINT8 = 4
DT_INT16 = 5
DT_INT8 = 6
DT_STRING = 7
DT_COMPLEX64 = 8
DT_INT64 = 9
DT_BOOL = 10
DT_QINT8 = 11
DT_QUINT8 = 12
DT_QINT32 = 13
DT_BFLOAT16 = 14
DT_QINT16 = 15
DT_QUINT16 = 16
DT_UINT16 = 17
DT_COMPLEX128 = 18
DT_HALF = 19
DT_UINT32 = 22
DT_UINT64 = 23

# How each dtype's elements sit in tensor_content (little-endian) and which typed field holds them otherwise.
_NUMPY_DTYPE: dict[int, str] = {
    DT_FLOAT: "<f4",
    DT_DOUBLE: "<f8",
    DT_INT32: "<i4",
    DT_UINT8: "u1",
    DT_INT16: "<i2",
    DT_INT8: "i1",
    DT_COMPLEX64: "<c8",
    DT_INT64: "<i8",
    DT_BOOL: "?",
    DT_QINT8: "i1",
    DT_QUINT8: "u1",
    DT_QINT32: "<i4",
    DT_BFLOAT16: "<u2",  # raw bits; widened to float32 on decode
    DT_QINT16: "<i2",
    DT_QUINT16: "<u2",
    DT_UINT16: "<u2",
    DT_COMPLEX128: "<c16",
    DT_HALF: "<f2",
    DT_UINT32: "<u4",
    DT_UINT64: "<u8",
}
_FROM_NUMPY: dict[str, int] = {
    "float32": DT_FLOAT,
    "float64": DT_DOUBLE,
    "int32": DT_INT32,
    "uint8": DT_UINT8,
    "int16": DT_INT16,
    "int8": DT_INT8,
    "int64": DT_INT64,
    "bool": DT_BOOL,
    "uint16": DT_UINT16,
    "float16": DT_HALF,
    "uint32": DT_UINT32,
    "uint64": DT_UINT64,
    "complex64": DT_COMPLEX64,
    "complex128": DT_COMPLEX128,
}
_INT_VAL_TYPES = {DT_INT32, DT_INT16, DT_INT8, DT_UINT8, DT_QINT8, DT_QUINT8, DT_QINT16, DT_QUINT16, DT_UINT16, DT_QINT32}

# Protobuf wire types.
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5

_HINT = MODEL_HINT


class DType(int):
    """A TensorFlow DataType attribute value; equal to its enum int, but written back as a `type` attr."""

    def __repr__(self) -> str:
        return f"DType({int(self)})"


class Shape(list):
    """A TensorShapeProto: dimension sizes, -1 where unknown; `unknown_rank` when even the rank is unknown."""

    def __init__(self, dims: Any = (), unknown_rank: bool = False):
        super().__init__(int(d) for d in dims)
        self.unknown_rank = unknown_rank

    def __repr__(self) -> str:
        return "Shape(unknown rank)" if self.unknown_rank else f"Shape({list(self)})"


@dataclass
class Tensor:
    """An array with an explicit TensorFlow dtype, for writing dtypes numpy lacks (quint8, qint32...)."""

    value: np.ndarray
    dtype: int
    content: bool = True  # store as raw tensor_content even when it holds a single value


@dataclass
class Node:
    """One NodeDef: attrs decoded to Python values (see module docs in `read_graph`)."""

    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    device: str = ""


@dataclass
class Graph:
    """A GraphDef's nodes in file order, with lookups by name."""

    nodes: list[Node]
    producer: int = 0
    min_consumer: int = 0

    def __post_init__(self) -> None:
        self._by_name: dict[str, Node] = {n.name: n for n in self.nodes}

    def node(self, name: str) -> Node:
        name = input_node_name(name)
        try:
            return self._by_name[name]
        except KeyError:
            raise ModelError(f"the model has no node named {name!r}; {_HINT}") from None

    def __contains__(self, name: str) -> bool:
        return input_node_name(name) in self._by_name

    def const(self, name: str) -> np.ndarray:
        """The value a constant node produces: a Const's array, or a quint8 Dequantize (MIN_FIRST) decoded.

        Floating tensors come back as float32; integer Consts keep their integer dtype.
        """
        node = self.node(name)
        if node.op == "Const":
            value = node.attrs.get("value")
            if not isinstance(value, np.ndarray):
                raise ModelError(f"Const node {node.name!r} has no tensor value; {_HINT}")
            if value.dtype.kind in "fc":
                return value.astype(np.float32, copy=False)
            return value
        if node.op == "Identity" and node.inputs:
            return self.const(node.inputs[0])
        if node.op == "Dequantize":
            mode = node.attrs.get("mode", "MIN_COMBINED")
            if mode != "MIN_FIRST" or int(node.attrs.get("T", -1)) != DT_QUINT8 or len(node.inputs) < 3:
                raise ModelError(
                    f"Dequantize node {node.name!r} uses mode {mode!r} with type {node.attrs.get('T')}; "
                    "only quint8 weights in MIN_FIRST mode are supported"
                )
            q = self.const(node.inputs[0])
            lo = self.const(node.inputs[1])
            hi = self.const(node.inputs[2])
            if q.dtype != np.uint8 or lo.size != 1 or hi.size != 1:
                raise ModelError(f"Dequantize node {node.name!r} does not have quint8 data and scalar min/max; {_HINT}")
            return dequantize_min_first(q, float(lo.reshape(-1)[0]), float(hi.reshape(-1)[0]))
        raise ModelError(f"node {node.name!r} is a {node.op}, not a constant")


def input_node_name(ref: str) -> str:
    """`^name` (control input) and `name:1` (second output) both refer to node `name`."""
    ref = ref[1:] if ref.startswith("^") else ref
    head, sep, tail = ref.rpartition(":")
    return head if sep and tail.isdigit() else ref


# ---------------------------------------------------------------- quantization


def dequantize_min_first(q: np.ndarray, min_value: float, max_value: float) -> np.ndarray:
    """quint8 -> float32 exactly as OpenCV's TensorFlow importer folds a MIN_FIRST Dequantize.

    OpenCV computes, all in float32: `scale = (max - min) / 255`, `shift = scale * cvRound(min / scale)`,
    then `Mat::convertTo(q, CV_32F, scale, shift)`. cvRound rounds half to even (it is the SSE2
    convert instruction under the default rounding mode), which numpy's `rint` matches; convertTo's
    vector path computes `q * scale + shift` with a fused multiply-add, i.e. one rounding, which
    float64 arithmetic reproduces here because the exact sum fits in a double.
    """
    lo = np.float32(min_value)
    scale = np.float32((np.float32(max_value) - lo) / np.float32(255.0))
    if not scale >= 0:
        raise ModelError(f"quantized weights have min {min_value} above max {max_value}; {_HINT}")
    steps = np.rint(lo / scale) if scale > 0 else np.float32(0.0)
    shift = np.float32(scale * np.float32(steps))
    q = np.asarray(q)
    out = q.astype(np.float64) * np.float64(scale) + np.float64(shift)
    return out.astype(np.float32).reshape(q.shape)


# ---------------------------------------------------------------- wire-format reading


class _WireError(Exception):
    pass


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise _WireError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _WireError("varint longer than 10 bytes")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, Any]]:
    """Yields (field number, wire type, value): ints for varint/fixed, memoryviews for length-delimited."""
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise _WireError("field number 0")
        if wt == _VARINT:
            value, pos = _varint(buf, pos)
        elif wt == _LEN:
            n, pos = _varint(buf, pos)
            if pos + n > end:
                raise _WireError("length-delimited field runs past the end")
            value = buf[pos : pos + n]
            pos += n
        elif wt == _I32:
            if pos + 4 > end:
                raise _WireError("truncated fixed32")
            value = bytes(buf[pos : pos + 4])
            pos += 4
        elif wt == _I64:
            if pos + 8 > end:
                raise _WireError("truncated fixed64")
            value = bytes(buf[pos : pos + 8])
            pos += 8
        else:
            raise _WireError(f"unsupported wire type {wt}")
        yield num, wt, value


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _string(value: Any, wt: int) -> str:
    if wt != _LEN:
        raise _WireError("expected a string")
    return bytes(value).decode("utf-8")


def _text_or_bytes(value: memoryview) -> str | bytes:
    raw = bytes(value)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _packed_varints(value: Any, wt: int) -> list[int]:
    if wt == _VARINT:
        return [value]
    if wt != _LEN:
        raise _WireError("expected varints")
    out = []
    pos = 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        out.append(v)
    return out


def _packed_fixed(value: Any, wt: int, fmt: str) -> np.ndarray:
    size = np.dtype(fmt).itemsize
    if wt == _LEN and len(value) % size == 0:
        return np.frombuffer(value, dtype=fmt)
    if (wt == _I32 and size == 4) or (wt == _I64 and size == 8):
        return np.frombuffer(value, dtype=fmt)
    raise _WireError("malformed fixed-width values")


def _parse_shape(buf: memoryview) -> Shape:
    dims: list[int] = []
    unknown = False
    for num, wt, value in _fields(buf):
        if num == 2 and wt == _LEN:
            size = 0
            for dnum, dwt, dvalue in _fields(value):
                if dnum == 1 and dwt == _VARINT:
                    size = _signed64(dvalue)
            dims.append(size)
        elif num == 3 and wt == _VARINT:
            unknown = bool(value)
    return Shape(dims, unknown_rank=unknown)


def _parse_tensor(buf: memoryview) -> np.ndarray:
    dtype = 0
    shape = Shape()
    content: memoryview | None = None
    typed: dict[int, list[Any]] = {}
    for num, wt, value in _fields(buf):
        if num == 1 and wt == _VARINT:
            dtype = value
        elif num == 2 and wt == _LEN:
            shape = _parse_shape(value)
        elif num == 4 and wt == _LEN:
            content = value
        elif num in (5, 6, 7, 8, 10, 11, 13, 16, 17):
            typed.setdefault(num, []).append((wt, value))
    if shape.unknown_rank or any(d < 0 for d in shape):
        raise _WireError("a tensor value has an unknown shape")
    count = math.prod(shape)
    if dtype == DT_STRING:
        strings = [bytes(v) for wt, v in typed.get(8, []) if wt == _LEN]
        return _fill(np.array(strings, dtype=object), count, shape)
    if dtype not in _NUMPY_DTYPE:
        raise _WireError(f"unsupported tensor dtype {dtype}")
    np_dtype = np.dtype(_NUMPY_DTYPE[dtype])
    if content is not None and len(content) > 0:
        if len(content) != count * np_dtype.itemsize:
            raise _WireError(
                f"tensor_content holds {len(content)} bytes, shape {list(shape)} needs {count * np_dtype.itemsize}"
            )
        arr = np.frombuffer(content, dtype=np_dtype).copy()
    else:
        arr = _typed_values(dtype, np_dtype, typed)
        arr = _fill(arr, count, shape)
    if dtype == DT_BFLOAT16:
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.reshape(tuple(shape))


def _typed_values(dtype: int, np_dtype: np.dtype, typed: dict[int, list[Any]]) -> np.ndarray:
    def cat(num: int, fmt: str) -> np.ndarray:
        parts = [_packed_fixed(v, wt, fmt) for wt, v in typed.get(num, [])]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=fmt)

    def ints(num: int) -> list[int]:
        return [x for wt, v in typed.get(num, []) for x in _packed_varints(v, wt)]

    if dtype == DT_FLOAT:
        return cat(5, "<f4")
    if dtype == DT_DOUBLE:
        return cat(6, "<f8")
    if dtype in _INT_VAL_TYPES:
        vals = [_signed64(x) for x in ints(7)]
        return np.array(vals, dtype=np.int64).astype(np_dtype)
    if dtype == DT_INT64:
        return np.array([_signed64(x) for x in ints(10)], dtype=np.int64)
    if dtype == DT_BOOL:
        return np.array([bool(x) for x in ints(11)], dtype=bool)
    if dtype in (DT_HALF, DT_BFLOAT16):
        bits = np.array(ints(13), dtype=np.uint64).astype(np.uint16)
        return bits.view(np.float16) if dtype == DT_HALF else bits
    if dtype == DT_UINT32:
        return np.array(ints(16), dtype=np.uint32)
    if dtype == DT_UINT64:
        return np.array(ints(17), dtype=np.uint64)
    if dtype in (DT_COMPLEX64, DT_COMPLEX128):
        num, fmt = (9, "<f4") if dtype == DT_COMPLEX64 else (12, "<f8")
        pairs = cat(num, fmt)
        return (pairs[0::2] + 1j * pairs[1::2]).astype(np_dtype)
    raise _WireError(f"unsupported tensor dtype {dtype}")


def _fill(arr: np.ndarray, count: int, shape: Shape) -> np.ndarray:
    """TensorFlow repeats the last listed value to fill the shape (a single value is a splat)."""
    if len(arr) == count:
        return arr
    if len(arr) > count:
        raise _WireError(f"tensor lists {len(arr)} values for shape {list(shape)}")
    if len(arr) == 0:
        return np.zeros(count, dtype=arr.dtype) if arr.dtype != object else np.full(count, b"", dtype=object)
    return np.concatenate([arr, np.full(count - len(arr), arr[-1], dtype=arr.dtype)])


def _parse_list(buf: memoryview) -> list[Any]:
    out: list[Any] = []
    for num, wt, value in _fields(buf):
        if num == 2 and wt == _LEN:
            out.append(_text_or_bytes(value))
        elif num == 3:
            out.extend(_signed64(v) for v in _packed_varints(value, wt))
        elif num == 4:
            out.extend(float(v) for v in _packed_fixed(value, wt, "<f4"))
        elif num == 5:
            out.extend(bool(v) for v in _packed_varints(value, wt))
        elif num == 6:
            out.extend(DType(v) for v in _packed_varints(value, wt))
        elif num == 7 and wt == _LEN:
            out.append(_parse_shape(value))
        elif num == 8 and wt == _LEN:
            out.append(_parse_tensor(value))
    return out


def _parse_attr(buf: memoryview) -> Any:
    result: Any = None
    for num, wt, value in _fields(buf):
        if num == 1 and wt == _LEN:
            result = _parse_list(value)
        elif num == 2 and wt == _LEN:
            result = _text_or_bytes(value)
        elif num == 3 and wt == _VARINT:
            result = _signed64(value)
        elif num == 4 and wt == _I32:
            result = float(np.frombuffer(value, dtype="<f4")[0])
        elif num == 5 and wt == _VARINT:
            result = bool(value)
        elif num == 6 and wt == _VARINT:
            result = DType(value)
        elif num == 7 and wt == _LEN:
            result = _parse_shape(value)
        elif num == 8 and wt == _LEN:
            result = _parse_tensor(value)
        elif num == 9 and wt == _LEN:
            result = _string(value, wt)
        elif num == 10 and wt == _LEN:
            result = {"func": _parse_func_name(value)}
    return result


def _parse_func_name(buf: memoryview) -> str:
    for num, wt, value in _fields(buf):
        if num == 1:
            return _string(value, wt)
    return ""


def _parse_node(buf: memoryview) -> Node:
    name = op = device = ""
    inputs: list[str] = []
    attrs: dict[str, Any] = {}
    for num, wt, value in _fields(buf):
        if num == 1:
            name = _string(value, wt)
        elif num == 2:
            op = _string(value, wt)
        elif num == 3:
            inputs.append(_string(value, wt))
        elif num == 4:
            device = _string(value, wt)
        elif num == 5:
            if wt != _LEN:
                raise _WireError("malformed attr entry")
            key = ""
            attr_value: Any = None
            for enum_, ewt, evalue in _fields(value):
                if enum_ == 1:
                    key = _string(evalue, ewt)
                elif enum_ == 2 and ewt == _LEN:
                    attr_value = _parse_attr(evalue)
            attrs[key] = attr_value
    if not name or not op:
        raise _WireError("a node without a name or op")
    return Node(name=name, op=op, inputs=inputs, attrs=attrs, device=device)


def parse_graph(data: bytes | memoryview, source: str = "the model") -> Graph:
    """Decodes GraphDef bytes; raises ModelError for anything that is not a usable graph."""
    buf = memoryview(data)
    nodes: list[Node] = []
    producer = min_consumer = 0
    try:
        for num, wt, value in _fields(buf):
            if num == 1 and wt == _LEN:
                nodes.append(_parse_node(value))
            elif num == 4 and wt == _LEN:
                for vnum, vwt, vvalue in _fields(value):
                    if vnum == 1 and vwt == _VARINT:
                        producer = _signed64(vvalue)
                    elif vnum == 2 and vwt == _VARINT:
                        min_consumer = _signed64(vvalue)
            elif (num, wt) in ((2, _LEN), (3, _VARINT)):
                continue  # function library, deprecated version number
            else:
                raise _WireError(f"unexpected top-level field {num} (wire type {wt})")
    except (_WireError, UnicodeDecodeError, ValueError, IndexError, OverflowError) as exc:
        raise unusable_model(source, f"not a TensorFlow graph: {exc}") from None
    if not nodes:
        raise unusable_model(source, "no graph nodes: empty or not a TensorFlow .pb file")
    return Graph(nodes=nodes, producer=producer, min_consumer=min_consumer)


def read_graph(path: str | Path) -> Graph:
    """Reads a frozen TensorFlow GraphDef.

    Attribute values decode to: int (`i`), float (`f`), bool (`b`), str (`s`; bytes when not UTF-8),
    DType (`type`, an int subclass), Shape (`shape`, a list subclass), numpy array (`tensor`,
    bfloat16 widened to float32, quint8 as uint8), list (`list`) of those.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"model file {path} does not exist; {_HINT}") from None
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    return parse_graph(data, source=str(path))
