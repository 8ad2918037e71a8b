"""The README's robust-release lines run as written (`revival unlearn --method robust`, then the
audit that must pass): the robust chain of tests/test_readme_runs_as_written.py, in a file of its
own so that it runs beside the ConceptPrune chain on the other xdist worker."""
from __future__ import annotations

import pytest

from test_readme_runs_as_written import WALKS, is_robust, run_walk


@pytest.mark.parametrize("walk", [i for i, w in enumerate(WALKS) if is_robust(w)])
def test_readme_robust_release_runs_as_written(walk, tmp_path, monkeypatch, capsys):
    run_walk(WALKS[walk], tmp_path, monkeypatch, capsys)
