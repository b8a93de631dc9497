"""The study commands of ``jaxalign``: ``run``, ``extract`` and ``report`` (registered in ``jaxalign._core.commands``).

Imported by ``jaxalign.cli`` when it builds its parser; each command is a
:class:`jaxalign.cli.Command` (flags, a check made before any work, the run).
"""

from __future__ import annotations

import json
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
        logger.addHandler(handler)  # propagation kept: an application's (or pytest's) root handlers see them too


def _load_config(args):
    from jaxalign.studies.config import StudyConfig

    return StudyConfig.from_toml(args.config)


# --------------------------------------------------------------------- run


def _run_arguments(p):
    p.add_argument("config", help="the study file (TOML; see examples/alice.toml)")
    p.add_argument("--out", default=None, help="results folder (overrides the config's output.dir)")
    p.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
    g = p.add_argument_group(
        "one computation over several processes / hosts (jax.distributed)",
        "start the same command in every process; each ridge fit's targets are sharded over every "
        "process's devices and process 0 writes the results (OUT must be on a shared filesystem)")
    g.add_argument("--distributed", action="store_true",
                   help="join a jax.distributed job (coordinator, process count and id detected on "
                        "SLURM, TPU pods and Open MPI, or given below / by $JAXALIGN_COORDINATOR, "
                        "$JAXALIGN_NUM_PROCESSES, $JAXALIGN_PROCESS_ID)")
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="process 0's address (implies --distributed)")
    g.add_argument("--num-processes", type=int, default=None, metavar="N",
                   help="processes in the job (implies --distributed)")
    g.add_argument("--process-id", type=int, default=None, metavar="I",
                   help="this process's index, 0..N-1 (implies --distributed)")
    g.add_argument("--join-timeout", type=int, default=120, metavar="S",
                   help="seconds to wait for every process to join before failing")


def _wants_distributed(args) -> bool:
    return bool(getattr(args, "distributed", False)) or any(
        getattr(args, k, None) is not None for k in ("coordinator", "num_processes", "process_id"))


def _distributed(args) -> bool:
    """Start jax.distributed when asked (before any JAX work); whether it runs."""
    wanted = _wants_distributed(args)
    if wanted:
        import jaxalign.distributed

        jaxalign.distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                                        timeout=args.join_timeout)
    return wanted


def _launch_arguments(p):
    _run_arguments(p)
    g = p.add_argument_group("workers: a SLURM job array or local processes sharing the results store "
                             "(jaxalign.studies.launch)")
    g.add_argument("--launcher", choices=("none", "local", "slurm"), default="none",
                   help="none: this process; local: --jobs processes on this machine; slurm: one job "
                        "array of --jobs tasks (needs sbatch)")
    g.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="number of workers (default 2; never more than the fit units left)")
    g.add_argument("--lease", type=float, default=None, metavar="MINUTES",
                   help="claim lease of a worker: a dead task's unit is taken over after this long (default 5)")
    g.add_argument("--partition", default=None, help="SLURM partition")
    g.add_argument("--gpus-per-job", type=int, default=None, metavar="G",
                   help="GPUs per task (SLURM --gpus-per-node; local: task i sees GPUs i*G .. i*G+G-1)")
    g.add_argument("--cpus-per-job", type=int, default=None, metavar="C",
                   help="CPUs per task (SLURM --cpus-per-task; local: task i is pinned to its own C CPUs, "
                        "default an even share of this machine's; 0: no pinning)")
    g.add_argument("--mem", type=float, default=None, metavar="GB", help="SLURM memory per task, in GB")
    g.add_argument("--time", type=float, default=None, metavar="MINUTES",
                   help="time limit per task (default 120 on SLURM); a task near it is requeued and resumes")
    g.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                   help="another SLURM parameter by submitit's name (account, qos, constraint, exclude, ...); "
                        "repeatable")
    g.add_argument("--logs", default=None, metavar="DIR", help="the tasks' log files (default OUT/logs)")


def _slurm_options(values) -> dict:
    options = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--slurm-option {item!r}: expected KEY=VALUE (e.g. --slurm-option account=lab)")
        options[key.strip().replace("-", "_")] = value
    return options


def _launch_options(args) -> dict:
    from jaxalign.studies.launcher import DEFAULT_LEASE_SECONDS

    return {"launcher": args.launcher, "jobs": args.jobs, "partition": args.partition,
            "lease_seconds": DEFAULT_LEASE_SECONDS if args.lease is None else args.lease * 60.0,
            "gpus_per_job": args.gpus_per_job, "cpus_per_job": args.cpus_per_job, "mem_gb": args.mem,
            "time_minutes": args.time, "slurm_options": _slurm_options(args.slurm_option) or None,
            "logs": args.logs}


def _run_check(args):
    from jaxalign._core.files import writable_dir

    n, i = getattr(args, "num_processes", None), getattr(args, "process_id", None)
    if n is not None and n < 1:
        raise ValueError(f"--num-processes must be >= 1, got {n}")
    if i is not None and (i < 0 or (n is not None and i >= n)):
        raise ValueError(f"--process-id must be in 0..{'N-1' if n is None else n - 1}, got {i}")
    if getattr(args, "coordinator", None) is not None:
        host, sep, port = args.coordinator.rpartition(":")
        if not (sep and host and port.isdigit()):
            raise ValueError(f"--coordinator must be HOST:PORT, got {args.coordinator!r}")
    if _wants_distributed(args) and getattr(args, "launcher", "none") != "none":
        raise ValueError(f"--distributed runs one computation over the processes you start (e.g. with srun); "
                         f"it does not combine with --launcher {args.launcher} (independent workers)")
    if hasattr(args, "launcher"):  # 'run': the launcher's options, before the config is even read
        from jaxalign.studies import launcher

        opts = _launch_options(args)
        if args.lease is not None and not args.lease > 0:
            raise ValueError(f"--lease must be a positive number of minutes, got {args.lease:g}")
        launcher._check_options(*(opts[k] for k in ("launcher", "jobs", "lease_seconds", "partition", "gpus_per_job",
                                                    "cpus_per_job", "time_minutes", "mem_gb", "slurm_options")))
        if args.launcher == "slurm":
            launcher._check_slurm_tools()
        args._launch = opts
    cfg = _load_config(args)  # ConfigError (a ValueError) lists every problem of the file
    writable_dir(cfg.resolve_path(cfg.output.dir) if args.out is None else args.out, "--out / output.dir")
    args._cfg = cfg


def _run(args):
    from jaxalign.studies.launcher import LaunchError, launch
    from jaxalign.studies.runner import format_summary

    _configure_logging(args.quiet)
    if _distributed(args):
        import jax

        from jaxalign.studies.runner import run_study

        summary = run_study(args._cfg, out=args.out, progress=False if args.quiet else None, distributed=True)
        if jax.process_index() != 0:  # process 0 reports for the job
            return 0
    else:
        try:
            summary = launch(args._cfg, out=args.out, progress=False if args.quiet else None, **args._launch)
        except LaunchError as error:  # tasks failed: one clear line (their logs hold the tracebacks)
            print(f"jaxalign run: failed: {error}", file=sys.stderr)
            return 1
    print(format_summary(summary))
    for t in summary.tasks:
        if t["state"] == "done":
            print(f"task {t['task']} (job {t['job_id']}, {t['host']} pid {t['pid']}): {len(t['computed'])} unit(s) "
                  f"computed in {t['seconds']:.0f} s")
        else:
            print(f"task {t['task']} (job {t['job_id']}): failed, {t['error']} (log: {t['log']})")
    planted = json.loads((summary.out / "results.json").read_text())["dataset"].get("planted")
    if planted:
        print(f"synthetic study, planted from {planted['model']} layer {planted['layer']}: oracle r per ROI "
              + ", ".join(f"{k} {v:.2f}" for k, v in planted["oracle_r"].items()))
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
    _launch_arguments, _run, _run_check,
    epilog="examples:\n  jaxalign run examples/alice.toml --out out/alice_study\n"
           "  jaxalign run study.toml --quiet      # output.dir from the file, no progress bars\n"
           "  jaxalign run study.toml --out /shared/study --launcher slurm --jobs 16 --partition gpu "
           "--gpus-per-job 1 --time 240\n"
           "  jaxalign run study.toml --out out/study --launcher local --jobs 4\n"
           "  srun jaxalign run study.toml --out /shared/study --distributed   # one computation over every task"))


# ------------------------------------------------------------- fit, stats


def _stage(stages):
    def run(args):
        from jaxalign.studies.runner import format_summary, run_study

        _configure_logging(args.quiet)
        distributed = _distributed(args)
        summary = run_study(args._cfg, out=args.out, progress=False if args.quiet else None, stages=stages,
                            distributed=distributed)
        if distributed:
            import jax

            if jax.process_index() != 0:
                return 0
        print(format_summary(summary))
        return 0

    return run


register_command(Command(
    "fit", "compute a study's fit units only (features and nested ridge CV per model revision)",
    "The first stage of 'jaxalign run': features and fits, written into OUT/store as they finish (resumable, "
    "shareable between processes, e.g. one job per GPU); the group statistics are left to 'jaxalign stats'.",
    _run_arguments, _stage(("fit",)), _run_check,
    epilog="example:\n  jaxalign fit examples/alice.toml --out out/alice_study"))
register_command(Command(
    "stats", "compute a study's group statistics from its finished fits",
    "The second stage of 'jaxalign run': group tests over subjects, FDR and noise ceilings from the fit units "
    "in OUT/store; fails, naming how many, when fits are missing (no fit is computed here).",
    _run_arguments, _stage(("stats",)), _run_check,
    epilog="example:\n  jaxalign stats examples/alice.toml --out out/alice_study"))


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
    p.add_argument("--format", action="append", choices=("png", "svg", "pdf", "nifti"), default=None,
                   help="figure format (repeat for several; default png); nifti: voxel r maps into RESULTS/maps")


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


# ------------------------------------------------------------------- score


def _score_arguments(p):
    p.add_argument("model", nargs="?", help="a packaged model name (SmolLM2-135M-Instruct, all-MiniLM-L6-v2), a "
                   "local checkpoint folder or GGUF file, or a Hugging Face Hub id (from the local cache)")
    p.add_argument("--benchmark", action="append", default=None, metavar="NAME",
                   help="a benchmark to run (repeat for several; default: every benchmark whose data is found)")
    p.add_argument("--out", default="out/scores", help="folder of the benchmark results (one sub-folder each)")
    p.add_argument("--data", action="append", default=None, metavar="[NAME=]DIR",
                   help="a data folder: DIR holding alice/ and natural_stories/, or NAME=DIR for one benchmark")
    p.add_argument("--revision", action="append", default=None, help="Hub revision(s) to score (repeat)")
    p.add_argument("--name", default=None, help="label of the model in the results")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")


def _parse_data(values):
    if not values:
        return None
    named, plain = {}, None
    for v in values:
        if "=" in v:
            name, _, folder = v.partition("=")
            named[name] = folder
        else:
            plain = v
    if named:
        from jaxalign.studies.benchmarks import BENCHMARKS

        unknown = [n for n in named if n not in BENCHMARKS]
        if unknown:
            raise ValueError(f"--data: unknown benchmark(s) {unknown} (known: {', '.join(BENCHMARKS)})")
        if plain is not None:
            named = {n: named.get(n, plain) for n in BENCHMARKS}
        return named
    return plain


def _score_check(args):
    from jaxalign._core.files import writable_dir
    from jaxalign.studies.benchmarks import BENCHMARKS

    if args.list:
        return
    if args.model is None:
        raise ValueError("give a MODEL to score (or --list to see the benchmarks)")
    for name in args.benchmark or []:
        if name not in BENCHMARKS:
            raise ValueError(f"--benchmark: unknown benchmark {name!r} (known: {', '.join(BENCHMARKS)})")
    args._data = _parse_data(args.data)
    writable_dir(args.out, "--out")


def _score(args):
    from jaxalign.studies.benchmarks import BENCHMARKS, score_model

    if args.list:
        for b in BENCHMARKS.values():
            print(f"{b.name} (v{b.version}): {b.description}")
        return 0
    _configure_logging(args.quiet)
    scores = score_model(args.model, args.benchmark, out=args.out, data=args._data, revisions=args.revision,
                         name=args.name, progress=False if args.quiet else None)
    for s in scores:
        norm = "" if not (s.normalised == s.normalised) else f", normalised {s.normalised:.3f}"
        where = f" at layer {s.best_layer}" if BENCHMARKS[s.benchmark].per_layer else ""
        print(f"{s.benchmark} v{s.version}  {s.model} {s.revision}: {s.score:.3f}{where}{norm}")
        if BENCHMARKS[s.benchmark].per_layer and len(s.curve) > 1:
            curve = "  ".join(f"{int(r.layer)}:{r.score:.3f}" for r in s.curve.itertuples())
            print(f"    layers  {curve}")
    print(f"\nresults in {args.out}; 'jaxalign leaderboard {args.out}' compares every model scored there")
    return 0


register_command(Command(
    "score", "score a model on named benchmarks, every layer",
    "Run a model through named, versioned benchmarks (fixed dataset, features, timing, CV, metric and noise "
    "ceiling): every layer is scored; the best layer and the whole curve are reported, raw and "
    "ceiling-normalised. Ceilings are computed once per results folder and cached.",
    _score_arguments, _score, _score_check,
    epilog="examples:\n  jaxalign score SmolLM2-135M-Instruct\n"
           "  jaxalign score EleutherAI/pythia-160m --revision step1000 --revision step143000 "
           "--benchmark Alice2016-fMRI\n  jaxalign score --list"))


# ------------------------------------------------------------- leaderboard


def _leaderboard_arguments(p):
    p.add_argument("results", nargs="?", default="out/scores", help="the folder 'jaxalign score' wrote into")


def _leaderboard(args):
    from jaxalign.studies.benchmarks import BENCHMARKS, format_leaderboard, leaderboard

    frame = leaderboard(args.results)
    found = [b for b in BENCHMARKS.values() if f"{b.name} r" in frame.columns]
    print(format_leaderboard(frame, found))
    root = Path(args.results)
    print(f"\nwrote {root / 'leaderboard.md'}, {root / 'leaderboard.csv'} and {root / 'leaderboard.png'}")
    return 0


register_command(Command(
    "leaderboard", "models x benchmarks table of a scores folder",
    "Gather every model scored into a folder by 'jaxalign score' into one table (best layer's score, raw and "
    "normalised by the ceiling, and the layer) written as Markdown and CSV, with a figure.",
    _leaderboard_arguments, _leaderboard,
    epilog="example:\n  jaxalign leaderboard out/scores"))
