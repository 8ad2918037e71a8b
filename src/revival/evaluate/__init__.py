"""Image generation and concept evaluation (erased / preserved accuracy)."""
from .classifiers import Classifier, ImageNetEfficientNet, TestbedCNN, get_classifier
from .evaluate import ClassScore, EvalResult, evaluate_concept, image_grid, score, write_report
from .generate import SDGenerator, generate, load_images, load_model, load_sd
from .prompts import PromptRow, default_prompts, read_prompts, write_prompts

__all__ = ["Classifier", "ImageNetEfficientNet", "TestbedCNN", "get_classifier", "ClassScore",
           "EvalResult", "evaluate_concept", "image_grid", "score", "write_report", "SDGenerator",
           "generate", "load_images", "load_model", "load_sd", "PromptRow", "default_prompts",
           "read_prompts", "write_prompts"]
