"""Evaluation prompts: the paper's CSV shape (prompt, class, seed) or the testbed default set."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from ..errors import RevivalError

SEED_COLUMNS = ("seed", "evaluation_seed", "sd_seed")   # sd_seed: the I2P benchmark's CSV
CLASS_COLUMNS = ("class", "artists", "artist")           # artists: the paper's artist CSVs


@dataclass(frozen=True)
class PromptRow:
    case: int
    prompt: str
    cls: str
    seed: int


def read_prompts(path: str | Path, default_class: str | None = None) -> list[PromptRow]:
    """Rows of a CSV with columns prompt, class (or the artist CSVs' artists) and seed (or
    evaluation_seed, or I2P's sd_seed); case_number optional. A file without a class column (I2P) takes `default_class` for every
    row when one is given (e.g. "nudity")."""
    path = Path(path)
    if not path.is_file():
        raise RevivalError(f"prompt file not found: {path}.")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            cols = [c.strip() for c in (reader.fieldnames or [])]
            seed_col = next((c for c in SEED_COLUMNS if c in cols), None)
            class_col = next((c for c in CLASS_COLUMNS if c in cols), None)
            has_class = class_col is not None
            if "prompt" not in cols or (not has_class and not default_class) or seed_col is None:
                raise RevivalError(f"{path} must be a CSV with columns prompt, class and seed "
                                   f"(found: {', '.join(cols) or 'none'}).")
            rows = []
            for i, raw in enumerate(reader):
                raw = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
                raw["class"] = raw[class_col] if has_class else default_class
                try:
                    seed = int(float(raw[seed_col])) if raw[seed_col].endswith(".0") else int(raw[seed_col])
                    case = int(raw["case_number"]) if raw.get("case_number") else i
                except ValueError:
                    raise RevivalError(f"{path} line {i + 2}: the seed must be an integer.") from None
                if not raw["prompt"] or not raw["class"]:
                    raise RevivalError(f"{path} line {i + 2}: empty prompt or class.")
                rows.append(PromptRow(case, raw["prompt"], raw["class"], seed))
    except UnicodeDecodeError:
        raise RevivalError(f"{path} is not a UTF-8 text CSV file.") from None
    if not rows:
        raise RevivalError(f"{path} has no prompt rows.")
    if len({r.case for r in rows}) != len(rows):
        raise RevivalError(f"{path} repeats a case_number.")
    return rows


def default_prompts(classes: list[str], seeds_per_class: int = 50, first_seed: int = 0,
                    template: str = "an image of a {}") -> list[PromptRow]:
    """The paper's object prompt for every class, seeds first_seed .. first_seed+n-1 each."""
    if seeds_per_class < 1:
        raise RevivalError(f"seeds per class must be at least 1, got {seeds_per_class}.")
    rows, case = [], 0
    for c in classes:
        for s in range(first_seed, first_seed + seeds_per_class):
            rows.append(PromptRow(case, template.format(c), c, s))
            case += 1
    return rows


def write_prompts(rows: list[PromptRow], path: str | Path) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["case_number", "prompt", "class", "seed"])
        for r in rows:
            w.writerow([r.case, r.prompt, r.cls, r.seed])
    tmp.replace(path)
    return path
