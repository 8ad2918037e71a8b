"""The testbed's style and attribute renderings: deterministic transforms of real images.

The paper's other two tasks erase a *modifier* that applies to every class -- an artist's style
("a {thing} in the style of {artist}") and nudity ("a photo of a naked {human}"). The testbed
stands them in with transforms of real Fashion-MNIST images at the model's resolution:

* four styles, named like artists in captions ("a sneaker in the style of Varenne"):
  Varenne   -- inverted tones (a dark item on a white ground);
  Orsolo    -- outline: the morphological gradient of the image (edges only);
  Belgrave  -- horizontal stripes: every second pixel row dimmed to 15 %;
  Kessler   -- flat silhouette: every item pixel (> 0.1) a uniform mid-grey (0.6);
* one attribute, the nudity stand-in: "tagged" -- a square tag in the top-left corner (a 4x4
  black square with a white 2x2 centre), captioned "a photo of a tagged {item}".

All functions take and return images [N,1,H,W] in [0,1] and need no random numbers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from revival.errors import RevivalError

STYLES = ("Varenne", "Orsolo", "Belgrave", "Kessler")
STYLE_DESCRIPTIONS = {"Varenne": "inverted tones", "Orsolo": "outline (morphological gradient)",
                      "Belgrave": "horizontal stripes (every second row at 15 %)",
                      "Kessler": "flat mid-grey silhouette"}
NO_STYLE = "none"
ATTRIBUTE = "tagged"
ATTRIBUTE_DESCRIPTION = "a 4x4 tag in the top-left corner: black square, white 2x2 centre"


def invert(x: torch.Tensor) -> torch.Tensor:
    return 1.0 - x


def outline(x: torch.Tensor) -> torch.Tensor:
    dil = F.max_pool2d(x, 3, stride=1, padding=1)
    ero = -F.max_pool2d(-x, 3, stride=1, padding=1)
    return ((dil - ero) * 1.5).clamp(0, 1)


def stripes(x: torch.Tensor) -> torch.Tensor:
    rows = torch.arange(x.shape[-2], device=x.device)
    scale = torch.where(rows % 2 == 0, 1.0, 0.15).to(x.dtype).view(1, 1, -1, 1)
    return x * scale


def silhouette(x: torch.Tensor) -> torch.Tensor:
    return (x > 0.1).to(x.dtype) * 0.6


_STYLE_FN = {"Varenne": invert, "Orsolo": outline, "Belgrave": stripes, "Kessler": silhouette}


def apply_style(x: torch.Tensor, style: str) -> torch.Tensor:
    """`x` rendered in `style` (one of STYLES; "none" returns x)."""
    if style == NO_STYLE:
        return x
    if style not in _STYLE_FN:
        raise RevivalError(f"unknown style {style!r}; the testbed has {', '.join(STYLES)}.")
    return _STYLE_FN[style](x)


def add_tag(x: torch.Tensor) -> torch.Tensor:
    """`x` with the attribute's tag drawn in the top-left corner."""
    x = x.clone()
    x[..., 0:4, 0:4] = 0.0
    x[..., 1:3, 1:3] = 1.0
    return x


def render(x: torch.Tensor, kind: torch.Tensor) -> torch.Tensor:
    """Per-image rendering: kind[i] = 0 plain, 1..len(STYLES) that style, len(STYLES)+1 tagged."""
    out = x.clone()
    for k, style in enumerate(STYLES, start=1):
        sel = kind == k
        if sel.any():
            out[sel] = apply_style(x[sel], style)
    sel = kind == len(STYLES) + 1
    if sel.any():
        out[sel] = add_tag(x[sel])
    return out
