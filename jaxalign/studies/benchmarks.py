"""Named, versioned benchmarks: a fixed protocol a model is scored on at every layer (``jaxalign score``).

A benchmark is a study config without its model: dataset adapter, features,
timing, cross-validation, metric and ceiling are fixed and versioned, so two
scores of the same benchmark and version are comparable. ``score_model``
runs a model through each benchmark with the study runner (every layer,
resumable, results in ``<out>/<name>-v<version>/``, the noise ceiling
computed once per benchmark folder and cached), and reports the whole layer
curve, the best layer, raw and ceiling-normalised. ``leaderboard(out)``
gathers every model scored under ``out`` into one models x benchmarks table
(Markdown, CSV) and a figure.

Unlike Brain-Score, every layer is scored (its maintainers declined
per-layer benchmarks) and the ceilings are computed once and cached. The
best layer is chosen on the benchmark's own scores, so the "best" number is
an optimistic summary; the curve is reported for that reason.

=================  =====================================================================
name               protocol
=================  =====================================================================
Alice2016-fMRI     Brennan et al. 2016, 6 language ROIs x all usable listeners. Hidden
                   states (last token, whole passage), per-TR average, FIR delays 1-4;
                   linear trend + sound power + head motion regressed out on each outer
                   training set; nested ridge CV (5 contiguous outer folds, gap 5; 5
                   inner folds with the same gap; penalties 10^-1..10^6). Score per
                   layer: mean over ROIs of the mean held-out r over listeners (sign-flip
                   tests over listeners per ROI). Ceiling: Brain-Score's held-out-listener
                   consistency extrapolated to infinitely many listeners (per ROI, mean
                   over ROIs); normalised = score / ceiling.
Futrell2018-RT     Natural Stories self-paced reading: surprisal (bits, whole story as
                   context, each story fresh) vs mean reading time, sentence-initial words
                   excluded; Pearson r over the pooled words of the stories present. The
                   layer is the LM head (one "layer"). Ceiling: the published split-half
                   value 0.858 of the full 10-story corpus (per-reader times, needed to
                   recompute it, are not in the shipped files).
Wehbe2014-fMRI     Harry Potter fMRI as preprocessed by Toneva & Wehbe (8 subjects, their
                   own voxel spaces): per-TR average, delays 1-4, run edges trimmed
                   (20 / 15 TRs), 4 contiguous outer folds with gap 5, 10 inner folds,
                   penalties 10^-6..10^9; the subjects present in the folder. Score:
                   median over voxels of held-out r, mean over subjects. No ceiling.
Wehbe2014-MEG      Harry Potter word-locked MEG: 20 windows of 25 ms from word onset,
                   every window x channel a target of one fit, 10 contiguous outer folds.
                   Score: median over channels, mean over windows. No ceiling.
=================  =====================================================================

The data: Alice and Natural Stories are found in ``../shared/data`` (beside
the working directory or the project), ``$JAXALIGN_DATA`` or a ``--data``
folder holding ``alice/`` and ``natural_stories/``; the Harry Potter files
are passed per benchmark (``data={"Wehbe2014-fMRI": folder}``, or
``jaxalign score MODEL --data Wehbe2014-MEG=folder`` with ``meg.npy``,
``words.npy`` and ``sfreq`` in ``info.json``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from jaxalign._core.files import atomic_write, atomic_write_text, writable_dir
from jaxalign.studies.config import StudyConfig

__all__ = ["BENCHMARKS", "Benchmark", "benchmark_config", "leaderboard", "model_spec", "score_model"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Benchmark:
    """A fixed protocol: study settings without a model, how to find its data, how to summarise a layer."""

    name: str
    version: int
    description: str
    settings: dict
    dataset: Callable[[Path | None], dict]  # data folder (or None: discover) -> [dataset] table
    aggregate: Callable  # (results table of one model x revision) -> DataFrame per layer
    per_layer: bool = True
    reference: str = ""

    @property
    def folder(self) -> str:
        return f"{self.name}-v{self.version}"


def _data_root(override: Path | None, sub: str) -> Path | None:
    if override is not None:
        p = Path(override).expanduser()
        return p / sub if (p / sub).is_dir() else p
    candidates = []
    if os.environ.get("JAXALIGN_DATA"):
        candidates.append(Path(os.environ["JAXALIGN_DATA"]).expanduser())
    candidates += [Path.cwd() / ".." / "shared" / "data", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"]
    for c in candidates:
        if (c / sub).is_dir():
            return (c / sub).resolve()
    return None


def _need(root: Path | None, name: str, what: str) -> Path:
    if root is None:
        raise FileNotFoundError(f"{name}: the {what} was not found ($JAXALIGN_DATA unset, no ../shared/data); "
                                f"pass it with --data {name}=FOLDER")
    return root


# ----------------------------------------------------------- aggregations


def _group_rows(t):
    return t[(t["subject"] == "group") & (t["feature_set"] == "model")]


def _alice_aggregate(t):
    import pandas as pd

    g = _group_rows(t)
    rows = []
    for layer, part in g.groupby("layer"):
        score = float(part["score"].mean())
        ceiling = float(part["ceiling"].mean()) if "ceiling" in part else np.nan
        rows.append({"layer": int(layer), "score": score, "ceiling": ceiling, "normalised": score / ceiling,
                     "n_targets": len(part), "significant": int((part["p_fdr"] < 0.05).sum())})
    return pd.DataFrame(rows)


def _futrell_aggregate(t):
    import pandas as pd

    part = t[(t["target"] == "pooled") & (t["feature_set"] == "model")]
    return pd.DataFrame([{"layer": int(r.layer), "score": float(r.score), "ceiling": float(r.ceiling),
                          "normalised": float(r.score_over_ceiling), "n_targets": 1,
                          "significant": int(r.p_fdr < 0.05)} for r in part.itertuples()])


def _median_then_mean(t, over):
    import pandas as pd

    part = t[(t["subject"] != "group") & (t["feature_set"] == "model")]
    med = part.groupby(["layer", "subject"] + over[:-1])["score"].median().reset_index()
    if len(over) > 1:
        med = med.groupby(["layer", "subject"])["score"].mean().reset_index()
    rows = [{"layer": int(layer), "score": float(p["score"].mean()), "ceiling": np.nan, "normalised": np.nan,
             "n_targets": int(part[part["layer"] == layer].groupby("subject").size().mean()), "significant": 0}
            for layer, p in med.groupby("layer")]
    return pd.DataFrame(rows)


def _alice_dataset(root):
    return {"kind": "alice", "source": "real", **({} if root is None else {"root": str(root)})}


def _natural_stories_dataset(root):
    return {"kind": "natural_stories", "root": str(_need(root, "Futrell2018-RT", "Natural Stories folder"))}


def _hp_fmri_dataset(root):
    root = _need(root, "Wehbe2014-fMRI", "Harry Potter fMRI folder")
    subjects = sorted(p.name[len("data_subject_"):-len(".npy")] for p in Path(root).glob("data_subject_*.npy"))
    if not subjects:
        raise FileNotFoundError(f"Wehbe2014-fMRI: no data_subject_<letter>.npy in {root}")
    return {"kind": "harry_potter_fmri", "root": str(root), "subjects": subjects}


def _hp_meg_dataset(root):
    root = _need(root, "Wehbe2014-MEG", "Harry Potter MEG folder")
    info = root / "info.json"
    if not info.is_file():
        raise FileNotFoundError(f"Wehbe2014-MEG: {info} not found: the folder needs meg.npy (words, channels, time), "
                                "words.npy and info.json with the sample rate, e.g. {\"sfreq\": 1000, \"tmin\": 0}")
    meta = json.loads(info.read_text())
    return {"kind": "harry_potter_meg", "data": str(root / "meg.npy"), "words": str(root / "words.npy"),
            "sfreq": float(meta["sfreq"]), "tmin": float(meta.get("tmin", 0.0))}


_HIDDEN = {"kind": "hidden_states", "pooling": "last", "context": "passage"}

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark(
        "Alice2016-fMRI", 1, "Alice in Wonderland fMRI, 6 language ROIs, mean r over listeners per layer",
        {"layers": "all", "features": dict(_HIDDEN),
         "timing": {"kind": "fmri", "method": "average", "delays": [1, 2, 3, 4]},
         "encoding": {"alphas": {"logspace": [-1, 6, 8]}, "outer": {"kind": "contiguous", "n_splits": 5, "gap": 5},
                      "inner": {"kind": "contiguous", "n_splits": 5}, "standardize": "separate",
                      "detrend": "poly", "detrend_order": 1, "confounds": ["sndpwr", "motion"],
                      "confound_fit": "train"},
         "stats": {"test": "sign_flip", "n_permutations": 10000, "fdr": "bh",
                   "ceiling": {"method": "extrapolation"}}},
        lambda root: _alice_dataset(_data_root(root, "alice") if root is not None else None),
        _alice_aggregate, reference="Brennan et al. 2016; Bhattasali et al. 2020 (ROI time courses)"),
    Benchmark(
        "Futrell2018-RT", 1, "Natural Stories self-paced reading, surprisal vs mean reading time (pooled r)",
        {"features": {"kind": "surprisal", "context": "passage", "bos": False},
         "timing": {"kind": "none"}, "encoding": {"method": "correlation"},
         "stats": {"test": "pearson_t", "alternative": "two-sided", "ci_resamples": 1000,
                   "ceiling": {"method": "fixed", "value": 0.858}}},
        lambda root: _natural_stories_dataset(_data_root(root, "natural_stories")),
        _futrell_aggregate, per_layer=False, reference="Futrell et al. 2018; Schrimpf et al. 2021"),
    Benchmark(
        "Wehbe2014-fMRI", 1, "Harry Potter fMRI (Toneva & Wehbe preprocessing), median voxel r per layer",
        {"layers": "all", "features": dict(_HIDDEN),
         "timing": {"kind": "fmri", "method": "average", "delays": [1, 2, 3, 4], "trim_start": 20, "trim_end": 15},
         "encoding": {"alphas": {"logspace": [-6, 9, 16]}, "outer": {"kind": "contiguous", "n_splits": 4, "gap": 5},
                      "inner": {"kind": "contiguous", "n_splits": 10}, "standardize": "separate",
                      "detrend": "none"},
         "stats": {"test": "none"}},
        lambda root: _hp_fmri_dataset(None if root is None else Path(root).expanduser()),
        lambda t: _median_then_mean(t, ["target"]), reference="Wehbe et al. 2014; Toneva & Wehbe 2019"),
    Benchmark(
        "Wehbe2014-MEG", 1, "Harry Potter word-locked MEG, 20 windows of 25 ms, median channel r per layer",
        {"layers": "all", "features": dict(_HIDDEN),
         "timing": {"kind": "meg", "start": 0.0, "stop": 0.5, "width": 0.025},
         "encoding": {"alphas": {"logspace": [-1, 6, 8]}, "outer": {"kind": "contiguous", "n_splits": 10, "gap": 0},
                      "inner": {"kind": "contiguous", "n_splits": 5}, "standardize": "separate",
                      "detrend": "none"},
         "stats": {"test": "none"}},
        lambda root: _hp_meg_dataset(None if root is None else Path(root).expanduser()),
        lambda t: _median_then_mean(t, ["window", "target"]), reference="Wehbe et al. 2014"),
)}
"""Benchmark name -> :class:`Benchmark` (``jaxalign score --list`` prints them)."""


def model_spec(model: str, *, revisions=None, name=None, dtype="float32") -> dict:
    """A ``[[models]]`` table from what a user types: a packaged name, an existing path, else a Hub id."""
    from jaxalign.studies.config import PACKAGED

    spec: dict = {"dtype": dtype}
    if model in PACKAGED:
        spec["packaged"] = model
    elif Path(model).expanduser().exists() or model.startswith((".", "/", "~")):
        spec["path"] = str(Path(model).expanduser().resolve())
    else:
        spec["hub"] = model
    if revisions:
        spec["revisions"] = list(revisions)
    if name:
        spec["name"] = name
    return spec


def benchmark_config(name: str, model: dict, data=None, out=None) -> StudyConfig:
    """The study config of benchmark ``name`` for one ``[[models]]`` table (``model_spec``)."""
    if name not in BENCHMARKS:
        raise ValueError(f"--benchmark: unknown benchmark {name!r} (known: {', '.join(BENCHMARKS)})")
    b = BENCHMARKS[name]
    body = json.loads(json.dumps(b.settings))
    body["dataset"] = b.dataset(None if data is None else Path(data))
    body["models"] = [model]
    if out is not None:
        body["output"] = {"dir": str(Path(out).resolve()), "formats": ["json", "csv", "png"]}
    return StudyConfig.model_validate(body)


@dataclass
class ModelScore:
    """The score of one model revision on one benchmark: the layer curve and its best layer."""

    benchmark: str
    version: int
    model: str
    revision: str
    curve: object  # DataFrame: layer, score, ceiling, normalised, n_targets, significant
    best_layer: int
    score: float
    normalised: float
    out: Path
    extra: dict = field(default_factory=dict)


def score_model(model, benchmarks=None, *, out="out/scores", data=None, revisions=None, name=None,
                progress=None) -> list[ModelScore]:
    """Score ``model`` (packaged name, path or Hub id) on ``benchmarks`` (default: those whose data is found).

    ``data``: folder of ``alice/`` and ``natural_stories/``, or a dict
    benchmark name -> data folder. Every benchmark is a study run in
    ``out/<name>-v<version>/`` (resumable; another model scored into the
    same ``out`` reuses the cached ceilings). Returns one :class:`ModelScore`
    per benchmark x revision; also written to ``score.json`` in each folder.
    """
    from jaxalign.studies.runner import run_study

    spec = model_spec(str(model), revisions=revisions, name=name)
    out = writable_dir(out, "--out")
    per_bench = data if isinstance(data, dict) else {}
    names = list(benchmarks) if benchmarks else None
    configs = {}
    for bname in names or list(BENCHMARKS):
        root = per_bench.get(bname, None if isinstance(data, dict) else data)
        try:
            configs[bname] = benchmark_config(bname, spec, root, out / BENCHMARKS[bname].folder if bname in
                                              BENCHMARKS else None)
        except FileNotFoundError as error:
            if names:  # asked for by name: its data must be there
                raise
            log.info("skipping %s: %s", bname, error)
    if not configs:
        raise FileNotFoundError("no benchmark has its data here; pass --data (see jaxalign score --list)")
    results = []
    for bname, cfg in configs.items():
        b = BENCHMARKS[bname]
        log.info("benchmark %s (v%d)", bname, b.version)
        try:
            summary = run_study(cfg, progress=progress)
        except ValueError as error:
            if names or "causal" not in str(error):
                raise
            log.info("skipping %s: %s", bname, error)  # e.g. surprisal of a bidirectional model
            continue
        for s in _model_scores(b, summary.table, summary.out):
            results.append(s)
        atomic_write_text(summary.out / "benchmark.json", json.dumps(
            {"name": b.name, "version": b.version, "description": b.description, "reference": b.reference,
             "settings": b.settings}, indent=1))
    return results


def _model_scores(b: Benchmark, table, folder: Path) -> list[ModelScore]:
    out = []
    models = table[table["feature_set"] == "model"][["model", "revision"]].drop_duplicates()
    for model, revision in models.itertuples(index=False):
        part = table[(table["model"] == model) & (table["revision"] == revision)]
        curve = b.aggregate(part).sort_values("layer").reset_index(drop=True)
        if curve.empty:
            continue
        best = int(curve["score"].idxmax())
        row = curve.iloc[best]
        out.append(ModelScore(b.name, b.version, model, revision, curve, int(row["layer"]), float(row["score"]),
                              float(row["normalised"]), folder))
    return out


def leaderboard(out="out/scores", *, write: bool = True):
    """Models x benchmarks from every benchmark folder under ``out``: best-layer scores, raw and normalised.

    Returns a pandas DataFrame (one row per model x revision; per benchmark
    the columns ``<name> r``, ``<name> norm`` and ``<name> layer``) and,
    with ``write``, saves ``leaderboard.md``, ``leaderboard.csv`` and
    ``leaderboard.png`` in ``out``.
    """
    import pandas as pd

    from jaxalign.studies.store import load_results

    root = Path(out).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist: score models into it first (jaxalign score MODEL --out {root})")
    rows: dict = {}
    found = []
    for b in BENCHMARKS.values():
        store = root / b.folder / "store"
        if not (store / "store.json").is_file():
            continue
        found.append(b)
        table = load_results(store).table
        for s in _model_scores(b, table, root / b.folder):
            r = rows.setdefault((s.model, s.revision), {"model": s.model, "revision": s.revision})
            r[f"{b.name} r"] = s.score
            r[f"{b.name} norm"] = s.normalised
            r[f"{b.name} layer"] = s.best_layer if b.per_layer else None
    if not rows:
        raise ValueError(f"no benchmark results under {root} (expected folders such as "
                         f"{', '.join(b.folder for b in BENCHMARKS.values())})")
    frame = pd.DataFrame(list(rows.values()))
    if write:
        atomic_write_text(root / "leaderboard.csv", frame.to_csv(index=False))
        atomic_write_text(root / "leaderboard.md", format_leaderboard(frame, found) + "\n")
        _plot_leaderboard(frame, found, root / "leaderboard.png")
    return frame


def format_leaderboard(frame, benchmarks) -> str:
    """A Markdown table: one row per model, per benchmark 'r (normalised) @ layer'."""
    head = "| model | revision | " + " | ".join(f"{b.name} v{b.version}" for b in benchmarks) + " |"
    lines = [head, "|---|---|" + "---:|" * len(benchmarks)]
    for r in frame.to_dict("records"):
        cells = []
        for b in benchmarks:
            score = r.get(f"{b.name} r")
            if score is None or (isinstance(score, float) and np.isnan(score)):
                cells.append("")
                continue
            norm = r.get(f"{b.name} norm")
            layer = r.get(f"{b.name} layer")
            text = f"{score:.3f}"
            if norm is not None and np.isfinite(norm):
                text += f" ({norm:.2f})"
            if layer is not None and np.isfinite(layer):
                text += f" @ {int(layer)}"
            cells.append(text)
        lines.append(f"| {r['model']} | {r['revision']} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("r: best layer's score (held-out r, or r for reading times); (normalised by the benchmark's "
                 "ceiling); @ the best layer, chosen on the benchmark's own scores (optimistic; see each "
                 "folder's layer curves).")
    return "\n".join(lines)


def _plot_leaderboard(frame, benchmarks, path: Path) -> None:
    """Grouped bars per benchmark, one per model: the best layer's raw r (left) and normalised score (right)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = [f"{m}" + ("" if rev == "main" else f"@{rev}") for m, rev in zip(frame["model"], frame["revision"])]
    fig = Figure(figsize=(3.0 + 2.4 * len(benchmarks) + 0.3 * len(labels), 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    width = 0.8 / max(1, len(labels))
    x = np.arange(len(benchmarks))
    for ax, column, title in ((axes[0], "r", "best layer's score (raw r)"),
                              (axes[1], "norm", "normalised by the noise ceiling")):
        for i, label in enumerate(labels):
            vals = np.array([frame.iloc[i].get(f"{b.name} {column}", np.nan) for b in benchmarks], float)
            pos = x + (i - (len(labels) - 1) / 2) * width
            bars = ax.bar(pos, np.nan_to_num(vals), width, label=label)
            for xi, v, bar in zip(pos, vals, bars):
                text = "n/a" if not np.isfinite(v) else f"{v:.2f}"
                ax.text(xi, max(0.0, bar.get_height()), text, ha="center", va="bottom", fontsize=7)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xticks(x, [f"{b.name}\nv{b.version}" for b in benchmarks], fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.margins(y=0.15)
    axes[0].set_ylabel("Pearson r")
    axes[1].set_ylabel("score / ceiling")
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle("jaxalign leaderboard (n/a: not scored, or no ceiling)", fontsize=11)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
