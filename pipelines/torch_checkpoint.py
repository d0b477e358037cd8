"""Reads the tensors of a legacy (pre-1.6, non-zip) PyTorch checkpoint with numpy alone.

Pretrained weights are sometimes published only as `torch.save` files; this
reader lets the project use them without installing PyTorch. It understands
exactly what a `state_dict` of float/int tensors needs and nothing more: the
unpickler resolves only `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`
and the storage type names, so a checkpoint cannot run arbitrary code the way
`pickle.load` (and `torch.load` without `weights_only`) would let it.

The legacy format is a sequence of pickles in one file:

    magic number, protocol version, system info,
    the state dict (tensors refer to storages by key: persistent ids),
    the list of storage keys,
    then, per key in that order: int64 element count, raw little-endian data.

A tensor is a strided view of its storage (offset, shape, strides in
elements); the strides are honoured, so a tensor whose memory layout differs
from its logical shape (as in checkpoints converted from TensorFlow, where
convolution kernels keep TF's HWIO layout) comes out right.
"""

from __future__ import annotations

import collections
import pickle
import struct
import zipfile
from typing import Any, BinaryIO

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class CheckpointFormatError(ValueError):
    """The file is not a legacy PyTorch state dict this reader understands."""


class _StorageRef:
    def __init__(self, key: str, dtype: type, size: int) -> None:
        self.key, self.dtype, self.size = key, np.dtype(dtype), size


class _TensorRef:
    def __init__(self, storage: _StorageRef, offset: int, shape: tuple, strides: tuple) -> None:
        self.storage, self.offset, self.shape, self.strides = storage, offset, shape, strides


def _rebuild_tensor(storage, offset, shape, strides, *_ignored) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(shape), tuple(strides))


class _StateDictUnpickler(pickle.Unpickler):
    """Resolves only what a plain state dict of tensors contains."""

    _ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        raise CheckpointFormatError(f"unsupported object in checkpoint: {module}.{name}")

    def persistent_load(self, persistent_id: Any) -> _StorageRef:
        kind, storage_type, key, _location, size = persistent_id[:5]
        if kind != "storage" or storage_type not in _STORAGE_DTYPES:
            raise CheckpointFormatError(f"unsupported storage {persistent_id!r}")
        return _StorageRef(str(key), _STORAGE_DTYPES[storage_type], int(size))


def _read_storages(file: BinaryIO, keys: list[str], refs: dict[str, _StorageRef]) -> dict:
    storages = {}
    for key in keys:
        (count,) = struct.unpack("<q", file.read(8))
        if key not in refs:
            raise CheckpointFormatError(f"storage {key} belongs to no tensor of the state dict")
        ref = refs[key]
        data = file.read(count * ref.dtype.itemsize)
        if len(data) != count * ref.dtype.itemsize:
            raise CheckpointFormatError(f"checkpoint truncated in storage {key}")
        storages[key] = np.frombuffer(data, dtype=ref.dtype.newbyteorder("<"))
    return storages


def _materialize(tensor: _TensorRef, storage: np.ndarray) -> np.ndarray:
    if not tensor.shape:
        return storage[tensor.offset].copy()
    itemsize = storage.itemsize
    end = (
        tensor.offset
        + 1
        + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.strides, strict=True))
    )
    if end > storage.size:
        raise CheckpointFormatError("a tensor reaches past the end of its storage")
    view = np.lib.stride_tricks.as_strided(
        storage[tensor.offset :],
        shape=tensor.shape,
        strides=tuple(s * itemsize for s in tensor.strides),
        writeable=False,
    )
    return np.ascontiguousarray(view)


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """name -> numpy array (C-contiguous, logical PyTorch shape) for every tensor in `path`."""
    if zipfile.is_zipfile(path):
        raise CheckpointFormatError(
            f"{path} is a zip-format PyTorch checkpoint (torch >= 1.6); only the legacy format "
            "is supported"
        )
    with open(path, "rb") as file:
        try:
            magic = pickle.load(file)
            if magic != LEGACY_MAGIC_NUMBER:
                raise CheckpointFormatError(f"{path} is not a PyTorch checkpoint")
            pickle.load(file)  # protocol version
            system = pickle.load(file)
            if not system.get("little_endian", True):
                raise CheckpointFormatError(f"{path} was saved on a big-endian machine")
            state = _StateDictUnpickler(file).load()
            keys = pickle.load(file)
        except (pickle.UnpicklingError, EOFError, AttributeError) as error:
            raise CheckpointFormatError(f"cannot read {path}: {error}") from None
        if not isinstance(state, dict):
            raise CheckpointFormatError(f"{path} does not hold a state dict")
        refs = {t.storage.key: t.storage for t in state.values() if isinstance(t, _TensorRef)}
        storages = _read_storages(file, [str(k) for k in keys], refs)
    return {
        name: _materialize(tensor, storages[tensor.storage.key])
        for name, tensor in state.items()
        if isinstance(tensor, _TensorRef)
    }
