"""Prompt files and the default evaluation prompts.

read_prompts: the one prompt reader -- a CSV in the paper's shape (prompt, class, seed) for
evaluation, or a text file with one prompt a line (ConceptPrune's prompt sets, word lists).

default_prompts: the evaluation set used when none is given. On the testbed it is HELD OUT from
ConceptPrune's unlearning prompts (`revival.unlearn.conceptprune.TESTBED_TEMPLATES` x class names,
seeds 0..): other caption templates and synonyms of each class (revival.testbed.text), seeds from
1000 -- so an evaluation never measures the prompts the pruning was fitted to. Other class names
(Stable Diffusion objects) get the paper's "an image of a {class}".
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from revival.errors import RevivalError

SEED_COLUMNS = ("seed", "evaluation_seed", "sd_seed")   # sd_seed: the I2P benchmark's CSV
CLASS_COLUMNS = ("class", "artists", "artist")           # artists: the paper's artist CSVs


@dataclass(frozen=True)
class PromptRow:
    case: int
    prompt: str
    cls: str
    seed: int


HELDOUT_FIRST_SEED = 1000
PAPER_TEMPLATE = "an image of a {}"


def read_prompts(path: str | Path, default_class: str | None = None) -> list[PromptRow]:
    """Rows of a prompt file.

    A `.csv`: columns prompt, class (or the artist CSVs' artists) and seed (or evaluation_seed,
    or I2P's sd_seed); case_number optional. A file without a class column (I2P) takes
    `default_class` for every row when one is given (e.g. "nudity").
    Any other file: UTF-8 text, one prompt per non-empty line; row i has case i, seed i and class
    `default_class` (or "")."""
    path = Path(path)
    if not path.is_file():
        raise RevivalError(f"prompt file not found: {path}.")
    if path.suffix.lower() != ".csv":
        return _read_lines(path, default_class or "")
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


def _read_lines(path: Path, cls: str) -> list[PromptRow]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise RevivalError(f"prompt file {path} is not UTF-8 text.") from None
    prompts = [ln.strip() for ln in lines if ln.strip()]
    if not prompts:
        raise RevivalError(f"prompt file {path} holds no prompts.")
    return [PromptRow(i, p, cls, i) for i, p in enumerate(prompts)]


def prompt_texts(path: str | Path) -> list[str]:
    """Just the prompts of a prompt file (ConceptPrune's target/base sets, word lists)."""
    return [r.prompt for r in read_prompts(path)]


def heldout_phrasings(cls: str) -> list[str]:
    """The testbed's held-out evaluation prompts of a class: its caption templates and synonyms
    (revival.testbed.text) minus every prompt ConceptPrune unlearns with on the testbed."""
    from revival.testbed import text as T
    from revival.unlearn.conceptprune import TESTBED_TEMPLATES

    if cls not in T.SYNONYMS:
        return []
    unlearning = {t.format(c) for t in TESTBED_TEMPLATES for c in T.CLASSES}
    # templates ConceptPrune does not use ("{} on a plain background", "catalog photo of {}", ...),
    # filled with the class's synonyms other than its plain name ("a tee", "a running shoe", ...)
    templates = [t for t in T.TEMPLATES if t.format("a {}") not in TESTBED_TEMPLATES] or list(T.TEMPLATES)
    names = {f"a {cls}", f"an {cls}", cls}
    synonyms = [s for s in T.SYNONYMS[cls] if s not in names] or list(T.SYNONYMS[cls])
    out = []
    for i in range(max(len(templates), len(synonyms))):   # a diagonal walk: every template and synonym early
        for j in range(len(synonyms)):
            p = templates[(i + j) % len(templates)].format(synonyms[j])
            if p not in unlearning and p not in out:
                out.append(p)
    return out


def default_prompts(classes: list[str], seeds_per_class: int = 50,
                    first_seed: int = HELDOUT_FIRST_SEED, template: str | None = None) -> list[PromptRow]:
    """`seeds_per_class` rows per class, seeds first_seed, first_seed+1, ... (default 1000).

    The prompt of a testbed class cycles through its held-out phrasings (`heldout_phrasings`);
    any other class (or every class when `template` is given) gets `template` (default: the
    paper's "an image of a {class}")."""
    if not isinstance(seeds_per_class, int) or seeds_per_class < 1:
        raise RevivalError(f"seeds per class must be a positive integer, got {seeds_per_class!r}.")
    if not isinstance(first_seed, int) or first_seed < 0:
        raise RevivalError(f"the first seed must be a non-negative integer, got {first_seed!r}.")
    rows, case = [], 0
    for c in classes:
        phrasings = [] if template is not None else heldout_phrasings(c)
        for k in range(seeds_per_class):
            prompt = phrasings[k % len(phrasings)] if phrasings else (template or PAPER_TEMPLATE).format(c)
            rows.append(PromptRow(case, prompt, c, first_seed + k))
            case += 1
    return rows


def write_prompts(rows: list[PromptRow], path: str | Path) -> Path:
    """The rows as a CSV (case_number, prompt, class, seed), written atomically."""
    import io

    from revival.io import atomic_write

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["case_number", "prompt", "class", "seed"])
    for r in rows:
        w.writerow([r.case, r.prompt, r.cls, r.seed])
    return atomic_write(Path(path), buf.getvalue())
