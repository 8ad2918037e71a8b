"""Key naming: diffusers <-> single-file (LDM) names of a UNet's attention blocks.

Tensors are named in diffusers naming inside the toolkit. A single-file (LDM) checkpoint's
attention blocks are renamed on load (``input_blocks.{3i+j+1}.1.`` -> ``down_blocks.i.attentions.j.``,
``middle_block.1.`` -> ``mid_block.attentions.0.``, ``output_blocks.{3i+j}.1.`` ->
``up_blocks.i.attentions.j.``, prefix ``model.diffusion_model.`` dropped); every other key (resnets,
VAE, text encoder, EMA, ...) is carried through under its own name, and all names are mapped back
on write.
"""
from __future__ import annotations

import re

from revival.errors import RevivalError

LDM_PREFIX = "model.diffusion_model."


_LDM_RE = re.compile(
    r"^(?P<pre>(?:model\.diffusion_model\.)?)"
    r"(?:input_blocks\.(?P<inp>\d+)\.1\.|(?P<mid>middle_block)\.1\.|output_blocks\.(?P<out>\d+)\.1\.)"
    r"(?P<rest>(?:transformer_blocks|norm|proj_in|proj_out)\..*)$"
)
_DIFFUSERS_ATTN_RE = re.compile(
    r"^(?:down_blocks\.(?P<di>\d+)\.attentions\.(?P<dj>\d+)\.|(?P<mid>mid_block)\.attentions\.0\.|"
    r"up_blocks\.(?P<ui>\d+)\.attentions\.(?P<uj>\d+)\.)"
    r"(?P<rest>(?:transformer_blocks|norm|proj_in|proj_out)\..*)$"
)


def ldm_to_diffusers(key: str) -> str | None:
    """Diffusers name of an LDM attention-block key (SD layout), or None if it is not one."""
    m = _LDM_RE.match(key)
    if m is None:
        return None
    rest = m["rest"]
    if m["inp"] is not None:
        n = int(m["inp"])
        i, j = divmod(n - 1, 3)
        if n < 1 or j > 1:
            return None
        return f"down_blocks.{i}.attentions.{j}.{rest}"
    if m["mid"] is not None:
        return f"mid_block.attentions.0.{rest}"
    i, j = divmod(int(m["out"]), 3)
    return f"up_blocks.{i}.attentions.{j}.{rest}"


def diffusers_to_ldm(key: str, prefix: str = LDM_PREFIX) -> str | None:
    """LDM name of a diffusers attention-block key (SD layout), or None if it is not one."""
    m = _DIFFUSERS_ATTN_RE.match(key)
    if m is None:
        return None
    if m["di"] is not None:
        block = f"input_blocks.{3 * int(m['di']) + int(m['dj']) + 1}.1."
    elif m["mid"] is not None:
        block = "middle_block.1."
    else:
        block = f"output_blocks.{3 * int(m['ui']) + int(m['uj'])}.1."
    return f"{prefix}{block}{m['rest']}"


def _is_ldm(keys) -> bool:
    return any(k.startswith(LDM_PREFIX) or k.startswith(("input_blocks.", "middle_block.", "output_blocks."))
               for k in keys)


def _name_map(file_keys: list[str], where: str) -> tuple[str, dict[str, str]]:
    """(naming, {toolkit name: file key}) for the keys of a file."""
    if not _is_ldm(file_keys):
        return "diffusers", {k: k for k in file_keys}
    mapping: dict[str, str] = {}
    for k in file_keys:
        name = ldm_to_diffusers(k) or k
        if name in mapping:
            raise RevivalError(f"{where} holds both {mapping[name]!r} and {k!r}, which map to the same layer.")
        mapping[name] = k
    return "ldm", mapping

