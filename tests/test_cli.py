import io


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


def test_bare_command_runs_alice_quick_defaults(monkeypatch):
    import jaxalign.cli as cli

    seen = {}
    monkeypatch.setattr(cli, "_alice", lambda args: seen.update(vars(args)) or 0)
    assert cli.main([]) == 0
    assert seen["command"] is None or seen["command"] == "alice"
    assert seen["layers"] == "0,10,20,30" and seen["out"] == "out/alice" and not seen["synthetic"]
    assert seen["confounds"] == "sndpwr,motion" and seen["permutations"] == 10000


def test_alice_bad_input_is_one_clear_line(tmp_path, capsys):
    assert main(["alice", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "jaxalign alice: error: no Alice data at" in err and "Traceback" not in err
    assert main(["alice", "--subjects", "1", "--root", str(tmp_path / "nowhere")]) == 2
