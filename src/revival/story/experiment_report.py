"""What `revival experiment` produces: each cell's result, the table, and results.{json,md,csv,png}."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from revival.story.experiment_config import ExperimentConfig
from revival.intervals import Proportion
from revival.io import atomic_write


@dataclass
class CellResult:
    concept: str
    stage: str
    erased: Proportion
    preserved: Proportion
    unet_sha256: str
    sign_recovery: dict | None = None

    def to_dict(self) -> dict:
        return {"concept": self.concept, "stage": self.stage, "erased": self.erased.to_dict(),
                "preserved": self.preserved.to_dict(), "unet_sha256": self.unet_sha256,
                **({"sign_recovery": self.sign_recovery} if self.sign_recovery is not None else {})}

    @classmethod
    def from_dict(cls, d: dict) -> "CellResult":
        p = lambda x: Proportion(int(x["hits"]), int(x["n"]))  # noqa: E731
        return cls(d["concept"], d["stage"], p(d["erased"]), p(d["preserved"]), d["unet_sha256"],
                   d.get("sign_recovery"))


@dataclass
class ExperimentResult:
    config: ExperimentConfig
    cells: dict[tuple[str, str], CellResult]
    computed: list[tuple[str, str]] = field(default_factory=list)   # cells made by this run

    def rows(self) -> list[dict]:
        out = []
        for c in self.config.concepts:
            cell = {s: self.cells[(c.name, s)] for s in self.config.stages}
            signs = {s: cell[s].sign_recovery for s in self.config.stages if cell[s].sign_recovery}
            out.append({"concept": c.name, "task": c.task,
                        "erased": {s: cell[s].erased.value for s in self.config.stages},
                        "preserved": {s: cell[s].preserved.value for s in self.config.stages},
                        "sign_recovery": signs,
                        "ci95": {"erased": {s: cell[s].erased.to_dict()["ci95"] for s in self.config.stages},
                                 "preserved": {s: cell[s].preserved.to_dict()["ci95"] for s in self.config.stages}},
                        "images": {"erased": cell[self.config.stages[0]].erased.n,
                                   "preserved": cell[self.config.stages[0]].preserved.n}})
        return out

    def to_dict(self) -> dict:
        return {"rows": self.rows()}



LABELS = {"original": "original", "unlearned": "unlearned", "revived": "revived",
          "obfuscated": "obfuscated", "obfuscated_revived": "obfuscated + attack"}


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def table(result: ExperimentResult) -> tuple[list[str], list[list]]:
    """The paper's table: a row per concept (erased accuracy per stage, preserved per stage,
    sign recovery of the attack), then the mean row."""
    st = result.config.stages
    head = (["concept", "task"] + [f"erased {LABELS[s]}" for s in st] + [f"preserved {LABELS[s]}" for s in st]
            + ["sign recovery (all)", "sign recovery (kept)"])
    body = []
    for r in result.rows():
        signs = r["sign_recovery"].get("revived") or {}
        body.append([r["concept"], r["task"]] + [r["erased"][s] for s in st] + [r["preserved"][s] for s in st]
                    + [signs.get("all"), signs.get("kept")])
    mean = ["mean", ""] + [_mean([row[i] for row in body]) for i in range(2, len(head))]
    return head, body + [mean]


def _fmt(v) -> str:
    return "" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def markdown(result: ExperimentResult) -> str:
    head, rows = table(result)
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in rows:
        cells = [f"**{r[0]}**" if r[0] == "mean" else r[0]] + [_fmt(v) for v in r[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    st = result.config.stages
    ci = ["", "95% Wilson intervals of every cell (erased; preserved):", "",
          "| concept | " + " | ".join(LABELS[s] for s in st) + " |", "|---|" + "---|" * len(st)]
    for r in result.rows():
        ci.append(f"| {r['concept']} | " + " | ".join(
            f"{_iv(r['ci95']['erased'][s])}; {_iv(r['ci95']['preserved'][s])}" for s in st) + " |")
    n = result.rows()[0]["images"]
    return ("# Experiment: erased / preserved accuracy per stage\n\n"
            f"model: {result.config.model}; {n['erased']} images of the erased concept and {n['preserved']} of "
            f"the other classes per cell.\n\n" + "\n".join(lines) + "\n" + "\n".join(ci) + "\n")


def _iv(x) -> str:
    return "n/a" if x is None else f"[{x[0]:.2f}, {x[1]:.2f}]"


def csv_text(result: ExperimentResult) -> str:
    head, rows = table(result)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    for r in rows:
        w.writerow([("" if v is None else (f"{v:.6f}" if isinstance(v, float) else v)) for v in r])
    return buf.getvalue()


def bar_png(result: ExperimentResult) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    st = result.config.stages
    rows = result.rows()
    e = [_mean([r["erased"][s] for r in rows]) or 0.0 for s in st]
    p = [_mean([r["preserved"][s] for r in rows]) or 0.0 for s in st]
    fig, ax = plt.subplots(figsize=(1.6 * len(st) + 2, 3.4), dpi=100)
    x = range(len(st))
    ax.bar([i - 0.2 for i in x], e, 0.4, label="erased concept")
    ax.bar([i + 0.2 for i in x], p, 0.4, label="other classes")
    ax.set_xticks(list(x), [LABELS[s] for s in st], fontsize=8)
    ax.set_ylim(0, 1.15)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("classifier accuracy (mean over concepts)")
    ax.legend(fontsize=8, loc="upper center", ncol=2, frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def write_results(result: ExperimentResult, out: Path) -> None:
    atomic_write(out / "results.json", json.dumps(result.to_dict(), indent=2) + "\n")
    atomic_write(out / "results.md", markdown(result))
    atomic_write(out / "results.csv", csv_text(result))
    atomic_write(out / "results.png", bar_png(result))
