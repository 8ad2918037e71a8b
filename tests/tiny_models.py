"""Tiny random-init Hugging Face models saved as local folders, built offline (no hub): a CLIP
tokenizer from a hand-made character vocab, a StableDiffusionPipeline, a CLIPModel."""
from __future__ import annotations

import json
import string
from pathlib import Path

import torch


def tiny_clip_tokenizer(folder: Path, max_length: int):
    """A CLIPTokenizer over single characters (a-z, 0-9), its vocab written to `folder`."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase + string.digits:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)


def _text_config(tok, hidden: int, max_length: int) -> dict:
    return dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=max_length, bos_token_id=0,
                eos_token_id=1, pad_token_id=1)


def make_tiny_sd(root: Path, unet=None, text_dim: int = 16) -> Path:
    """A random-init StableDiffusionPipeline (CLIP text model, `unet` or a small default UNet,
    AutoencoderKL, DDIM) saved to root/sd. A given `unet` must take 4 channels and text_dim."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    root.mkdir(parents=True, exist_ok=True)
    tok = tiny_clip_tokenizer(root / "tokenizer-src", 16)
    torch.manual_seed(0)
    text = CLIPTextModel(CLIPTextConfig(**_text_config(tok, text_dim, 16)))
    if unet is None:
        unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                    block_out_channels=(8, 16), cross_attention_dim=text_dim,
                                    attention_head_dim=2, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=4)
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 16), latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4,
                        layers_per_block=1, sample_size=16)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(root / "sd")
    return root / "sd"


def make_tiny_clip(root: Path, seed: int = 0) -> Path:
    """A random-init CLIPModel + tokenizer + image processor (32x32) saved to root/clip."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tok = tiny_clip_tokenizer(root / "tokenizer-src", 24)
    torch.manual_seed(seed)
    cfg = CLIPConfig(text_config=_text_config(tok, 16, 24),
                     vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, image_size=32, patch_size=8),
                     projection_dim=8)
    folder = root / "clip"
    CLIPModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder
