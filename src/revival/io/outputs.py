"""Where outputs go, all checked before any work: never an input, around or inside one; never a
user's existing file or folder without --overwrite; the report beside its output (never inside
the folder a publisher uploads); missing parent folders created when the output is written (and
removed again if the write fails); temporaries beside the output, named after it and the process
that writes, so that a later run can tell a stale one.

    >>> out, report = plan_outputs(ckpt, "revived/unet")   # (revived/unet, revived/unet.report.json)
    >>> check_new_output("coat.safetensors", ckpt.input_paths(), folder=False)
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from revival.errors import RevivalError


def check_output_path(out: str | os.PathLike, inputs: list[str | os.PathLike]) -> Path:
    """RevivalError if `out` is one of the input paths, holds one (a folder around an input), or
    lies inside an input folder (writing there would change the input)."""
    out_p = Path(out)
    out_r = out_p.resolve()
    for inp in inputs:
        in_r = Path(inp).resolve()
        if out_r == in_r:
            raise RevivalError(f"the output path {out_p} is an input; choose another output path.")
        if in_r.is_relative_to(out_r):
            raise RevivalError(f"the output path {out_p} holds the input {inp}; choose another output path.")
        if in_r.is_dir() and out_r.is_relative_to(in_r):
            raise RevivalError(f"the output path {out_p} is inside the input {inp}; choose a path outside it.")
    return out_p


def check_new_output(out: str | os.PathLike, inputs=(), *, overwrite: bool = False, folder: bool | None = None,
                     label: str = "the output") -> Path:
    """Every check of an output path that can be made before any work, as one sentence each:
    not an input, not around or inside one; no file where its folder would be; an existing
    output refused unless `overwrite` (a folder: when it holds anything). `folder`: True for a
    folder output, False for a file, None when either is fine. Missing parent folders are fine:
    the writers create them when they write."""
    out = check_output_path(out, list(inputs))
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise RevivalError(f"{label} {out} cannot be written: {parent} is a file, not a folder.")
            break
    if out.exists():
        if folder is True and not out.is_dir():
            raise RevivalError(f"{label} {out} is a file, but this output is a folder; choose another path.")
        if folder is False and out.is_dir():
            raise RevivalError(f"{label} {out} is a folder, but this output is a single file; choose another path.")
        if not overwrite and (not out.is_dir() or any(out.iterdir())):
            raise RevivalError(f"{label} {out} exists; pass --overwrite to replace the files this command writes "
                               "there (others are left alone).")
    return out


def check_distinct(paths: Mapping[str, str | os.PathLike | None]) -> None:
    """RevivalError when two of the outputs (label -> path; None skipped) are one path, or one
    would hold the other."""
    named = [(label, Path(p)) for label, p in paths.items() if p is not None]
    for i, (label, path) in enumerate(named):
        for other_label, other in named[:i]:
            a, b = path.resolve(), other.resolve()
            if a == b or a.is_relative_to(b) or b.is_relative_to(a):
                raise RevivalError(f"{label} {path} and {other_label} {other} collide; give them separate paths.")


def make_parents(out: str | os.PathLike) -> list[Path]:
    """Create the missing parent folders of `out`; returns those created, deepest first (so
    that an aborted write can remove them again)."""
    created = []
    parent = Path(out).parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    if created:
        try:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
        except NotADirectoryError:
            raise RevivalError(f"the output {out} cannot be written: a file stands where its folder would be.") from None
        except OSError as exc:
            raise RevivalError(f"the output folder {Path(out).parent} cannot be created ({exc.strerror}).") from None
    elif not parent.is_dir():
        raise RevivalError(f"the output {out} cannot be written: {parent} is a file, not a folder.")
    return created


def remove_empty(folders: list[Path]) -> None:
    """Remove the folders `make_parents` created, deepest first, where they are still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


def is_single_file(out: str | os.PathLike, fmt: str) -> bool:
    """Whether output `out` of a checkpoint of format `fmt` is one file: always for a file
    format; for a diffusers folder, when the output's name ends in .safetensors."""
    return fmt != "diffusers" or Path(out).suffix.lower() == ".safetensors"


_TAG = ".revival-"  # temporaries: .NAME.revival-PID-RANDOM.tmp beside the output


def make_temporary(out: Path, folder: bool = False) -> Path:
    """A temporary file (or folder) beside `out`, named after it and this process, so that a
    later run can tell a stale one (its process is gone, e.g. after SIGKILL) and remove it."""
    prefix = f".{out.name}{_TAG}{os.getpid()}-"
    if folder:
        return Path(tempfile.mkdtemp(dir=out.parent, prefix=prefix, suffix=".tmp"))
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=prefix, suffix=".tmp")
    os.close(fd)
    return Path(name)


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Remove the temporaries that an earlier, killed run left beside `out`; returns them."""
    removed = []
    parent = Path(out).parent
    if not parent.is_dir():
        return removed
    for tmp in parent.glob(f".{Path(out).name}{_TAG}*.tmp"):
        try:
            pid = int(tmp.name[len(f".{Path(out).name}{_TAG}"):].split("-", 1)[0])
        except ValueError:
            continue
        if _alive(pid):
            continue
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- outputs of a verb

def default_report_path(output, fmt: str | None = None) -> Path:
    """OUT.report.json, beside the output whether it is a file or a folder (never inside: the
    folder a publisher uploads holds the model's own files only). `fmt` is no longer used."""
    output = Path(output)
    return output.with_name(output.name + ".report.json")


def check_report_path(report, output, inputs, *, overwrite: bool = False) -> None:
    """RevivalError, before any work, if a report path would replace an input, the output or a
    user's file (unless `overwrite`), or lies inside the output. A missing folder is created
    when the report is written."""
    report, output = Path(report), Path(output)
    if report.resolve() == output.resolve():
        raise RevivalError(f"the report path {report} is the output path; choose another.")
    if report.resolve().is_relative_to(output.resolve()):
        raise RevivalError(f"the report path {report} is inside the output {output}; put it beside the output.")
    check_new_output(report, inputs, overwrite=overwrite, folder=False, label="the report")


def plan_outputs(ckpt, output, report=None, *, overwrite: bool = False) -> tuple[Path, Path]:
    """(output path, report path) of a verb that writes a checkpoint and its JSON report, both
    checked before any work (`check_new_output`): never an input, around or inside one, never a
    user's existing file or folder without `overwrite`. The report goes beside the output
    (`default_report_path`) unless `report` names another path. An output named *.safetensors
    of a diffusers folder is one file (`is_single_file`)."""
    output = check_new_output(output, ckpt.input_paths(), overwrite=overwrite,
                              folder=not is_single_file(output, ckpt.format))
    report_path = Path(report) if report is not None else default_report_path(output)
    check_report_path(report_path, output, ckpt.input_paths(), overwrite=overwrite)
    return output, report_path
