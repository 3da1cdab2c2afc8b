"""A small reader of the safetensors format, in NumPy only (no torch, no `safetensors` package).

Layout of a file: an unsigned 64-bit little-endian header length N, then N bytes of UTF-8 JSON
mapping each tensor name to `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets relative to
the end of the header; an optional `__metadata__` entry holds strings), then the raw little-endian
tensor bytes. Every field is validated, so a truncated download or a foreign file gives a
`SafetensorsError` naming the file instead of garbage weights.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import struct
from typing import Any

import numpy as np

# The header of a real checkpoint is a few tens of kB; the format's own reader caps it at 100 MB.
_MAX_HEADER_BYTES = 100 * 1024 * 1024

# safetensors dtype -> stored NumPy dtype (little-endian). BF16 has no NumPy dtype: read as raw
# 16-bit words and widened by hand in `_to_array`.
_STORED = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_HALF = ("F16", "BF16")  # returned as float32


class SafetensorsError(ValueError):
  """A file that is not valid safetensors: the message names the file and what is wrong."""


def _parse_header(path: pathlib.Path, raw: bytes, data_size: int) -> dict[str, dict[str, Any]]:
  """The tensor entries of a decoded header, each checked against the data section's size."""
  try:
    header = json.loads(raw.decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise SafetensorsError(f"{path}: the header is not valid UTF-8 JSON ({e})") from None
  if not isinstance(header, dict):
    raise SafetensorsError(f"{path}: the header is not a JSON object")
  entries = {}
  for name, entry in header.items():
    if name == "__metadata__":
      continue
    where = f"{path}: tensor {name!r}"
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
      raise SafetensorsError(f"{where}: expected an object with dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in _STORED:
      raise SafetensorsError(f"{where}: unsupported dtype {dtype!r} (supported: {sorted(_STORED)})")
    # bool is a subclass of int in Python; exclude it so `true` is not read as a dimension of 1.
    if not (isinstance(shape, list) and all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
      raise SafetensorsError(f"{where}: shape {shape!r} is not a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(
        isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
      raise SafetensorsError(f"{where}: data_offsets {offsets!r} is not [begin, end]")
    begin, end = offsets
    if not 0 <= begin <= end <= data_size:
      raise SafetensorsError(
          f"{where}: data_offsets [{begin}, {end}] lie outside the data section of {data_size} "
          "bytes (a truncated file?)")
    expected = math.prod(shape) * _STORED[dtype].itemsize
    if end - begin != expected:
      raise SafetensorsError(
          f"{where}: {end - begin} bytes of data for a {dtype} tensor of shape {shape} "
          f"({expected} bytes expected)")
    entries[name] = entry
  return entries


def read_header(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
  """The validated tensor entries of a safetensors file (name -> dtype, shape, data_offsets).

  Raises:
    SafetensorsError: the file is truncated or malformed.
  """
  path = pathlib.Path(path)
  with open(path, "rb") as f:
    _, entries = _read_header(path, f)
  return entries


def _read_header(path: pathlib.Path, f) -> tuple[int, dict[str, dict[str, Any]]]:
  """(offset of the data section, tensor entries) of the open file `f`."""
  file_size = os.fstat(f.fileno()).st_size
  prefix = f.read(8)
  if len(prefix) < 8:
    raise SafetensorsError(f"{path}: {file_size} bytes, too short for the 8-byte header length")
  (header_size,) = struct.unpack("<Q", prefix)
  if header_size > min(_MAX_HEADER_BYTES, file_size - 8):
    raise SafetensorsError(
        f"{path}: header length {header_size} does not fit in a file of {file_size} bytes "
        "(truncated, or not a safetensors file)")
  entries = _parse_header(path, f.read(header_size), file_size - 8 - header_size)
  return 8 + header_size, entries


def _to_array(raw: bytes, dtype: str, shape: list[int]) -> np.ndarray:
  """A native, writable array from a tensor's bytes; 16-bit floats widened to float32."""
  stored = np.frombuffer(raw, dtype=_STORED[dtype]).reshape(shape)
  if dtype == "BF16":
    # bfloat16 is the top half of a float32: shift the 16-bit word into the high bits.
    return (stored.astype(np.uint32) << 16).view(np.float32)
  if dtype in _HALF:
    return stored.astype(np.float32)
  return stored.astype(stored.dtype.newbyteorder("="))  # a copy: frombuffer's array is read-only


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
  """All tensors of a safetensors file as NumPy arrays, in the header's order.

  F32 tensors come back as float32; F16 and BF16 are widened to float32 (exactly); F64 and the
  integer and bool dtypes keep their own dtype.

  Args:
    path: the `.safetensors` file.

  Returns:
    name -> array of the stored shape.

  Raises:
    SafetensorsError: the file is truncated, malformed or uses an unsupported dtype.
  """
  path = pathlib.Path(path)
  tensors = {}
  with open(path, "rb") as f:
    data_start, entries = _read_header(path, f)
    for name, entry in entries.items():
      begin, end = entry["data_offsets"]
      f.seek(data_start + begin)
      raw = f.read(end - begin)
      if len(raw) != end - begin:  # the file shrank after the size check
        raise SafetensorsError(f"{path}: tensor {name!r}: the file ends inside its data")
      tensors[name] = _to_array(raw, entry["dtype"], entry["shape"])
  return tensors
