"""The Alice encoding pipeline (scripts/alice_encoding.py) on a reduced setting."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "alice"
pytestmark = pytest.mark.skipif(not ROOT.is_dir(), reason=f"Alice data not found at {ROOT}")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))


def test_alice_pipeline_reduced(tmp_path):
    import alice_encoding as A
    from jaxalign import io

    stim = io.read_alice_stimulus(ROOT)
    # random word vectors stand in for LM layers here (the LM path is tested in
    # tests/test_features.py); the word-rate baseline is real signal
    per_word = np.random.default_rng(0).standard_normal((1, len(stim.words), 16))
    res = A.analyse(ROOT, layers=(7,), n_subjects=3, out=tmp_path, per_word=per_word,
                    n_permutations=200, progress=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["layers"] == ["word rate", "layer 7"] == res["layers"]
    assert saved["rois"] == ["LATL", "RATL", "LPTL", "LIPL", "LPreM", "LIFG"]
    for key in ("mean_r", "p", "p_fdr"):
        for name in saved["layers"]:
            assert set(saved[key][name]) == set(saved["rois"])
    p = np.array([[saved["p"][n][r] for r in saved["rois"]] for n in saved["layers"]])
    assert ((p > 0) & (p <= 1)).all()
    # three subjects: sign-flip p can only be one of 1/8 ... 1 (exact enumeration)
    assert np.allclose(np.round(p * 8), p * 8)
    # words per TR drive the auditory/language ROIs: positive held-out r in LPTL
    assert saved["mean_r"]["word rate"]["LPTL"] > 0.05
    assert (tmp_path / "layer_roi.png").stat().st_size > 1000
    assert len(saved["subjects"]) == 3 and "s33" not in saved["subjects"]
