"""Command line: ``jaxalign <command>``.

``jaxalign`` alone runs ``jaxalign alice`` with its quick defaults: SmolLM2
layers 0/10/20/30 against the Alice fMRI ROIs of every listener (or, without
the data, a synthetic Alice-format study with planted responses), about a
minute on a 2-core CPU; a table on stdout, ``results.json`` and a figure in
``out/alice``. ``jaxalign demo`` fits the ridge engine on a planted problem.

Compiled XLA programs are kept in ``~/.cache/jaxalign/xla`` (or
``$JAXALIGN_COMPILE_CACHE``; ``off`` disables it), so later runs skip most
compilation; see ``jaxalign/_compile_cache.py``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

__all__ = ["COMMANDS", "Command", "build_parser", "main", "planted_problem", "register_command", "run_demo"]


def planted_problem(n_samples=1500, n_features=256, n_targets=6000, seed=0):
    """A synthetic encoding problem with a known answer.

    Features have a decaying spectrum (like LM hidden states); targets fall in
    three equal groups: strong signal (true r ~ 0.7), weak signal (true r ~ 0.2),
    and pure noise (r = 0). Returns X, Y, group labels and the noise-free
    part of Y (for the oracle correlation; zero for the noise group).
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features)) * np.logspace(0, -1.5, n_features)
    X = (X @ np.linalg.qr(rng.standard_normal((n_features, n_features)))[0]).astype(np.float32)
    signal = X @ (rng.standard_normal((n_features, n_targets)) / np.sqrt(n_features))
    signal /= signal.std(0)
    group = np.repeat(np.arange(3), -(-n_targets // 3))[:n_targets]
    gain = np.array([1.0, 0.2, 0.0])[group]
    clean = signal * gain
    Y = (clean + rng.standard_normal((n_samples, n_targets))).astype(np.float32)
    return X, Y, group, clean


def run_demo(n_samples=1500, n_features=256, n_targets=6000, seed=0, out=sys.stdout):
    """Fit RidgeCV on 80% of a planted problem, score the held-out 20%."""
    from jaxalign.ridge import RidgeCV, pearson_r

    X, Y, group, clean = planted_problem(n_samples, n_features, n_targets, seed)
    split = int(0.8 * n_samples)
    alphas = np.logspace(-2, 8, 11)
    t0 = time.perf_counter()
    model = RidgeCV(alphas=alphas, cv=5, scoring="pearson").fit(X[:split], Y[:split])
    fit_s = time.perf_counter() - t0
    r = np.asarray(model.score(X[split:], Y[split:]))
    oracle = np.asarray(pearson_r(Y[split:], clean[split:]))  # NaN for the noise group
    names = ["strong signal", "weak signal", "pure noise"]
    print(f"jaxalign demo: planted encoding problem, {n_samples} samples x {n_features} features "
          f"x {n_targets} targets; RidgeCV(11 alphas, 5 contiguous folds) fitted in {fit_s:.1f} s", file=out)
    header = f"{'targets':<15}{'n':>6}{'oracle r':>10}{'held-out r':>12}{'r > 0.1':>9}{'median alpha':>14}"
    print(header, file=out)
    print("-" * len(header), file=out)
    rows = []
    for g, name in enumerate(names):
        sel = group == g
        orc = np.nanmean(oracle[sel]) if g < 2 else 0.0
        row = (name, int(sel.sum()), orc, float(np.mean(r[sel])), float(np.mean(r[sel] > 0.1)),
               float(np.median(model.best_alphas_[sel])))
        rows.append(row)
        print(f"{row[0]:<15}{row[1]:>6}{row[2]:>10.3f}{row[3]:>12.3f}{row[4]:>9.0%}{row[5]:>14.3g}", file=out)
    return rows


def _int_at_least(minimum: int):
    """argparse ``type``: an integer >= ``minimum`` (argparse names the flag and exits with code 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _layer_list(text: str) -> list[int]:
    """argparse ``type`` for --layers: comma-separated hidden-state indices, at least one."""
    parts = [x.strip() for x in text.split(",")]
    if not any(parts):
        raise argparse.ArgumentTypeError("give at least one layer index, e.g. 0,10,20")
    try:
        return [int(x) for x in parts if x]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer indices (integers), got {text!r}"
        ) from None


def _confound_list(text: str) -> str:
    """argparse ``type`` for --confounds: checked now, not after the features are computed."""
    from jaxalign.studies.alice import _confound_names

    try:
        _confound_names(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _demo(args):
    run_demo(args.samples, args.features, args.targets, args.seed)
    return 0


def _alice(args):
    from pathlib import Path

    from jaxalign.studies import alice
    from jaxalign.studies.commands import _configure_logging

    _configure_logging(False)  # the study's progress lines (logging) on stderr
    layers = args.layers if isinstance(args.layers, list) else _layer_list(args.layers)
    synthetic = True if args.synthetic else None
    res = alice.run(args.root, layers=layers, n_subjects=args.subjects, out=args.out, model_path=args.model,
                    synthetic=synthetic, confounds=args.confounds, n_permutations=args.permutations,
                    control=None if args.no_control else "random", seed=args.seed)
    print(alice.format_table(res))
    if res["source"] == "synthetic":
        planted = res["planted"]
        print(f"planted: layer {planted['layer']}, oracle r per ROI "
              + ", ".join(f"{k} {v:.2f}" for k, v in planted["oracle_r"].items()))
    out = Path(args.out)
    print(f"\n{res['seconds']['total']:.0f} s (features {res['seconds']['features']:.0f} s, "
          f"fits {res['fit_seconds']:.0f} s); wrote {out / 'results.json'} and {out / 'layer_roi.png'}")
    return 0


# ------------------------------------------------------------ the registry


from jaxalign._core.commands import COMMANDS, ENTRY_POINT_GROUP, Command, register_command  # noqa: E402

# modules of jaxalign that register a command when imported (besides this one)
_COMMAND_MODULES = ("jaxalign.studies.commands", "jaxalign.finetune.commands")


def _load_commands() -> None:
    import importlib
    from importlib import metadata

    for module in _COMMAND_MODULES:
        importlib.import_module(module)
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        obj = ep.load()
        register_command(obj if isinstance(obj, Command) else obj())


def _version() -> str:
    import jaxalign

    try:
        import jax

        return f"jaxalign {jaxalign.__version__} (jax {jax.__version__})"
    except ImportError:  # pragma: no cover
        return f"jaxalign {jaxalign.__version__}"


def build_parser() -> argparse.ArgumentParser:
    _load_commands()
    parser = argparse.ArgumentParser(
        prog="jaxalign",
        description="Fast, trustworthy alignment of language models with brain recordings. Without a "
                    "command: jaxalign alice (flags included).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  jaxalign                       # the Alice fMRI study, quick defaults\n"
               "  jaxalign run examples/alice.toml --out out/alice_study\n"
               "  jaxalign demo --targets 2000\n\n'jaxalign COMMAND --help' shows each command's flags.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description, epilog=cmd.epilog or None,
                           formatter_class=_HelpFormatter)
        cmd.add_arguments(p)
        p.set_defaults(func=cmd.run, check=cmd.check)
    return parser


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each flag's default shown after its help (when it has one); examples kept as written."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("%(default)" not in text and not (default is None or default is False or default is argparse.SUPPRESS)
                and action.option_strings and action.nargs != 0):
            text += " (default: %(default)s)"
        return text


def _demo_arguments(demo):
    demo.add_argument("--samples", type=_int_at_least(20), default=1500,
                      help="samples (at least 20: 80%% train with 5 folds, 20%% test)")
    demo.add_argument("--features", type=_int_at_least(1), default=256, help="features")
    demo.add_argument("--targets", type=_int_at_least(3), default=6000, help="targets (at least 3: one per group)")
    demo.add_argument("--seed", type=_int_at_least(0), default=0, help="seed of the planted problem")


def _alice_arguments(al):
    al.add_argument("--root", default=None, help="the Alice data folder (default: found automatically)")
    al.add_argument("--layers", type=_layer_list, default="0,10,20,30", help="comma-separated hidden-state "
                    "indices (0 = embeddings; the full study uses 0,5,...,30)")
    al.add_argument("--subjects", type=_int_at_least(1), default=None,
                    help="first N usable listeners (default all; the study needs at least 2)")
    al.add_argument("--out", default="out/alice", help="results folder (created; must be writable)")
    al.add_argument("--model", default=None, help="a causal LM path for jaxalign.lm.load (default SmolLM2)")
    al.add_argument("--confounds", type=_confound_list, default="sndpwr,motion",
                    help="regressed out of the ROI time courses: any of rate,sndpwr,motion ('' for none)")
    al.add_argument("--permutations", type=_int_at_least(1), default=10000, help="sign-flip permutations")
    al.add_argument("--synthetic", action="store_true", help="use the synthetic study even if data exist")
    al.add_argument("--no-control", action="store_true", help="skip the random-vector control row")
    al.add_argument("--seed", type=_int_at_least(0), default=0, help="seed of the tests and the control")


def _alice_check(args):
    # before any data or model is read: results go to --out at the end
    from jaxalign._core.files import writable_dir
    from jaxalign.studies.alice import find_root

    if not args.synthetic:
        find_root(args.root)  # a --root or $JAXALIGN_ALICE without the data fails here
    writable_dir(args.out, "--out folder")


register_command(Command(
    "demo", "fit the ridge engine on a planted synthetic problem",
    "Fit RidgeCV on a synthetic encoding problem with a known answer and print a table of held-out "
    "scores per target group.", _demo_arguments, lambda args: _demo(args),
    epilog="example:\n  jaxalign demo --samples 3000 --targets 20000"))
register_command(Command(
    "alice", "LM layers vs the Alice fMRI ROIs (default command)",
    "Encode the Alice in Wonderland fMRI ROI time courses (Brennan et al. 2016) with SmolLM2 hidden states: "
    "nested ridge CV over all listeners, sign-flip tests, FDR, a table and a figure. Without the data "
    "(../shared/data/alice, $JAXALIGN_ALICE or --root) it runs on a synthetic Alice-format study with "
    "planted responses.", _alice_arguments, lambda args: _alice(args), _alice_check,
    epilog="examples:\n  jaxalign alice --layers 0,5,10,15,20,25,30 --out out/alice_full\n"
           "  jaxalign alice --synthetic --subjects 8"))


def _benchmarks_dir():
    from pathlib import Path

    import jaxalign

    return Path(jaxalign.__file__).resolve().parents[1] / "benchmarks"


def _available_benchmarks() -> list[str]:
    folder = _benchmarks_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_"))


def _bench_arguments(p):
    p.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all; see --list)")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.add_argument("--args", default="", metavar="'FLAGS'",
                   help="flags passed to every benchmark script, written with '=': --args='--n 600 --targets 2000'")


def _bench_check(args):
    folder = _benchmarks_dir()
    if not folder.is_dir():
        raise FileNotFoundError(f"no benchmarks/ folder beside the package ({folder}): 'jaxalign bench' runs the "
                                "benchmark scripts of a source checkout (git clone + pip install -e .)")
    unknown = [n for n in args.names if n not in _available_benchmarks()]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown} (available: {', '.join(_available_benchmarks())})")


def _bench(args):
    import shlex
    import subprocess

    names = args.names or _available_benchmarks()
    if args.list:
        for name in _available_benchmarks():
            doc = (_benchmarks_dir() / f"{name}.py").read_text().split('"""')
            first = doc[1].strip().splitlines()[0] if len(doc) > 1 else ""
            print(f"{name:<14}{first}")
        return 0
    failed = []
    for name in names:
        cmd = [sys.executable, str(_benchmarks_dir() / f"{name}.py"), *shlex.split(args.args)]
        print(f"== jaxalign bench {name}: {' '.join(cmd[1:])}", flush=True)
        if subprocess.run(cmd).returncode != 0:
            failed.append(name)
    if failed:
        print(f"jaxalign bench: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


register_command(Command(
    "bench", "run the benchmark suite (benchmarks/*.py of a source checkout)",
    "Run jaxalign's benchmarks against their peers (himalaya, scikit-learn, numpy loops, transformers), each "
    "printing a table with ratios measured in the same run; results are recorded in benchmarks/RESULTS.md.",
    _bench_arguments, lambda args: _bench(args), _bench_check,
    epilog="examples:\n  jaxalign bench --list\n  jaxalign bench ridge --args='--n 600 --p 64 --targets 2000'"))


def main(argv=None) -> int:
    """``jaxalign [COMMAND] [FLAGS]``: exit code 0 done, 2 bad input (named), 1 failure."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["alice"] + argv  # the bare command is alice, flags included
    args = parser.parse_args(argv)  # invalid flag values: argparse names the flag and exits with 2
    command = args.command or "alice"
    if getattr(args, "check", None) is not None:
        try:
            args.check(args)
        except (OSError, ValueError) as e:
            print(f"jaxalign {command}: error: {e}", file=sys.stderr)
            return 2
    import warnings

    # one clean line per warning on the command line (no source-line echo),
    # for this call only: the caller's warning format is restored after
    previous_format = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *a, **k: f"{category.__name__}: {message}\n"
    # commands set up jaxalign's logger for the terminal; the caller's logging is restored after
    import logging

    jaxalign_logger = logging.getLogger("jaxalign")
    previous_logging = (jaxalign_logger.level, list(jaxalign_logger.handlers))
    try:
        from jaxalign._compile_cache import enable_compilation_cache

        # compiled programs kept on disk where that is the default (GPUs, TPUs,
        # or $JAXALIGN_COMPILE_CACHE): a second run skips most compilation
        enable_compilation_cache()
        try:
            return args.func(args)
        except (FileNotFoundError, ValueError) as e:  # bad input: one clear line, not a traceback
            print(f"jaxalign {command}: error: {e}", file=sys.stderr)
            return 2
    finally:
        warnings.formatwarning = previous_format
        jaxalign_logger.setLevel(previous_logging[0])
        jaxalign_logger.handlers[:] = previous_logging[1]


def entry() -> int:
    """The ``jaxalign`` command's process (console script, ``python -m jaxalign.cli``): freed
    memory is kept for reuse in this process (:func:`jaxalign._core.memory.keep_freed_memory`;
    ``JAXALIGN_KEEP_FREED_MEMORY=0`` disables it), then :func:`main`. ``main`` itself, called
    from Python, leaves the caller's process as it is."""
    from jaxalign._core.memory import keep_freed_memory

    keep_freed_memory()
    return main()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(entry())
