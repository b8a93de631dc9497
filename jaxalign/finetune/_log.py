"""The record of a training run: a JSON-lines log and a loss / accuracy curve.

``log.jsonl`` holds one JSON object per line, written whole and flushed as it
happens (a killed run leaves complete lines): ``{"event": "step", ...}`` per
optimizer step (loss, accuracy of the batch, gradient norm, learning rate,
tokens, tokens/s, ``new_shape``: the first step of its padded shape,
which compiles it unless this process already has), ``{"event": "eval",
...}`` per evaluation, and ``start`` / ``resume`` / ``end`` events. A
resumed run first drops the step and evaluation lines after the checkpoint
it resumes from (they will be written again) and the old ``end``, so the
steps and evaluations read as one uninterrupted run.

``curve.png`` (matplotlib's object API, no pyplot state): training loss per
step (light) with its running mean, validation loss at each evaluation,
and validation accuracy (multiple choice) on a second panel.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np

from jaxalign._core.files import atomic_write, atomic_write_text

__all__ = ["RunLog", "plot_curves", "read_log"]


def read_log(path) -> list[dict]:
    """The records of a ``log.jsonl`` (a last line cut by a kill is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class RunLog:
    """Append-only JSON-lines log; ``resume_step`` keeps only what a checkpoint at that step had seen."""

    def __init__(self, path, resume_step: int | None = None):
        self.path = Path(path)
        if resume_step is None:
            atomic_write_text(self.path, "")
        else:
            kept = [r for r in read_log(self.path) if r.get("event") != "end"
                    and (r.get("event") not in ("step", "eval") or r.get("step", 0) <= resume_step)]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record, allow_nan=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def records(self) -> list[dict]:
        return read_log(self.path)


def _running_mean(x: np.ndarray, n: int) -> np.ndarray:
    if x.size == 0:
        return x
    c = np.cumsum(np.insert(x, 0, 0.0))
    k = np.minimum(np.arange(1, x.size + 1), n)
    return (c[1:] - c[np.arange(1, x.size + 1) - k]) / k


def plot_curves(records: list[dict], path, title: str = "") -> Path:
    """Draw the loss (and accuracy) curves of a run's records into ``path`` (PNG, written atomically)."""
    fig = curve_figure(records, title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    data = buffer.getvalue()
    path = Path(path)
    return atomic_write(path, lambda f: f.write(data))


def curve_figure(records: list[dict], title: str = ""):
    """The matplotlib Figure of :func:`plot_curves`: loss per step (the axis cut at 1.3 x the largest
    running mean or validation loss when single steps spike above 3 x that, their count in the legend),
    its running mean over 1/20 of the steps, validation loss with the kept evaluation, and accuracy
    against chance for multiple choice."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = [r for r in records if r.get("event") == "step"]
    evals = [r for r in records if r.get("event") == "eval"]
    has_acc = any(r.get("accuracy") is not None for r in evals)
    fig = Figure(figsize=(9 if has_acc else 5.5, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if has_acc else 1, squeeze=False)[0]
    ax = axes[0]
    if steps:
        x = np.array([r["step"] for r in steps])
        y = np.array([r["loss"] for r in steps], float)
        ax.plot(x, y, color="tab:blue", alpha=0.25, lw=0.8, label="train (step)")
        ax.plot(x, _running_mean(y, max(1, len(y) // 20)), color="tab:blue", lw=1.6, label="train (running mean)")
    if evals:
        ev = [r for r in evals if r.get("loss") is not None]
        ax.plot([r["step"] for r in ev], [r["loss"] for r in ev], "o-", color="tab:orange", lw=1.6,
                label="validation")
        best = [r for r in ev if r.get("best")]
        if best:
            ax.plot([best[-1]["step"]], [best[-1]["loss"]], "*", ms=14, color="tab:red", label="best (kept)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats)")
    if steps:  # single-item steps spike far above the means: keep the means readable, say what is cut
        w = max(1, len(y) // 20)  # full windows only: the first steps' means are of a few items
        means = [m for m in (_running_mean(y, w)[w - 1:],
                             np.asarray([r["loss"] for r in evals if r.get("loss") is not None], float))
                 if np.isfinite(m).any()]
        top = 1.3 * max(float(np.nanmax(m)) for m in means)
        if np.isfinite(top) and top > 0 and np.nanmax(y) > 3 * top:
            ax.set_ylim(0, top)
            ax.lines[0].set_label(f"train (step; {int(np.sum(y > top))} above the axis)")
    ax.set_title("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if has_acc:
        ax = axes[1]
        ev = [r for r in evals if r.get("accuracy") is not None]
        ax.plot([r["step"] for r in ev], [100 * r["accuracy"] for r in ev], "o-", color="tab:green", lw=1.6,
                label="validation")
        chance = ev[0].get("chance")
        if chance:
            ax.axhline(100 * chance, color="0.5", ls="--", lw=1, label=f"chance ({100 * chance:.0f}%)")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("accuracy (%)")
        ax.set_title("multiple-choice accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def finite_or_none(x):
    """A float for JSON, None for NaN / inf / None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None

