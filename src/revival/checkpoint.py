"""Read and write UNet checkpoints; choose the target layers.

Formats (detected from the bytes, not the file name):

* ``"diffusers"``  a folder with ``config.json`` and ``diffusion_pytorch_model[.fp16].safetensors``
  (or a sharded ``*.safetensors.index.json``, or ``diffusion_pytorch_model.bin``); a pipeline
  folder with a ``unet/`` subfolder is read through that subfolder;
* ``"safetensors"`` one ``.safetensors`` file;
* ``"torch"``       a ``.ckpt``/``.pt``/``.bin`` file read with ``torch.load(weights_only=True)``,
  a bare state dict or one wrapped as ``{"state_dict": ...}``.

Tensors are named in diffusers naming inside the toolkit. A single-file (LDM) checkpoint's
attention blocks are renamed on load (``input_blocks.{3i+j+1}.1.`` -> ``down_blocks.i.attentions.j.``,
``middle_block.1.`` -> ``mid_block.attentions.0.``, ``output_blocks.{3i+j}.1.`` ->
``up_blocks.i.attentions.j.``, prefix ``model.diffusion_model.`` dropped); every other key (resnets,
VAE, text encoder, EMA, ...) is carried through under its own name, and all names are mapped back
on write.

Reads are lazy: ``Checkpoint.tensors`` is a mapping that reads a tensor from disk the first time it
is used, so inspecting or scoring a large checkpoint reads only its target layers. Writes are
atomic (a temporary file or folder beside the output, then a rename), keep the format, every name,
dtype, tensor and (unless replaced) the metadata, and change only the entries given as updates:
a safetensors output is the input's bytes with the updated tensors patched in place.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import RevivalError

DEFAULT_LAYERS = r"transformer_blocks\.\d+\.ff\.net\.2\.weight$"
FORMATS = ("diffusers", "safetensors", "torch")
LDM_PREFIX = "model.diffusion_model."

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
_COPY_CHUNK = 16 * 1024 * 1024


# --------------------------------------------------------------------------- key naming

_LDM_RE = re.compile(
    r"^(?P<pre>(?:model\.diffusion_model\.)?)"
    r"(?:input_blocks\.(?P<inp>\d+)\.1\.|(?P<mid>middle_block)\.1\.|output_blocks\.(?P<out>\d+)\.1\.)"
    r"(?P<rest>(?:transformer_blocks|norm|proj_in|proj_out)\..*)$"
)
_DIFFUSERS_ATTN_RE = re.compile(
    r"^(?:down_blocks\.(?P<di>\d+)\.attentions\.(?P<dj>\d+)\.|(?P<mid>mid_block)\.attentions\.0\.|"
    r"up_blocks\.(?P<ui>\d+)\.attentions\.(?P<uj>\d+)\.)"
    r"(?P<rest>(?:transformer_blocks|norm|proj_in|proj_out)\..*)$"
)


def ldm_to_diffusers(key: str) -> str | None:
    """Diffusers name of an LDM attention-block key (SD layout), or None if it is not one."""
    m = _LDM_RE.match(key)
    if m is None:
        return None
    rest = m["rest"]
    if m["inp"] is not None:
        n = int(m["inp"])
        i, j = divmod(n - 1, 3)
        if n < 1 or j > 1:
            return None
        return f"down_blocks.{i}.attentions.{j}.{rest}"
    if m["mid"] is not None:
        return f"mid_block.attentions.0.{rest}"
    i, j = divmod(int(m["out"]), 3)
    return f"up_blocks.{i}.attentions.{j}.{rest}"


def diffusers_to_ldm(key: str, prefix: str = LDM_PREFIX) -> str | None:
    """LDM name of a diffusers attention-block key (SD layout), or None if it is not one."""
    m = _DIFFUSERS_ATTN_RE.match(key)
    if m is None:
        return None
    if m["di"] is not None:
        block = f"input_blocks.{3 * int(m['di']) + int(m['dj']) + 1}.1."
    elif m["mid"] is not None:
        block = "middle_block.1."
    else:
        block = f"output_blocks.{3 * int(m['ui']) + int(m['uj'])}.1."
    return f"{prefix}{block}{m['rest']}"


def _is_ldm(keys) -> bool:
    return any(k.startswith(LDM_PREFIX) or k.startswith(("input_blocks.", "middle_block.", "output_blocks."))
               for k in keys)


def _name_map(file_keys: list[str], where: str) -> tuple[str, dict[str, str]]:
    """(naming, {toolkit name: file key}) for the keys of a file."""
    if not _is_ldm(file_keys):
        return "diffusers", {k: k for k in file_keys}
    mapping: dict[str, str] = {}
    for k in file_keys:
        name = ldm_to_diffusers(k) or k
        if name in mapping:
            raise RevivalError(f"{where} holds both {mapping[name]!r} and {k!r}, which map to the same layer.")
        mapping[name] = k
    return "ldm", mapping


# --------------------------------------------------------------------------- lazy tensors

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


# --------------------------------------------------------------------------- sources

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


# --------------------------------------------------------------------------- layers

def select_layers(tensors: Mapping[str, torch.Tensor], pattern: str | None = DEFAULT_LAYERS) -> list[str]:
    """Names (diffusers naming, checkpoint order) of the 2-D floating-point weights whose name
    matches the regex `pattern` (re.search; an LDM file's own key names match too).

    Raises RevivalError for a bad regex or when nothing matches.
    """
    pattern = DEFAULT_LAYERS if pattern is None else pattern
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise RevivalError(f"the layer pattern {pattern!r} is not a valid regular expression ({exc}).") from None
    store = tensors if isinstance(tensors, TensorStore) else None
    names = []
    for name in tensors:
        if not (rx.search(name) or (store is not None and rx.search(store.file_key(name)))):
            continue
        dtype, shape = tensor_meta(tensors, name)
        if dtype.is_floating_point and len(shape) == 2:
            names.append(name)
    if not names:
        hint = " (the default: every transformer block's ff.net.2.weight)" if pattern == DEFAULT_LAYERS else ""
        raise RevivalError(f"no 2-D floating-point weight matches the layer pattern {pattern!r}{hint}; "
                           "choose layers with --layers REGEX.")
    return names


def check_finite(tensors: Mapping[str, torch.Tensor], layers: list[str], where: str = "the checkpoint") -> None:
    """RevivalError if a target layer holds NaN or inf."""
    for name in layers:
        t = tensors[name]
        if not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise RevivalError(f"{where} has {bad} NaN/inf value(s) in the target layer {name}.")


# --------------------------------------------------------------------------- write

def check_output_path(out: str | os.PathLike, inputs: list[str | os.PathLike]) -> Path:
    """RevivalError if `out` is (or would replace) one of the input paths or a folder holding one."""
    out_p = Path(out)
    out_r = out_p.resolve()
    for inp in inputs:
        in_r = Path(inp).resolve()
        if out_r == in_r:
            raise RevivalError(f"the output path {out_p} is an input; choose another output path.")
        if in_r.is_relative_to(out_r):
            raise RevivalError(f"the output path {out_p} holds the input {inp}; choose another output path.")
    return out_p


def save_checkpoint(ckpt: Checkpoint, out_path: str | os.PathLike,
                    updates: Mapping[str, torch.Tensor] | None = None,
                    metadata: Mapping[str, str] | None = None) -> Path:
    """Write `ckpt` with `updates` applied to `out_path`, in the checkpoint's own format and naming.

    Only the updated tensors (and tensors assigned or edited in place through ``ckpt.tensors``)
    change; every other tensor, name and dtype is kept, and so is the safetensors metadata unless
    `metadata` replaces it (torch files have none). Each update must have the stored dtype and
    shape. The write is atomic and refuses to replace an input. Returns the output path.
    """
    updates = dict(updates or {})
    for name, value in updates.items():
        _check_update(ckpt, name, value)
    patch = dict(ckpt.tensors.loaded()) if isinstance(ckpt.tensors, TensorStore) else {}
    patch.update(updates)
    with CheckpointWriter(ckpt, out_path, metadata) as writer:
        for name, value in patch.items():
            writer.write(name, value)
    return writer.path


def _check_update(ckpt: Checkpoint, name: str, value) -> None:
    if name not in ckpt.tensors:
        raise RevivalError(f"the update {name!r} is not a tensor of {ckpt.path}.")
    dtype, shape = tensor_meta(ckpt.tensors, name)
    _check_like(name, value, dtype, shape)


class CheckpointWriter:
    """Write a checkpoint one updated tensor at a time, atomically; a context manager.

    For safetensors (a file, or a diffusers folder with one or more shards) the input is first
    copied byte for byte into a temporary file/folder beside the output, then each `write(name,
    tensor)` patches that tensor's bytes in place, so memory holds one tensor at a time. A torch
    checkpoint is written whole at `commit()`. Leaving the `with` block commits (rename into
    place); an exception aborts and leaves no output and no temporary file.

    Example::

        with CheckpointWriter(ckpt, "out.safetensors") as w:
            for name in layers:
                w.write(name, revive_one(ckpt.tensors[name]))
                ckpt.tensors.release(name)
    """

    def __init__(self, ckpt: Checkpoint, out_path: str | os.PathLike, metadata: Mapping[str, str] | None = None):
        self.ckpt = ckpt
        self.path = out = check_output_path(out_path, ckpt.input_paths())
        if metadata is not None:
            if not (isinstance(metadata, Mapping) and all(isinstance(k, str) and isinstance(v, str)
                                                          for k, v in metadata.items())):
                raise RevivalError("checkpoint metadata must map strings to strings.")
            metadata = dict(metadata)
        self.metadata = metadata
        if ckpt.format not in FORMATS:
            raise RevivalError(f"unknown checkpoint format {ckpt.format!r}; expected one of {', '.join(FORMATS)}.")
        src = ckpt.source
        if ckpt.format == "diffusers":
            if src is None or src.config is None:
                raise RevivalError("a diffusers folder can only be written from a checkpoint loaded from one.")
            if out.exists() and not out.is_dir():
                raise RevivalError(f"the output {out} is a file, but a diffusers checkpoint is a folder.")
            if out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file():
                raise RevivalError(f"the output folder {out} exists and is not a UNet folder; refusing to replace it.")
        elif out.is_dir():
            raise RevivalError(f"the output {out} is a folder, but this checkpoint is a single file.")
        if not out.parent.is_dir():
            raise RevivalError(f"the output folder {out.parent} does not exist.")
        _check_unchanged(ckpt)
        self._held: dict[str, torch.Tensor] = {}  # torch / in-memory checkpoints: written at commit
        self._starts: dict[str, int] = {}  # safetensors: data start of each temp file, by source path
        self._dst: dict[str, Path] = {}  # safetensors: temp file of each source file
        self._done = False
        if ckpt.format == "diffusers":
            self._tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
        else:
            fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
            os.close(fd)
            self._tmp = Path(name)
        try:
            if ckpt.format == "diffusers":
                shutil.copyfile(src.config, self._tmp / "config.json")
            if src is not None and src.kind == "safetensors":
                for f in src.files:
                    dst = self._tmp / f.rel if ckpt.format == "diffusers" else self._tmp
                    self._starts[str(f.path)] = _copy_safetensors(f, metadata, dst)
                    self._dst[str(f.path)] = dst
                if src.index is not None:
                    shutil.copyfile(src.index, self._tmp / src.index.name)
        except BaseException:
            self.abort()
            raise

    def write(self, name: str, value: torch.Tensor) -> None:
        """Replace tensor `name` (same dtype and shape as stored) in the output."""
        if self._done:
            raise RuntimeError("this CheckpointWriter is closed")
        _check_update(self.ckpt, name, value)
        src = self.ckpt.source
        if src is None or src.kind != "safetensors":
            self._held[name] = value
            return
        entry = self.ckpt.tensors._entries[name]
        f = next(f for f in src.files if f.path == entry.file)
        begin, end = f.header[entry.key]["data_offsets"]
        raw = _tensor_bytes(value)
        if raw.nbytes != end - begin:
            raise RevivalError(f"the update for {name} has the wrong number of bytes.")
        with open(self._dst[str(f.path)], "r+b") as out:
            out.seek(self._starts[str(f.path)] + begin)
            out.write(raw)

    def commit(self) -> Path:
        """Finish the output and rename it into place; returns the output path."""
        if self._done:
            return self.path
        try:
            src = self.ckpt.source
            if src is None:
                _write_fresh(self.ckpt, self._held, self.metadata, self._tmp)
            elif src.kind == "torch":
                dst = self._tmp / src.weight_rel if self.ckpt.format == "diffusers" else self._tmp
                _write_torch(self.ckpt, self._held, dst)
            else:
                for dst in self._dst.values():
                    with open(dst, "rb+") as fh:
                        os.fsync(fh.fileno())
            if self.ckpt.format == "diffusers":
                _swap_folder(self._tmp, self.path)
            else:
                os.chmod(self._tmp, 0o666 & ~_umask())
                os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._done = True
        return self.path

    def abort(self) -> None:
        """Drop the temporary output; nothing is written."""
        self._done = True
        if self._tmp.is_dir():
            shutil.rmtree(self._tmp, ignore_errors=True)
        else:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "CheckpointWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def _check_unchanged(ckpt: Checkpoint) -> None:
    src = ckpt.source
    if src is None:
        return
    for f in src.files:
        if not f.path.exists() or _stamp(f.path) != f.stamp:
            raise RevivalError(f"{f.path} changed on disk after it was loaded; load it again.")
    if src.torch_path is not None and (not src.torch_path.exists() or _stamp(src.torch_path) != src.torch_stamp):
        raise RevivalError(f"{src.torch_path} changed on disk after it was loaded; load it again.")


def _write_torch(ckpt: Checkpoint, patch: dict[str, torch.Tensor], dst: Path) -> None:
    """Rebuild the torch object with every tensor from the store (mmap-backed unless edited)."""
    src = ckpt.source
    sd = src.torch_obj["state_dict"] if src.torch_wrapped else src.torch_obj
    inverse = {v: k for k, v in src.key_map.items()}
    new_sd = {}
    for key, value in sd.items():
        name = inverse.get(key) if isinstance(key, str) else None
        new_sd[key] = patch.get(name, ckpt.tensors[name]) if name is not None else value
    obj = dict(src.torch_obj, state_dict=new_sd) if src.torch_wrapped else new_sd
    with open(dst, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())


def _copy_safetensors(f: _StFile, metadata, dst: Path) -> int:
    """Copy safetensors file `f` to `dst` byte for byte (new metadata aside); returns the data start."""
    if metadata is None or metadata == (f.header.get("__metadata__") or {}):
        header_bytes = None
    else:
        if "__metadata__" in f.header:
            header = {k: (metadata if k == "__metadata__" else v) for k, v in f.header.items()
                      if k != "__metadata__" or metadata}
        else:
            header = ({"__metadata__": metadata} if metadata else {}) | f.header
        header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
        header_bytes += b" " * (-len(header_bytes) % 8)
    with open(f.path, "rb") as src, open(dst, "wb") as out:
        head = src.read(8 + f.header_len)
        if header_bytes is None:
            out.write(head)
        else:
            out.write(len(header_bytes).to_bytes(8, "little"))
            out.write(header_bytes)
        start = out.tell()
        _copy_rest(src, out)
    return start


def _copy_rest(src, out) -> None:
    """Copy file `src` from its current position to the end into `out` at its current position,
    in the kernel where possible (no big user-space buffers)."""
    out.flush()
    s0, d0 = src.tell(), out.tell()
    total = os.fstat(src.fileno()).st_size - s0
    if hasattr(os, "copy_file_range"):
        try:
            done = 0
            while done < total:
                n = os.copy_file_range(src.fileno(), out.fileno(), min(_COPY_CHUNK, total - done), s0 + done, d0 + done)
                if n == 0:
                    break
                done += n
            if done == total:
                out.seek(d0 + total)
                return
        except OSError:  # e.g. unsupported by the file system: fall back
            pass
    src.seek(s0)
    out.seek(d0)
    out.truncate()
    shutil.copyfileobj(src, out, 1 << 20)


def _tensor_bytes(t: torch.Tensor):
    t = t.detach().to("cpu").contiguous()
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    return t.reshape(-1).view(torch.uint8).numpy()


def _write_fresh(ckpt: Checkpoint, patch: dict[str, torch.Tensor], metadata, dst: Path) -> None:
    """Write a checkpoint built in memory (no source file)."""
    tensors = {}
    for name in ckpt.tensors:
        value = patch.get(name, ckpt.tensors[name])
        key = (diffusers_to_ldm(name) or name) if ckpt.naming == "ldm" else name
        tensors[key] = value.detach().contiguous()
    if ckpt.format == "torch":
        torch.save(tensors, dst)
        return
    from safetensors.torch import save_file

    meta = dict(ckpt.metadata if metadata is None else metadata)
    save_file(tensors, str(dst), metadata=meta or None)


def _atomic_file(out: Path, write) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _swap_folder(tmp: Path, out: Path) -> None:
    os.chmod(tmp, 0o777 & ~_umask())
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
    old.rmdir()
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_report(path: str | os.PathLike, data, inputs: list[str | os.PathLike] = ()) -> Path:
    """Write a JSON report atomically (never over an input)."""
    out = check_output_path(path, list(inputs))
    if out.is_dir():
        raise RevivalError(f"the report path {out} is a folder.")
    if not out.parent.is_dir():
        raise RevivalError(f"the report folder {out.parent} does not exist.")

    def write(tmp: Path) -> None:
        tmp.write_text(json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n")

    _atomic_file(out, write)
    return out


def jsonable(obj):
    """`obj` with NaN/inf floats turned into None and tuples/paths/dtypes into JSON types."""
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (Path, torch.dtype)):
        return str(obj)
    return obj
