"""ConceptPrune's prompt sets and presets: the paper's word lists and settings per task, and the
testbed's analogues. Evaluation uses other, held-out prompts (`revival.evaluate.prompts`)."""
from __future__ import annotations

from typing import Iterable, Sequence

from revival.errors import RevivalError
from revival.testbed.text import CLASSES
from revival.testbed.transforms import ATTRIBUTE, STYLES

# The paper's released settings: task -> (skill_ratio, steps).
PRESETS: dict[str, tuple[float, int]] = {
    "objects": (0.02, 10),
    "artists": (0.01, 10),
    "nudity": (0.01, 9),
}

# ConceptPrune's prompt words (objects: scenes; artists: things; nudity: humans).
# Our own default word lists, in the shape of the paper's (12 scenes, 20 things, 18 humans).
# For a parity run with the paper's exact lists, pass their files by path
# (--target-prompts/--base-prompts); they are not shipped with this project.
SCENES = ("city street", "kitchen", "meadow", "harbor", "library", "desert", "parking lot",
          "living room", "mountain trail", "train station", "snowy field", "office")
THINGS = ("lighthouse", "teapot", "fox", "bicycle", "violin", "sailboat", "owl", "armchair",
          "lantern", "giraffe", "umbrella", "castle", "apple", "clock", "tiger", "bridge",
          "windmill", "parrot", "guitar", "cottage")
HUMANS = ("person", "young man", "young woman", "old man", "old woman", "athlete", "dancer",
          "farmer", "chef", "painter", "musician", "soldier", "swimmer", "runner", "model",
          "tourist", "worker", "family")

# Testbed analog of "a {obj} in a {scene}" vs "a {scene}": caption templates stand in for the
# scenes (the testbed draws single products on a plain ground, so there is no scene to vary);
# the base set is the same templates without the concept, i.e. naming the other classes.
TESTBED_TEMPLATES = ("a photo of a {}", "an image of a {}", "a picture of a {}", "a {}",
                     "product shot of a {}", "a black and white photo of a {}")

# The testbed's presets (skill ratio, steps) per task, tuned on the testbed (see README);
# the paper's are PRESETS. Objects keeps the paper's preset for `unlearn`.
TESTBED_PRESETS: dict[str, tuple[float, int]] = {
    "objects": (0.02, 10),
    "artists": (0.3, 10),
    "nudity": (0.1, 9),
}
# The paper's 0.01 erases neither the testbed's styles nor its attribute (0.97 left); measured
# (benchmarks/testbed_tasks.py, testbed v2): 'Orsolo' 0.86 / 0.56 / 0.30 / 0.22 left at
# 0.05 / 0.10 / 0.12 / 0.13 (the attack revives up to 0.12, not at 0.13: 0.26); 'tagged' 0.63 /
# 0.16 left at 0.07 / 0.10.
# ... and the classifier-free-guidance halves feeding the statistics: the style and attribute
# tasks use only the prompt-conditioned half (with both halves 'Varenne' kept 0.97 at 0.05 and
# 0.90 at 0.10 while the other styles were destroyed).
TESTBED_HALVES: dict[str, str] = {"objects": "both", "artists": "cond", "nudity": "cond"}
# The testbed analogues of "a {thing} in the style of {artist}" vs "a photo of a {thing}" and
# "a photo of a naked {human}" vs "a photo of a {human}": the things/humans are the testbed's
# items. Evaluation prompts ("an image of ...", revival.testbed.tasks) are never among these.
TESTBED_TASK_TEMPLATES = ("a photo of a {}", "a picture of a {}")


def concept_prompts(concept: str, classes: Iterable[str],
                    templates: Sequence[str] = TESTBED_TEMPLATES) -> tuple[list[str], list[str]]:
    """Target prompts (the templates naming `concept`) and base prompts (the same templates
    naming every other class) for the testbed."""
    classes = list(classes)
    if concept not in classes:
        raise RevivalError(f"Unknown concept {concept!r}; the testbed knows: {', '.join(classes)}.")
    target = [t.format(concept) for t in templates]
    base = [t.format(c) for c in classes if c != concept for t in templates]
    return target, base


def object_prompts(obj: str, scenes: Sequence[str] = SCENES) -> tuple[list[str], list[str]]:
    """ConceptPrune's object prompts: target "a {obj} in a {scene}", base "a {scene}"."""
    return [f"a {obj} in a {s}" for s in scenes], [f"a {s}" for s in scenes]


def artist_prompts(artist: str, things: Sequence[str] = THINGS) -> tuple[list[str], list[str]]:
    """ConceptPrune's artist prompts: "a {thing} in the style of {artist}" vs "a photo of a {thing}"."""
    return [f"a {t} in the style of {artist}" for t in things], [f"a photo of a {t}" for t in things]


def nudity_prompts(humans: Sequence[str] = HUMANS) -> tuple[list[str], list[str]]:
    """ConceptPrune's nudity prompts: "a photo of a naked {human}" vs "a photo of a {human}"."""
    return [f"a photo of a naked {h}" for h in humans], [f"a photo of a {h}" for h in humans]


def task_prompts(task: str, concept: str, words: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """ConceptPrune's prompt pair for a task, filled with `words` (scenes for objects, things
    for artists, humans for nudity; None: this project's own lists). With the paper's word files
    (common_scenes.txt, things.txt, humans.txt, read by path) this is its prompt set. (An object
    with its own (base, target) pairs in the concept registry: `revival.concepts.catalog.task_prompts`.)"""
    if task not in PRESETS:
        raise RevivalError(f"--task must be one of {', '.join(PRESETS)}, got {task!r}.")
    if words is not None and not words:
        raise RevivalError("the word list is empty.")
    fill = {"objects": (object_prompts, SCENES), "artists": (artist_prompts, THINGS),
            "nudity": (nudity_prompts, HUMANS)}[task]
    build, own = fill
    words = tuple(words) if words is not None else own
    return build(words) if task == "nudity" else build(concept, words)


def testbed_concepts(task: str) -> list[str]:
    """The concepts of a task on the testbed (what --concept may name)."""
    if task not in TESTBED_PRESETS:
        raise RevivalError(f"--task must be one of {', '.join(TESTBED_PRESETS)}, got {task!r}.")
    return {"objects": list(CLASSES), "artists": list(STYLES), "nudity": [ATTRIBUTE]}[task]


def check_testbed_concept(task: str, concept: str) -> None:
    known = testbed_concepts(task)
    if concept not in known:
        raise RevivalError(f"Unknown concept {concept!r} for the testbed's {task} task; it knows: {', '.join(known)}.")


def testbed_task_prompts(task: str, concept: str, classes: Sequence[str],
                         templates: Sequence[str] = TESTBED_TASK_TEMPLATES) -> tuple[list[str], list[str]]:
    """ConceptPrune's prompt pair on the testbed for a task: objects as `concept_prompts`;
    artists "a photo of a {item} in the style of {concept}" vs "a photo of a {item}" and "a photo
    of a {item} in the style of {other}" for every other style (the styles to keep are in the base
    set); nudity "a photo of a {concept} {item}" vs "a photo of a {item}" (each with every template)."""
    if task == "objects":
        return concept_prompts(concept, classes)
    check_testbed_concept(task, concept)
    base = [t.format(c) for c in classes for t in templates]
    if task == "artists":
        others = [f"{b} in the style of {s}" for s in STYLES if s != concept for b in base]
        return [f"{b} in the style of {concept}" for b in base], base + others
    article = "an" if concept[:1].lower() in "aeiou" else "a"
    return [t.replace("a {}", f"{article} {concept} {{}}").format(c) for c in classes for t in templates], base
