"""Lazy tensors: a checkpoint's tensors by diffusers name, each read from disk on first use."""
from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

import torch

from revival.errors import RevivalError

# safetensors dtype names <-> torch dtypes
_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}
for _name, _attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2"),
                     ("U16", "uint16"), ("U32", "uint32"), ("U64", "uint64")):
    if hasattr(torch, _attr):
        _ST_DTYPES[_name] = getattr(torch, _attr)
_TORCH_TO_ST = {v: k for k, v in _ST_DTYPES.items()}

@dataclass(frozen=True)
class _Entry:
    file: Path | None  # safetensors file to read from (None: tensor given in memory)
    key: str  # name inside the file
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int = 0  # absolute byte offset of the data in `file`
    nbytes: int = 0


class TensorStore(MutableMapping):
    """A checkpoint's tensors by diffusers name, each read from disk on first access.

    Reading a key loads (and caches) that tensor only. Assigning a key replaces the tensor
    (same shape and dtype); a replaced or in-place-edited tensor is what ``save_checkpoint``
    writes. Keys can be neither added nor deleted: a checkpoint keeps every tensor.
    """

    def __init__(self, entries: dict[str, _Entry], loaded: dict[str, torch.Tensor] | None = None):
        self._entries = entries
        self._cache: dict[str, torch.Tensor] = dict(loaded or {})

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._cache:
            entry = self._entries[name]
            if entry.file is None:
                raise KeyError(name)
            self._cache[name] = _read_tensor(entry)
        return self._cache[name]

    def __setitem__(self, name: str, value: torch.Tensor) -> None:
        if name not in self._entries:
            raise KeyError(f"{name!r} is not a tensor of this checkpoint")
        _check_like(name, value, self._entries[name].dtype, self._entries[name].shape)
        self._cache[name] = value

    def __delitem__(self, name: str) -> None:
        raise TypeError("a checkpoint keeps every tensor; keys cannot be deleted")

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def meta(self, name: str) -> tuple[torch.dtype, tuple[int, ...]]:
        """(dtype, shape) of a tensor without reading it."""
        e = self._entries[name]
        return e.dtype, e.shape

    def file_key(self, name: str) -> str:
        """The tensor's name inside the checkpoint file (differs for LDM naming)."""
        return self._entries[name].key

    def release(self, *names: str) -> None:
        """Forget the loaded copies of `names` (all when none given) to free memory; a later
        read loads them again from disk. Unsaved in-place edits of released tensors are lost.
        Tensors of a torch checkpoint stay (they are memory-mapped, not copied)."""
        for name in names or list(self._cache):
            if self._entries[name].file is not None:
                self._cache.pop(name, None)

    def loaded(self) -> dict[str, torch.Tensor]:
        """The tensors read (or assigned) so far."""
        return dict(self._cache)

    def __repr__(self) -> str:
        return f"TensorStore({len(self)} tensors, {len(self._cache)} loaded)"


def _read_tensor(entry: _Entry) -> torch.Tensor:
    """Read one tensor's bytes with plain file reads (no mmap: memory holds just this tensor)."""
    t = torch.empty(entry.shape, dtype=entry.dtype)
    buf = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else None
    try:
        with open(entry.file, "rb") as fh:
            fh.seek(entry.offset)
            got = fh.readinto(memoryview(buf)) if buf is not None else 0
    except FileNotFoundError:
        raise RevivalError(f"{entry.file} disappeared while it was being read.") from None
    if got != entry.nbytes:
        raise RevivalError(f"{entry.file} is truncated: it ends inside tensor {entry.key!r}.")
    return t


def tensor_meta(tensors: Mapping[str, torch.Tensor], name: str) -> tuple[torch.dtype, tuple[int, ...]]:
    """(dtype, shape) of a tensor, without reading it when the mapping is lazy."""
    if isinstance(tensors, TensorStore):
        return tensors.meta(name)
    t = tensors[name]
    return t.dtype, tuple(t.shape)


def _check_like(name: str, value, dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    if not isinstance(value, torch.Tensor):
        raise RevivalError(f"the update for {name} is a {type(value).__name__}, not a tensor.")
    if value.dtype != dtype:
        raise RevivalError(f"the update for {name} has dtype {_dtype_name(value.dtype)} "
                           f"but the checkpoint stores {_dtype_name(dtype)}.")
    if tuple(value.shape) != tuple(shape):
        raise RevivalError(f"the update for {name} has shape {list(value.shape)} "
                           f"but the checkpoint stores {list(shape)}.")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")

