"""Image generation and concept evaluation (erased / preserved accuracy)."""
from revival.evaluate.base import NO_ITEM, Classifier, check_nameable
from revival.evaluate.classifiers import HFImageClassifier, ImageNetEfficientNet, get_classifier
from revival.evaluate.evaluate import ClassScore, EvalResult, evaluate_concept, image_grid, score, write_report
from revival.model.loader import SDGenerator, load_model, load_sd  # the one model loader (revival.model.loader)
from revival.evaluate.generate import generate, load_images
from revival.evaluate.prompts import PromptRow, default_prompts, read_prompts, write_prompts

__all__ = ["NO_ITEM", "check_nameable", "Classifier", "HFImageClassifier", "ImageNetEfficientNet", "TestbedCNN", "get_classifier", "ClassScore",
           "EvalResult", "evaluate_concept", "image_grid", "score", "write_report", "SDGenerator",
           "generate", "load_images", "load_model", "load_sd", "PromptRow", "default_prompts",
           "read_prompts", "write_prompts"]


def __getattr__(name):  # the optional scorers import their heavy packages only when asked for
    if name == "NudeNetDetector":
        from revival.evaluate.nudity import NudeNetDetector
        return NudeNetDetector
    if name == "TestbedCNN":   # loads the testbed package only when asked for
        from revival.testbed.detectors import TestbedCNN
        return TestbedCNN
    if name == "CLIPScorer":
        from revival.evaluate.clip_score import CLIPScorer
        return CLIPScorer
    raise AttributeError(name)
