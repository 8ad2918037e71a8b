"""The public API: every name users' scripts call resolves, and the CLI is a call of it."""
import revival

NAMES = ["load_checkpoint", "revive", "obfuscate", "conceptprune", "load_pipeline", "evaluate_concept",
         "get_classifier", "save_checkpoint", "select_layers", "ConceptPruneConfig", "AttackConfig",
         "revive_checkpoint", "inspect_checkpoint", "defend", "score_checkpoints", "run_demo", "DemoConfig",
         "wilson", "least_damage"]


def test_public_names_resolve():
    for name in NAMES:
        assert callable(getattr(revival, name)), name
    assert set(revival.__all__) >= set(NAMES)


def test_the_api_does_what_the_cli_does(tiny_unet, tmp_path, capsys):
    from revival.cli import main

    data = revival.revive_checkpoint(tiny_unet.pruned_dir, tmp_path / "api", revival.AttackConfig(seed=2))
    assert main(["attack", str(tiny_unet.pruned_dir), "-o", str(tmp_path / "cli"), "--seed", "2", "--quiet"]) == 0
    a = (tmp_path / "api" / "diffusion_pytorch_model.safetensors").read_bytes()
    b = (tmp_path / "cli" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert a == b and data["attack"]["totals"]["kept"] > 0
    before = revival.inspect_checkpoint(tiny_unet.pruned_dir)["pruned"]["totals"]["pruned"]
    after = revival.inspect_checkpoint(tmp_path / "api")["pruned"]["totals"]["pruned"]
    assert after == before - data["attack"]["totals"]["kept"]  # only the kept top-K were filled
