"""Reading a Hugging Face checkpoint directory's safetensors files, tensor by tensor, without torch.

A safetensors file is an 8-byte little-endian header size, a JSON header {name: {dtype, shape,
data_offsets}}, then the raw little-endian data. Tensors are read through a numpy memmap, so a
tensor costs memory only when it is converted; bfloat16 and float8 come from ml_dtypes (the
safetensors library's numpy API cannot represent them). A sharded checkpoint has
model.safetensors.index.json mapping each tensor name to its shard file.
"""

from __future__ import annotations

import json
import os
import re
import struct

import ml_dtypes
import numpy as np

DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}
SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be read as asked; the message says which file or tensor."""


def _header(path: str) -> tuple[dict, int]:
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise CheckpointError(f"{path}: not a safetensors file (shorter than its header)")
        (size,) = struct.unpack("<Q", raw)
        if size > 100 << 20:
            raise CheckpointError(f"{path}: not a safetensors file (header of {size} bytes)")
        try:
            header = json.loads(f.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"{path}: not a safetensors file (bad JSON header)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (its header is not a JSON object)")
    header.pop("__metadata__", None)
    return header, 8 + size


def _weight_map(index: str) -> dict:
    try:
        with open(index) as f:
            value = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{index}: not valid JSON ({e})") from None
    weight_map = value.get("weight_map") if isinstance(value, dict) else None
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index}: no \"weight_map\" object of tensor name -> file")
    return weight_map


def _check_length(path: str, header: dict, start: int) -> None:
    """A file shorter than its header says (an interrupted download) is named at open time."""
    try:
        ends = [int(info["data_offsets"][1]) for info in header.values()]
    except (TypeError, KeyError, IndexError, ValueError):
        raise CheckpointError(f"{path}: not a safetensors file (a header entry without "
                              "data_offsets)") from None
    need, have = start + max(ends, default=0), os.path.getsize(path)
    if have < need:
        raise CheckpointError(f"{path}: truncated ({have} bytes, its header says {need}); "
                              "download or copy it again")


class SafetensorsDir:
    """The tensors of a directory: `names`, `shape(name)`, `dtype(name)`, `read(name)`.

    Single file (model.safetensors), sharded (model.safetensors.index.json), or any *.safetensors
    files when neither is there. A shard named by the index but absent is an error at open time.
    """

    def __init__(self, directory: str):
        self.directory = directory
        index = os.path.join(directory, INDEX)
        if os.path.exists(index):
            weight_map = _weight_map(index)
            files = sorted(set(weight_map.values()))
            missing = [n for n in files if not os.path.exists(os.path.join(directory, n))]
            if missing:
                raise CheckpointError(f"{directory}: shard {missing[0]} named in {INDEX} is missing"
                                      + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        elif os.path.exists(os.path.join(directory, SINGLE)):
            files = [SINGLE]
        else:
            files = sorted(n for n in os.listdir(directory) if n.endswith(".safetensors"))
            if not files:
                raise CheckpointError(f"{directory}: no model.safetensors, {INDEX} or *.safetensors "
                                      "(only safetensors weights are read, not pytorch_model.bin)")
        self._entries: dict[str, tuple[str, dict, int]] = {}
        for name in files:
            path = os.path.join(directory, name)
            header, start = _header(path)
            _check_length(path, header, start)
            for key, info in header.items():
                self._entries[key] = (path, info, start)

    def path_of(self, name: str) -> str:
        return self._info(name)[0]

    @property
    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def shape(self, name: str) -> tuple:
        return tuple(self._info(name)[1]["shape"])

    def dtype(self, name: str) -> str:
        return self._info(name)[1]["dtype"]

    def _info(self, name):
        if name not in self._entries:
            raise CheckpointError(f"{self.directory}: tensor {name!r} not found in the checkpoint")
        return self._entries[name]

    def read(self, name: str) -> np.ndarray:
        """The tensor as a read-only memmap-backed numpy array of its stored dtype."""
        path, info, start = self._info(name)
        dtype = DTYPES.get(info["dtype"])
        if dtype is None:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        count = int(np.prod(shape)) if shape else 1
        if end - begin != count * np.dtype(dtype).itemsize:
            raise CheckpointError(f"{path}: tensor {name!r} has {end - begin} bytes, not the "
                                  f"{count} x {info['dtype']} its shape {list(shape)} needs")
        if count == 0:
            return np.zeros(shape, dtype)
        data = np.memmap(path, dtype=dtype, mode="r", offset=start + begin, shape=(count,))
        return data.reshape(shape)


def save_file(tensors: dict, path: str, metadata: dict | None = None) -> None:
    """Writes {name: numpy array} as one safetensors file (the library's writer)."""
    from safetensors.numpy import save_file as _save

    try:
        _save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, path,
              metadata=metadata or {"format": "pt"})
    except Exception as e:  # SafetensorError is no OSError: give the file and the OS's reason
        m = re.search(r"\(os error (\d+)\)", str(e))
        if m is None:
            raise
        code = int(m.group(1))
        raise OSError(code, os.strerror(code), path) from None
