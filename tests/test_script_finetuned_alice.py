"""scripts/finetuned_alice.py on the synthetic Alice study: two tiny GPT-2s (one the "base", one
"tuned") through the study runner, then the listener-paired comparison equals
analysis.compare.listener_change on the store's own per-subject table (the script adds no numbers of
its own), and bad arguments are refused before any work."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from test_study_runner import _synthetic_config, _tiny_gpt2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import finetuned_alice as script  # noqa: E402


def test_base_vs_tuned_on_the_synthetic_study(tmp_path, capsys):
    from jaxalign.analysis.compare import listener_change
    from jaxalign.studies import load_results

    base, tuned = _tiny_gpt2(tmp_path / "base", 0), _tiny_gpt2(tmp_path / "tuned", 1)
    cfg = _synthetic_config(tmp_path, [base], n_subjects=4)
    out = tmp_path / "out"
    results = script.main(["--tuned", f"toy={tuned}", "--base", str(base), "--config", str(cfg),
                           "--out", str(out), "--quiet", "--permutations", "100"])
    res = results["toy"]
    assert set(res.columns) >= {"layer", "target", "base_mean", "tuned_mean", "change", "p", "p_fdr", "direction"}
    assert len(res) == 6 and (res.n_listeners == 4).all()  # layer 1 x 6 ROIs; exact over 2^4 patterns
    table = load_results(out / "store").table
    table = table[table.feature_set == "model"]
    assert set(table.model) == {"base", "toy"}
    ref = listener_change(table, "base", "toy", n_permutations=100)
    pd.testing.assert_frame_equal(res, ref)
    assert pd.read_csv(out / "change_toy.csv").shape == res.shape
    assert (out / "change_toy.png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "toy vs base" in printed and "| layer | ROI |" in printed


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(SystemExit):
        script.main(["--tuned", "no-equals-sign"])
    with pytest.raises(SystemExit):
        script.main(["--tuned", f"x={tmp_path / 'missing'}"])
    with pytest.raises(SystemExit):
        script.main(["--tuned", f"base={tmp_path}"])
    with pytest.raises(SystemExit):
        script.main(["--tuned", f"a={tmp_path}", "--tuned", f"a={tmp_path}"])
