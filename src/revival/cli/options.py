"""One grammar for every verb: each shared option defined once, as an argparse parent parser.

    global      --threads, --quiet              before or after the verb
    out         -o/--out (--output)             every verb that writes; missing folders are created
    report      --report                        a JSON report, beside the output by default
    overwrite   --overwrite                     replace the files this command writes (others kept)
    device      --device                        where the model runs (DTYPE: --dtype, its precision)
    seed        --seed                          None: the API's default (defend: secret OS randomness)
    model       --model                         'testbed' or a local Stable Diffusion folder
    original    --original                      the UNet before unlearning ('testbed': the testbed's)
    ...

A verb's parser is `verb(sub, name, help, description, parents...)` and adds only what it alone
takes. Parse errors are one sentence (`UsageError`, exit 2), never the usage dump.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from revival.errors import RevivalError
from revival.evaluate.classifiers import CLASSIFIERS

TASKS = ("objects", "artists", "nudity")
DTYPE_ALIASES = {"fp16": "fp16", "float16": "fp16", "half": "fp16", "bf16": "bf16", "bfloat16": "bf16",
                 "fp32": "fp32", "float32": "fp32", "float": "fp32"}


class UsageError(RevivalError):
    """A command line argparse refused: one sentence, exit 2 (`revival.cli.main`)."""


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one sentence (no usage dump) raised to `revival.cli.main`."""

    def error(self, message):  # noqa: D401 - argparse's hook
        raise UsageError(f"{message} (see `{self.prog} --help`).")

    def parse_args(self, args=None, namespace=None):
        """As argparse, but an unknown option names the verb's help and the closest option."""
        import difflib

        parsed, extras = self.parse_known_args(args, namespace)
        if not extras:
            return parsed
        parser = self
        for name in ("verb", "testbed_verb"):  # the (sub-)verb's own parser, for its options
            choices = next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})
            if getattr(parsed, name, None) in choices:
                parser = choices[getattr(parsed, name)]
        known = [s for a in parser._actions for s in a.option_strings]
        close = difflib.get_close_matches(extras[0], known, n=1) if extras[0].startswith("-") else []
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UsageError(f"unrecognized arguments: {' '.join(extras)}{hint} (see `{parser.prog} --help`).")


# --------------------------------------------------------------------------- argparse types

def whole(text: str):
    """argparse type: an int, or the text itself so that the API's check words the error."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def dtype(text: str) -> str:
    """argparse type: fp16 | bf16 | fp32 (float16, bfloat16, float32 too) -> the short name."""
    try:
        return DTYPE_ALIASES[text.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"expected fp16, bf16 or fp32, got {text!r}") from None


# --------------------------------------------------------------------------- parent parsers

def _parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


def global_options(parser: argparse.ArgumentParser, after_verb: bool) -> argparse.ArgumentParser:
    """--threads and --quiet; after the verb their defaults are SUPPRESS, so that a subparser
    never overwrites what was given before the verb."""
    keep = dict(default=argparse.SUPPRESS) if after_verb else {}
    parser.add_argument("--threads", type=whole, **({"default": None} | keep),
                        help="torch CPU threads (default: REVIVAL_THREADS, else torch's own choice; "
                             "pin 1 on a busy shared machine)")
    parser.add_argument("-q", "--quiet", action="store_true", **keep,
                        help="no progress bars, no third-party logs or warnings; the one-line result "
                             "(and audit's verdict) is still printed")
    return parser


GLOBAL = global_options(_parent(), after_verb=True)


def _out(required: bool) -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument("-o", "--out", "--output", dest="out", type=Path, required=required, default=None,
                   help="where to write (missing folders are created; an existing output needs --overwrite; "
                        "for a checkpoint, NAME.safetensors writes one file and a folder name a diffusers "
                        "folder as the input; the report goes beside it)")
    return p


OUT, OUT_OPTIONAL = _out(True), _out(False)

REPORT = _parent()
REPORT.add_argument("--report", type=Path, default=None,
                    help="JSON report path (default: OUT.report.json beside the output)")

OVERWRITE = _parent()
OVERWRITE.add_argument("--overwrite", action="store_true",
                       help="replace existing outputs (only the files this command writes; others are kept)")

DEVICE = _parent()
DEVICE.add_argument("--device", default=None,
                    help="cpu, cuda or cuda:N (default: cuda when a GPU is present, else cpu; under accelerate "
                         "launch/torchrun each process takes its local GPU)")
DTYPE = _parent()
DTYPE.add_argument("--dtype", type=dtype, default=None, metavar="{fp16,bf16,fp32}",
                    help="model precision (default: fp16 on CUDA, fp32 on CPU; audit: fp32 everywhere)")

SEED = _parent()
SEED.add_argument("--seed", type=int, default=None,
                  help="seed of every random choice (default: 0; defend: secret randomness from the OS)")

LAYERS = _parent()
LAYERS.add_argument("--layers", default=None,
                    help="regex (re.search) choosing the target layers by name, diffusers or the file's own naming "
                         "(default: every 2-D weight found pruned by its exact zeros, else every transformer "
                         "block's ff.net.2.weight)")

CHECKPOINT = _parent()
CHECKPOINT.add_argument("checkpoint", help="UNet checkpoint: diffusers folder, .safetensors or .ckpt/.pt "
                                           "('testbed': the embedded testbed's UNet)")

MODEL = _parent()
MODEL.add_argument("--model", default="testbed",
                   help="'testbed' (the embedded model, default) or a local diffusers Stable Diffusion folder")

ORIGINAL = _parent()
ORIGINAL.add_argument("--original", default=None,
                      help="the UNet before unlearning ('testbed': the embedded testbed's weights of the --task)")

TASK = _parent()
TASK.add_argument("--task", default=None, choices=TASKS,
                  help="the paper's task: objects (default), artists or nudity (its presets, prompts and detector)")


def _concept(required: bool) -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument("--concept", required=required, default=None,
                   help="the (erased) concept: a testbed class, an object, an artist, or 'nudity'")
    return p


CONCEPT, CONCEPT_OPTIONAL = _concept(True), _concept(False)

PROMPTS = _parent()
PROMPTS.add_argument("--prompts", type=Path, default=None,
                     help="evaluation CSV (prompt, class, seed); default on the testbed: held-out captions, seeds "
                          "from 1000")

CLASSIFIER = _parent()
CLASSIFIER.add_argument("--classifier", default=None, choices=CLASSIFIERS.names(),
                        help=f"the judge: {CLASSIFIERS.help()} (default: testbed, or by task on SD)")
CLASSIFIER.add_argument("--classifier-path", default=None,
                        help="weights for the classifier: the hf/clip model folder, a ResNet-50 or EfficientNet-lite0 "
                             "state dict, or a NudeNet ONNX file")

INFERENCE = _parent()
INFERENCE.add_argument("--inference-steps", type=int, default=None, help="denoising steps (default: the model's)")

ATTACK = _parent()  # the attack's main knobs (attack, demo)
ATTACK.add_argument("--solver", default=None,
                    help="completion solver (default: the attack's fast default; 'svt' = the paper's recipe)")
ATTACK.add_argument("--keep", type=float, default=None,
                    help="Top-K sign retention: fraction of pruned positions whose sign is kept (default 0.6)")
ATTACK.add_argument("--magnitude", default=None,
                    help="magnitude rule, e.g. neuron-max (the paper's), sample, mean, completed")

SKILL_RATIO = _parent()
SKILL_RATIO.add_argument("--skill-ratio", type=float, default=None,
                         help="ConceptPrune's per-row share of columns pruned per step (unlearn, demo: default the "
                              "least that erases on the testbed, else the task's preset; audit: the ratio the "
                              "attackers assume)")

UNLEARNING = argparse.ArgumentParser(add_help=False, parents=[SKILL_RATIO])  # + the least-damage search (unlearn, demo)
UNLEARNING.add_argument("--unlearn-steps", type=int, default=None,
                        help="tau: masks of the first N denoising steps are united (default: the task's preset)")
UNLEARNING.add_argument("--target-erasure", type=float, default=None,
                        help="testbed: the smallest skill ratio whose erased accuracy on validation images is at "
                             "most this (the least-damage setting)")
UNLEARNING.add_argument("--search-images", type=int, default=None,
                        help="validation images of the concept per probe of that search (default 60)")
UNLEARNING.add_argument("--modules", default=None,
                        help="UNet modules pruned: ff.net.2 (default), ff.net.0.proj, ff, to_v, attn2.to_v or a regex")


def verb(sub, name: str, help: str, description: str | None = None, *parents) -> argparse.ArgumentParser:
    """A verb's parser: the global options and `parents`, plus what the verb adds itself."""
    return sub.add_parser(name, help=help, description=description or help, parents=[GLOBAL, *parents])


# --------------------------------------------------------------------------- values

def testbed_unet(task: str | None = None) -> Path:
    """The embedded testbed's UNet folder of `task` (objects: v1; artists, nudity: v2), found
    without importing the testbed (diffusers: seconds), so that outputs are checked at once;
    equal to `revival.testbed.testbed_unet_dir(task)` (a test keeps them so)."""
    from importlib.util import find_spec

    weights = Path(find_spec("revival.testbed").submodule_search_locations[0]) / "weights"
    return weights / ("unet" if task in (None, "objects") else "unet-tasks")


def checkpoint_path(value, task: str | None = None):
    """A checkpoint argument: 'testbed' names the embedded testbed's UNet; None stays None."""
    if value is None:
        return None
    return testbed_unet(task) if str(value) == "testbed" else Path(value)


def model_inputs(model, task: str | None = None) -> list[Path]:
    """The files a model argument reads: the testbed's UNet folder, or the SD folder."""
    return [testbed_unet(task)] if str(model) == "testbed" else [Path(model)]


# --------------------------------------------------------------------------- outputs, before any work

def plan(outputs: dict, inputs=(), *, overwrite: bool = False, folders: dict | None = None) -> None:
    """Check every output (label -> path; None skipped) before any work: distinct, not an input,
    around or inside one, no file where its folder would be, an existing one only with
    `overwrite`. `folders`: label -> True (a folder), False (a file) or None (either)."""
    from revival.io.outputs import check_distinct, check_new_output

    inputs = [Path(p) for p in inputs if p is not None]
    check_distinct(outputs)
    for label, path in outputs.items():
        if path is not None:
            check_new_output(path, inputs, overwrite=overwrite, folder=(folders or {}).get(label), label=label)


def checkpoint_output(out, source) -> bool:
    """Whether output `out` of checkpoint `source` is a folder: a diffusers folder stays one,
    unless the output's name ends in .safetensors."""
    from revival.io.outputs import is_single_file

    return not is_single_file(out, "diffusers" if Path(source).is_dir() else "file")
