"""CLIP prompt-image similarity from a local CLIP folder (the paper's artist-style evaluation).

score(image, prompt) = 100 * cos(E_image, E_text)   (the usual "CLIP score"; torchmetrics also
clips it at 0, which never binds for a trained CLIP, whose matching cosines are ~0.2-0.35)
As a classifier (so the erased / preserved table works unchanged), an image is predicted as the
class whose text ("{}" template by default, e.g. "a painting in the style of {}") is nearest to
it among the classes of the prompt file: zero-shot CLIP. Evaluation reports both: accuracy by
that rule, and the mean CLIP score of each class's images against their own prompts.

The folder is a transformers CLIPModel saved with its tokenizer (e.g. a local copy of
openai/clip-vit-base-patch32); images are resized (shortest side, bicubic, antialiased),
centre-cropped and normalised as its preprocessor_config.json says.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from revival.errors import RevivalError
from revival.evaluate.base import Classifier, _norm, preprocessor_config, resize_crop_normalize

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _features(out) -> torch.Tensor:
    """transformers 4.x returns the projected features, 5.x an output whose pooler_output they are."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class CLIPScorer(Classifier):
    name = "clip"
    score_name = "clip_score"

    def __init__(self, weights: str | Path | None = None, device: str = "cpu", *,
                 template: str = "{}", labels: list[str] | None = None, batch_size: int = 32):
        if weights is None:
            raise RevivalError("the CLIP scorer needs a local CLIP folder (--classifier-path DIR).")
        folder = Path(weights)
        if not (folder / "config.json").is_file():
            raise RevivalError(f"{folder} is not a local CLIP folder (no config.json).")
        if "{}" not in template:
            raise RevivalError(f"the CLIP text template must contain '{{}}', got {template!r}.")
        from transformers import AutoTokenizer, CLIPModel

        try:
            self.model = CLIPModel.from_pretrained(folder, local_files_only=True).eval().to(device)
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except Exception as e:  # transformers raises OSError / ValueError / KeyError by case
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise RevivalError(f"cannot load a CLIP model and tokenizer from {folder}: {msg}") from None
        pre = preprocessor_config(folder)
        size = self.model.config.vision_config.image_size
        short = pre.get("size", {}).get("shortest_edge", size) if isinstance(pre.get("size"), dict) else pre.get("size", size)
        crop = pre.get("crop_size", size)
        crop = crop.get("height", size) if isinstance(crop, dict) else crop
        self.short, self.crop = int(short), int(crop)
        self.mean = tuple(pre.get("image_mean", OPENAI_MEAN))
        self.std = tuple(pre.get("image_std", OPENAI_STD))
        self.template, self.labels, self.device, self.batch_size = template, labels, device, batch_size
        self.max_tokens = int(self.model.config.text_config.max_position_embeddings)

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        return resize_crop_normalize(images, self.short, self.crop, self.mean, self.std)

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings [N, D]."""
        out = [_features(self.model.get_image_features(
            pixel_values=self.pixel_values(images[i:i + self.batch_size]).to(self.device)))
            for i in range(0, len(images), self.batch_size)]
        return F.normalize(torch.cat(out).float(), dim=-1)

    @torch.no_grad()
    def text_features(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised text embeddings [N, D] (truncated to the model's context)."""
        out = []
        for i in range(0, len(texts), self.batch_size):
            tok = self.tokenizer(texts[i:i + self.batch_size], padding=True, truncation=True,
                                 max_length=self.max_tokens, return_tensors="pt")
            out.append(_features(self.model.get_text_features(
                input_ids=tok["input_ids"].to(self.device),
                attention_mask=tok["attention_mask"].to(self.device))))
        return F.normalize(torch.cat(out).float(), dim=-1)

    def cosines(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """cos(E_image, E_text) of each image with its own prompt, [N]."""
        if len(images) != len(prompts):
            raise RevivalError(f"{len(images)} images but {len(prompts)} prompts.")
        uniq = list(dict.fromkeys(prompts))
        t = self.text_features(uniq)[[uniq.index(p) for p in prompts]]
        return (self.image_features(images) * t).sum(-1)

    def clip_scores(self, images: torch.Tensor, prompts: list[str]) -> list[float]:
        """100 cos of each image with its own prompt."""
        return (100 * self.cosines(images, prompts)).tolist()

    def classify(self, images: torch.Tensor, classes: list[str]) -> list[str]:
        """Zero-shot: the class whose templated text is nearest to each image."""
        if not classes:
            raise RevivalError("CLIP zero-shot classification needs at least one class name.")
        t = self.text_features([self.template.format(c) for c in classes])
        return [classes[i] for i in (self.image_features(images) @ t.T).argmax(1).tolist()]

    def predict(self, images: torch.Tensor) -> list[str]:
        if not self.labels:
            raise RevivalError("the CLIP scorer needs class names to classify (labels=...).")
        return self.classify(images, list(self.labels))

    def knows(self, concept: str) -> bool:
        """With class names (labels=...): one of them; without, the classes are the prompt rows'
        own (zero-shot over them), so every concept is one CLIP is given."""
        return not self.labels or _norm(concept) in {_norm(l) for l in self.labels}

    def judge(self, images: torch.Tensor, rows) -> tuple[list[str], list[float]]:
        classes = self.labels or list(dict.fromkeys(r.cls for r in rows))
        return self.classify(images, list(classes)), self.clip_scores(images, [r.prompt for r in rows])
