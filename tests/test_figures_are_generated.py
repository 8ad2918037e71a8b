"""The docs' figures are generated: benchmarks/results.py writes results files, benchmarks/render_docs.py
renders them, and the committed generated pages equal the renderer's output from the committed results."""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCH))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(BENCH))
    return mod


results = _module("results")
render_docs = _module("render_docs")


def test_committed_docs_equal_the_render_of_the_committed_results():
    pages = render_docs.render(results.read_results())
    assert "results" in pages
    diffs = render_docs.differences(pages, ROOT / "docs")
    assert not diffs, "docs/ differ from `python benchmarks/render_docs.py`:\n" + "\n\n".join(diffs)


def test_every_committed_results_file_is_complete_and_rendered():
    recs = results.read_results()
    pages = render_docs.render(recs)
    text = "\n".join(pages.values())
    for name, rec in recs.items():
        assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?|unknown", rec["commit"]), name
        assert rec["command"].split()[-1] and rec["script"].startswith("benchmarks/"), name
        assert {"platform", "cpus", "torch", "threads", "gpu"} <= set(rec["machine"]), name
        assert f"`benchmarks/results/{name}.json`" in text        # each section names its source


def test_a_known_results_file_renders_its_figures_and_no_others(tmp_path):
    folder = tmp_path / "results"
    argv = ["benchmarks/sign_recovery.py", "--quick"]
    t = results.table("kept signs", ["setting", "accuracy", "interval", "seconds"],
                      [["regress", 0.86049, [0.81, 0.9], 1.25], ["svt", 0.70712, None, 41.0]],
                      formats=["", ".3f", ".2f", ".1f"], note="pooled over layers")
    path = results.write_results("sign_recovery", {"title": "Sign recovery", "about": "Prose.", "tables": [t],
                                                   "kept_by_layer": [0.85, 0.87]}, argv=argv, folder=folder)
    assert path == folder / "sign_recovery.json" and not list(folder.glob(".*"))   # no temporary left
    rec = json.loads(path.read_text())
    assert rec["command"].endswith("python benchmarks/sign_recovery.py --quick")
    page = render_docs.render(results.read_results(folder))["results"]
    assert "| regress | 0.860 | [0.81, 0.90] | 1.2 |" in page
    assert "| svt | 0.707 | n/a | 41.0 |" in page
    assert "pooled over layers" in page and "Prose." in page
    assert f"at commit `{rec['commit'][:12]}`" in page and rec["date"] in page
    # only what the file holds: the raw per-layer list is not part of a table, so it is not shown
    assert "0.85" not in page and "0.87" not in page
    # the renderer's own command writes that page, and --check then agrees; a stale page fails it
    docs = tmp_path / "docs"
    assert render_docs.main(["--results", str(folder), "--docs", str(docs)]) == 0
    assert (docs / "results.md").read_text() == page
    assert render_docs.main(["--check", "--results", str(folder), "--docs", str(docs)]) == 0
    (docs / "results.md").write_text(page.replace("0.860", "0.900"))
    assert render_docs.main(["--check", "--results", str(folder), "--docs", str(docs)]) == 1


def test_a_file_without_tables_is_listed_and_a_page_key_makes_its_own_page(tmp_path):
    results.write_results("gpu_check", {"page": "gpu", "title": "GPU check", "passed": True, "wall_s": 12.345,
                                        "stages": {"attack": 3.5}}, argv=["benchmarks/gpu_check.py"], folder=tmp_path)
    pages = render_docs.render(results.read_results(tmp_path))
    assert set(pages) == {"results", "gpu"} and "No results files yet." in pages["results"]
    assert "- passed: yes" in pages["gpu"] and "- wall_s: 12.3" in pages["gpu"] and "- stages.attack: 3.5" in pages["gpu"]
    # a generated page that no results file renders any more is stale for --check and removed on write
    docs = tmp_path / "docs"
    render_docs.write_pages(pages, docs)
    (tmp_path / "gpu_check.json").unlink()
    assert render_docs.main(["--check", "--results", str(tmp_path), "--docs", str(docs)]) == 1
    assert render_docs.main(["--results", str(tmp_path), "--docs", str(docs)]) == 0
    assert not (docs / "gpu.md").exists() and (docs / "results.md").exists()


def test_write_results_refuses_bad_input_before_writing(tmp_path):
    with pytest.raises(ValueError, match="lower-case"):
        results.write_results("Bad Name", {}, folder=tmp_path)
    with pytest.raises(TypeError, match=r"data\.x is a object"):
        results.write_results("ok", {"x": object()}, folder=tmp_path)
    with pytest.raises(ValueError, match="row 0 has 1 cells for 2 columns"):
        results.table("t", ["a", "b"], [[1]])
    assert list(tmp_path.iterdir()) == []
    path = results.write_results("ok", {"nan": float("nan"), "pair": (1, 2)}, folder=tmp_path)
    assert json.loads(path.read_text())["data"] == {"nan": None, "pair": [1, 2]}


def test_a_broken_results_file_is_named_in_one_sentence(tmp_path):
    (tmp_path / "x.json").write_text('{"name": "x"}')
    out = subprocess.run([sys.executable, str(BENCH / "render_docs.py"), "--check", "--results", str(tmp_path),
                          "--docs", str(tmp_path / "docs")], capture_output=True, text=True)
    assert out.returncode == 2 and "x.json is not a results file (missing script" in out.stderr
    assert "Traceback" not in out.stderr


HAND_WRITTEN = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))]
DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")


def _hand_written():
    for rel in HAND_WRITTEN:
        text = (ROOT / rel).read_text(encoding="utf-8")
        if not text.startswith(render_docs.MARK):
            yield rel, text


def test_hand_written_docs_hold_no_measured_figures():
    """A number with a decimal point in the README or a hand-written docs page is a setting, so the
    source defines it; a measured figure belongs in a results file and the generated pages."""
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "src" / "revival").rglob("*")
                       if p.suffix in (".py", ".toml"))
    for rel, text in _hand_written():
        stray = sorted({m for m in DECIMAL.findall(text) if m not in source})
        assert not stray, f"{rel} holds figures no setting in src/ defines (render them instead): {stray}"


def test_links_and_files_named_in_the_docs_exist():
    files = {p.name for p in (ROOT / "src" / "revival").rglob("*.py")} | {p.name for p in (ROOT / "benchmarks").glob("*.py")}
    for rel, text in _hand_written():
        here = (ROOT / rel).parent
        for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" not in link:
                assert (here / link).exists(), f"{rel} links to {link}, which does not exist"
        for path in re.findall(r"`((?:src|benchmarks|tests|docs)/[\w./-]+)`", text):
            assert (ROOT / path).exists(), f"{rel} names {path}, which does not exist"
        if rel == "docs/design.md":   # its file map: every module it names is a file of the package
            for name in re.findall(r"`(\w+\.py)`", text):
                assert name in files, f"docs/design.md names {name}, which is no file of src/revival or benchmarks"


def test_the_design_notes_name_every_module():
    """docs/design.md's file map names each module of src/revival in the row of its package, so
    the next change keeps the map (add a new file to its row)."""
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    rows = [line.split("|")[1:3] for line in text.splitlines() if line.startswith("| `")]
    missing = []
    for path in sorted((ROOT / "src" / "revival").rglob("*.py")):
        rel = path.relative_to(ROOT / "src" / "revival")
        if rel.name in ("__init__.py", "__main__.py"):
            continue
        if len(rel.parts) == 1:
            ok = any(f"`{rel.name}`" in first for first, _ in rows)
        else:
            pkg = "`" + "/".join(rel.parts[:-1]) + "/`"
            ok = any(pkg in first and f"`{rel.name}`" in second for first, second in rows)
        if not ok:
            missing.append(rel.as_posix())
    assert not missing, f"docs/design.md's file map does not name: {', '.join(missing)} (add each to its row)"
