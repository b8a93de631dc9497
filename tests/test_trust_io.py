"""Trust (issue 15) checks that cross packages: unit mix-ups at the word -> TR step,
library calls that must leave global state alone.

Package-local checks live in the package's own test file (test_io.py,
test_lm_load.py, test_features.py, test_cli.py).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from jaxalign import timing

# --------------------------------------------------------------------------
# words -> TRs: onsets in ms against scan times in s
# --------------------------------------------------------------------------


def test_word_times_in_ms_against_scans_in_s_warn():
    tr = 20.0 + 2.0 * np.arange(362)  # the Alice scans, in s
    onsets_s = np.linspace(20.06, 743.3, 2127)
    onsets_ms = onsets_s * 1000.0
    with pytest.warns(UserWarning, match=r"2127 of 2127 words come after the last scan .* milliseconds"):
        idx = timing.words_to_trs(onsets_ms, tr)
    assert np.all(idx == tr.size - 1)  # what the warning is about: every word in the last TR
    with pytest.warns(UserWarning, match="milliseconds"):
        timing.average_per_tr(np.ones((2127, 3)), onsets_ms, tr)
    # the right units, or a few words past the end (the story outlasts the scans by a TR): no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        timing.words_to_trs(onsets_s, tr)
        timing.average_per_tr(np.ones((2127, 3)), onsets_s, tr)
        timing.words_to_trs([21.0, 23.0, 25.0, 745.0], tr)
        timing.words_to_trs(onsets_ms, tr, warn=False)


# --------------------------------------------------------------------------
# library calls leave global state alone
# --------------------------------------------------------------------------

_PLOT_SCRIPT = r"""
import sys, warnings
import matplotlib
matplotlib.use("svg")  # the caller's choice
fmt = warnings.formatwarning
import jaxalign
from jaxalign.studies import alice
layers, rois = ["word rate", "layer 0", "layer 2"], ["LATL", "LPTL"]
grid = lambda v: {n: {r: v for r in rois} for n in layers}
results = {"layers": layers, "rois": rois, "mean_r": grid(0.1), "p_fdr": grid(0.01), "sem_r": grid(0.02),
           "source": "synthetic", "subjects": ["a", "b"]}
alice.plot(results, sys.argv[1])
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
assert warnings.formatwarning is fmt
assert "matplotlib.pyplot" not in sys.modules, "plot imported pyplot"
print("ok")
"""


def test_plotting_leaves_backend_and_warning_format_alone(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    png = tmp_path / "layer_roi.png"
    env = {**__import__("os").environ, "PYTHONPATH": str(root), "JAXALIGN_COMPILE_CACHE": "off"}
    done = subprocess.run([sys.executable, "-c", _PLOT_SCRIPT, str(png)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_cli_main_restores_the_warning_format():
    import jaxalign.cli as cli

    before = warnings.formatwarning
    assert cli.main(["demo", "--samples", "60", "--features", "4", "--targets", "6"]) == 0
    assert warnings.formatwarning is before


def test_readme_names_the_io_extra_where_it_shows_nibabel_or_mne_readers():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    paragraphs = [p for p in readme.split("\n\n") if "nibabel" in p or "MNE reads" in p or "read_nifti" in p
                  or "read_mne" in p]
    assert paragraphs
    for p in paragraphs:
        assert 'pip install "jaxalign[io]"' in p, p
