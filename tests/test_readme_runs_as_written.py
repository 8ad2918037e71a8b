"""Every command of the README's testbed examples runs as written.

The README's ```bash blocks are read in order. Each `revival ...` line is run in process through
`revival.cli.main(shlex.split(line)[1:])`, the lines of one block one after the other in one
temporary folder (a block is a walkthrough: a later line reads what an earlier one wrote). A
line's expected exit status is the one its comment states (`# exit 3`, `# exit 0, 3 or 4`),
else 0. After the block that writes `release/unet.safetensors`, the README's ```python block runs
in the same folder (it reads that file).

Not run, by rule:
* lines that name a path under `sd/`: they need a local Stable Diffusion folder, which the
  README's red-team walkthrough assumes and an offline test machine does not have;
* `./run.sh` lines: they set up an environment and run the demo or the whole suite (the demo is
  covered by tests/test_demo_tells_the_story.py, the suite by itself).

Replaced, by rule: a `revival unlearn ... --method robust -o OUT` line retrains the testbed for
minutes; its output is the release the same command wrote into the package
(`revival.story.demo_holds.shipped_robust`), copied to OUT with its report, after checking that the
report names the same method and concept. The robust erasure itself runs in
tests/test_fine_tuning_erasures.py; the walkthrough's later lines (the audit that must pass) run as written.

Settings: the lines run exactly as written; the README itself shows the small ones
(`--erased-images 20 --max-erased-images 40`). Time: the walkthrough is cut into chains that
share no file (`chains`: the ConceptPrune release with its defense, and the robust release); the
robust chain runs from a file of its own (tests/test_readme_robust_release_runs_as_written.py),
so that pytest-xdist's --dist loadfile gives the two chains to both workers. The publisher's
audits of every attacker make them the slowest tests of the suite.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SD_PATH = re.compile(r"(?:^|\s)sd/")


def bash_blocks(text: str) -> list[list[tuple[str, set[int]]]]:
    """[[(command, expected exit statuses), ...] per ```bash block]; comments stripped."""
    blocks = []
    for body in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        lines = []
        for raw in body.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            code, _, comment = line.partition(" #")
            m = re.search(r"\bexit ([\d, or]+)", comment)
            lines.append((code.strip(), {int(d) for d in re.findall(r"\d+", m.group(1))} if m else {0}))
        blocks.append(lines)
    return blocks


def runnable(blocks):
    """The README's testbed walkthroughs: their `revival` lines, minus those the rules skip."""
    out = []
    for block in blocks:
        cmds = [(c, e) for c, e in block if c.startswith("revival ") and not SD_PATH.search(c)]
        if cmds:
            out.append(cmds)
    return out


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def _paths(cmd: str) -> tuple[set[str], set[str]]:
    """(the paths a line writes, the paths it names): `-o X` is written; every argument that looks
    like a relative path (holds a '/') is named."""
    args = shlex.split(cmd)[1:]
    out = {args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-o", "--out")}
    return out, {a for a in args if "/" in a and not a.startswith("-")}


def _reads(named: str, written: str) -> bool:
    """Does a line that names path `named` read what a line that wrote `written` wrote?"""
    return named == written or named.startswith(written + "/") or written.startswith(named + "/")


def chains(walk):
    """The walkthrough cut into chains that share no file: a line joins the chain of every
    earlier line whose output it names (chains it links are merged), else starts its own. The
    lines of a chain keep their order; chains run as separate tests (in parallel under xdist)."""
    chain_of: list[int] = []
    outputs: list[tuple[str, int]] = []                 # (path written, by line)
    for i, (cmd, _) in enumerate(walk):
        written, named = _paths(cmd)
        linked = {chain_of[j] for o, j in outputs for n in named if _reads(n, o)}
        g = min(linked) if linked else i
        chain_of = [g if c in linked else c for c in chain_of] + [g]
        outputs += [(o, i) for o in written]
    return [[walk[i] for i in range(len(walk)) if chain_of[i] == g] for g in dict.fromkeys(chain_of)]


TEXT = README.read_text(encoding="utf-8")
WALKS = [chain for walk in runnable(bash_blocks(TEXT)) for chain in chains(walk)]


def test_the_readme_is_short_and_its_bash_lines_are_all_accounted_for():
    assert len(TEXT.splitlines()) <= 200
    every = [c for b in bash_blocks(TEXT) for c, _ in b]
    assert any(c.startswith("./run.sh demo") for c in every) and any(c.startswith("./run.sh test") for c in every)
    assert any(SD_PATH.search(c) for c in every)             # the red-team walkthrough, skipped by rule
    for c in every:                                          # nothing else escapes both the run and the rules
        assert c.startswith(("revival ", "./run.sh ")), f"README bash line of unknown kind: {c}"
    verbs = [shlex.split(c)[1] for walk in WALKS for c, _ in walk]
    for verb in ("unlearn", "inspect", "audit", "defend"):
        assert verb in verbs, f"the publisher walkthrough lost its {verb} line"
    for c in every:                                          # the red-team lines at least parse
        if SD_PATH.search(c) and c.startswith("revival "):
            from revival.cli import build_parser

            build_parser().parse_args(shlex.split(c)[1:])


def _robust_copy(cmd: str) -> int:
    """The rule for a robust erasure's line: the shipped release that command wrote, copied."""
    import json
    import shutil

    from revival.story.demo_holds import shipped_robust

    args = shlex.split(cmd)[1:]
    concept, out = args[args.index("--concept") + 1], Path(args[args.index("-o") + 1])
    shipped = shipped_robust(concept)
    assert shipped is not None, f"no shipped robust release of {concept!r} for `{cmd}`"
    report = json.loads(Path(f"{shipped}.report.json").read_text())
    assert (report["method"], report["concept"]) == ("robust", concept)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shipped, out)
    shutil.copyfile(f"{shipped}.report.json", f"{out}.report.json")
    return 0


def test_the_walkthrough_is_cut_where_no_line_reads_another_chains_files():
    """Every line that reads a file of the walkthrough runs after the line that writes it, in the
    same chain; lines that link two chains merge them; the README's robust lines are a chain apart."""
    every = [line for walk in runnable(bash_blocks(TEXT)) for line in walk]
    assert sorted(c for w in WALKS for c, _ in w) == sorted(c for c, _ in every)    # nothing lost or doubled
    for walk in WALKS:
        for i, (cmd, _) in enumerate(walk):
            _, named = _paths(cmd)
            for other, _ in every:
                for o in _paths(other)[0]:
                    if any(_reads(n, o) for n in named) and other != cmd:
                        assert other in [c for c, _ in walk[:i]], f"`{cmd}` reads {o}, written outside its chain"
    assert any(all("robust" in c for c, _ in w) for w in WALKS) and len(WALKS) >= 2
    toy = [("revival a -o x/y", {0}), ("revival b -o z/q", {0}), ("revival c x/y z/q -o w/1", {0}),
           ("revival d q/1", {0}), ("revival e w/1", {0})]
    assert [[c.split()[1] for c, _ in w] for w in chains(toy)] == [["a", "b", "c", "e"], ["d"]]


def is_robust(walk) -> bool:
    """A chain of the robust release (run by tests/test_readme_robust_release_runs_as_written.py:
    a file apart, so that under xdist's --dist loadfile the two chains run on both workers)."""
    return any(" --method robust" in c for c, _ in walk)


@pytest.mark.parametrize("walk", [i for i, w in enumerate(WALKS) if not is_robust(w)])
def test_readme_walkthrough_runs_as_written(walk, tmp_path, monkeypatch, capsys):
    run_walk(WALKS[walk], tmp_path, monkeypatch, capsys)


def run_walk(walk, tmp_path, monkeypatch, capsys) -> None:
    """Run one chain's lines in `tmp_path`, each with the exit status the README states."""
    from revival.cli import main

    monkeypatch.chdir(tmp_path)
    for cmd, expected in walk:
        try:
            rc = _robust_copy(cmd) if " --method robust" in cmd else main(shlex.split(cmd)[1:])
        except SystemExit as e:                              # argparse's own exits
            rc = e.code
        out = capsys.readouterr()
        assert rc in expected, f"`{cmd}` exited {rc}; the README says {sorted(expected)}:\n{out.err[-3000:]}"
        assert "Traceback" not in out.err, f"`{cmd}` printed a traceback:\n{out.err[-3000:]}"
    if (tmp_path / "release" / "unet.safetensors").is_file():
        # what the README says these lines write, where it says
        assert (tmp_path / "release" / "unet.safetensors.report.json").is_file()
        assert (tmp_path / "safe" / "unet.safetensors.report.json").is_file()
        for audit in ("audit/release", "audit/safe"):
            for name in ("audit.json", "audit.md", "model_card.md", "grid.png"):
                assert (tmp_path / audit / name).is_file(), f"{audit}/{name} missing"
        # the README's Python example reads the walkthrough's release
        for block in python_blocks(TEXT):
            exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
        assert (tmp_path / "revived.safetensors").is_file()
