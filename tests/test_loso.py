"""The LOSO runner: pooling and scoring, resumable folds, stale results, Dask paths, clear failures, CLI."""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from mecore import metrics, models
from mecore.config import Config
from mecore.data import load_dataset
from mecore.data.dataset import Dataset, Video, annotation_frame
import mecore.loso as loso_module
from mecore.loso import (FoldError, add_cli, close_local_clusters, fold_file, run_loso, run_together, safe_name,
                         score)
from mecore.models import LosoFold, ModelSpec, UnknownModelError, get_model, register
from mecore.train import OptimizerSpec, TrainConfig, fit, predict

CLASSES = ["happiness", "surprise", "disgust"]
FEATURES = ["f0", "f1", "f2", "f3"]


def recognition_dataset(n_subjects: int = 4, clips: int = 12) -> Dataset:
    """Clips with four features per clip: class centre plus noise, so a linear model gets most right."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(len(CLASSES), len(FEATURES)))
    rows = []
    for s in range(n_subjects):
        for c in range(clips):
            label = c % len(CLASSES)
            features = centres[label] + rng.normal(scale=0.8, size=len(FEATURES))
            rows.append({"dataset": "fake_casme2", "subject": f"s{s}", "video": f"s{s}_clip{c:02d}", "onset": 1,
                         "apex": 5, "offset": 10, "type": "micro", "emotion": CLASSES[label], "fps": 200.0,
                         **dict(zip(FEATURES, features))})
    return Dataset("fake_casme2", Path("/nonexistent"), annotation_frame(rows), videos={}, kind="recognition")


def tensors(rows: pd.DataFrame) -> TensorDataset:
    inputs = torch.tensor(rows[FEATURES].to_numpy(dtype=np.float32))
    labels = torch.tensor([CLASSES.index(e) for e in rows["emotion"]])
    return TensorDataset(inputs, labels)


def classifier(fold: LosoFold, make_tensors, network: nn.Module, classes: list[str], optimizer: OptimizerSpec,
               batch_size: int) -> pd.DataFrame:
    """Train ``network`` with cross-entropy on the fold's training rows with mecore.train; predict its test rows
    (with the winning class's probability, so that a change in the last bits of the weights shows)."""
    config = TrainConfig(optimizer=optimizer, epochs=fold.config.train.epochs, batch_size=batch_size,
                         monitor="train_loss", seed=fold.seed, max_steps=fold.config.trial.max_steps)
    result = fit(network, nn.CrossEntropyLoss(), make_tensors(fold.train_rows), None,
                 config, checkpoint_dir=fold.workdir, resume=fold.resume, progress=fold.progress)
    test = fold.test_rows
    probabilities = predict(result.model, make_tensors(test), batch_size=64).softmax(dim=1)
    return pd.DataFrame({"video": test["video"].to_numpy(), "label": test["emotion"].to_numpy(),
                         "prediction": [classes[i] for i in probabilities.argmax(dim=1).tolist()],
                         "confidence": probabilities.max(dim=1).values.numpy()})


def linear_fold(fold: LosoFold) -> pd.DataFrame:
    """A genuine tiny model: softmax regression on the clip features."""
    return classifier(fold, tensors, nn.Linear(len(FEATURES), len(CLASSES)), CLASSES,
                      OptimizerSpec("sgd", fold.config.train.lr, momentum=0.9), batch_size=8)


def small_config(**train) -> Config:
    """A test model's configuration: ``train`` entries and the groups every model has."""
    return Config({"input": {"max_fps": None}, "train": train, "test": {}, "trial": {"max_steps": None},
                   "run": {"repeats": 1}})


LINEAR = ModelSpec(name="test-linear", task="recognition", paper="test model (softmax regression)",
                   run_fold=linear_fold, configs={"smoke": small_config(lr=0.1, epochs=4)})
PROJECTION = torch.randn(len(FEATURES), 16 * 16, generator=torch.Generator().manual_seed(0))


def image_tensors(rows: pd.DataFrame) -> TensorDataset:
    """The clip features projected to 16x16 images."""
    inputs, labels = tensors(rows).tensors
    return TensorDataset((inputs @ PROJECTION).reshape(-1, 1, 16, 16), labels)


def convolutional_fold(fold: LosoFold) -> pd.DataFrame:
    """A small CNN: on CPU its gradients are summed in an order that depends on PyTorch's thread count."""
    network = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Linear(8, len(CLASSES)))
    return classifier(fold, image_tensors, network, CLASSES, OptimizerSpec("sgd", fold.config.train.lr, momentum=0.9),
                      batch_size=8)


CONVOLUTIONAL = ModelSpec(name="test-cnn", task="recognition", paper="test model (small CNN)",
                          run_fold=convolutional_fold, configs={"smoke": small_config(lr=0.05, epochs=4)})
DATA = recognition_dataset()
SUBJECTS = ["s0", "s1", "s2", "s3"]


def loso(tmp_path, **kwargs):
    options = dict(scheduler="sync", results_dir=tmp_path, progress=False)
    return run_loso(LINEAR, DATA, "smoke", **{**options, **kwargs})


def without_timing(predictions: pd.DataFrame) -> pd.DataFrame:
    return predictions.reset_index(drop=True)


def test_folds_are_pooled_and_scored_by_the_metrics_module(tmp_path):
    result = loso(tmp_path)
    assert result.computed == SUBJECTS
    assert len(result.predictions) == 48 and result.predictions["subject"].tolist() == sorted(
        result.predictions["subject"].tolist())
    expected = metrics.recognition_metrics(result.predictions["label"], result.predictions["prediction"])
    assert result.metrics.loc["pooled", ["accuracy", "uf1", "uar"]].tolist() == [expected.accuracy, expected.uf1,
                                                                              expected.uar]
    assert 0.6 < expected.accuracy < 1.0  # learnt, but not trivially perfect
    assert result.folds["subject"].tolist() == SUBJECTS
    assert {"accuracy", "uf1", "uar", "seconds", "worker"} <= set(result.folds.columns)
    for subject in SUBJECTS:
        rows = result.predictions[result.predictions["subject"] == subject]
        fold_accuracy = result.folds.set_index("subject").loc[subject, "accuracy"]
        assert fold_accuracy == pytest.approx((rows["label"] == rows["prediction"]).mean())
    for name in ("config.json", "predictions.csv", "folds.csv", "metrics.csv"):
        assert (result.folder / name).is_file()
    assert sorted((result.folder / "folds").iterdir()) == [fold_file(result.folder, s) for s in SUBJECTS]
    assert "pooled over 4 folds" in result.report()


def test_rerun_skips_finished_folds_and_recomputes_only_a_deleted_one(tmp_path):
    first = loso(tmp_path)
    folds = first.folder / "folds"
    assert loso(tmp_path).computed == []
    s2 = fold_file(first.folder, "s2")
    untouched = {p.name: p.stat().st_mtime_ns for p in folds.iterdir() if p != s2}
    s2.unlink()
    (first.checkpoints / safe_name("s2") / "checkpoint.pt").unlink()  # retrain, not just reload
    again = loso(tmp_path)
    assert again.computed == ["s2"]
    assert {p.name: p.stat().st_mtime_ns for p in folds.iterdir() if p != s2} == untouched
    pd.testing.assert_frame_equal(again.predictions, first.predictions)
    pd.testing.assert_frame_equal(again.metrics, first.metrics)


def test_changed_configuration_never_reuses_stale_folds(tmp_path):
    first = loso(tmp_path)
    changed = loso(tmp_path, config={"train.epochs": 5})
    assert changed.folder != first.folder and changed.key != first.key
    assert changed.computed == SUBJECTS
    reseeded = loso(tmp_path, seed=1)
    assert reseeded.key not in (first.key, changed.key)
    other_data = recognition_dataset(clips=9)
    assert run_loso(LINEAR, other_data, "smoke", scheduler="sync", results_dir=tmp_path,
                    progress=False).key != first.key


def test_local_cluster_gives_the_same_results_as_in_process(tmp_path):
    """Bit for bit, for a CNN whose gradients depend on the thread count: every fold computes with one
    thread, whatever this process is set to (here 2), and the process's setting is restored."""
    options = dict(results_dir=tmp_path / "sync", scheduler="sync", progress=False)
    environment = dict(os.environ)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        in_process = run_loso(CONVOLUTIONAL, DATA, "smoke", **options)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    options.update(results_dir=tmp_path / "cluster", scheduler="local", n_workers=2)
    on_cluster = run_loso(CONVOLUTIONAL, DATA, "smoke", **options)
    assert on_cluster.key == in_process.key
    assert on_cluster.computed == SUBJECTS
    assert in_process.folds["threads"].eq(1).all() and on_cluster.folds["threads"].eq(1).all()
    pd.testing.assert_frame_equal(on_cluster.predictions, in_process.predictions, check_exact=True)
    pd.testing.assert_frame_equal(on_cluster.metrics, in_process.metrics)
    workers = set(on_cluster.folds["worker"])
    assert all(not w.endswith(f":{os.getpid()}") for w in workers) and len(workers) <= 2
    # the next local run of this process reuses the cluster's two worker processes (no new ones started)
    pids = set(loso_module.local_client(2).run(os.getpid).values())
    # the workers start without Dask's MALLOC_TRIM_THRESHOLD_ (a fold trains ~1.5x slower with it), and Dask's
    # worker variables do not stay in this process's environment
    def malloc_trim() -> str | None:
        return os.environ.get("MALLOC_TRIM_THRESHOLD_")

    assert set(loso_module.local_client(2).run(malloc_trim).values()) == {None}
    assert os.environ.get("OMP_NUM_THREADS") == environment.get("OMP_NUM_THREADS")
    assert os.environ.get("MALLOC_TRIM_THRESHOLD_") == environment.get("MALLOC_TRIM_THRESHOLD_")
    assert {int(w.rsplit(":", 1)[1]) for w in workers} <= pids
    again = run_loso(LINEAR, DATA, "smoke", results_dir=tmp_path / "again", scheduler="local", n_workers=2,
                     progress=False)
    assert {int(w.rsplit(":", 1)[1]) for w in again.folds["worker"]} <= pids and again.computed == SUBJECTS
    pd.testing.assert_frame_equal(again.predictions, loso(tmp_path / "linear").predictions)
    # runs started together share the cluster and give each its own results
    both = run_together([dict(model=LINEAR, dataset=DATA, profile="smoke", results_dir=tmp_path / "together",
                              scheduler="local", n_workers=2, progress=False, config={"train.lr": lr})
                         for lr in (0.1, 0.05)])
    assert [r.computed for r in both] == [SUBJECTS, SUBJECTS] and both[0].folder != both[1].folder
    pd.testing.assert_frame_equal(both[0].predictions, again.predictions)
    pd.testing.assert_frame_equal(both[1].predictions, loso(tmp_path / "slower", config={"train.lr": 0.05}).predictions)
    close_local_clusters()
    assert not loso_module._LOCAL_CLUSTERS


def prepare_once(dataset: Dataset, config: Config, name: str) -> None:
    """A ``prepare`` that leaves a marker per call (and fails for one video, as a bad frame file would)."""
    folder = Path(config.train.markers)
    (folder / f"{name}.{os.getpid()}.{len(list(folder.glob(name + '.*')))}").touch()
    if name == "s1_clip00":
        raise OSError("frame file unreadable")


def test_each_video_is_prepared_once_before_parallel_folds(tmp_path):
    """``ModelSpec.prepare`` runs once per video, spread over the workers, before the folds; a video it cannot
    prepare leaves the folds to meet (and report) the error, and the results equal the in-process run's."""
    markers = tmp_path / "markers"
    markers.mkdir()
    spec = ModelSpec(name="test-linear-prepared", task="recognition", paper="test model", run_fold=linear_fold,
                     configs={"smoke": small_config(lr=0.1, epochs=4, markers=str(markers))}, prepare=prepare_once)
    rows = DATA.annotations.drop_duplicates("video")
    for name in rows["video"]:
        (tmp_path / "frames" / name).mkdir(parents=True)
    data = replace(DATA, videos={name: Video("fake_casme2", subject, name, tmp_path / "frames" / name, 200.0)
                                 for name, subject in zip(rows["video"], rows["subject"])})
    on_cluster = run_loso(spec, data, "smoke", results_dir=tmp_path / "cluster", scheduler="local", n_workers=2,
                          progress=False)
    prepared = sorted(path.name.split(".")[0] for path in markers.iterdir())
    assert prepared == sorted(data.videos)  # every video once
    in_process = run_loso(spec, data, "smoke", results_dir=tmp_path / "sync", scheduler="sync", progress=False)
    assert len(list(markers.iterdir())) == len(data.videos)  # in one process nothing is prepared ahead of the folds
    pd.testing.assert_frame_equal(on_cluster.predictions, in_process.predictions, check_exact=True)


def test_scheduler_address_reaches_a_running_cluster(tmp_path):
    """Any running Dask cluster by address (here an in-process one; an HPC SLURMCluster works the same)."""
    from distributed import LocalCluster

    threads = torch.get_num_threads(), cv2.getNumThreads()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        remote = loso(tmp_path / "remote", scheduler=cluster.scheduler_address)
    assert (torch.get_num_threads(), cv2.getNumThreads()) == threads  # in-process workers: each fold restores them
    pd.testing.assert_frame_equal(remote.predictions, loso(tmp_path / "sync").predictions)


FAILING_ONCE: set[str] = set()


def failing_once_fold(fold: LosoFold) -> pd.DataFrame:
    """The linear model, except that subject s1's fold dies the first time (an interrupted LOSO)."""
    if fold.test_subject == "s1" and "s1" not in FAILING_ONCE:
        FAILING_ONCE.add("s1")
        raise MemoryError("worker killed")
    return linear_fold(fold)


def test_interrupted_loso_keeps_finished_folds_and_resumes(tmp_path):
    spec = ModelSpec(name="test-linear-interrupted", task="recognition", paper="test", run_fold=failing_once_fold,
                     configs=LINEAR.configs)
    with pytest.raises(FoldError, match="1 of 4 LOSO folds .* failed[^$]*s1: MemoryError: worker killed"):
        run_loso(spec, DATA, "smoke", scheduler="sync", results_dir=tmp_path, progress=False)
    resumed = run_loso(spec, DATA, "smoke", scheduler="sync", results_dir=tmp_path, progress=False)
    assert resumed.computed == ["s1"]
    pd.testing.assert_frame_equal(resumed.predictions, loso(tmp_path / "plain").predictions)


def test_fold_that_must_resume_without_a_checkpoint_fails_clearly(tmp_path):
    with pytest.raises(FoldError) as failure:
        loso(tmp_path, resume=True)
    message = str(failure.value)
    assert "4 of 4 LOSO folds" in message
    for subject in SUBJECTS:
        assert f"{subject}: CheckpointError: " in message
        assert str(tmp_path / "test-linear" / "fake_casme2") in message
    assert f"-trained-" in message and f"/{safe_name(SUBJECTS[0])}/checkpoint.pt: no checkpoint to resume" in message
    folds, = (tmp_path / "test-linear" / "fake_casme2").glob("*/folds")
    assert not list(folds.iterdir())


def test_fold_on_a_corrupt_checkpoint_fails_instead_of_training_from_scratch(tmp_path):
    first = loso(tmp_path)
    checkpoint = first.checkpoints / safe_name("s1") / "checkpoint.pt"
    fold_file(first.folder, "s1").unlink()
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    with pytest.raises(FoldError, match=f"s1: CheckpointError: {checkpoint}: checkpoint is corrupt"):
        loso(tmp_path)
    assert not fold_file(first.folder, "s1").exists()


def test_corrupt_fold_result_is_named(tmp_path):
    first = loso(tmp_path)
    fold_file(first.folder, "s0").write_bytes(b"garbage")
    with pytest.raises(FoldError, match=f"{fold_file(first.folder, 's0')}: fold result is corrupt"):
        loso(tmp_path)


def test_predictions_without_the_required_columns_are_refused(tmp_path):
    spec = ModelSpec(name="test-bad-columns", task="recognition", paper="test",
                     run_fold=lambda fold: linear_fold(fold).drop(columns="label"), configs=LINEAR.configs)
    with pytest.raises(FoldError, match=r"predictions lack columns \['label'\]"):
        run_loso(spec, DATA, "smoke", scheduler="sync", results_dir=tmp_path, progress=False)


def _not_run(fold: LosoFold) -> pd.DataFrame:
    raise AssertionError("only the scoring of this spec is tested")


def test_postprocess_predictions_are_pooled_and_scored_per_fold():
    annotations = annotation_frame([
        {"dataset": "fake", "subject": "a", "video": "a1", "onset": 10, "offset": 20, "type": "micro", "fps": 30.0},
        {"dataset": "fake", "subject": "a", "video": "a1", "onset": 100, "offset": 160, "type": "macro", "fps": 30.0},
        {"dataset": "fake", "subject": "b", "video": "b1", "onset": 50, "offset": 60, "type": "micro", "fps": 30.0},
    ])
    dataset = Dataset("fake_sq", Path("/nonexistent"), annotations, videos={})
    spotted = pd.DataFrame({"subject": ["a", "a", "b", "b"], "video": ["a1", "a1", "b1", "b1"],
                            "onset": [11, 100, 200, 50], "offset": [20, 150, 210, 59],
                            "type": ["micro", "macro", "micro", "micro"], "score": [0.9, 0.8, 0.7, 0.6]})
    spec = ModelSpec(name="test-spotter", task="spotting", paper="test", run_fold=_not_run,
                     spotting_convention="mesnet")
    pooled, per_fold, recognition = score(spec, spotted, dataset)
    assert recognition is None
    pd.testing.assert_frame_equal(pooled, metrics.spotting_counts(annotations, spotted, "mesnet"))
    assert pooled.loc["overall", ["tp", "fp", "fn"]].tolist() == [3, 1, 0]
    assert per_fold.set_index("subject")[["tp", "fp", "fn"]].to_dict("index") == {
        "a": {"tp": 2, "fp": 0, "fn": 0}, "b": {"tp": 1, "fp": 1, "fn": 0}}
    assert score(spec, spotted, dataset, convention="megc2020")[0]["convention"].eq("megc2020").all()


def test_registry_names_the_models_that_exist(monkeypatch):
    monkeypatch.setattr(models, "_REGISTRY", {})
    monkeypatch.setattr(models, "MODEL_MODULES", ())
    with pytest.raises(UnknownModelError, match="available models: none yet"):
        get_model("mesnet")
    register(LINEAR)
    register(LINEAR)  # the same spec again is harmless
    assert get_model("test-linear") is LINEAR
    assert models.available_models() == ["test-linear"]
    with pytest.raises(UnknownModelError, match="unknown model 'mesnet'; available models: test-linear"):
        get_model("mesnet")
    with pytest.raises(ValueError, match="already registered"):
        register(ModelSpec(name="test-linear", task="recognition", paper="other", run_fold=_not_run))
    with pytest.raises(ValueError, match="has no 'paper' configuration; it has \\['smoke'\\]"):
        LINEAR.config("paper")
    with pytest.raises(ValueError, match="task must be one of"):
        ModelSpec(name="x", task="detection", paper="", run_fold=_not_run)


def cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mecore")
    add_cli(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_says_which_models_exist(monkeypatch, capsys):
    monkeypatch.setattr(models, "_REGISTRY", {})
    monkeypatch.setattr(models, "MODEL_MODULES", ())
    args = cli(["loso", "--model", "mesnet", "--dataset", "synth_casme2", "--profile", "smoke"])
    assert args.handler(args) == 2
    assert "unknown model 'mesnet'; available models: none yet" in capsys.readouterr().err


def test_cli_runs_loso_and_prints_the_tables(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(models, "_REGISTRY", {})
    monkeypatch.setattr(models, "MODEL_MODULES", ())
    register(LINEAR)
    loaded = []

    def load_dataset(name, root, profile):
        loaded.append((name, root, profile))
        return DATA

    monkeypatch.setattr("mecore.data.load_dataset", load_dataset, raising=False)
    args = cli(["loso", "--model", "test-linear", "--dataset", "fake_casme2", "--profile", "smoke",
                "--scheduler", "sync", "--results", str(tmp_path)])
    assert args.handler(args) == 0
    assert loaded == [("fake_casme2", None, "smoke")]
    out = capsys.readouterr().out
    assert "LOSO test-linear on fake_casme2 (profile smoke" in out
    assert "pooled over 4 folds" in out and "uf1" in out and "s3" in out


def frame_difference_fold(fold: LosoFold) -> pd.DataFrame:
    """A genuine tiny model on real clips: softmax regression on a 4x4 grid of |apex - onset| grey levels."""
    classes = sorted(fold.dataset.annotations["emotion"].unique())

    def clip_tensors(rows: pd.DataFrame) -> TensorDataset:
        features = []
        for row in rows.itertuples():
            video = fold.dataset.video(row.video)
            peak = row.apex if not pd.isna(row.apex) else (row.onset + row.offset) // 2
            grey = [cv2.cvtColor(video.frame(n), cv2.COLOR_BGR2GRAY).astype(np.float32) for n in (row.onset, peak)]
            features.append(cv2.resize(np.abs(grey[1] - grey[0]), (4, 4), interpolation=cv2.INTER_AREA).ravel())
        labels = [classes.index(e) for e in rows["emotion"]]
        return TensorDataset(torch.tensor(np.stack(features)), torch.tensor(labels))

    return classifier(fold, clip_tensors, nn.Linear(16, len(classes)), classes, OptimizerSpec("adam", fold.config.train.lr),
                      batch_size=4)


FRAME_DIFFERENCE = ModelSpec(name="test-frame-difference", task="recognition", paper="test model",
                             run_fold=frame_difference_fold, configs={"smoke": small_config(lr=0.01, epochs=3)})


def test_cli_on_the_synthetic_smoke_set(monkeypatch, capsys, tmp_path):
    """``loso`` from the command line on a generated dataset, through the real loader, in this process."""
    monkeypatch.setenv("MECORE_HOME", str(tmp_path))
    monkeypatch.setattr(models, "_REGISTRY", {})
    monkeypatch.setattr(models, "MODEL_MODULES", ())
    register(FRAME_DIFFERENCE)
    args = cli(["loso", "--model", "test-frame-difference", "--dataset", "synth_casme2", "--profile", "smoke",
                "--scheduler", "sync"])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "LOSO test-frame-difference on synth_casme2 (profile smoke" in out
    folder = next((tmp_path / "runs" / "loso" / "test-frame-difference" / "synth_casme2").glob("*/folds")).parent
    predictions = pd.read_csv(folder / "predictions.csv", dtype=str)
    dataset = load_dataset("synth_casme2", profile="smoke")
    assert sorted(predictions["video"]) == sorted(dataset.annotations["video"])
    assert set(predictions["subject"]) == set(dataset.subjects)


def test_classical_baselines_are_registered_and_fit_p_on_training_subjects(smoke_root, tmp_path):
    from mecore.data import load_dataset

    assert {"lbp_chi2", "mdmd"} <= set(models.available_models())
    spec = get_model("mdmd")
    assert spec.task == "spotting" and spec.config("smoke").train.p_grid
    result = run_loso(spec, load_dataset("synth_casme_sq", profile="smoke"), "smoke", scheduler="sync",
                      results_dir=tmp_path, progress=False)
    assert set(result.folds["subject"]) == {"s15", "s16", "s17"}
    assert result.predictions["p"].isin(spec.config("smoke").train.p_grid).all()
    assert result.predictions.groupby("subject")["p"].nunique().eq(1).all()  # one p per fold
    assert "overall" in result.metrics.index


def test_dataset_overrides_apply_to_their_family_and_read_fast_videos_at_most_max_fps(smoke_root):
    from mecore.data import load_dataset
    spec = get_model("mesnet_crn")
    casme, samm = spec.config("default", "synth_casme_sq"), spec.config("default", "synth_samm_lv")
    assert casme == spec.config("default") and casme.input.max_fps is None  # CAS(ME)^2 keys stay as they were
    assert samm == casme.set({"input.max_fps": 30})
    assert spec.config("paper", "samm_lv").input.clip_length == 670  # Wang et al. Sec. IV-A-3
    data = load_dataset("synth_samm_lv", profile="smoke")
    view = data.at_most_fps(30)
    name = next(iter(data.videos))
    assert data.video(name).fps == 200 and view.video(name).fps == pytest.approx(200 / 7)
    assert list(view.video(name).frame_numbers) == list(data.video(name).frame_numbers[::7])
    assert data.at_most_fps(None) is data and view.at_most_fps(30) is view
    assert load_dataset("synth_casme_sq", profile="smoke").at_most_fps(30).videos  # 30 fps: unchanged


def test_a_trial_runs_the_first_folds_with_capped_steps_apart_from_full_runs(tmp_path):
    full = loso(tmp_path)
    trial = loso(tmp_path, folds=2, max_steps=1)
    assert trial.folder != full.folder and trial.computed == SUBJECTS[:2]
    assert sorted(trial.predictions["subject"].unique()) == SUBJECTS[:2]
    assert json.loads((trial.folder / "config.json").read_text())["config"]["trial"]["max_steps"] == 1
    assert "pooled over 2 folds" in trial.report()
    for subject in SUBJECTS[:2]:
        checkpoint = torch.load(trial.checkpoints / safe_name(subject) / "checkpoint.pt",
                                weights_only=True)
        assert checkpoint["steps"] == 1 and checkpoint["finished"]
    with pytest.raises(ValueError, match="max_steps"):
        loso(tmp_path, max_steps=0)


def test_a_call_of_fewer_folds_scores_them_and_leaves_the_whole_runs_tables(tmp_path):
    """``folds=`` on a finished run (an ablation's reference on some subjects) reads those folds and scores them
    alone; the folder's tables still hold the whole run, which a trial's smaller tables never replace."""
    full = loso(tmp_path)
    tables = {name: (full.folder / name).read_bytes() for name in ("predictions.csv", "folds.csv", "metrics.csv")}
    some = loso(tmp_path, folds=2)
    assert some.folder == full.folder and some.computed == [] and list(some.folds["subject"]) == SUBJECTS[:2]
    assert some.predictions.equals(full.predictions[full.predictions["subject"].isin(SUBJECTS[:2])])
    assert some.metrics.loc["pooled", "accuracy"] == (some.predictions["label"] == some.predictions["prediction"]).mean()
    assert {name: (full.folder / name).read_bytes() for name in tables} == tables


def test_summarise_repeats_mean_and_median():
    from mecore.loso import summarise_repeats

    mean = summarise_repeats([0.2, 0.4, 0.6], "mean")
    assert mean["value"] == pytest.approx(0.4) and mean["spread"] == pytest.approx(0.2) and mean["runs"] == 3
    median = summarise_repeats([0.1, 0.5, 0.3, 0.9], "median")
    assert median["value"] == pytest.approx(0.4)
    assert median["spread"] == pytest.approx((0.6 - 0.25) / 2)  # half the IQR (np.percentile, linear)
    assert (median["low"], median["high"]) == (0.1, 0.9)
    with pytest.raises(ValueError, match="median"):
        summarise_repeats([1.0], "mode")


def test_run_repeats_uses_seeds_and_the_profile_count(tmp_path):
    """Repeats are ordinary runs with consecutive seeds; ``repeats`` never enters a run's key."""
    from dataclasses import replace

    from mecore import loso as loso_module

    spec = replace(LINEAR, configs={"smoke": LINEAR.configs["smoke"].set({"run.repeats": 2})})
    assert loso_module.repeat_count(spec, DATA, "smoke") == 2
    results = loso_module.run_repeats(spec, DATA, "smoke", seed=5, scheduler="sync", results_dir=tmp_path,
                                      progress=False)
    assert [r.key for r in results] == [loso(tmp_path, seed=s).key for s in (5, 6)]
    assert results[0].predictions["confidence"].tolist() != results[1].predictions["confidence"].tolist()
    assert all("run" not in json.loads((r.folder / "config.json").read_text())["config"] for r in results)
    table = loso_module.repeats_table(results)
    assert table.loc["uf1", "runs"] == 2 and table.loc["uf1", "how"] == "mean"
    assert table.loc["uf1", "value"] == pytest.approx(np.mean([r.metrics.loc["pooled", "uf1"] for r in results]))
    with pytest.raises(ValueError, match="repeats"):
        loso_module.repeat_count(spec, DATA, "smoke", config={"run.repeats": 0})


def test_every_neural_profile_states_mixed_precision():
    """Each trained network's profiles say whether it trains under autocast on CUDA (issue: no implicit AMP)."""
    neural = ("mecore.models.mesnet", "mecore.models.bifpn_i3d", "mecore.models.stsnet", "mecore.models.yap3dcnn",
              "mecore.models.fr")
    for name in models.available_models():
        spec = get_model(name)
        if spec.run_fold.__module__ in neural:
            for profile in spec.configs:
                flat = spec.config(profile).flat()
                precision = [v for k, v in flat.items() if k.endswith(".mixed_precision")]
                assert len(precision) == 1 and isinstance(precision[0], bool), (name, profile)


# ------------------------------------------------------------------ what a run key sees, where a fold lives
def framed_dataset(folder: Path, shade: int, annotations: pd.DataFrame = DATA.annotations) -> Dataset:
    """DATA with a frame folder per clip under ``folder`` (two tiny frames of grey ``shade``)."""
    from mecore.data.dataset import Video

    videos = {}
    for row in annotations.drop_duplicates("video").itertuples():
        clip = folder / row.video
        clip.mkdir(parents=True, exist_ok=True)
        for number in (1, 2):
            cv2.imwrite(str(clip / f"img{number:03d}.png"), np.full((8, 8), shade, np.uint8))
        videos[row.video] = Video("fake_casme2", row.subject, row.video, clip, 200.0)
    return Dataset("fake_casme2", folder, annotations, videos, kind="recognition")


def test_another_copy_with_the_same_workbook_but_other_frames_never_reuses_folds(tmp_path):
    """The key sees the frames the folds read (the preprocessing cache's fingerprint: file names, sizes and
    modification times), not only the annotations and video names."""
    options = dict(scheduler="sync", results_dir=tmp_path / "runs", progress=False)
    first = run_loso(LINEAR, framed_dataset(tmp_path / "copy_a", 100), "smoke", **options)
    other = run_loso(LINEAR, framed_dataset(tmp_path / "copy_b", 200), "smoke", **options)
    assert other.key != first.key and other.computed == SUBJECTS
    again = run_loso(LINEAR, _reloaded(tmp_path / "copy_a"), "smoke", **options)
    assert again.key == first.key and again.computed == []  # the same frames: its folds are reused
    cv2.imwrite(str(tmp_path / "copy_a" / "s0_clip00" / "img002.png"), np.eye(8, dtype=np.uint8) * 255)
    assert run_loso(LINEAR, _reloaded(tmp_path / "copy_a"), "smoke", **options).key != first.key
    assert len(json.loads((first.folder / "config.json").read_text())["frames"]) == 64


def _reloaded(folder: Path) -> Dataset:
    """The dataset of ``folder`` read again (frame files as they are now, not rewritten)."""
    from mecore.data.dataset import Video

    videos = {row.video: Video("fake_casme2", row.subject, row.video, folder / row.video, 200.0)
              for row in DATA.annotations.drop_duplicates("video").itertuples()}
    return Dataset("fake_casme2", folder, DATA.annotations, videos, kind="recognition")


def test_subjects_whose_names_map_to_one_file_name_get_their_own_folds(tmp_path, monkeypatch):
    """``李`` and ``王`` both became ``_``: one fold file and one checkpoint folder for two subjects."""
    from mecore import loso as loso_module
    from mecore.loso import LosoError

    names = {"s0": "李", "s1": "王", "s2": "S2", "s3": "s2"}  # and two names equal but for case
    annotations = DATA.annotations.assign(subject=DATA.annotations["subject"].map(names).astype("string"))
    dataset = Dataset("fake_casme2", Path("/nonexistent"), annotations, videos={}, kind="recognition")
    result = run_loso(LINEAR, dataset, "smoke", scheduler="sync", results_dir=tmp_path, progress=False)
    files = sorted(p.name.lower() for p in (result.folder / "folds").iterdir())
    assert len(set(files)) == 4 and len(list(result.checkpoints.iterdir())) == 4
    assert safe_name("李") != safe_name("王") and safe_name("李").startswith("_-")
    again = run_loso(LINEAR, dataset, "smoke", scheduler="sync", results_dir=tmp_path, progress=False)
    assert again.computed == []
    pd.testing.assert_frame_equal(again.predictions, result.predictions)
    monkeypatch.setattr(loso_module, "safe_name", lambda subject: "same")
    with pytest.raises(LosoError, match="subjects 'S2' and 's2' map to one file name 'same'; rename one"):
        run_loso(LINEAR, dataset, "smoke", scheduler="sync", results_dir=tmp_path / "clash", progress=False)


def test_a_synthetic_sets_seed_is_in_the_key_and_the_report(tmp_path):
    keys = {}
    for seed in (0, 7):
        root = tmp_path / f"seed{seed}"
        root.mkdir()
        (root / "mecore_synthetic.json").write_text(json.dumps({"profile": "smoke", "seed": seed, "version": 3,
                                                                "dataset": "casme2", "spec": {}}))
        dataset = Dataset("fake_casme2", root, DATA.annotations, videos={}, kind="recognition")
        result = run_loso(LINEAR, dataset, "smoke", scheduler="sync", results_dir=tmp_path / "runs", progress=False,
                          folds=1)
        keys[seed] = result.key
        assert json.loads((result.folder / "config.json").read_text())["synthetic"]["seed"] == seed
        assert f"synthetic seed {seed}" in result.report()
    assert keys[0] != keys[7]


def test_checkpoint_folders_name_their_subjects_back(tmp_path):
    from mecore.loso import subjects_by_file_name

    result = loso(tmp_path)
    names = subjects_by_file_name(result.folder)
    assert sorted(names[p.name] for p in result.checkpoints.iterdir()) == SUBJECTS
