"""Reading a Hugging Face checkpoint's safetensors files, one tensor at a time.

A checkpoint is ``model.safetensors`` or shards listed in ``model.safetensors.index.json``
(``{"weight_map": {tensor name: shard file}}``). The format is an 8-byte little-endian
header length, a JSON header (name -> ``{"dtype", "shape", "data_offsets"}``) and the
raw little-endian data. Tensors are read with plain file reads into a new float32 array
each (float16 and bfloat16 widened, float64 narrowed), never memory-mapped: the pages of
a mapped file count in the process' resident memory for as long as the mapping lives,
so an import would hold the whole checkpoint twice (mapped and in the model).
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct

import numpy as np

from tflm.errors import ModelDirError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Stored dtype -> (numpy dtype of the stored little-endian values, how to reach float32).
_FLOAT_DTYPES = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "F64": "<f8"}
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
             "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2,
             "U32": 4, "U64": 8}


class CheckpointError(ModelDirError):
    """A Hugging Face checkpoint directory misses a file or holds something tflm cannot
    import (the message names the file or tensor)."""


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """Where one stored tensor lives."""

    file: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset of the data in `file`
    nbytes: int


def _read_header(path: str) -> dict[str, TensorInfo]:
    """Tensor name -> TensorInfo of one safetensors file.

    Raises:
        CheckpointError: the file is missing, truncated or not safetensors.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file {path} is missing; copy the whole "
                              "Hugging Face model directory.")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        length = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
        if not 0 < length <= size - 8:
            raise CheckpointError(f"{path} is not a safetensors file (bad header length); "
                                  "download it again.")
        try:
            header = json.loads(f.read(length))
        except ValueError as e:
            raise CheckpointError(f"{path} has an unreadable safetensors header ({e}); "
                                  "download it again.") from e
    base = 8 + length
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape = entry["dtype"], tuple(int(d) for d in entry["shape"])
            begin, end = (int(x) for x in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: tensor {name!r} has a malformed header entry "
                                  f"{entry!r}") from e
        expected = int(np.prod(shape, dtype=np.int64)) * _ITEMSIZE.get(dtype, 0)
        if dtype in _ITEMSIZE and (end - begin != expected or base + end > size):
            raise CheckpointError(f"{path}: tensor {name!r} ({dtype} {list(shape)}) does "
                                  f"not fit its data offsets [{begin}, {end}) in a "
                                  f"{size}-byte file; the file is truncated or damaged.")
        tensors[name] = TensorInfo(path, dtype, shape, base + begin, end - begin)
    return tensors


class Checkpoint:
    """The tensors of a Hugging Face model directory (headers read, data on demand).

    Args:
        directory: holds ``model.safetensors`` or ``model.safetensors.index.json`` and
            its shards.

    Raises:
        CheckpointError: no safetensors weights (a ``pytorch_model.bin`` only directory
            is named, with how to convert it), a missing shard, or a tensor the index
            names but its shard lacks.
    """

    def __init__(self, directory: str):
        self.directory = directory
        index = os.path.join(directory, INDEX_FILE)
        single = os.path.join(directory, SINGLE_FILE)
        if os.path.isfile(index):
            self.tensors = self._read_index(index)
            self.files = sorted({info.file for info in self.tensors.values()})
        elif os.path.isfile(single):
            self.tensors = _read_header(single)
            self.files = [single]
        else:
            raise CheckpointError(_no_weights_message(directory))

    def _read_index(self, index: str) -> dict[str, TensorInfo]:
        try:
            with open(index, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index} is not a safetensors index (no 'weight_map': "
                                  f"{e!r}); download it again.") from e
        headers: dict[str, dict[str, TensorInfo]] = {}
        tensors = {}
        for name, shard in weight_map.items():
            path = os.path.join(self.directory, shard)
            if shard not in headers:
                if not os.path.isfile(path):
                    raise CheckpointError(f"shard {shard} listed in {index} is missing from "
                                          f"{self.directory}; download every shard.")
                headers[shard] = _read_header(path)
            if name not in headers[shard]:
                raise CheckpointError(f"{index} places tensor {name!r} in {shard}, which "
                                      "does not hold it; download the checkpoint again.")
            tensors[name] = headers[shard][name]
        return tensors

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def names(self) -> list[str]:
        return sorted(self.tensors)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.tensors[name].shape

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data stored (all files)."""
        return sum(info.nbytes for info in self.tensors.values())

    def dtypes(self) -> dict[str, int]:
        """Stored dtype -> number of tensors."""
        counts: dict[str, int] = {}
        for info in self.tensors.values():
            counts[info.dtype] = counts.get(info.dtype, 0) + 1
        return counts

    def read(self, name: str) -> np.ndarray:
        """Tensor ``name`` as a new float32 array, read from disk.

        Raises:
            CheckpointError: the tensor is absent or not stored as floating point.
        """
        if name not in self.tensors:
            raise CheckpointError(f"tensor {name!r} is not in the checkpoint in "
                                  f"{self.directory}")
        info = self.tensors[name]
        if info.dtype not in _FLOAT_DTYPES:
            raise CheckpointError(f"tensor {name!r} in {info.file} is stored as "
                                  f"{info.dtype}; tflm imports float32, float16, bfloat16 "
                                  "and float64 weights.")
        stored = np.dtype(_FLOAT_DTYPES[info.dtype])
        with open(info.file, "rb") as f:
            f.seek(info.start)
            values = np.fromfile(f, dtype=stored, count=info.nbytes // stored.itemsize)
        if info.dtype == "BF16":  # the upper half of a float32
            values = (values.astype(np.uint32) << 16).view(np.float32)
        return values.astype(np.float32, copy=False).reshape(info.shape)


def _no_weights_message(directory: str) -> str:
    present = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    if not os.path.isdir(directory):
        return f"{directory} is not a directory; pass a Hugging Face model directory."
    others = [name for name in present if name.endswith((".bin", ".h5", ".msgpack", ".pt",
                                                         ".pth", ".ckpt"))]
    if others:
        return (f"{directory} holds {', '.join(others)} but no {SINGLE_FILE} or "
                f"{INDEX_FILE}: tflm reads safetensors only (no PyTorch dependency). Save "
                "it as safetensors first, e.g. with transformers: AutoModel."
                "from_pretrained(dir).save_pretrained(dir, safe_serialization=True).")
    return (f"{directory} holds no {SINGLE_FILE} or {INDEX_FILE}; pass a Hugging Face "
            "model directory with its safetensors weights.")
