"""The stage chain of the paper's story, defined once: the stages, their names, order, labels,
what each is built from, and the other names they go by.

    original            the model before unlearning
    unlearned           ConceptPrune's release: WANDA-selected weights zeroed      (from original)
    revived             the paper's attack on the zeros' positions                  (from unlearned)
    obfuscated          the release defended: its positions filled with secret      (from unlearned)
                        randomness (the publisher's `revival defend`)
    obfuscated_revived  every attacker of the ladder against the defended release;  (from obfuscated)
                        the one that revives most

and the stages that show an erasure that holds (the demo's stage 6, where the concept has them):

    never_learned       the model retrained without the concept (the gold standard)
    robust              `revival unlearn --method robust`                            (from original)

`revival demo` runs the chain and its holds, `revival experiment` any sub-chain a config names,
and eval-unlearn's techniques each stage after the original. Each reads the names here; a name
given by a user is read through `canonical` (the eval-unlearn and older names are aliases). Each
makes a stage from its parent with the same builder, here too (`make_unlearned`, `make_revived`,
`make_obfuscated`, `make_obfuscated_revived`): they decide only when a stage is made, how it is
cached and what they record.
"""
from __future__ import annotations

from dataclasses import dataclass

from revival.errors import RevivalError


@dataclass(frozen=True)
class Stage:
    name: str                      # the canonical name (report keys, cell folders, cache files)
    label: str                     # the demo's row label
    parent: str | None             # the stage it is built from (None: loaded)
    made_by: str                   # what turns the parent into it
    aliases: tuple[str, ...] = ()  # other names it is known by (eval-unlearn's, older configs')


CHAIN = (
    Stage("original", "original", None, "the model before unlearning"),
    Stage("unlearned", "unlearned (ConceptPrune)", "original", "ConceptPrune: WANDA-selected weights zeroed",
          ("release", "conceptprune", "pruned")),
    Stage("revived", "revived (attack)", "unlearned", "the paper's attack on the zeros' positions"),
    Stage("obfuscated", "defended", "unlearned", "the defense: the positions filled with secret randomness",
          ("defended",)),
    Stage("obfuscated_revived", "defended + strongest attack", "obfuscated",
          "every attacker of the ladder; the one that revives most",
          ("defended_attack", "defended-attack", "obfuscated+attack", "obfuscated_attack", "obfuscated + attack")),
)
HOLDS = (
    Stage("never_learned", "never learned (retrained without it)", None, "the model retrained without the concept"),
    Stage("robust", "robust erasure", "original", "revival unlearn --method robust"),
)

STAGES = tuple(s.name for s in CHAIN)
HOLD_STAGES = tuple(s.name for s in HOLDS)
AFTER_ORIGINAL = STAGES[1:]          # the stages a release is made of (eval-unlearn's techniques)
LABELS = {s.name: s.label for s in (*CHAIN, *HOLDS)}
_BY_NAME = {s.name: s for s in (*CHAIN, *HOLDS)}
_ALIASES = {a: s.name for s in (*CHAIN, *HOLDS) for a in (s.name, *s.aliases)}


def canonical(name: str, among: tuple[str, ...] = STAGES) -> str:
    """The canonical name of a stage given by any of its names; one sentence for an unknown one."""
    got = _ALIASES.get(str(name).strip().lower())
    if got is None or got not in among:
        names = [n for s in among for n in (s, *_BY_NAME[s].aliases)]
        raise RevivalError(f"unknown stage {name!r} (known: {', '.join(names)}).")
    return got


def stage(name: str) -> Stage:
    """The stage record of a canonical name or alias (chain or holds)."""
    return _BY_NAME[canonical(name, STAGES + HOLD_STAGES)]


def lineage(name: str) -> tuple[str, ...]:
    """The stages `name` is built from, first to last, itself included (original ... name)."""
    out, s = [], stage(name)
    while s is not None:
        out.append(s.name)
        s = _BY_NAME[s.parent] if s.parent else None
    return tuple(reversed(out))


def in_order(names) -> tuple[str, ...]:
    """Canonical names of `names` (any aliases), in the chain's order, each once."""
    want = {canonical(n) for n in names}
    return tuple(s for s in STAGES if s in want)


# --------------------------------------------------------------------------- how each stage is made
# from its parent: `revival demo`, `revival experiment` and eval-unlearn's techniques call these,
# so the chain is built one way (each caller decides only when, and what it records).

def make_unlearned(original, masks):
    """unlearned: ConceptPrune's masks applied to the original (the selected weights zeroed)."""
    from revival.unlearn.conceptprune import apply_masks

    return {**original, **apply_masks(original, masks)}


def make_revived(unlearned, layers, attack, progress: bool = False):
    """revived: the paper's attack on the unlearned model's zeros. Returns (state, its AttackResult)."""
    from revival.attack.revive import revive

    updates, result = revive(unlearned, layers, attack, progress=progress)
    return {**unlearned, **updates}, result


def make_obfuscated(unlearned, layers, method: str, seed, stats: str = "row"):
    """obfuscated: the unlearned model defended by `method` (`revival.defense`). Returns (state, its result)."""
    from revival.defense import apply_defense

    updates, result = apply_defense(unlearned, layers, method, seed, stats=stats)
    return {**unlearned, **updates}, result


def make_obfuscated_revived(pipeline, obfuscated, original, prompts, cp, attack, measure, progress: bool = False):
    """obfuscated_revived: every attacker of the ladder against the defended model, each revived
    model measured (`measure(state) -> (erased, preserved)`), the one that revives most kept
    (`revival.attack.attackers.strongest.strongest_attack`, in the audit's scope, with ConceptPrune
    settings `cp`). Returns (state, its measurement or None, {"attackers", "strongest"})."""
    from revival.attack.attackers.strongest import strongest_attack

    return strongest_attack(pipeline, obfuscated, original, prompts=prompts, attack=attack,
                            skill_ratio=cp.skill_ratio, steps=cp.steps, measure=measure,
                            inference_steps=cp.inference_steps, guidance=cp.guidance,
                            halves=cp.halves, progress=progress)
