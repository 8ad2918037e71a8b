"""The embedded testbed: a small SD-style text-to-image UNet on Fashion-MNIST (16x16, pixel
space, MiniLM-L6 text conditioning), its classifier, and their training code."""
from pathlib import Path

from .text import CLASSES, class_captions, default_prompt
from .pipeline import (SETTINGS_PATH, TESTBED_UNET_DIR, WEIGHTS_DIR, TestbedPipeline, load_pipeline,
                       load_unet, testbed_settings)

CLASSIFIER_PATH = WEIGHTS_DIR / "classifier.safetensors"


def load_classifier(device: str = "cpu"):
    """The testbed CNN as an evaluation classifier (revival.evaluate.TestbedCNN)."""
    from ..evaluate.classifiers import TestbedCNN

    return TestbedCNN(device=device)


__all__ = ["CLASSES", "CLASSIFIER_PATH", "SETTINGS_PATH", "TESTBED_UNET_DIR", "WEIGHTS_DIR",
           "TestbedPipeline", "class_captions", "default_prompt", "load_classifier", "load_pipeline",
           "load_unet", "testbed_settings"]
