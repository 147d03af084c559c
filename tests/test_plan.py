"""``mecore plan``: a trial fold measures memory, steps and cache before a LOSO run."""
from __future__ import annotations

import json

import pytest

from mecore.__main__ import main
from mecore.data import load_dataset
from mecore.plan import trial_dataset


@pytest.fixture(scope="module")
def casme(smoke_root):
    return load_dataset("casme_sq", root=smoke_root / "casme_sq")


def test_trial_keeps_every_subject_with_its_first_video_cut_short(casme):
    trial = trial_dataset(casme, 90)
    assert trial.subjects == casme.subjects
    assert len(trial.videos) == len(casme.subjects) and all(v.n_frames >= 90 for v in trial.videos.values())
    for name, video in trial.videos.items():  # at least one expression of each type the video has
        assert set(trial.intervals(name)["type"]) == set(casme.intervals(name)["type"])
    assert set(trial.annotations["video"]) <= set(trial.videos)
    for row in trial.annotations.itertuples():
        assert row.offset <= trial.videos[row.video].last_frame


def test_plan_measures_a_trial_and_sizes_the_whole_dataset(smoke_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MECORE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "plan.json"
    assert main(["plan", "--model", "yap3dcnn", "--dataset", "casme_sq", "--root", str(smoke_root / "casme_sq"),
                 "--profile", "smoke", "--trial-frames", "240", "--steps", "2", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "plan: yap3dcnn on casme_sq" in text and "LOSO run" in text
    plan = json.loads(out.read_text())
    assert plan["videos"] == 3 and plan["subjects (folds)"] == 3 and plan["frames"] > 3 * 240
    assert 0.1 < plan["peak host RAM GiB"] < 4
    [training] = plan["trainings per fold"]
    assert training["trial samples"] > 0 and training["seconds per step"] > 0
    assert training["samples per epoch"] > training["trial samples"]  # the whole videos hold more windows
    [crops] = plan["cache"]
    assert crops["entry"] == "crops" and crops["bytes per frame"] == 32 * 32  # uint8, 32 px grey
    # the trial of twice as many frames took the whole smoke videos, whose entries then exist
    total = (plan["cache exists GB"] + plan["cache to write GB"]) * 1e9
    assert plan["cache exists GB"] > 0 and total >= plan["frames"] * 32 * 32


def test_plan_of_an_unknown_model_is_one_line(capsys):
    assert main(["plan", "--model", "nope", "--dataset", "synth_casme_sq", "--profile", "smoke"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--steps", "0"], "--steps must be at least 1, got 0"),
    (["--trial-frames", "0"], "--trial-frames must be at least 2"),
    (["--json", "/nonexistent_folder/plan.json"], "--json /nonexistent_folder/plan.json: the folder"),
    (["--set", "train.nosuch=1"], "unknown configuration key 'train.nosuch'"),
])
def test_plan_refuses_what_the_trial_cannot_run_before_it_starts(smoke_root, capsys, extra, message):
    """One line, exit 2, before the trial (which takes minutes on real data)."""
    assert main(["plan", "--model", "mdmd", "--dataset", "casme_sq", "--root", str(smoke_root / "casme_sq"),
                 "--profile", "smoke", *extra]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("mecore plan: error: ") and message in err[0], err


def test_plan_of_a_model_on_a_dataset_of_the_other_task_is_one_line_without_a_trial(capsys):
    assert main(["plan", "--model", "mdmd", "--dataset", "synth_casme2", "--profile", "smoke"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a spotting model but dataset 'synth_casme2' is a recognition dataset" in err[0]
    assert "--trial-frames" not in err[0]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_plan_on_cuda_without_cuda_is_one_line(capsys):
    assert main(["plan", "--model", "mdmd", "--dataset", "synth_casme_sq", "--profile", "smoke", "--device",
                 "cuda"]) == 2
    assert "--device cuda: this machine has no CUDA device" in capsys.readouterr().err
