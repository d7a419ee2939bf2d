"""Read an ONNX file's graph inputs, outputs and initializers without loading its weights.

A small reader of the protobuf wire format over a memory map: the signature check runs before any
ONNX Runtime session exists, and a 500 MB swapper costs a few page reads, not a parse of every
weight. Field numbers are those of onnx.proto (ModelProto.graph = 7; GraphProto.initializer = 5,
input = 11, output = 12; ValueInfoProto.name = 1, type = 2; TensorProto.dims = 1, data_type = 2,
float_data = 4, name = 8, raw_data = 9, data_location = 14).
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# onnx.TensorProto.DataType values and names
ELEM_TYPES = {1: "float", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16",
              11: "double", 16: "bfloat16"}
_NUMPY = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 10: np.float16, 11: np.float64}


class OnnxFormatError(ValueError):
    """The bytes are not a readable ONNX model."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    elem_type: str  # "float", "float16", "double", ...
    shape: tuple[int | str | None, ...]  # an int, a named dynamic axis, or None (unknown)


@dataclass(frozen=True)
class GraphIO:
    inputs: tuple[TensorInfo, ...]  # graph inputs that are not initializers (what a caller feeds)
    outputs: tuple[TensorInfo, ...]


def _varint(buf: memoryview | bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise OnnxFormatError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise OnnxFormatError("varint too long")


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int | tuple[int, int]]]:
    """(field number, wire type, varint value or (start, end) of a length-delimited field)."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield field, wire, value
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise OnnxFormatError(f"field {field} runs past its message")
            yield field, wire, (pos, pos + length)
            pos += length
        elif wire == 1:
            yield field, wire, (pos, pos + 8)
            pos += 8
        elif wire == 5:
            yield field, wire, (pos, pos + 4)
            pos += 4
        else:
            raise OnnxFormatError(f"unsupported wire type {wire}")
    if pos != end:
        raise OnnxFormatError("message overruns its length")


def _sub(buf: memoryview, span: int | tuple[int, int]) -> tuple[int, int]:
    if not isinstance(span, tuple):
        raise OnnxFormatError("expected a length-delimited field")
    return span


def _text(buf: memoryview, span: int | tuple[int, int]) -> str:
    a, b = _sub(buf, span)
    return bytes(buf[a:b]).decode("utf-8", "replace")


def _value_info(buf: memoryview, span: tuple[int, int]) -> TensorInfo:
    name, elem, dims = "", 0, []
    for f, _w, v in _fields(buf, *span):
        if f == 1:
            name = _text(buf, v)
        elif f == 2:  # TypeProto
            for tf, _tw, tv in _fields(buf, *_sub(buf, v)):
                if tf != 1:  # tensor_type
                    continue
                for ttf, _ttw, ttv in _fields(buf, *_sub(buf, tv)):
                    if ttf == 1 and isinstance(ttv, int):
                        elem = ttv
                    elif ttf == 2:  # TensorShapeProto
                        for sf, _sw, sv in _fields(buf, *_sub(buf, ttv)):
                            if sf != 1:
                                continue
                            dim: int | str | None = None
                            for df, _dw, dv in _fields(buf, *_sub(buf, sv)):
                                if df == 1 and isinstance(dv, int):
                                    dim = dv
                                elif df == 2:
                                    dim = _text(buf, dv)
                            dims.append(dim)
    return TensorInfo(name, ELEM_TYPES.get(elem, f"type{elem}"), tuple(dims))


def _tensor_name(buf: memoryview, span: tuple[int, int]) -> str:
    for f, _w, v in _fields(buf, *span):
        if f == 8:
            return _text(buf, v)
    return ""


def _graph_span(buf: memoryview) -> tuple[int, int]:
    for f, _w, v in _fields(buf, 0, len(buf)):
        if f == 7:
            return _sub(buf, v)
    raise OnnxFormatError("no graph in the model")


def _with_map(path: Path) -> tuple[mmap.mmap, memoryview]:
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        if size == 0:
            raise OnnxFormatError("empty file")
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    return mm, memoryview(mm)


def read_io(path: Path) -> GraphIO:
    """The inputs a caller feeds (graph inputs minus initializers) and the outputs, in graph order."""
    mm, buf = _with_map(path)
    try:
        inputs, outputs, inits = [], [], set()
        for f, _w, v in _fields(buf, *_graph_span(buf)):
            if f == 11:
                inputs.append(_value_info(buf, _sub(buf, v)))
            elif f == 12:
                outputs.append(_value_info(buf, _sub(buf, v)))
            elif f == 5:
                inits.add(_tensor_name(buf, _sub(buf, v)))
        return GraphIO(tuple(i for i in inputs if i.name not in inits), tuple(outputs))
    finally:
        buf.release()
        mm.close()


def last_initializer(path: Path) -> np.ndarray:
    """The graph's last initializer as an array (inswapper keeps its emap there)."""
    mm, buf = _with_map(path)
    try:
        last = None
        for f, _w, v in _fields(buf, *_graph_span(buf)):
            if f == 5:
                last = _sub(buf, v)
        if last is None:
            raise OnnxFormatError("the graph has no initializer")
        dims: list[int] = []
        dtype, raw, floats = 0, None, None
        for f, w, v in _fields(buf, *last):
            if f == 1 and w == 0 and isinstance(v, int):
                dims.append(v)
            elif f == 1 and w == 2:
                a, b = _sub(buf, v)
                pos = a
                while pos < b:
                    d, pos = _varint(buf, pos)
                    dims.append(d)
            elif f == 2 and isinstance(v, int):
                dtype = v
            elif f == 4 and w == 2:
                floats = _sub(buf, v)
            elif f == 9:
                raw = _sub(buf, v)
            elif f == 14 and v == 1:
                raise OnnxFormatError("the initializer's data is stored outside the file")
        if dtype not in _NUMPY:
            raise OnnxFormatError(f"initializer of unsupported data type {dtype}")
        span = raw if raw is not None else (floats if dtype == 1 else None)
        if span is None:
            raise OnnxFormatError("initializer without raw or float data")
        arr = np.frombuffer(bytes(buf[span[0]:span[1]]), dtype=np.dtype(_NUMPY[dtype]).newbyteorder("<"))
        if arr.size != int(np.prod(dims)):
            raise OnnxFormatError(f"initializer holds {arr.size} values for shape {dims}")
        return arr.reshape(dims).astype(_NUMPY[dtype])
    finally:
        buf.release()
        mm.close()
