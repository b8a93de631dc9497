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
