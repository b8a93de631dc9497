"""The import contracts of docs/ARCHITECTURE.md hold (pyproject.toml, [tool.importlinter]).

Runs import-linter on the working tree, so the README's test command
(``pytest``) enforces the arrows in CI: ridge and stats import no models,
files or CLI; lm no io/timing/features; io no lm/features/timing; analysis
only the engine (ridge, stats) and _core; _core nothing of jaxalign; and the
layers cli > studies > analysis > (stats | features | timing) > (ridge | lm |
io) > _core.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PROGRAM = """
import sys
try:
    from importlinter.cli import lint_imports
except ImportError:
    sys.exit("import-linter is missing: pip install -e '.[test]'")
sys.exit(lint_imports(config_filenames=("pyproject.toml",), no_cache=True, no_logo=True))
"""


def test_import_contracts_are_kept():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", PROGRAM], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_a_broken_arrow_would_be_caught(tmp_path):
    """The contracts bite: a copy of the package whose ridge imports io fails them."""
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(REPO / "jaxalign", copy / "jaxalign", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    spy = copy / "jaxalign" / "ridge" / "_spy.py"
    spy.write_text("from jaxalign.io import read_columns  # a wrong arrow\n")
    env = dict(os.environ, PYTHONPATH=str(copy))
    proc = subprocess.run([sys.executable, "-c", PROGRAM], cwd=copy, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0 and "BROKEN" in proc.stdout and "jaxalign.ridge._spy" in proc.stdout
