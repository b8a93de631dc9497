"""The study commands of ``jaxalign``: ``run``, ``extract`` and ``report`` (registered in ``jaxalign._core.commands``).

Imported by ``jaxalign.cli`` when it builds its parser; each command is a
:class:`jaxalign.cli.Command` (flags, a check made before any work, the run).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from jaxalign._core.commands import Command, register_command

__all__: list[str] = []


def _configure_logging(quiet: bool) -> None:
    """jaxalign's loggers to stderr: INFO normally, warnings only with --quiet."""
    logger = logging.getLogger("jaxalign")
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    if not any(getattr(h, "_jaxalign", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._jaxalign = True
        logger.addHandler(handler)
        logger.propagate = False


def _load_config(args):
    from jaxalign.studies.config import StudyConfig

    return StudyConfig.from_toml(args.config)


# --------------------------------------------------------------------- run


def _run_arguments(p):
    p.add_argument("config", help="the study file (TOML; see examples/alice.toml)")
    p.add_argument("--out", default=None, help="results folder (overrides the config's output.dir)")
    p.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")


def _run_check(args):
    from jaxalign._core.files import writable_dir

    cfg = _load_config(args)  # ConfigError (a ValueError) lists every problem of the file
    writable_dir(cfg.resolve_path(cfg.output.dir) if args.out is None else args.out, "--out / output.dir")
    args._cfg = cfg


def _run(args):
    from jaxalign.studies.runner import format_summary, run_study

    _configure_logging(args.quiet)
    summary = run_study(args._cfg, out=args.out, progress=False if args.quiet else None)
    print(format_summary(summary))
    written = ", ".join(str(Path(f).name) for f in summary.files)
    print(f"\nresults: {summary.out} ({written}); load them with "
          f"jaxalign.studies.load_results('{summary.out / 'store'}')")
    return 0


register_command(Command(
    "run", "run a study config: a resumable sweep into a results store, tables and figures",
    "Run a study file end to end: the dataset and every model are checked first, then each unit of work "
    "(features per model revision, ridge fits per recording group, group statistics) is computed once "
    "and written atomically into OUT/store; a killed run resumes where it stopped, and several processes "
    "can share one folder. Writes OUT/results.csv, OUT/results.json, OUT/study.toml and figures.",
    _run_arguments, _run, _run_check,
    epilog="examples:\n  jaxalign run examples/alice.toml --out out/alice_study\n"
           "  jaxalign run study.toml --quiet      # output.dir from the file, no progress bars"))


# ----------------------------------------------------------------- extract


def _extract_arguments(p):
    p.add_argument("config", help="the study file (TOML)")
    p.add_argument("--out", default=None, help="results folder (overrides output.dir); features go to OUT/cache")
    p.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")


def _extract(args):
    from jaxalign.studies.runner import extract_features

    _configure_logging(args.quiet)
    done = extract_features(args._cfg, out=args.out, progress=False if args.quiet else None)
    for label, revision, path, shape, cached in done:
        print(f"{label} {revision}: {shape[0]} layers x {shape[1]} words x {shape[2]} dims "
              f"({'cached' if cached else 'extracted'}) {path}")
    return 0


register_command(Command(
    "extract", "extract the word features of a study's models (no fitting)",
    "Compute and cache the per-word features of every model and revision of a study file, e.g. on a GPU "
    "node before the fits run elsewhere; 'jaxalign run' then finds them in OUT/cache and loads no model.",
    _extract_arguments, _extract, _run_check,
    epilog="example:\n  jaxalign extract examples/alice.toml --out out/alice_study"))


# ------------------------------------------------------------------ report


def _report_arguments(p):
    p.add_argument("results", help="a results folder of 'jaxalign run' (or its store/ sub-folder)")
    p.add_argument("--out", default=None, help="figures folder (default: RESULTS/figures)")
    p.add_argument("--format", action="append", choices=("png", "svg", "pdf"), default=None,
                   help="figure format (repeat for several; default png)")


def _store_dir(path) -> Path:
    p = Path(path).expanduser()
    if (p / "store" / "store.json").is_file():
        return p / "store"
    return p


def _report_check(args):
    p = _store_dir(args.results)
    if not (p / "store.json").is_file():
        raise FileNotFoundError(f"{args.results} is not a results folder of 'jaxalign run' (no store.json in it "
                                "or in its store/ folder)")


def _report(args):
    from jaxalign.studies.report import make_report

    store = _store_dir(args.results)
    out = args.out if args.out is not None else (store.parent / "figures" if store.name == "store" else None)
    files = make_report(store, out=out, formats=tuple(args.format or ("png",)))
    for f in files:
        print(f)
    return 0


register_command(Command(
    "report", "redraw the figures of a results folder",
    "Draw the figures of a study's results (layer curves per checkpoint with error bands, baseline and "
    "control, layer x target heat map) from its results store.",
    _report_arguments, _report, _report_check,
    epilog="example:\n  jaxalign report out/alice_study --format png --format svg"))
