"""scripts/finetuned_alice.py: the study file it builds (the base and tuned models, a [compare] section,
the Alice protocol otherwise unchanged), the table it prints, and bad arguments refused before any work.
The run itself is the study runner's [compare] (tests/test_study_runner.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from test_analysis_listener_change import _table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import finetuned_alice as script  # noqa: E402


def test_the_study_file_is_the_alice_protocol_with_base_tuned_and_compare(tmp_path):
    from jaxalign.studies import StudyConfig

    tuned = [("piqa", tmp_path), ("siqa", tmp_path)]
    cfg = script.study_config(REPO / "examples" / "alice.toml", tuned, tmp_path / "out", n_permutations=500)
    alice = StudyConfig.from_toml(REPO / "examples" / "alice.toml")
    assert [m.label for m in cfg.models] == ["base", "piqa", "siqa"]
    assert cfg.models[0].packaged == "SmolLM2-135M-Instruct" and cfg.models[1].path == str(tmp_path)
    assert cfg.compare.base == "base" and cfg.compared == ["piqa", "siqa"] and cfg.compare.n_permutations == 500
    assert cfg.compare.alternative == "two-sided"
    for section in ("dataset", "features", "timing", "encoding", "stats", "layers"):  # the protocol as shipped
        assert cfg.hash_settings(section) == alice.hash_settings(section), section
    assert cfg.resolve_path(cfg.output.dir) == tmp_path / "out"


def test_the_printed_table():
    from jaxalign.analysis.compare import listener_change

    res = listener_change(_table(np.random.default_rng(4), n_subjects=12, planted=(5, "LPTL"), shift=0.03),
                          "base", "tuned")
    text = script.format_change("piqa", res)
    assert text.startswith("piqa vs base: mean r(tuned) - r(base) over 12 listeners")
    assert "| 5 | LPTL |" in text and "12/12" in text and "better: 1, worse: 0, unchanged: 5 of 6" in text


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(SystemExit):
        script.main(["--tuned", "no-equals-sign"])
    with pytest.raises(SystemExit):
        script.main(["--tuned", f"x={tmp_path / 'missing'}"])
    with pytest.raises(SystemExit):
        script.main(["--tuned", f"base={tmp_path}"])
    with pytest.raises(SystemExit):
        script.main(["--tuned", f"a={tmp_path}", "--tuned", f"a={tmp_path}"])
