"""The pruning-based unlearning methods by name (`make_masks`; `revival.unlearn.run.unlearn_method` runs any
of them on the testbed or a local Stable Diffusion folder and writes the pruned UNet).

- ``conceptprune``: WANDA on `ff.net.2` (the paper's), or on its other targets by `modules`:
  ``ff.net.0.proj``, ``to_v`` (self- and cross-attention value projections), ``attn2.to_v``, ``ff``
  (both feed-forward linears), or any regex over UNet module names.
- ``cad``: per-row top weight x gradient attribution in every feed-forward linear.
- ``neurons``: whole hidden units deactivated (``ff``) or cross-attention value features (``attn2``).
"""
from __future__ import annotations

from typing import Sequence


from revival.errors import RevivalError

METHODS = ("conceptprune", "cad", "neurons")

CONCEPTPRUNE_MODULES = {
    "ff.net.2": r"transformer_blocks\.\d+\.ff\.net\.2$",
    "ff.net.0.proj": r"transformer_blocks\.\d+\.ff\.net\.0\.proj$",
    "ff": r"transformer_blocks\.\d+\.ff\.net\.(0\.proj|2)$",
    "to_v": r"transformer_blocks\.\d+\.attn[12]\.to_v$",
    "attn2.to_v": r"transformer_blocks\.\d+\.attn2\.to_v$",
}


def conceptprune_modules(modules: str | None) -> str | None:
    """A preset name (see CONCEPTPRUNE_MODULES) -> its regex; anything else is taken as a regex."""
    if modules is None:
        return None
    return CONCEPTPRUNE_MODULES.get(modules, modules)


def make_masks(method: str, pipeline, target: Sequence[str], base: Sequence[str], *,
               ratio: float | None = None, steps: int | None = None, modules: str | None = None,
               seed: int = 0, inference_steps: int | None = None, progress: bool = False):
    """(key -> bool mask, result with to_dict()) of `method` on `pipeline` (not modified).

    ratio: conceptprune skill ratio / cad per-row share / neurons share of units (None: each
    method's default). steps: conceptprune tau / neurons statistics steps. modules:
    conceptprune's module preset or regex; neurons' unit kind ("ff" or "attn2"); cad's regex.
    """
    if method == "conceptprune":
        from revival.unlearn.conceptprune import ConceptPruneConfig, conceptprune

        kw = {k: v for k, v in {"skill_ratio": ratio, "steps": steps, "modules": conceptprune_modules(modules),
                                "inference_steps": inference_steps}.items() if v is not None}
        return conceptprune(pipeline, target, base, ConceptPruneConfig(seed=seed, **kw), progress=progress)
    if method == "cad":
        from revival.unlearn.cad import CadConfig, cad

        kw = {k: v for k, v in {"ratio": ratio, "modules": modules, "inference_steps": inference_steps}.items()
              if v is not None}
        return cad(pipeline, target, base, CadConfig(seed=seed, **kw), progress=progress)
    if method == "neurons":
        from revival.unlearn.neurons import NeuronsConfig, neurons

        kw = {k: v for k, v in {"ratio": ratio, "steps": steps, "units": modules,
                                "inference_steps": inference_steps}.items() if v is not None}
        return neurons(pipeline, target, base, NeuronsConfig(seed=seed, **kw), progress=progress)
    raise RevivalError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}.")
