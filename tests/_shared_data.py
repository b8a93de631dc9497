"""Where the real data sits for the tests (read in place, never written):
``<project root>/../shared/data``; tests that need it skip with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def need(*parts):
    """The path under the shared data folder, or skip the test saying where it was looked for."""
    p = DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not found at {p} (the shared data folder sits beside the project root)")
    return p
