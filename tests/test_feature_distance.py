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


def test_sd_utility_fid_and_clip_score_on_coco_like_prompts(tmp_path, capsys):
    """`revival evaluate --fid-real DIR`: FID/KID of SD images against local real images in a local
    CLIP's feature space, beside the mean CLIP score of a COCO-style prompt list (text file)."""
    import json

    from PIL import Image
    from tiny_models import make_tiny_clip, make_tiny_sd

    from revival.cli import main

    sd, clip = make_tiny_sd(tmp_path / "model"), make_tiny_clip(tmp_path / "c")
    prompts = tmp_path / "coco.txt"
    prompts.write_text("a cat on a sofa\na red bus in a street\na bowl of fruit\na man riding a horse\n")
    real = tmp_path / "real"
    real.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(6):
        a = (torch.rand(40, 48, 3, generator=g) * 255).byte().numpy()
        Image.fromarray(a).save(real / f"{i}.png")
    out = tmp_path / "eval"
    argv = ["evaluate", "--model", str(sd), "--prompts", str(prompts), "--concept", "coco", "--steps", "2",
            "--classifier", "clip", "--classifier-path", str(clip), "--quiet"]
    assert main(argv + ["--fid-real", str(real), "--out", str(out)]) == 0
    u = json.loads((out / "utility.json").read_text())
    d = json.loads((out / "evaluation.json").read_text())
    assert u["real"] == 6 and u["generated"] == 4 and u["fid"] > 0 and "CLIP" in u["features"]
    assert d["erased_images"] == 4 and len(d["scores"]) == 4  # the mean CLIP score over the prompts
    # the generated images as their own reference: FID about 0
    capsys.readouterr()
    assert main(argv + ["--fid-real", str(out / "images"), "--out", str(tmp_path / "self")]) == 0
    assert json.loads((tmp_path / "self" / "utility.json").read_text())["fid"] < 1e-3 * max(1.0, u["fid"])
    assert main(argv + ["--fid-real", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "x").exists()
