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
    python benchmarks/defense_locate.py --quick --end-to-end   # + the adaptive attack, evaluated
    python benchmarks/defense_locate.py --attackers            # every attacker x every defense (localisation)
    python benchmarks/defense_locate.py --detectors            # simple detectors, default vs gaussian, MiniLM-L6

--attackers: every attacker of `revival.attack.attackers` (zeros, residual, method-aware, columns,
reprune) against every defense (gaussian, decoy, resample = the default), on the same real weights
and ConceptPrune-like masks; method-aware is given the masks' own per-step activation norms (what
rerunning ConceptPrune's statistics on a release yields: the layers feeding ff.net.2 are intact).
Entry AUC, column AUC (columns where pruning concentrated) and precision@k vs the true (pruned) mask; "resample-fresh" is resample with fresh_units (its
method-aware row keeps the original activations, so it overstates that attacker there).
The row "any / activations" ranks by the activation statistics alone (every ff.net.2 weight
counted equal): no defense that writes only into ff.net.2 can change it, so it bounds from below
what the method-aware attacker localises against any such defense.

--end-to-end: on the demo's unlearned and obfuscated testbed model (ConceptPrune, skill ratio
0.05), the attacker zeroes the located entries (factor x each layer's true pruned share: an
oracle count), runs the revival attack on them, keeps the observed value wherever the attack
left a zero, and the images are classified as in the demo.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import table, write_results  # noqa: E402
from sign_recovery import conceptprune_like_mask, conceptprune_like_mask_with_stats, load_layers, load_testbed_layers, minilm_path  # noqa: E402

from revival.attack.attackers.residual import residual_scores  # noqa: E402
from revival.defense.obfuscate import obfuscate_matrix  # noqa: E402


def auc(score: torch.Tensor, mask: torch.Tensor) -> float:
    """Mann-Whitney AUC of `score` for the positives in `mask` (ties broken by order)."""
    s, m = score.flatten().double(), mask.flatten()
    ranks = torch.empty_like(s)
    ranks[s.argsort()] = torch.arange(1, s.numel() + 1, dtype=s.dtype)
    pos = int(m.sum())
    neg = m.numel() - pos
    return float((ranks[m].sum() - pos * (pos + 1) / 2) / (pos * neg))


LOCATORS = {"side + low-rank": (True, 32), "side only": (True, 0), "low-rank only": (False, 32)}


def probe(w: torch.Tensor, side: torch.Tensor, mask: torch.Tensor, stats: str, seed: int) -> dict:
    filled, _ = obfuscate_matrix(w.masked_fill(mask, 0), stats, torch.Generator().manual_seed(seed))
    k = int(mask.sum())
    row = {"base": k / mask.numel()}
    for name, (use_side, rank) in LOCATORS.items():
        z = residual_scores(filled, side if use_side else None, rank=rank)
        zo = residual_scores(w, side if use_side else None, rank=rank)
        row[name] = (auc(z, mask), float(mask.flatten()[z.flatten().topk(k).indices].float().mean()), auc(zo, mask))
    return row


def end_to_end(concept: str, seeds_per_class: int, factors: list[float]) -> dict:
    """The demo's unlearned + obfuscated testbed model; the attacker locates the fraction
    factor x (true pruned share of each layer) of worst-fitting entries, zeroes them, runs the
    revival attack on them and puts back the observed value wherever the attack left a zero."""
    from revival.attack.attackers.residual import locate
    from revival.attack.revive import AttackConfig, revive, side_features
    from revival.story.demo import DemoConfig, testbed_evaluator
    from revival.defense.obfuscate import obfuscate
    from revival.testbed import load_pipeline
    from revival.unlearn.conceptprune import ConceptPruneConfig, apply_masks, concept_prompts, conceptprune

    cfg = DemoConfig.make(concept, seeds_per_class=seeds_per_class)
    pipe = load_pipeline()
    original = {k: v.detach().clone() for k, v in pipe.unet.state_dict().items()}
    cp = ConceptPruneConfig(skill_ratio=cfg.skill_ratio, steps=cfg.unlearn_steps, seed=cfg.seed)
    masks, _ = conceptprune(pipe, *concept_prompts(concept, pipe.classes), cp, progress=False)
    layers = sorted(masks)
    unlearned = {**original, **apply_masks(original, masks)}
    obfuscated = {**unlearned, **obfuscate(unlearned, layers, stats=cfg.obfuscate_stats, seed=cfg.seed)[0]}

    def accuracy(state):
        pipe.unet.load_state_dict(state)
        e, p, _, _ = testbed_evaluator(pipe, pipe.classes, concept, seeds_per_class, cfg)
        return e, p

    def attack(state, found):
        zeroed = {**state, **{n: state[n].masked_fill(found[n], 0) for n in layers}}
        updates, _ = revive(zeroed, layers, AttackConfig(seed=cfg.seed), progress=False)
        return {**state, **{n: torch.where(found[n] & (updates[n] == 0), state[n], updates[n]) for n in layers}}

    print(f"\nend to end: concept {concept!r}, skill ratio {cfg.skill_ratio}, {seeds_per_class} images/class")
    print(f"{'model':58s} {'erased':>7s} {'preserved':>9s} {'located prec.':>13s}")
    out = []
    for label, state in (("original", original), ("unlearned", unlearned), ("obfuscated (defended)", obfuscated),
                         ("revival attack on the unlearned model (zeros)", attack(unlearned, masks))):
        e, p = accuracy(state)
        print(f"{label:58s} {e:7.2f} {p:9.3f} {'':>13s}")
        out.append([label, e, p, None])
    for f in factors:
        found = {}
        for n in layers:
            share = float(masks[n].float().mean())
            found[n] = locate(obfuscated[n].float(), min(0.5, f * share),
                              side_features(obfuscated, n, tuple(obfuscated[n].shape)).float())
        hit = sum(int((found[n] & masks[n]).sum()) for n in layers) / sum(int(found[n].sum()) for n in layers)
        e, p = accuracy(attack(obfuscated, found))
        print(f"{f'adaptive attack on the defended model, {f:g} x true share':58s} {e:7.2f} {p:9.3f} {hit:13.3f}")
        out.append([f"adaptive attack on the defended model, {f:g} x true share", e, p, hit])
    pipe.unet.load_state_dict(original)
    return table(f"end to end: concept {concept}, skill ratio {cfg.skill_ratio}, {seeds_per_class} images a class",
                 ["model", "erased", "preserved", "located precision"], out, formats=["", ".2f", ".3f", ".3f"])


def attackers_table(sets, quick: bool) -> dict:
    """Localisation of every attacker against every defense (mean over layers)."""
    from revival.attack.attackers import ATTACKERS, AttackContext
    from revival.defense import DEFENSES, apply_defense

    name, proj = "blk.ff.net.2.weight", "blk.ff.net.0.proj.weight"
    print(f"\n{'weights':26s} {'defense':9s} {'attacker':13s} {'entry AUC':>9s} {'col AUC':>8s} "
          f"{'prec@k':>7s} {'base':>6s}  (mean over layers; AUC 0.5 = chance)")
    out = []
    for label, layers, ratio in sets:
        layers = layers[:2] if quick else layers
        rows: dict = {}
        for i, (w, side) in enumerate(layers):
            mask, a_t, a_b = conceptprune_like_mask_with_stats(w, seed=i, skill_ratio=ratio)
            p = side.permute(0, 2, 1).reshape(-1, w.shape[0]).contiguous()     # [d*in, out], as ff.net.0.proj
            pruned = {name: w.masked_fill(mask, 0), proj: p}
            stats = {"t": {name: a_t}, "b": {name: a_b}}
            ctx = AttackContext(skill_ratio=ratio, steps=10, prompts=(["t"], ["b"]),
                                activations=lambda pr, s=stats: s["t" if pr == ["t"] else "b"])
            # the activation side alone (every weight of ff.net.2 treated as equal): what the
            # method-aware attacker's ranking keeps whatever a defense writes into ff.net.2
            from revival.attack.attackers import Located, localisation, top_fraction
            from revival.attack.attackers.method_aware import method_scores

            s = method_scores(torch.ones_like(w), a_t, a_b, 10)
            loc = localisation(Located({name: top_fraction(s, float(mask.float().mean()))}, {name: s}),
                               {name: mask}, [name])
            rows.setdefault(("any", "activations"), []).append(
                (loc.entry_auc, loc.column_auc, loc.precision_at_k, loc.base_rate))
            for d in (*DEFENSES, "resample-fresh"):
                upd, _ = apply_defense(pruned, [name], d.split("-")[0], fresh_units=d.endswith("fresh"))
                release = {**pruned, **upd}
                truth = {name: mask}
                for a in ATTACKERS:
                    located = _locate_only(a, release, name, ctx)
                    from revival.attack.attackers import localisation

                    loc = localisation(located, truth, [name])
                    rows.setdefault((d, a), []).append((loc.entry_auc, loc.column_auc, loc.precision_at_k, loc.base_rate))
        for (d, a), r in rows.items():
            e, c, pk, b = (statistics.mean(x[j] for x in r) for j in range(4))
            print(f"{label:26s} {d:9s} {a:13s} {e:9.3f} {c:8.3f} {pk:7.3f} {b:6.3f}", flush=True)
            out.append([label, d, a, e, c, pk, b])
    return table("every attacker against every defense: localisation (mean over layers; AUC 0.5 = chance)",
                 ["weights", "defense", "attacker", "entry AUC", "column AUC", "precision@k", "base rate"], out,
                 formats=["", "", "", ".3f", ".3f", ".3f", ".3f"])


def detectors_table(layers, ratio: float, seeds: int = 1) -> dict:
    """Simple detectors of filled positions on BERT-style feed-forward weights (no gate: units
    cannot be retired), per defense: entry AUC of the filled (pruned) positions, mean over layers
    and mask seeds. Detectors: residual from the matrix's rank-32 fit; |value - row mean| / row
    std; the column's std (broadcast); the residual and columns attackers. Every defense runs with
    its default randomness (secret)."""
    from revival.attack.attackers import LOCATORS, AttackContext, localisation
    from revival.defense import apply_defense

    name, proj = "blk.ff.net.2.weight", "blk.ff.net.0.proj.weight"
    out: dict = {}
    for i, (w, side) in enumerate(layers):
        for s in range(seeds):
            mask = conceptprune_like_mask(w, seed=100 * i + s, skill_ratio=ratio)
            p = side.permute(0, 2, 1).reshape(-1, w.shape[0]).contiguous()
            pruned = {name: w.masked_fill(mask, 0), proj: p}
            ctx = AttackContext(fraction=float(mask.float().mean()) or 0.01)
            for d in ("gaussian", "resample", "resample-column"):
                # resample-column: hot units replaced by noise at their own scale (the former default here)
                upd, _ = apply_defense(pruned, [name], d.split("-")[0], hot="column" if d.endswith("column") else None)
                x = upd[name].double()
                z = residual_scores(x.float(), None, rank=32).double()
                row = ((x - x.mean(1, keepdim=True)).abs() / x.std(1, keepdim=True))
                col = x.std(0, keepdim=True).expand_as(x)
                scores = {"low-rank residual": z, "|x - row mean| / row std": row, "column std": col}
                for label, sc in scores.items():
                    out.setdefault((d, label), []).append(auc(sc, mask))
                release = {**pruned, **upd}
                for a in ("residual", "columns"):
                    loc = localisation(LOCATORS.get(a)(release, [name], ctx), {name: mask}, [name])
                    out.setdefault((d, f"attacker {a}"), []).append(loc.entry_auc)
    print(f"\n{'defense':15s} {'detector':28s} {'entry AUC':>9s} {'two-sided':>9s}  (mean over {len(layers)} layers "
          f"x {seeds} masks; two-sided: max(AUC, 1 - AUC), what a detector of either sign reaches)")
    rows = []
    for (d, label), v in sorted(out.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        a = statistics.mean(v)
        print(f"{d:15s} {label:28s} {a:9.3f} {max(a, 1 - a):9.3f}")
        rows.append([d, label, a, max(a, 1 - a)])
    return table(f"simple detectors of the filled positions (mean over {len(layers)} layers x {seeds} masks)",
                 ["defense", "detector", "entry AUC", "two-sided AUC"], rows, formats=["", "", ".3f", ".3f"],
                 note="two-sided: max(AUC, 1 - AUC), what a detector of either sign reaches")


def _locate_only(attacker: str, tensors, name: str, ctx):
    from revival.attack.attackers import LOCATORS

    return LOCATORS.get(attacker)(tensors, [name], ctx)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--end-to-end", action="store_true",
                    help="also run the adaptive attack on the obfuscated testbed model and evaluate it")
    ap.add_argument("--concept", default="sneaker")
    ap.add_argument("--seeds-per-class", type=int, default=10)
    ap.add_argument("--factors", default="1,2", help="located share as multiples of the true pruned share")
    ap.add_argument("--attackers", action="store_true",
                    help="only the table of every attacker against every defense (localisation)")
    ap.add_argument("--detectors", action="store_true",
                    help="only simple detectors vs the default and Gaussian on MiniLM-L6 (units cannot be retired)")
    ap.add_argument("--results-dir", default=None, help="where the results file goes (default benchmarks/results/)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    sets = [("MiniLM-L6 FFN (384x1536)", load_layers(minilm_path()), 0.02)]
    if not args.quick:
        sets.append(("testbed ff.net.2", load_testbed_layers(), 0.05))
    t0 = time.time()
    tables = []
    if args.detectors:
        tables.append(detectors_table(load_layers(minilm_path())[: 2 if args.quick else 6], 0.02))
    elif args.attackers:
        tables.append(attackers_table(sets, args.quick))
    else:
        print(f"{'weights':26s} {'stats':5s} {'locator':16s} {'AUC':>6s} {'AUC orig':>8s} "
              f"{'prec@k':>7s} {'base':>6s}  (mean over layers)")
        rows_out = []
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
                    rows_out.append([label, stats, name, a, o, p, base])
        tables.append(table("residual locators against Gaussian obfuscation (mean over layers)",
                            ["weights", "stats", "locator", "AUC", "AUC on the original", "precision@k", "base rate"],
                            rows_out, formats=["", "", "", ".3f", ".3f", ".3f", ".3f"],
                            note="AUC 0.5 = chance; precision@k at k = the true number pruned (an oracle k)"))
        if args.end_to_end:
            tables.append(end_to_end(args.concept, args.seeds_per_class, [float(f) for f in args.factors.split(",")]))
    seconds = time.time() - t0
    print(f"({seconds:.0f} s, {args.threads} thread(s))")
    mode = "_detectors" if args.detectors else "_attackers" if args.attackers else ""
    path = write_results(f"defense_locate{mode}{'_quick' if args.quick else ''}", {
        "title": "Can an attacker find the positions a defense filled?" + {"_detectors": " (simple detectors)",
                                                                            "_attackers": " (every attacker)"}.get(mode, ""),
        "about": "Localisation of the filled (pruned) positions on real weights with ConceptPrune-like masks "
                 "(benchmarks/defense_locate.py's docstring); " + ("two MiniLM-L6 layers (--quick)" if args.quick else
                 "MiniLM-L6's six FFN output layers and the testbed's ff.net.2 layers") +
                 f"; {seconds:.0f} s on {args.threads} thread(s).",
        "seconds": round(seconds, 1), "threads": args.threads, "tables": tables},
        argv=None if argv is None else ["benchmarks/defense_locate.py", *argv], folder=args.results_dir)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
