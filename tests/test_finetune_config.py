"""The fine-tuning config (TOML, pydantic) and the ``jaxalign finetune`` command end to end on a tiny model."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from jaxalign import cli
from jaxalign.finetune import FinetuneConfig, FinetuneConfigError, TrainConfig

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("task", ["piqa", "siqa"])
def test_the_example_validates_and_states_the_study_protocol(task):
    cfg = FinetuneConfig.from_toml(REPO / "examples" / f"finetune_{task}.toml")
    assert cfg.data.kind == task and cfg.model.packaged == "SmolLM2-135M-Instruct"
    t = cfg.train
    assert (t.lr, t.batch_size, t.epochs, t.patience, t.monitor) == (1e-5, 1, 10, 3, "loss")
    assert cfg.resolve_path(cfg.data.path) == REPO / "examples" / f"../../shared/data/{task}"
    assert cfg.resolve_path(cfg.output.dir) == REPO / "examples" / f"../out/finetune_{task}"
    # every key the schema has is written out in the example (a reader sees them all)
    text = (REPO / "examples" / f"finetune_{task}.toml").read_text()
    for name in TrainConfig.model_fields:
        assert f"\n{name} = " in text, name
    # the two examples differ only in the data and the output folder
    other = (REPO / "examples" / "finetune_piqa.toml").read_text()
    body = lambda s: [x for x in s[s.index("[model]"):].splitlines()  # noqa: E731
                      if not x.startswith(("kind =", "path =", "limit =", "dir ="))]
    assert body(text) == body(other)


def test_every_problem_is_named_at_once(tmp_path):
    path = _write(tmp_path / "bad.toml", """
[model]
packaged = "SmolLM2-135M-Instruct"
hub = "gpt2"

[data]
kind = "piqa"
path = "x"
lm_ratio = 0.3
shuffle = true

[train]
lr = "1e-5"
epochs = 0
bacth_size = 4
schedule = "exponential"

[outptu]
dir = "o"
""")
    with pytest.raises(FinetuneConfigError) as info:
        FinetuneConfig.from_toml(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "problems in the fine-tuning config" in message
    for expected in ["model: give exactly one of packaged, hub or path (got packaged and hub)",
                     "data.shuffle: unknown key (allowed: kind, eval_path, eval_fraction, limit, path, split, text,",
                     "train.lr: expected a number (got '1e-5')",
                     "train.epochs: must be >= 1 (got 0)",
                     "train.bacth_size: unknown key (allowed: lr, weight_decay,",
                     "train.schedule: 'exponential' is not allowed (allowed: 'constant', 'linear', 'cosine')",
                     "outptu: unknown key (allowed: model, data, train, lora, output)"]:
        assert expected in message, (expected, message)
    # a table's cross-field checks run once its keys are valid
    with pytest.raises(FinetuneConfigError, match=r"data: text and lm_ratio > 0 go together"):
        FinetuneConfig.model_validate({"data": {"kind": "piqa", "path": "x", "lm_ratio": 0.3}})


def test_data_kind_and_toml_syntax_errors(tmp_path):
    with pytest.raises(FinetuneConfigError, match=r"data\.kind: unknown kind 'squad' \(allowed: 'piqa', 'siqa', "
                                                  r"'jsonl', 'text'\)"):
        FinetuneConfig.model_validate({"data": {"kind": "squad", "path": "x"}})
    with pytest.raises(FinetuneConfigError, match=r"data: required"):
        FinetuneConfig.model_validate({})
    with pytest.raises(FinetuneConfigError, match=r"data\.choice_keys: needs at least 2 item"):
        FinetuneConfig.model_validate({"data": {"kind": "jsonl", "path": "x", "prompt_keys": ["q"],
                                                "choice_keys": ["a"]}})
    with pytest.raises(FinetuneConfigError, match="not valid TOML"):
        FinetuneConfig.from_toml(_write(tmp_path / "syntax.toml", "[train\nlr = 1"))
    with pytest.raises(FileNotFoundError, match="no fine-tuning config at"):
        FinetuneConfig.from_toml(tmp_path / "absent.toml")
    with pytest.raises(FinetuneConfigError, match=r"train\.monitor 'accuracy' needs multiple-choice data"):
        FinetuneConfig.model_validate({"data": {"kind": "text", "path": "x"}, "train": {"monitor": "accuracy"}})


def test_help_lists_the_command_with_examples(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "finetune" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["finetune", "--help"])
    out = capsys.readouterr().out
    assert "jaxalign finetune examples/finetune_piqa.toml" in out and "--max-steps" in out


def test_bad_config_or_missing_data_exit_2_with_one_clear_message(tmp_path, capsys):
    bad = _write(tmp_path / "bad.toml", '[data]\nkind = "piqa"\npath = "x"\n[train]\nlr = -1.0\n')
    assert cli.main(["finetune", str(bad)]) == 2
    assert "train.lr: must be > 0 (got -1.0)" in capsys.readouterr().err
    missing = _write(tmp_path / "missing.toml", '[model]\npath = "m"\n[data]\nkind = "piqa"\npath = "nowhere"\n')
    assert cli.main(["finetune", str(missing)]) == 2
    assert f"data.path: {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err


def test_jaxalign_finetune_end_to_end_on_a_tiny_model(tmp_path, capsys):
    pytest.importorskip("optax")
    pytest.importorskip("orbax.checkpoint")
    pytest.importorskip("torch")
    from _tiny_lm import saved_tiny, toy_choices

    (tmp_path / "tiny").symlink_to(saved_tiny("gpt2")[0], target_is_directory=True)
    mc = toy_choices(32, 0)
    with open(tmp_path / "toy.jsonl", "w") as f:
        for p, (a, b) in zip(mc.prompts, mc.choices):
            f.write(json.dumps({"q": p, "a": a, "b": b}) + "\n")
    (tmp_path / "toy-labels.lst").write_text("\n".join(str(x) for x in mc.labels) + "\n")
    config = _write(tmp_path / "run.toml", """
[model]
path = "tiny"
[data]
kind = "jsonl"
path = "toy.jsonl"
labels = "toy-labels.lst"
prompt_keys = ["q"]
choice_keys = ["a", "b"]
eval_fraction = 0.25
[train]  # the settings of test_finetune_train (a pytest session compiles the step once)
lr = 3e-3
epochs = 3
batch_size = 2
accumulation = 2
schedule = "cosine"
warmup_steps = 2
patience = 0
weight_decay = 0.01
seed = 7
[output]
dir = "run"
checkpoint_every = 3
""")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["finetune", str(config), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "fine-tuned tiny on jsonl (24 training / 8 validation items): 18 optimizer steps" in out
    assert "before (step 0)" in out and "best (step" in out and "accuracy" in out
    run = tmp_path / "run"
    assert {"log.jsonl", "curve.png", "result.json", "checkpoints", "best", "model"} <= {p.name for p in run.iterdir()}
    result = json.loads((run / "result.json").read_text())
    assert result["steps"] == 18 and result["best"]["loss"] < result["history"][0]["loss"]
    # the export is the kept (best) model: jaxalign reads it back and scores the best evaluation's accuracy
    from jaxalign import finetune, io, lm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, tok = lm.load(run / "model")
    held = io.read_multiple_choice(tmp_path / "toy.jsonl", tmp_path / "toy-labels.lst", prompt_keys=["q"],
                                   choice_keys=["a", "b"])
    _, eval_items = finetune.split_items(32, 0.25, 7)
    sub = held.subset(eval_items)
    acc = (finetune.score_choices(model, tok, sub).argmax(1) == sub.labels).mean()
    assert acc == pytest.approx(result["best"]["accuracy"])
    # run again: the finished run is found and nothing is trained twice
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["finetune", str(config), "--quiet"]) == 0
    assert "resumed from step 18" in capsys.readouterr().out
    assert np.sum([r["event"] == "step" for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())]) == 18
