"""The nested, typed configuration (mecore.config): overrides by key, keys that follow from the groups, the code
version in every key, and ``--set`` on the command line."""
from __future__ import annotations

import importlib.util
import json
import pickle
import sys

import pandas as pd
import pytest
from torch import nn

from mecore import models
from mecore.__main__ import main
from mecore.config import Config, ConfigError, cite, parse_overrides
from mecore.loso import run_key, run_loso, training_dir
from mecore.models import LosoFold, ModelSpec, get_model, register
from mecore.train import OptimizerSpec, TrainConfig, fit, predict
from test_loso import DATA, LINEAR, SUBJECTS, tensors

PAPER = Config({"input": {"crop": {"size": cite(128, "Sec. III-A"), "box": "median"}, "max_fps": None},
                "train": {"lr": cite(1e-4, "Sec. IV-A"), "epochs": 30, "proposals": None, "widths": [4, 8]},
                "test": {"threshold": cite(0.5, "Table II")}, "trial": {"max_steps": None}, "run": {"repeats": 3}})


def test_profiles_are_deltas_that_keep_types_and_sources():
    default = PAPER.set({"train.lr": 1e-3, "input.crop.size": 64})
    assert (default.train.lr, default.input.crop.size, PAPER.input.crop.size) == (1e-3, 64, 128)
    assert default["train"]["epochs"] == 30 and dict(**default.input.crop) == {"size": 64, "box": "median"}
    assert PAPER.source("train.lr") == "Sec. IV-A" and default.source("train.lr") is None  # no longer the paper's
    assert default.source("test.threshold") == "Table II" and default.input.source("crop.size") is None
    assert pickle.loads(pickle.dumps(default)) == default and default.flat()["input.crop.size"] == 64
    assert PAPER.set({"train.epochs": 2, "train.proposals": 16}).train.proposals == 16  # None takes a number
    samm = PAPER.set({"train.epochs": cite(85, "Sec. IV-A-3, SAMM")})  # a per-dataset paper value keeps its source
    assert samm.train.epochs == 85 and samm.source("train.epochs") == "Sec. IV-A-3, SAMM"
    assert "train:\n  lr: 0.0001  # Sec. IV-A\n  epochs: 30\n" in str(PAPER)  # printed with the paper's sources
    with pytest.raises(AttributeError, match="immutable"):
        PAPER.train = {}


@pytest.mark.parametrize("change, message", [
    ({"train.lrr": 1.0}, "unknown configuration key 'train.lrr': train has no 'lrr'; valid keys: train.lr, "
                         "train.epochs, train.proposals, train.widths"),
    ({"nope.x": 1}, "the configuration has no 'nope'; valid keys: input, train, test, trial, run"),
    ({"train.epochs": 1.5}, "'train.epochs' takes an integer, got 1.5"),
    ({"train.lr": "fast"}, "'train.lr' takes a number, got 'fast'"),
    ({"test.threshold": True}, "'test.threshold' takes a number, got True"),
    ({"input.crop": 64}, "'input.crop' is a group (input.crop.size, input.crop.box)"),
])
def test_an_unknown_key_or_a_wrong_type_is_named_with_the_choices(change, message):
    with pytest.raises(ConfigError) as error:
        PAPER.set(change)
    assert message in str(error.value)


def test_set_arguments_are_read_as_json():
    assert parse_overrides(["train.lr=3e-4", "a.b=true", "c=None", "d=[1, 2]", "e=tvl1"]) == \
        {"train.lr": 3e-4, "a.b": True, "c": None, "d": [1, 2], "e": "tvl1"}
    with pytest.raises(ConfigError, match="group.key=value"):
        parse_overrides(["train.lr"])


def test_every_model_cites_its_paper_and_every_profile_has_the_paper_keys():
    for name in models.available_models():
        spec = get_model(name)
        paper = spec.config("paper")
        keys = set(paper.flat())
        for profile in spec.configs:
            assert set(spec.config(profile).flat()) == keys, (name, profile)  # deltas of one tree
        if spec.paper.startswith("Moilanen") or spec.paper.startswith("Wang et al. 2017"):
            continue  # classical baselines: nothing trained
        cited = [key for key in keys if paper.source(key)]
        assert len(cited) >= 5, (name, cited)


# ----------------------------------------------------------------- keys follow from the configuration's groups
TRAININGS: list[str] = []


def thresholded_fold(fold: LosoFold) -> pd.DataFrame:
    """Softmax regression trained once per training key (in a shared folder, as MESNet and BiFPN-I3D keep theirs);
    ``test.threshold`` only decides which predictions stand (the others fall back to the first class)."""
    folder = training_dir(THRESHOLDED, fold, fold.config.keyed(), "thresholded_models")
    if not (folder / "checkpoint.pt").exists():
        TRAININGS.append(fold.test_subject)
    config = TrainConfig(optimizer=OptimizerSpec("sgd", fold.config.train.lr), epochs=fold.config.train.epochs,
                         batch_size=8, monitor="train_loss", seed=fold.seed)
    result = fit(nn.Linear(4, 3), nn.CrossEntropyLoss(), tensors(fold.train_rows), None, config,
                 checkpoint_dir=folder, resume="auto", progress=False)
    probabilities = predict(result.model, tensors(fold.test_rows), batch_size=64).softmax(dim=1)
    best = probabilities.max(dim=1)
    classes = ["happiness", "surprise", "disgust"]
    keep = (best.values >= fold.config.test.threshold).numpy()
    test = fold.test_rows
    return pd.DataFrame({"video": test["video"].to_numpy(), "label": test["emotion"].to_numpy(),
                         "prediction": [classes[i] if k else classes[0] for i, k in zip(best.indices.tolist(), keep)]})


THRESHOLDED = ModelSpec(name="test-thresholded", task="recognition", paper="test", run_fold=thresholded_fold,
                        configs={"smoke": Config({"input": {"max_fps": None}, "train": {"lr": 0.1, "epochs": 2},
                                                  "test": {"threshold": 0.0}, "trial": {"max_steps": None},
                                                  "run": {"repeats": 1}})})


def test_a_training_key_retrains_a_test_key_only_re_predicts(tmp_path, monkeypatch):
    monkeypatch.setenv("MECORE_HOME", str(tmp_path))
    TRAININGS.clear()
    run = lambda **config: run_loso(THRESHOLDED, DATA, "smoke", config=config, scheduler="sync",  # noqa: E731
                                    results_dir=tmp_path / "loso", progress=False)
    first = run()
    assert sorted(TRAININGS) == SUBJECTS
    TRAININGS.clear()
    stricter = run(**{"test.threshold": 0.9})
    assert stricter.key != first.key and stricter.computed == SUBJECTS and TRAININGS == []  # checkpoints reused
    assert (stricter.predictions["prediction"] != first.predictions["prediction"]).any()
    longer = run(**{"train.epochs": 3})
    assert longer.key not in (first.key, stricter.key) and sorted(TRAININGS) == SUBJECTS  # retrained
    assert run(**{"run.repeats": 5}).key == first.key  # how many runs is no part of a run


def test_editing_a_models_source_changes_its_keys(tmp_path):
    source = tmp_path / "edited_model.py"
    text = "def run_fold(fold):\n    return fold.config.train.lr\n"
    keys = []
    for version in (text, text.replace("return", "return 2 *")):
        source.write_text(version)
        spec_ = importlib.util.spec_from_file_location("edited_model", source)
        module = importlib.util.module_from_spec(spec_)
        spec_.loader.exec_module(module)
        spec = ModelSpec(name="edited", task="recognition", paper="test", run_fold=module.run_fold,
                         configs=LINEAR.configs)
        keys.append((spec.code_version, run_key(spec, DATA, "smoke", spec.config("smoke"), 0)[0]))
    assert keys[0][0] != keys[1][0] and keys[0][1] != keys[1][1]
    sys.modules.pop("edited_model", None)


# ----------------------------------------------------------------------------------------------- command line
@pytest.fixture
def only_linear(monkeypatch):
    monkeypatch.setattr(models, "_REGISTRY", {})
    monkeypatch.setattr(models, "MODEL_MODULES", ())
    register(LINEAR)
    monkeypatch.setattr("mecore.data.load_dataset", lambda name, root, profile: DATA, raising=False)


@pytest.mark.parametrize("setting, message", [
    ("train.lrr=0.1", "unknown configuration key 'train.lrr': train has no 'lrr'; valid keys: train.lr, "
                      "train.epochs"),
    ("train.epochs=many", "'train.epochs' takes an integer, got 'many'"),
    ("train.lr", "--set 'train.lr': write group.key=value"),
])
def test_set_with_an_unknown_key_or_a_wrong_type_is_one_line(only_linear, capsys, tmp_path, setting, message):
    code = main(["loso", "--model", "test-linear", "--dataset", "fake", "--profile", "smoke", "--scheduler", "sync",
                 "--results", str(tmp_path), "--set", setting])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not any(tmp_path.iterdir())  # refused before any fold


def test_set_changes_the_run(only_linear, capsys, tmp_path):
    assert main(["loso", "--model", "test-linear", "--dataset", "fake", "--profile", "smoke", "--scheduler", "sync",
                 "--results", str(tmp_path), "--set", "train.epochs=1", "--set", "train.lr=0.2"]) == 0
    description, = (tmp_path / "test-linear" / "fake_casme2").glob("*/config.json")
    assert json.loads(description.read_text())["config"]["train"] == {"lr": 0.2, "epochs": 1}


def test_loso_help_lists_the_models(capsys):
    with pytest.raises(SystemExit):
        main(["loso", "--help"])
    out = capsys.readouterr().out
    assert "mesnet_crn" in out and "fr_basic_inception" in out and "--set GROUP.KEY=VALUE" in out
