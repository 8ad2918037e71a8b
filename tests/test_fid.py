import torch

from revival.evaluate.fid import feature_distance, classifier_features, real_test_images


def test_testbed_fid_kid_separates_real_from_corrupted_real():
    """Real test images vs other real test images of the same classes are close; the same images
    blurred and noised are far, in the testbed classifier's feature space."""
    classes = ["trouser", "bag", "sneaker"]
    a = real_test_images(classes, 40, seed=0)
    b = real_test_images(classes, 40, seed=1)
    g = torch.Generator().manual_seed(0)
    bad = (torch.nn.functional.avg_pool2d(b, 3, 1, 1) + 0.3 * torch.randn(b.shape, generator=g)).clamp(0, 1)
    feats = classifier_features()
    same = feature_distance(a, b, feats, name="testbed-CNN")
    worse = feature_distance(a, bad, feats, name="testbed-CNN")
    assert same.real == 120 and same.generated == 120
    assert 0 <= same.fid < worse.fid / 3
    assert same.kid < worse.kid
    again = feature_distance(a, b, feats, name="testbed-CNN")
    assert again == same  # seeded: identical figures
