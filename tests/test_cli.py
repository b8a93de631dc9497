import io

import pytest

from jaxalign.cli import main, run_demo


def test_demo_recovers_planted_groups():
    buf = io.StringIO()
    rows = run_demo(n_samples=600, n_features=40, n_targets=600, seed=1, out=buf)
    strong, weak, noise = rows
    assert strong[3] > 0.5 and strong[3] <= strong[2] + 0.05  # close to, not above, the oracle
    assert 0.03 < weak[3] < strong[3]
    assert abs(noise[3]) < 0.05 and noise[4] < 0.2
    assert "held-out r" in buf.getvalue()


def test_cli_help(capsys):
    import pytest

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "demo" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["demo", "--help"])


def test_bare_command_runs_alice_quick_defaults(monkeypatch, tmp_path):
    import jaxalign.cli as cli

    monkeypatch.chdir(tmp_path)  # --out (out/alice) is created up front

    seen = {}
    monkeypatch.setattr(cli, "_alice", lambda args: seen.update(vars(args)) or 0)
    assert cli.main([]) == 0
    assert seen["command"] is None or seen["command"] == "alice"
    assert seen["layers"] == [0, 10, 20, 30] and seen["out"] == "out/alice" and not seen["synthetic"]
    assert seen["confounds"] == "sndpwr,motion" and seen["permutations"] == 10000


def test_alice_bad_input_is_one_clear_line(tmp_path, capsys):
    assert main(["alice", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "jaxalign alice: error: no Alice data at" in err and "Traceback" not in err
    assert main(["alice", "--subjects", "1", "--root", str(tmp_path / "nowhere")]) == 2


# ------------------------------------------------------------ bad flags fail fast


def _no_model_work(monkeypatch):
    """Any model load or study run fails the test: the error paths must come before them."""
    import jaxalign.cli as cli
    from jaxalign import lm
    from jaxalign.studies import alice

    def boom(*a, **k):
        raise AssertionError("work started before the flags were checked")

    monkeypatch.setattr(lm, "load", boom)
    monkeypatch.setattr(alice, "run", boom)
    monkeypatch.setattr(cli, "run_demo", boom)



@pytest.mark.parametrize("argv,flag", [
    (["demo", "--samples", "-5"], "--samples"),
    (["demo", "--targets", "0"], "--targets"),
    (["demo", "--features", "x"], "--features"),
    (["alice", "--layers", "abc"], "--layers"),
    (["alice", "--layers", ""], "--layers"),
    (["alice", "--layers", " , "], "--layers"),
    (["alice", "--subjects", "0"], "--subjects"),
    (["alice", "--permutations", "-1"], "--permutations"),
    (["alice", "--confounds", "sndpwr,wind"], "--confounds"),
    (["--layers", "1,x"], "--layers"),  # the bare command is alice
])
def test_invalid_flag_values_exit_2_naming_the_flag(argv, flag, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    _no_model_work(monkeypatch)
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {flag}: " in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_unwritable_out_fails_before_any_work(monkeypatch, tmp_path, capsys):
    _no_model_work(monkeypatch)
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    for out in (a_file, a_file / "alice"):
        assert main(["alice", "--synthetic", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"jaxalign alice: error: --out folder {out}" in err and "Traceback" not in err
    import os

    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        try:
            assert main(["alice", "--synthetic", "--out", str(locked)]) == 2
            assert "is not writable" in capsys.readouterr().err
        finally:
            locked.chmod(0o700)


def test_jaxalign_alice_pointing_nowhere_is_an_error(monkeypatch, tmp_path, capsys):
    _no_model_work(monkeypatch)
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "no-such-alice"
    monkeypatch.setenv("JAXALIGN_ALICE", str(missing))
    assert main(["alice", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"$JAXALIGN_ALICE is set to {missing}, which does not exist" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("JAXALIGN_ALICE", str(empty))
    assert main([]) == 2
    assert f"$JAXALIGN_ALICE is set to {empty}, which has no {empty / 'fmri'} folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "out").exists()
    from jaxalign.studies import alice

    with pytest.raises(FileNotFoundError, match="JAXALIGN_ALICE"):
        alice.find_root()


def test_cli_leaves_the_warning_format_alone(monkeypatch, tmp_path):
    import warnings

    import jaxalign.cli as cli

    before = warnings.formatwarning
    seen = {}

    def fake_demo(args):
        seen["inside"] = warnings.formatwarning
        return 0

    monkeypatch.setattr(cli, "_demo", fake_demo)
    assert cli.main(["demo", "--samples", "100"]) == 0
    assert seen["inside"] is not before  # one clean line per warning while the command runs
    assert warnings.formatwarning is before  # and the caller's format afterwards

    def failing_demo(args):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "_demo", failing_demo)
    with pytest.raises(RuntimeError):
        cli.main(["demo"])
    assert warnings.formatwarning is before


def test_bench_lists_and_runs_a_benchmark(capfd):
    from jaxalign.cli import _available_benchmarks

    assert {"ridge", "permutation", "features"} <= set(_available_benchmarks())
    assert main(["bench", "--list"]) == 0
    assert "ridge" in capfd.readouterr().out
    assert main(["bench", "permutation", "--args=--n 60 --targets 40 --permutations 20 --numpy-permutations 5 "
                 "--gemm-n 64 --bandwidth-mib 4 --repeats 1 --warmup-targets 8"]) == 0
    assert "== jaxalign bench permutation" in capfd.readouterr().out
    assert main(["bench", "nope"]) == 2
    assert "unknown benchmark" in capfd.readouterr().err
    assert main(["bench", "permutation", "--args=--no-such-flag"]) == 1


def test_cli_leaves_the_logging_setup_alone(tmp_path):
    import logging

    logger = logging.getLogger("jaxalign")
    before = (logger.level, list(logger.handlers), logger.propagate)
    assert main(["score", "SmolLM2-135M-Instruct", "--benchmark", "Wehbe2014-fMRI", "--out", str(tmp_path)]) == 2
    assert (logger.level, list(logger.handlers), logger.propagate) == before
