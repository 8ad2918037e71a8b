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
given by a user is read through `canonical` (the eval-unlearn and older names are aliases).
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
