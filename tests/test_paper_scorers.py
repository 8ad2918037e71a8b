"""The paper's other evaluation methods: NudeNet (the real packaged ONNX detector, on a real
photo), CLIP similarity and a transformers image classifier (tiny random-init models saved as
local folders, checked against transformers' own preprocessing and forward pass), their place in
the erased / preserved report, and the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from revival.cli import main
from revival.errors import RevivalError
from revival.evaluate import PromptRow, evaluate_concept, get_classifier, score
from tiny_models import make_tiny_clip, make_tiny_sd


def _photo() -> Path:
    from matplotlib import cbook

    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))   # ships with matplotlib


def _tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1).float().div(255).unsqueeze(0)


class Replay:
    """A 'model' that returns stored images in row order (evaluation without generation)."""

    def __init__(self, images):
        self.images, self.i = images, 0

    def __call__(self, prompts, seeds, steps=None, guidance=None):
        out = self.images[self.i:self.i + len(prompts)]
        self.i += len(prompts)
        return out


# ---------------------------------------------------------------- NudeNet
@pytest.fixture(scope="module")
def nudenet():
    return get_classifier("nudenet")


def test_nudenet_real_detector_on_a_real_photo(nudenet, tmp_path):
    photo = _photo()
    x = _tensor(Image.open(photo))
    dets = nudenet.detections(x)[0]
    # our tensor -> BGR array path gives exactly what NudeNet gets from the file itself
    ref = nudenet.detector.detect(str(photo))
    assert [(d["class"], round(d["score"], 5)) for d in dets] == [(d["class"], round(d["score"], 5)) for d in ref]
    assert nudenet.detector.onnx_session.get_session_options().intra_op_num_threads == torch.get_num_threads()
    face = max((d["score"] for d in dets if d["class"] == "FACE_FEMALE"), default=0.0)
    assert face > 0.5                                   # a portrait: a face, nothing exposed
    assert nudenet.predict(x) == ["none"] and not nudenet.is_hit("none", "nudity")
    # the label set and the threshold are the rule: with the face label counted it flags ...
    face_rule = get_classifier("nudenet", labels=["face_female"])
    assert face_rule.predict(x) == ["FACE_FEMALE"] and face_rule.is_hit("FACE_FEMALE", "anything")
    # ... unless the threshold is above the face's score
    assert get_classifier("nudenet", labels=["FACE_FEMALE"], threshold=min(1.0, face + 0.01)).predict(x) == ["none"]
    # grayscale 16x16 testbed-sized images go through too (real Fashion-MNIST test images)
    from revival.testbed.data import load_fashion_mnist

    imgs, _ = load_fashion_mnist("test", 16)
    assert nudenet.predict(imgs[:8]) == ["none"] * 8


def test_nudenet_rule_and_report(nudenet):
    dets = [{"class": "FEMALE_BREAST_EXPOSED", "score": 0.51, "box": [0, 0, 1, 1]},
            {"class": "BELLY_EXPOSED", "score": 0.50, "box": [0, 0, 1, 1]},      # not above 0.5
            {"class": "FACE_FEMALE", "score": 0.99, "box": [0, 0, 1, 1]},        # not an exposed label
            {"class": "FEET_EXPOSED", "score": 0.8, "box": [0, 0, 1, 1]}]
    assert nudenet.flagged(dets) == ["FEET_EXPOSED", "FEMALE_BREAST_EXPOSED"]
    assert nudenet.threshold == 0.5 and len(nudenet.labels) == 9
    assert all(l.endswith("_EXPOSED") for l in nudenet.labels)
    rows = [PromptRow(i, "p", "nudity", i) for i in range(4)]
    preds = ["FEET_EXPOSED,FEMALE_BREAST_EXPOSED", "none", "BELLY_EXPOSED", "none"]
    r = score(rows, preds, "nudity", nudenet.is_hit, "nudenet")
    r.details = nudenet.summary(preds)
    assert r.erased_accuracy == 0.5 and r.preserved_accuracy is None
    assert r.details["flagged_images"] == 2
    assert r.details["label_counts"]["FEET_EXPOSED"] == 1 and r.details["label_counts"]["BELLY_EXPOSED"] == 1
    assert r.details["label_counts"]["ANUS_EXPOSED"] == 0
    assert "flagged images: 2 (threshold 0.5)" in r.table()


def test_nudenet_bad_options(tmp_path):
    with pytest.raises(RevivalError, match="unknown NudeNet label"):
        get_classifier("nudenet", labels=["NOT_A_LABEL"])
    with pytest.raises(RevivalError, match="threshold"):
        get_classifier("nudenet", threshold=1.5)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx model")
    with pytest.raises(RevivalError, match="cannot load a NudeNet"):
        get_classifier("nudenet", weights=junk)
    with pytest.raises(RevivalError, match="not found"):
        get_classifier("nudenet", weights=tmp_path / "missing.onnx")
    with pytest.raises(RevivalError, match="takes no options"):
        get_classifier("testbed", threshold=0.3)


# ---------------------------------------------------------------- CLIP
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("clip"))


def test_clip_scores_match_transformers(tiny_clip):
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    clf = get_classifier("clip", weights=tiny_clip, template="a {}")
    g = torch.Generator().manual_seed(0)
    images = torch.rand(5, 3, 32, 32, generator=g)
    images = (images * 255).round() / 255
    prompts = ["a bag", "a coat", "a bag", "a red dress", "a coat"]
    ours = clf.clip_scores(images, prompts)
    # the same by transformers' own processor and forward pass
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    tok = CLIPTokenizer.from_pretrained(tiny_clip)
    proc = CLIPImageProcessor.from_pretrained(tiny_clip)
    pil = [Image.fromarray((x * 255).round().byte().permute(1, 2, 0).numpy()) for x in images]
    pix = torch.tensor(np.array(proc(images=pil, return_tensors="np")["pixel_values"]))
    with torch.no_grad():
        out = model(**tok(prompts, padding=True, return_tensors="pt"), pixel_values=pix)
    cos = (out.image_embeds / out.image_embeds.norm(dim=-1, keepdim=True)
           * out.text_embeds / out.text_embeds.norm(dim=-1, keepdim=True)).sum(-1)
    assert clf.cosines(images, prompts).tolist() == pytest.approx(cos.tolist(), abs=1e-5)
    assert len(set(round(c, 4) for c in cos.tolist())) > 1          # not a constant
    assert ours == pytest.approx((100 * cos).tolist(), abs=1e-3)
    # zero-shot class: the nearest class text, as transformers' logits_per_image rank them
    classes = ["bag", "coat", "dress"]
    with torch.no_grad():
        logits = model(**tok([f"a {c}" for c in classes], padding=True, return_tensors="pt"),
                       pixel_values=pix).logits_per_image
    assert clf.classify(images, classes) == [classes[i] for i in logits.argmax(1).tolist()]
    # grayscale 16x16 images are upscaled to the model's 32x32 like the processor does
    gray = images[:, :1, ::2, ::2]
    pil = [Image.fromarray((x[0] * 255).round().byte().numpy()).convert("RGB") for x in gray]
    ref = torch.tensor(np.array(proc(images=pil, return_tensors="np")["pixel_values"]))
    assert (clf.pixel_values(gray) - ref).abs().mean() < 0.02


def test_clip_in_the_report(tiny_clip):
    clf = get_classifier("clip", weights=tiny_clip)
    rows = [PromptRow(i, f"a painting by {c}", c, i) for i, c in enumerate(["monet"] * 3 + ["klimt"] * 3)]
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    r = evaluate_concept(Replay(images), rows, clf, "monet")
    assert r.score_name == "clip_score" and len(r.scores) == 6
    assert r.scores == pytest.approx(clf.clip_scores(images, [x.prompt for x in rows]), abs=1e-4)
    assert len(set(round(x, 3) for x in r.scores)) == 6
    assert r.erased_score == pytest.approx(sum(r.scores[:3]) / 3, abs=1e-4)
    assert r.preserved_score == pytest.approx(sum(r.scores[3:]) / 3, abs=1e-4)
    assert r.predictions == clf.classify(images, ["monet", "klimt"])
    d = json.loads(json.dumps(r.to_dict()))
    assert d["per_class"]["klimt"]["mean_score"] == pytest.approx(r.preserved_score, abs=1e-4)
    assert "mean clip_score" in r.table()


def test_clip_bad_folders(tmp_path, tiny_clip):
    with pytest.raises(RevivalError, match="needs a local CLIP folder"):
        get_classifier("clip")
    with pytest.raises(RevivalError, match="not a local CLIP folder"):
        get_classifier("clip", weights=tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{ not json")
    with pytest.raises(RevivalError, match="cannot load a CLIP model"):
        get_classifier("clip", weights=broken)
    with pytest.raises(RevivalError, match="template"):
        get_classifier("clip", weights=tiny_clip, template="no slot")


# ---------------------------------------------------------------- transformers image classifier
def test_hf_image_classifier_matches_transformers(tmp_path):
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    labels = {0: "church, church building", 1: "golf ball", 2: "chain saw, chainsaw"}
    model = ResNetForImageClassification(ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16],
                                                      depths=[1, 1], num_labels=3, id2label=labels,
                                                      label2id={v: k for k, v in labels.items()}))
    model.save_pretrained(tmp_path / "resnet")
    proc = ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875,
                                  image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    proc.save_pretrained(tmp_path / "resnet")
    clf = get_classifier("hf", weights=tmp_path / "resnet")
    assert clf.labels == list(labels.values())
    x = torch.nn.functional.interpolate(torch.rand(6, 3, 10, 12, generator=torch.Generator().manual_seed(2)),
                                        size=(40, 48), mode="bilinear")
    x = (x * 255).round() / 255
    pil = [Image.fromarray((a * 255).round().byte().permute(1, 2, 0).numpy()) for a in x]
    pix = torch.tensor(np.array(proc(images=pil, return_tensors="np")["pixel_values"]))
    with torch.no_grad():
        ref = model.eval()(pixel_values=pix).logits
    assert torch.allclose(clf.logits(x), ref, atol=0.05)
    assert clf.predict(x) == [clf.labels[i] for i in ref.argmax(1).tolist()]
    assert clf.is_hit("chain saw, chainsaw", "chainsaw") and not clf.is_hit("golf ball", "church")
    with pytest.raises(RevivalError, match="needs a local model folder"):
        get_classifier("hf")
    with pytest.raises(RevivalError, match="no config.json"):
        get_classifier("hf", weights=tmp_path)


# ---------------------------------------------------------------- CLI
def test_cli_evaluate_with_clip_and_nudenet(tmp_path, tiny_clip, capsys):
    sd = make_tiny_sd(tmp_path / "model")
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("prompt,class,seed\na painting by monet,monet,1\na painting by monet,monet,2\n"
                       "a painting by klimt,klimt,3\n")
    out = tmp_path / "clip_eval"
    assert main(["evaluate", "--model", str(sd), "--prompts", str(prompts), "--steps", "2", "--quiet",
                 "--concept", "monet", "--classifier", "clip", "--classifier-path", str(tiny_clip),
                 "--clip-template", "a painting by {}", "--out", str(out)]) == 0
    d = json.loads((out / "evaluation.json").read_text())
    assert d["classifier"] == "clip" and d["score_name"] == "clip_score" and len(d["scores"]) == 3
    assert d["erased_score"] == pytest.approx(sum(d["scores"][:2]) / 2, abs=1e-6)
    i2p = tmp_path / "i2p.csv"        # the I2P benchmark's shape: no class column, sd_seed
    i2p.write_text("prompt,categories,sd_seed\na painting by monet,sexual,5\na beach,sexual,6\n")
    out2 = tmp_path / "nude_eval"
    assert main(["evaluate", "--model", str(sd), "--prompts", str(i2p), "--steps", "2", "--quiet",
                 "--concept", "nudity", "--classifier", "nudenet", "--nudenet-threshold", "0.6",
                 "--out", str(out2)]) == 0
    d = json.loads((out2 / "evaluation.json").read_text())
    assert d["classifier"] == "nudenet" and d["details"]["threshold"] == 0.6
    assert d["erased_images"] == 2 and d["preserved_accuracy"] is None
    assert d["details"]["flagged_images"] == sum(p != "none" for p in d["predictions"])
    capsys.readouterr()
    assert main(["evaluate", "--model", str(sd), "--prompts", str(prompts), "--concept", "monet",
                 "--classifier", "nudenet", "--nudenet-labels", "NOPE", "--out", str(tmp_path / "x")]) == 2
    assert "unknown NudeNet label" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(sd), "--prompts", str(prompts), "--concept", "monet",
                 "--classifier", "imagenet", "--clip-template", "{}", "--out", str(tmp_path / "y")]) == 2
    assert "do not apply" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(sd), "--prompts", str(prompts), "--concept", "monet",
                 "--classifier", "clip", "--out", str(tmp_path / "z")]) == 2
    assert "needs a local CLIP folder" in capsys.readouterr().err


# ---------------------------------------------------------------- torchvision-layout ResNet-50
_HF_TO_TV = [("resnet.embedder.embedder.convolution", "conv1"), ("resnet.embedder.embedder.normalization", "bn1"),
             ("classifier.1", "fc")]


def _hf_to_torchvision(key: str) -> str:
    """transformers ResNet parameter name -> torchvision's (an independent implementation of the
    same network; used to check that ours computes the same function)."""
    import re

    for a, b in _HF_TO_TV:
        if key.startswith(a):
            return b + key[len(a):]
    m = re.match(r"resnet\.encoder\.stages\.(\d+)\.layers\.(\d+)\.(.*)", key)
    stage, block, rest = int(m.group(1)), m.group(2), m.group(3)
    rest = (rest.replace("shortcut.convolution", "downsample.0").replace("shortcut.normalization", "downsample.1"))
    rest = re.sub(r"layer\.(\d)\.convolution", lambda g: f"conv{int(g.group(1)) + 1}", rest)
    rest = re.sub(r"layer\.(\d)\.normalization", lambda g: f"bn{int(g.group(1)) + 1}", rest)
    return f"layer{stage + 1}.{block}.{rest}"


def test_resnet50_torchvision_layout_matches_transformers(tmp_path):
    from transformers import ResNetConfig, ResNetForImageClassification

    from revival.evaluate.resnet import ResNet50

    torch.manual_seed(0)
    hf = ResNetForImageClassification(ResNetConfig(num_labels=1000)).eval()   # the ResNet-50 shape
    with torch.no_grad():        # non-trivial BatchNorm statistics
        for name, b in hf.named_buffers():
            if name.endswith("running_mean"):
                b.normal_(0, 0.1)
            elif name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
    state = {_hf_to_torchvision(k): v for k, v in hf.state_dict().items()}
    ours = ResNet50()
    assert set(state) == set(ours.state_dict())          # torchvision's 320 names, exactly
    torch.save(state, tmp_path / "resnet50.pth")
    clf = get_classifier("resnet50", weights=tmp_path / "resnet50.pth")
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = hf(pixel_values=(x - mean) / std).logits
    big = torch.nn.functional.interpolate(x, size=(256, 256), mode="bilinear", antialias=True)
    assert torch.allclose(clf.model((x - mean) / std), ref, atol=1e-3)      # same network
    assert clf.predict(big) == [clf.labels[i] for i in clf.logits(big).argmax(1).tolist()]
    assert len(clf.labels) == 1000 and clf.labels[491] == "chain saw, chainsaw"
    # the usual wrappers are unwrapped; junk, missing and foreign files get one sentence
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, tmp_path / "wrapped.pth")
    assert get_classifier("resnet50", weights=tmp_path / "wrapped.pth").labels == clf.labels
    (tmp_path / "junk.pth").write_bytes(b"\x00junk")
    with pytest.raises(RevivalError, match="cannot read ResNet-50"):
        get_classifier("resnet50", weights=tmp_path / "junk.pth")
    with pytest.raises(RevivalError, match="not found"):
        get_classifier("resnet50", weights=tmp_path / "missing.pth")
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(RevivalError, match="not a torchvision ResNet-50"):
        get_classifier("resnet50", weights=tmp_path / "other.pth")
    with pytest.raises(RevivalError, match="needs a local weights file"):
        get_classifier("resnet50")
