"""Can an attacker find the positions that Gaussian obfuscation filled? (an adaptive attack probe)

The revival attack finds the pruned positions by their exact zeros; obfuscation fills them with
noise N(mean, std) of the row's (or layer's) surviving weights. A smarter attacker would look for
entries that do not fit the matrix's structure: for every column j (hidden unit j) fit W[:, j] by
least squares on that unit's intact ff.net.0.proj rows (side information, untouched by pruning
and by the defense) and/or a low-rank basis of W, and flag the entries with the largest residual
|r_ij| / std(r[:, j]). This script measures that locator on obfuscated matrices against the true
pruned positions:

* AUC of the residual score (0.5 = chance, 1.0 = every filled position ranks above every other);
* precision at k = the share of true pruned positions among the k top-scored entries, k = the
  true number pruned (an oracle k, generous to the attacker), beside the base rate k / size.

The same locator on the unobfuscated original (AUC "orig") shows what it would see if the pruned
weights were still there: the pruned weights are large (WANDA picks large |W| x activation).

Real weights: the six FFN output layers of MiniLM-L6 (as benchmarks/sign_recovery.py) and the
committed testbed UNet's ff.net.2 layers; ConceptPrune-like masks (sign_recovery.py's), skill
ratio 0.02 for MiniLM and 0.05 for the testbed (the demo's).

    python benchmarks/defense_locate.py            # MiniLM and testbed, row and layer statistics
    python benchmarks/defense_locate.py --quick    # two MiniLM layers, row statistics
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sign_recovery import conceptprune_like_mask, load_layers, load_testbed_layers, minilm_path  # noqa: E402

from revival.defense.obfuscate import obfuscate_matrix  # noqa: E402


def auc(score: torch.Tensor, mask: torch.Tensor) -> float:
    """Mann-Whitney AUC of `score` for the positives in `mask` (ties broken by order)."""
    s, m = score.flatten().double(), mask.flatten()
    ranks = torch.empty_like(s)
    ranks[s.argsort()] = torch.arange(1, s.numel() + 1, dtype=s.dtype)
    pos = int(m.sum())
    neg = m.numel() - pos
    return float((ranks[m].sum() - pos * (pos + 1) / 2) / (pos * neg))


def residuals(w: torch.Tensor, side: torch.Tensor | None, rank: int, ridge: float = 1e-3) -> torch.Tensor:
    """Per-column least-squares residual of W [out, in] on the column's side vectors
    (side [d, out, in]) and the top-`rank` left singular vectors of W."""
    m, n = w.shape
    basis = torch.linalg.svd(w, full_matrices=False)[0][:, :rank] if rank else w.new_zeros(m, 0)
    out = torch.empty_like(w)
    for j in range(n):
        x = torch.cat([side[:, :, j].T, basis], 1) if side is not None else basis
        g = x.T @ x
        g += ridge * g.diagonal().mean() * torch.eye(g.shape[0], dtype=g.dtype)
        out[:, j] = w[:, j] - x @ torch.linalg.solve(g, x.T @ w[:, j])
    return out


LOCATORS = {"side + low-rank": (True, 32), "side only": (True, 0), "low-rank only": (False, 32)}


def probe(w: torch.Tensor, side: torch.Tensor, mask: torch.Tensor, stats: str, seed: int) -> dict:
    filled, _ = obfuscate_matrix(w.masked_fill(mask, 0), stats, torch.Generator().manual_seed(seed))
    k = int(mask.sum())
    row = {"base": k / mask.numel()}
    for name, (use_side, rank) in LOCATORS.items():
        r = residuals(filled, side if use_side else None, rank)
        z = r.abs() / r.std(0, keepdim=True).clamp(min=1e-12)
        ro = residuals(w, side if use_side else None, rank)
        row[name] = (auc(z, mask), float(mask.flatten()[z.flatten().topk(k).indices].float().mean()),
                     auc(ro.abs() / ro.std(0, keepdim=True).clamp(min=1e-12), mask))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sets = [("MiniLM-L6 FFN (384x1536)", load_layers(minilm_path()), 0.02)]
    if not args.quick:
        sets.append(("testbed ff.net.2", load_testbed_layers(), 0.05))
    t0 = time.time()
    print(f"{'weights':26s} {'stats':5s} {'locator':16s} {'AUC':>6s} {'AUC orig':>8s} "
          f"{'prec@k':>7s} {'base':>6s}  (mean over layers)")
    for label, layers, ratio in sets:
        layers = layers[:2] if args.quick else layers
        for stats in (("row",) if args.quick else ("row", "layer")):
            rows = [probe(w, side, conceptprune_like_mask(w, seed=i, skill_ratio=ratio), stats, i)
                    for i, (w, side) in enumerate(layers)]
            base = statistics.mean(r["base"] for r in rows)
            for name in LOCATORS:
                a = statistics.mean(r[name][0] for r in rows)
                p = statistics.mean(r[name][1] for r in rows)
                o = statistics.mean(r[name][2] for r in rows)
                print(f"{label:26s} {stats:5s} {name:16s} {a:6.3f} {o:8.3f} {p:7.3f} {base:6.3f}")
    print(f"({time.time() - t0:.0f} s, {args.threads} thread(s))")


if __name__ == "__main__":
    main()
