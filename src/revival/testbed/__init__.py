"""The embedded testbed: a small SD-style text-to-image UNet on Fashion-MNIST (16x16, pixel
space, MiniLM-L6 text conditioning), its classifier, and their training code."""

from revival.testbed.text import CLASSES, class_captions, default_prompt
from revival.testbed.pipeline import (SETTINGS_PATH, TASKS_UNET_DIR, TESTBED_UNET_DIR, WEIGHTS_DIR, testbed_unet_dir, TestbedPipeline, load_pipeline,
                       load_unet, testbed_settings)

CLASSIFIER_PATH = WEIGHTS_DIR / "classifier.safetensors"


def load_classifier(device: str = "cpu"):
    """The committed testbed CNN: images [N,1,H,W] in [0,1] -> class names (`.predict_indices` for
    label indices). The evaluation harness wraps it as revival.evaluate.TestbedCNN; the testbed
    package itself never imports the evaluation package."""
    from revival.testbed.classifier import TestbedClassifier, load_classifier_weights

    return TestbedClassifier(load_classifier_weights(CLASSIFIER_PATH).to(device), CLASSES, device=device)


__all__ = ["CLASSES", "CLASSIFIER_PATH", "SETTINGS_PATH", "TASKS_UNET_DIR", "TESTBED_UNET_DIR", "testbed_unet_dir", "WEIGHTS_DIR",
           "TestbedPipeline", "class_captions", "default_prompt", "load_classifier", "load_pipeline",
           "load_unet", "testbed_settings"]
