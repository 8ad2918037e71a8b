"""Read UNet checkpoints, lazily.

Formats (detected from the bytes, not the file name):

* ``"diffusers"``  a folder with ``config.json`` and ``diffusion_pytorch_model[.fp16].safetensors``
  (or a sharded ``*.safetensors.index.json``, or ``diffusion_pytorch_model.bin``); a pipeline
  folder with a ``unet/`` subfolder is read through that subfolder;
* ``"safetensors"`` one ``.safetensors`` file;
* ``"torch"``       a ``.ckpt``/``.pt``/``.bin`` file read with ``torch.load(weights_only=True)``,
  a bare state dict or one wrapped as ``{"state_dict": ...}``.

Reads are lazy: ``Checkpoint.tensors`` is a mapping that reads a tensor from disk the first time it
is used, so inspecting or scoring a large checkpoint reads only its target layers.
"""
from __future__ import annotations

import json
import os
import zipfile
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from revival.errors import RevivalError
from revival.io.naming import _name_map
from revival.io.store import _ST_DTYPES, TensorStore, _dtype_name, _Entry, tensor_meta

FORMATS = ("diffusers", "safetensors", "torch")
_WEIGHT_CANDIDATES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.safetensors.index.json",
    "diffusion_pytorch_model.fp16.safetensors",
    "diffusion_pytorch_model.safetensors.index.fp16.json",
    "diffusion_pytorch_model.fp16.safetensors.index.json",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.fp16.bin",
)
_MAX_HEADER = 200 * 1024 * 1024

@dataclass
class _StFile:
    rel: str  # file name relative to the checkpoint folder (or the file name itself)
    path: Path
    header_len: int  # N of the 8-byte length prefix
    header: dict  # parsed JSON header, original order
    stamp: tuple[int, int]  # (size, mtime_ns) at load time


@dataclass
class _Source:
    kind: str  # "safetensors" (one file or shards, maybe in a folder) | "torch"
    files: list[_StFile] = field(default_factory=list)  # safetensors files
    index: Path | None = None  # sharded index json
    config: Path | None = None  # diffusers config.json
    weight_rel: str = ""  # torch: weight file name inside the folder (diffusers .bin) or file name
    torch_obj: object = None  # torch: the loaded top-level object
    torch_wrapped: bool = False  # torch: tensors live under obj["state_dict"]
    torch_path: Path | None = None
    torch_stamp: tuple[int, int] = (0, 0)
    key_map: dict[str, str] = field(default_factory=dict)  # toolkit name -> file key


@dataclass
class Checkpoint:
    """A UNet checkpoint on disk: its format, naming, tensors (diffusers naming) and metadata."""

    path: Path
    format: str  # "diffusers" (folder) | "safetensors" | "torch"
    naming: str  # "diffusers" | "ldm"
    tensors: MutableMapping  # dict[str, Tensor] in diffusers naming (a lazy TensorStore when loaded)
    metadata: dict[str, str] = field(default_factory=dict)
    source: _Source | None = field(default=None, repr=False, compare=False)

    def input_paths(self) -> list[Path]:
        """Every file (and folder) the checkpoint was read from."""
        paths = [Path(self.path)]
        if self.source is not None:
            paths += [f.path for f in self.source.files]
            paths += [p for p in (self.source.index, self.source.config, self.source.torch_path) if p]
        return paths

    def dtypes(self) -> dict[str, int]:
        """Number of tensors per dtype name."""
        out: dict[str, int] = {}
        for name in self.tensors:
            d = _dtype_name(tensor_meta(self.tensors, name)[0])
            out[d] = out.get(d, 0) + 1
        return dict(sorted(out.items()))

    def summary(self, layers: list[str] | None = None) -> dict:
        """JSON-able description: format, naming, dtypes, sizes, metadata, target layers."""
        total = 0
        for name in self.tensors:
            dtype, shape = tensor_meta(self.tensors, name)
            n = 1
            for s in shape:
                n *= s
            total += n
        info = {
            "path": str(self.path), "format": self.format, "naming": self.naming,
            "tensors": len(self.tensors), "parameters": total, "dtypes": self.dtypes(),
            "metadata": dict(self.metadata),
        }
        if layers is not None:
            info["layers"] = []
            for name in layers:
                dtype, shape = tensor_meta(self.tensors, name)
                entry = {"name": name, "shape": list(shape), "dtype": _dtype_name(dtype)}
                if isinstance(self.tensors, TensorStore) and self.tensors.file_key(name) != name:
                    entry["file_key"] = self.tensors.file_key(name)
                info["layers"].append(entry)
        return info


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


# --------------------------------------------------------------------------- load

def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Open a checkpoint (folder, .safetensors or torch file); tensors are read lazily.

    Raises RevivalError for a missing path, an empty, truncated or junk file, or a folder that
    holds no UNet weights.
    """
    p = Path(path)
    if not p.exists():
        raise RevivalError(f"{p} does not exist.")
    if p.is_dir():
        return _load_folder(p)
    kind = _sniff(p)
    if kind == "safetensors":
        f = _read_st_header(p, p.name)
        naming, key_map = _name_map(list(_tensor_keys(f.header)), str(p))
        src = _Source(kind="safetensors", files=[f], key_map=key_map)
        return Checkpoint(p, "safetensors", naming, _store_from_st(src), dict(f.header.get("__metadata__") or {}), src)
    src = _load_torch(p, p.name)
    naming, tensors = _torch_tensors(src, str(p))
    return Checkpoint(p, "torch", naming, tensors, {}, src)


def _sniff(p: Path) -> str:
    """'safetensors' | 'torch' from the file's first bytes; RevivalError for anything else."""
    size = p.stat().st_size
    if size == 0:
        raise RevivalError(f"{p} is empty.")
    with open(p, "rb") as fh:
        head = fh.read(9)
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:4] == b"PK\x03\x04":
        return "torch"
    if head[:1] == b"\x80":  # legacy (non-zip) torch pickle
        return "torch"
    raise RevivalError(f"{p} is neither a safetensors file nor a PyTorch checkpoint.")


def _read_st_header(p: Path, rel: str) -> _StFile:
    size = p.stat().st_size
    with open(p, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise RevivalError(f"{p} is truncated: it ends inside the safetensors header.")
        n = int.from_bytes(head, "little")
        if n > _MAX_HEADER:
            raise RevivalError(f"{p} is not a valid safetensors file (header length {n}).")
        if 8 + n > size:
            raise RevivalError(f"{p} is truncated: it ends inside the safetensors header.")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RevivalError(f"{p} is not a valid safetensors file (its header is not JSON).") from None
    if not isinstance(header, dict):
        raise RevivalError(f"{p} is not a valid safetensors file (its header is not a JSON object).")
    data_len = size - 8 - n
    for key, info in _tensor_items(header, p):
        begin, end = info["data_offsets"]
        nbytes = end - begin
        dtype = _ST_DTYPES.get(info["dtype"])
        if dtype is None:
            raise RevivalError(f"{p} stores {key!r} in dtype {info['dtype']}, which this toolkit cannot read.")
        numel = 1
        for s in info["shape"]:
            numel *= s
        if nbytes != numel * dtype.itemsize or begin < 0:
            raise RevivalError(f"{p} is corrupt: the byte range of {key!r} does not fit its shape.")
        if end > data_len:
            raise RevivalError(f"{p} is truncated: it holds {data_len} data bytes but its header "
                               f"needs {max(i['data_offsets'][1] for _, i in _tensor_items(header, p))}.")
    meta = header.get("__metadata__")
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise RevivalError(f"{p} is not a valid safetensors file (its metadata is not a string map).")
    return _StFile(rel, p, n, header, _stamp(p))


def _tensor_items(header: dict, p: Path):
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if not (isinstance(info, dict) and isinstance(info.get("dtype"), str)
                and isinstance(info.get("shape"), list) and isinstance(info.get("data_offsets"), list)
                and len(info["data_offsets"]) == 2):
            raise RevivalError(f"{p} is not a valid safetensors file (bad header entry {key!r}).")
        yield key, info


def _tensor_keys(header: dict):
    return (k for k in header if k != "__metadata__")


def _store_from_st(src: _Source) -> TensorStore:
    inverse = {v: k for k, v in src.key_map.items()}
    entries: dict[str, _Entry] = {}
    for f in src.files:
        for key, info in _tensor_items(f.header, f.path):
            name = inverse.get(key, key)
            begin, end = info["data_offsets"]
            entries[name] = _Entry(f.path, key, _ST_DTYPES[info["dtype"]], tuple(info["shape"]),
                                   8 + f.header_len + begin, end - begin)
    return TensorStore(entries)


def _load_folder(p: Path) -> Checkpoint:
    if not (p / "config.json").is_file() and (p / "unet" / "config.json").is_file():
        p = p / "unet"
    config = p / "config.json"
    if not config.is_file():
        raise RevivalError(f"{p} is a folder without config.json, so it is not a diffusers UNet folder.")
    weight = next((p / c for c in _WEIGHT_CANDIDATES if (p / c).is_file()), None)
    if weight is None:
        singles = sorted(p.glob("*.safetensors"))
        if len(singles) == 1:
            weight = singles[0]
        else:
            raise RevivalError(f"{p} holds no diffusion_pytorch_model weights (.safetensors or .bin).")
    if weight.name.endswith(".json"):  # sharded
        try:
            index = json.loads(weight.read_text())
            weight_map = index["weight_map"]
            shards = list(dict.fromkeys(weight_map.values()))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
            raise RevivalError(f"{weight} is not a valid safetensors index file.") from None
        files = []
        for rel in shards:
            sp = p / rel
            if not sp.is_file():
                raise RevivalError(f"{weight} lists the shard {rel}, which does not exist.")
            _sniff_st(sp)
            files.append(_read_st_header(sp, rel))
        keys = [k for f in files for k in _tensor_keys(f.header)]
        naming, key_map = _name_map(keys, str(p))
        src = _Source(kind="safetensors", files=files, index=weight, config=config, key_map=key_map)
        meta: dict[str, str] = {}
        for f in files:
            meta.update(f.header.get("__metadata__") or {})
        return Checkpoint(p, "diffusers", naming, _store_from_st(src), meta, src)
    if weight.name.endswith(".safetensors"):
        _sniff_st(weight)
        f = _read_st_header(weight, weight.name)
        naming, key_map = _name_map(list(_tensor_keys(f.header)), str(p))
        src = _Source(kind="safetensors", files=[f], config=config, key_map=key_map)
        return Checkpoint(p, "diffusers", naming, _store_from_st(src), dict(f.header.get("__metadata__") or {}), src)
    if _sniff(weight) != "torch":
        raise RevivalError(f"{weight} is not a PyTorch checkpoint.")
    src = _load_torch(weight, weight.name)
    src.config = config
    naming, tensors = _torch_tensors(src, str(p))
    return Checkpoint(p, "diffusers", naming, tensors, {}, src)


def _sniff_st(p: Path) -> None:
    if _sniff(p) != "safetensors":
        raise RevivalError(f"{p} is not a safetensors file.")


def _load_torch(p: Path, rel: str) -> _Source:
    import pickle

    with open(p, "rb") as fh:
        is_zip = fh.read(4) == b"PK\x03\x04"
    if is_zip and not zipfile.is_zipfile(p):
        raise RevivalError(f"{p} is truncated or corrupt (its zip directory is missing).")
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = _load_weights_only(p, is_zip)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc):
            raise RevivalError(f"{p} holds Python objects that a safe load (torch.load weights_only=True) refuses.") from None
        raise RevivalError(f"{p} is truncated or corrupt (it does not unpickle).") from None
    except Exception:
        raise RevivalError(f"{p} is truncated or corrupt (torch.load cannot read it).") from None
    wrapped = isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict)
    sd = obj["state_dict"] if wrapped else obj
    if not isinstance(sd, dict):
        raise RevivalError(f"{p} holds a {type(sd).__name__}, not a state dict of tensors.")
    return _Source(kind="torch", torch_obj=obj, torch_wrapped=wrapped, torch_path=p, weight_rel=rel,
                   torch_stamp=_stamp(p))


def _load_weights_only(p: Path, is_zip: bool):
    if is_zip:
        try:
            return torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
    return torch.load(p, map_location="cpu", weights_only=True)


def _torch_tensors(src: _Source, where: str) -> tuple[str, TensorStore]:
    sd = src.torch_obj["state_dict"] if src.torch_wrapped else src.torch_obj
    keys = [k for k, v in sd.items() if isinstance(k, str) and isinstance(v, torch.Tensor)]
    if not keys:
        raise RevivalError(f"{where} holds no tensors.")
    naming, key_map = _name_map(keys, where)
    src.key_map = key_map
    entries = {name: _Entry(None, key, sd[key].dtype, tuple(sd[key].shape)) for name, key in key_map.items()}
    return naming, TensorStore(entries, {name: sd[key] for name, key in key_map.items()})

