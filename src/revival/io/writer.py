"""Write checkpoints and reports atomically, never over an input or a user's files.

Every file the toolkit writes goes through `atomic_write` (a temporary file beside the output,
then a rename) or `CheckpointWriter` (checkpoints: a safetensors output is the input's bytes with
only the updated tensors patched in place). Outputs keep the format, every name, dtype, tensor and
(unless replaced) the metadata. A diffusers folder written to NAME.safetensors becomes one file.
Where an output may go, checked before any work, is `outputs.py` (its names are re-exported here).
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch

from revival.errors import RevivalError
from revival.io.naming import diffusers_to_ldm
from revival.io.outputs import (check_distinct, check_new_output, check_output_path, check_report_path,  # noqa: F401
                      default_report_path, is_single_file, make_parents, make_temporary, plan_outputs,
                      remove_empty, remove_stale_temporaries)  # the checks of outputs, re-exported
from revival.io.readers import FORMATS, Checkpoint, _stamp, _StFile
from revival.io.store import TensorStore, _check_like, tensor_meta

_COPY_CHUNK = 16 * 1024 * 1024


def save_checkpoint(ckpt: Checkpoint, out_path: str | os.PathLike,
                    updates: Mapping[str, torch.Tensor] | None = None,
                    metadata: Mapping[str, str] | None = None, *, overwrite: bool = False) -> Path:
    """Write `ckpt` with `updates` applied to `out_path`, in the checkpoint's own format and naming.

    Only the updated tensors (and tensors assigned or edited in place through ``ckpt.tensors``)
    change; every other tensor, name and dtype is kept, and so is the safetensors metadata unless
    `metadata` replaces it (torch files have none). Each update must have the stored dtype and
    shape. The write is atomic and refuses to replace an input; an existing output is refused
    unless `overwrite` (then only the files written here are replaced). Returns the output path.
    """
    updates = dict(updates or {})
    for name, value in updates.items():
        _check_update(ckpt, name, value)
    patch = dict(ckpt.tensors.loaded()) if isinstance(ckpt.tensors, TensorStore) else {}
    patch.update(updates)
    with CheckpointWriter(ckpt, out_path, metadata, overwrite=overwrite) as writer:
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
    place); an exception (Ctrl-C and SIGTERM too, see `revival.cli`) aborts and leaves no output
    and no temporary file. An existing output is refused unless `overwrite`; with it, only the
    files this writer produces are replaced inside an existing folder, never others deleted.

    Example::

        with CheckpointWriter(ckpt, "out.safetensors") as w:
            for name in layers:
                w.write(name, revive_one(ckpt.tensors[name]))
                ckpt.tensors.release(name)
    """

    def __init__(self, ckpt: Checkpoint, out_path: str | os.PathLike, metadata: Mapping[str, str] | None = None,
                 *, overwrite: bool = False):
        self.ckpt = ckpt
        self.path = out = check_output_path(out_path, ckpt.input_paths())
        self.overwrite = overwrite
        if metadata is not None:
            if not (isinstance(metadata, Mapping) and all(isinstance(k, str) and isinstance(v, str)
                                                          for k, v in metadata.items())):
                raise RevivalError("checkpoint metadata must map strings to strings.")
            metadata = dict(metadata)
        self.metadata = metadata
        if ckpt.format not in FORMATS:
            raise RevivalError(f"unknown checkpoint format {ckpt.format!r}; expected one of {', '.join(FORMATS)}.")
        src = ckpt.source
        # a diffusers folder written to NAME.safetensors becomes one file (diffusers naming)
        self.folder = not is_single_file(out, ckpt.format)
        if ckpt.format == "diffusers" and self.folder and (src is None or src.config is None):
            raise RevivalError("a diffusers folder can only be written from a checkpoint loaded from one.")
        check_new_output(out, ckpt.input_paths(), overwrite=overwrite, folder=self.folder)
        _check_unchanged(ckpt)
        self._held: dict[str, torch.Tensor] = {}  # torch / in-memory / merged checkpoints: written at commit
        self._starts: dict[str, int] = {}  # safetensors: data start of each temp file, by source path
        self._dst: dict[str, Path] = {}  # safetensors: temp file of each source file
        self._done = False
        self._created = make_parents(out)
        remove_stale_temporaries(out)
        self._tmp = make_temporary(out, folder=self.folder)
        # a folder of one safetensors shard to one file: that shard's bytes, patched in place
        self._patch = src is not None and src.kind == "safetensors" and (self.folder or len(src.files) == 1)
        try:
            if self.folder:
                shutil.copyfile(src.config, self._tmp / "config.json")
            if self._patch:
                for f in src.files:
                    dst = self._tmp / f.rel if self.folder else self._tmp
                    self._starts[str(f.path)] = _copy_safetensors(f, metadata, dst)
                    self._dst[str(f.path)] = dst
                if src.index is not None and self.folder:
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
        if not self._patch:
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
            elif not self._patch and not self.folder and self.ckpt.format == "diffusers":
                _write_merged(self.ckpt, self._held, self.metadata, self._tmp)
            elif src.kind == "torch":
                dst = self._tmp / src.weight_rel if self.folder else self._tmp
                _write_torch(self.ckpt, self._held, dst)
            else:
                for dst in self._dst.values():
                    with open(dst, "rb+") as fh:
                        os.fsync(fh.fileno())
            if self.folder:
                install_folder(self._tmp, self.path)
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
        remove_empty(self._created)

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


def _write_merged(ckpt: Checkpoint, patch: dict[str, torch.Tensor], metadata, dst: Path) -> None:
    """A diffusers folder (several shards, or torch weights) as one safetensors file, diffusers naming."""
    from safetensors.torch import save_file

    tensors = {name: patch.get(name, ckpt.tensors[name]).detach().contiguous() for name in ckpt.tensors}
    meta = dict(ckpt.metadata if metadata is None else metadata)
    save_file(tensors, str(dst), metadata=meta or None)


# --------------------------------------------------------------------------- the one atomic writer

def atomic_write(path: str | os.PathLike, content, *, inputs=(), overwrite: bool = True) -> Path:
    """Write one file atomically: `content` (bytes, str, or a function that writes a given
    temporary path) goes to a temporary file beside `path`, which is then renamed into place with
    the user's umask. Refuses to write over an input (or a folder holding one), and over an
    existing file unless `overwrite`. On any exception (Ctrl-C, SIGTERM too) nothing is left."""
    out = check_output_path(path, list(inputs))
    if out.is_dir():
        raise RevivalError(f"the output path {out} is a folder.")
    if out.exists() and not overwrite:
        raise RevivalError(f"{out} exists; pass --overwrite to replace it.")
    created = make_parents(out)
    remove_stale_temporaries(out)
    tmp = make_temporary(out)
    try:
        if isinstance(content, (bytes, bytearray)):
            tmp.write_bytes(content)
        elif isinstance(content, str):
            tmp.write_text(content, encoding="utf-8")
        else:
            content(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        remove_empty(created)
        raise
    return out


def atomic_folder(path: str | os.PathLike, write, *, inputs=(), overwrite: bool = True) -> Path:
    """Write a folder atomically: `write(tmp_folder)` fills a temporary folder beside `path`, whose
    files then replace those of the same name in `path` (created if missing; others kept)."""
    out = check_output_path(path, list(inputs))
    if out.exists() and not out.is_dir():
        raise RevivalError(f"the output {out} is a file, not a folder.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise RevivalError(f"the output folder {out} exists and is not empty; pass --overwrite.")
    created = make_parents(out)
    remove_stale_temporaries(out)
    tmp = make_temporary(out, folder=True)
    try:
        write(tmp)
        install_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_empty(created)
        raise
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def install_folder(tmp: Path, out: Path) -> None:
    """Move the finished temporary folder `tmp` to `out`: a rename when `out` does not exist;
    otherwise each file of `tmp` replaces its namesake in `out` (other files are left alone)."""
    mask = _umask()
    for f in tmp.rglob("*"):
        os.chmod(f, (0o777 if f.is_dir() else 0o666) & ~mask)
    os.chmod(tmp, 0o777 & ~mask)
    if not out.exists():
        os.replace(tmp, out)
        return
    for f in sorted(tmp.rglob("*")):
        if f.is_dir():
            continue
        dst = out / f.relative_to(tmp)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(f, dst)
    shutil.rmtree(tmp, ignore_errors=True)


def write_json(data, path: str | os.PathLike, inputs=(), *, overwrite: bool = True) -> Path:
    """Write `data` as indented JSON (NaN/inf as null), atomically, never over an input."""
    return atomic_write(path, json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n",
                        inputs=inputs, overwrite=overwrite)


def write_report(path: str | os.PathLike, data, inputs=(), *, overwrite: bool = True) -> Path:
    """A JSON report beside an output (`write_json` with the arguments in report order)."""
    return write_json(data, path, inputs, overwrite=overwrite)


def jsonable(obj):
    """`obj` with NaN/inf floats turned into None and tuples/paths/dtypes/dataclasses into JSON types."""
    import dataclasses
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (Path, torch.dtype)):
        return str(obj)
    return obj
