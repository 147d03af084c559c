"""Bad runs stop with one clear line and exit code 2, lose nothing already written, and clean up after runs
that were killed: unknown datasets, unreachable schedulers, a model of the other task, one subject, corrupt fold
files and checkpoints, read-only or full results disks, two runs on one folder, stale temporary files."""
from __future__ import annotations

import builtins
import errno
import functools
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mecore import loso as loso_module
from mecore import models
from mecore.__main__ import main
from mecore.data.dataset import Dataset, annotation_frame
from mecore.loso import (FoldError, LosoError, ResultsWriteError, RunLockedError, fold_file, run_loso, safe_name)
from mecore.models import LosoFold, ModelSpec, register
from test_loso import DATA, LINEAR, SUBJECTS, linear_fold

OLD = time.time() - 3600  # a modification time long past: the file is not being written any more


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def make_old(*paths: Path) -> None:
    for path in paths:
        os.utime(path, (OLD, OLD))


@pytest.fixture
def cli(monkeypatch, capsys):
    """``python -m mecore loso ...`` with LINEAR (and what a test registers) as the only models and
    ``load_dataset`` answering ``datasets[name]``; returns (exit code, stderr lines, stdout)."""
    monkeypatch.setattr(models, "_REGISTRY", {})
    monkeypatch.setattr(models, "MODEL_MODULES", ())
    register(LINEAR)
    datasets = {"fake_casme2": DATA}

    def load_dataset(name, root, profile):
        if name not in datasets:
            raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(datasets)}")
        return datasets[name]

    monkeypatch.setattr("mecore.data.load_dataset", load_dataset, raising=False)

    def call(*argv: str, model: str = "test-linear", dataset: str = "fake_casme2"):
        code = main(["loso", "--model", model, "--dataset", dataset, "--profile", "smoke", "--scheduler", "sync",
                     *argv])
        captured = capsys.readouterr()
        return code, captured.err.splitlines(), captured.out

    call.datasets = datasets
    return call


def counting(spec: ModelSpec, calls: list) -> ModelSpec:
    """``spec`` whose folds append their subject to ``calls`` when they start (same code version: same keys)."""
    @functools.wraps(spec.run_fold)
    def run_fold(fold: LosoFold) -> pd.DataFrame:
        calls.append(fold.test_subject)
        return spec.run_fold(fold)

    return ModelSpec(name=spec.name, task=spec.task, paper=spec.paper, run_fold=run_fold, configs=spec.configs)


def one_line(err: list[str], *parts: str) -> str:
    err = [re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", line).split("\r")[-1] for line in err]
    err = [line for line in err if line.strip() and "it/s]" not in line]  # the progress bar, if one was drawn
    assert len(err) == 1, err
    assert err[0].startswith("mecore loso: error: "), err
    for part in parts:
        assert part in err[0], (part, err[0])
    return err[0]


# ----------------------------------------------------------------------------------------- bad input
def test_an_unknown_dataset_is_one_line(cli):
    code, err, _ = cli(dataset="nosuch")
    assert code == 2
    one_line(err, "unknown dataset 'nosuch'")


def test_the_real_loader_names_an_unknown_dataset_too(capsys):
    assert main(["loso", "--model", "mdmd", "--dataset", "nosuch", "--profile", "smoke"]) == 2
    one_line(capsys.readouterr().err.splitlines(), "unknown dataset 'nosuch'; choose one of")


def test_an_unreachable_scheduler_is_one_line(cli, tmp_path):
    import dask
    import distributed  # noqa: F401  (its defaults must be in dask's config before one of its keys is set)

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        code, err, _ = cli("--results", str(tmp_path), "--scheduler", "tcp://127.0.0.1:9")
        assert code == 2
        one_line(err, "cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'", "--scheduler local")
        code, err, _ = cli("--results", str(tmp_path), "--scheduler", "bogus")
        assert code == 2
        one_line(err, "cannot reach the Dask scheduler at 'bogus'")


def test_an_address_that_is_no_dask_scheduler_is_one_line_not_a_hang(cli, tmp_path):
    """An HTTP server accepts the connection and never completes Dask's handshake: one line, within the connect
    timeout and its grace, not a hang."""
    import http.server

    import dask
    import distributed  # noqa: F401

    class Quiet(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # the Dask handshake is a bad HTTP request: not worth a line
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
            started = time.monotonic()
            code, err, _ = cli("--results", str(tmp_path), "--scheduler", f"tcp://127.0.0.1:{server.server_port}")
        assert code == 2 and time.monotonic() - started < 60
        line = one_line(err, f"'tcp://127.0.0.1:{server.server_port}'", "--scheduler local")
        assert "cannot reach the Dask scheduler" in line or "gave no Dask scheduler's answer" in line
    finally:
        server.shutdown()


def _not_run(fold: LosoFold) -> pd.DataFrame:
    raise AssertionError("a model of the other task must be refused before any fold")


def test_a_model_of_the_other_task_is_one_line(cli, tmp_path):
    register(ModelSpec(name="test-spotter", task="spotting", paper="test", run_fold=_not_run,
                       configs=LINEAR.configs))
    code, err, _ = cli("--results", str(tmp_path), model="test-spotter")
    assert code == 2
    one_line(err, "model 'test-spotter' is a spotting model but dataset 'fake_casme2' is a recognition dataset",
             "choose a recognition model (test-linear)")
    annotations = annotation_frame([
        {"dataset": "fake", "subject": s, "video": f"{s}_1", "onset": 10, "offset": 20, "type": "micro", "fps": 30.0}
        for s in ("a", "b")])
    cli.datasets["fake_sq"] = Dataset("fake_sq", Path("/nonexistent"), annotations, videos={})
    code, err, _ = cli("--results", str(tmp_path), dataset="fake_sq")
    assert code == 2
    one_line(err, "model 'test-linear' is a recognition model but dataset 'fake_sq' is a spotting dataset")
    assert not list(tmp_path.iterdir())  # refused before a results folder is made


def test_a_dataset_of_one_subject_is_one_line(cli, tmp_path):
    annotations = DATA.annotations[DATA.annotations["subject"] == "s0"].reset_index(drop=True)
    cli.datasets["fake_casme2"] = Dataset("fake_casme2", Path("/nonexistent"), annotations, {}, kind="recognition")
    code, err, _ = cli("--results", str(tmp_path))
    assert code == 2
    one_line(err, "LOSO needs at least two subjects; dataset 'fake_casme2'", "has 1: ['s0']")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------- corrupt files
def test_a_corrupt_fold_file_is_one_line_naming_it(cli, tmp_path):
    first = run_loso(LINEAR, DATA, "smoke", scheduler="sync", results_dir=tmp_path, progress=False)
    fold_file(first.folder, "s2").write_bytes(b"\x80garbage\n\nmore")
    code, err, _ = cli("--results", str(tmp_path))
    assert code == 2
    one_line(err, f"{fold_file(first.folder, 's2')}: fold result is corrupt", "delete it to recompute the fold")


def test_a_corrupt_checkpoint_is_one_line_naming_it(cli, tmp_path):
    first = run_loso(LINEAR, DATA, "smoke", scheduler="sync", results_dir=tmp_path, progress=False)
    checkpoint = first.checkpoints / safe_name("s1") / "checkpoint.pt"
    fold_file(first.folder, "s1").unlink()
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    code, err, _ = cli("--results", str(tmp_path))
    assert code == 2
    one_line(err, f"fold s1: CheckpointError: {checkpoint}: checkpoint is corrupt", "delete it to train from scratch",
             f"finished folds are kept in {first.folder}")
    assert all(fold_file(first.folder, s).exists() for s in SUBJECTS if s != "s1")


# ------------------------------------------------------------------------------------ results disk
def read_only(monkeypatch, root: Path) -> None:
    """Writes under ``root`` fail as on a read-only file system (tests run as root: chmod would not stop them)."""
    root = str(root)
    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    def fake_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, Path)) and str(file).startswith(root) and set(mode) & set("wax+"):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if str(path).startswith(root) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if str(path).startswith(root):
            refuse(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_read_only_results_folder_is_one_line_naming_it_and_computes_nothing(cli, tmp_path, monkeypatch):
    calls: list[str] = []
    first = run_loso(LINEAR, DATA, "smoke", scheduler="sync", results_dir=tmp_path, progress=False, folds=2)
    before = tree(tmp_path)
    monkeypatch.setattr(models, "_REGISTRY", {})
    register(counting(LINEAR, calls))
    read_only(monkeypatch, tmp_path)
    code, err, _ = cli("--results", str(tmp_path))
    monkeypatch.undo()
    assert code == 2
    one_line(err, f"{first.folder / '.lock'}: cannot write LOSO results (Read-only file system)", "--results")
    assert calls == [] and tree(tmp_path) == before
    fresh = tmp_path / "new"
    read_only(monkeypatch, fresh)
    with pytest.raises(ResultsWriteError, match=f"{fresh}.*: cannot write LOSO results"):
        run_loso(LINEAR, DATA, "smoke", scheduler="sync", results_dir=fresh, progress=False)


def full_disk_for_folds(monkeypatch) -> None:
    """``fsync`` of a fold file fails with ENOSPC, as on a full disk (checkpoints still fit)."""
    real = os.fsync

    def fsync(descriptor):
        if "/folds/" in os.readlink(f"/proc/self/fd/{descriptor}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)


def test_a_full_disk_stops_at_the_first_fold_it_cannot_save(cli, tmp_path, monkeypatch):
    """A fold that cannot be saved stops the run at once: the other folds are not computed only to be lost, the
    folds already saved stay, and no temporary file is left."""
    first = run_loso(LINEAR, DATA, "smoke", scheduler="sync", results_dir=tmp_path, progress=False, folds=1)
    saved = fold_file(first.folder, "s0").read_bytes()
    calls: list[str] = []
    full_disk_for_folds(monkeypatch)
    with pytest.raises(ResultsWriteError) as stopped:
        run_loso(counting(LINEAR, calls), DATA, "smoke", scheduler="sync", results_dir=tmp_path, progress=False)
    assert calls == ["s1"]
    message = str(stopped.value)
    assert "\n" not in message and f"{fold_file(first.folder, 's1')}: cannot write LOSO results (No space" in message
    assert f"1 of 4 folds are kept in {first.folder}, 2 were not started" in message
    assert fold_file(first.folder, "s0").read_bytes() == saved
    assert sorted(p.name for p in (first.folder / "folds").iterdir()) == [fold_file(first.folder, "s0").name]
    assert not list(first.folder.rglob("*.tmp"))
    monkeypatch.setattr(models, "_REGISTRY", {})
    register(counting(LINEAR, calls))
    code, err, _ = cli("--results", str(tmp_path))
    assert code == 2 and calls == ["s1", "s1"]
    one_line(err, f"{fold_file(first.folder, 's1')}: cannot write LOSO results (No space left on device)")


# ------------------------------------------------------------------------------- one run per folder
def test_a_second_run_on_a_folder_in_use_refuses_or_waits(cli, tmp_path):
    first = run_loso(LINEAR, DATA, "smoke", scheduler="sync", results_dir=tmp_path, progress=False, folds=1)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    lock = first.folder / ".lock"
    try:
        lock.write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename, "started": "now"}))
        code, err, _ = cli("--results", str(tmp_path))
        assert code == 2
        one_line(err, f"{lock}: another LOSO run computes in this results folder (pid {holder.pid} on",
                 "--wait SECONDS")
        assert lock.exists()
        threading.Timer(1.0, holder.kill).start()
        result = run_loso(LINEAR, DATA, "smoke", scheduler="sync", results_dir=tmp_path, progress=False, wait=30)
        assert result.computed == SUBJECTS[1:]  # waited, then reused the first run's fold
    finally:
        holder.kill()
        holder.wait()
    assert not lock.exists()


def test_a_stale_lock_is_taken_over(tmp_path, caplog):
    folder = run_loso(LINEAR, DATA, "smoke", scheduler="sync", results_dir=tmp_path, progress=False, folds=1).folder
    (folder / ".lock").write_text(json.dumps({"pid": dead_pid(), "host": os.uname().nodename, "started": "then"}))
    with caplog.at_level(logging.WARNING, logger="mecore.loso"):
        result = run_loso(LINEAR, DATA, "smoke", scheduler="sync", results_dir=tmp_path, progress=False)
    assert result.computed == SUBJECTS[1:] and "took over the stale lock" in caplog.text
    assert not (folder / ".lock").exists() and not list(folder.glob(".lock*"))


def slow_fold(fold: LosoFold) -> pd.DataFrame:
    time.sleep(0.5)
    return linear_fold(fold)


def test_two_runs_started_together_compute_each_fold_once(tmp_path):
    calls: list[str] = []
    spec = counting(ModelSpec(name="test-linear", task="recognition", paper="test", run_fold=slow_fold,
                              configs=LINEAR.configs), calls)
    options = dict(scheduler="sync", results_dir=tmp_path, progress=False)
    results = {}
    first = threading.Thread(target=lambda: results.setdefault("first", run_loso(spec, DATA, "smoke", **options)))
    first.start()
    while not list(tmp_path.rglob(".lock")):
        time.sleep(0.01)
    with pytest.raises(RunLockedError, match="another LOSO run computes in this results folder"):
        run_loso(spec, DATA, "smoke", **options)
    second = run_loso(spec, DATA, "smoke", wait=60, **options)  # waits for the first, then reads its folds
    first.join()
    assert results["first"].computed == SUBJECTS and second.computed == [] and sorted(calls) == SUBJECTS
    pd.testing.assert_frame_equal(second.predictions, results["first"].predictions)


# --------------------------------------------------------------------------- stale temporary files
def test_temporary_files_of_killed_runs_are_removed_by_the_next_run(tmp_path):
    first = run_loso(LINEAR, DATA, "smoke", scheduler="sync", results_dir=tmp_path, progress=False, folds=1)
    folder, gone, ours = first.folder, dead_pid(), os.getpid()
    checkpoints = first.checkpoints / safe_name("s0")
    stale = [folder / "folds" / f".{safe_name('s1')}.pkl.{gone}.tmp", checkpoints / f".checkpoint.pt.{gone}.tmp",
             folder / f".predictions.csv.{gone}.tmp"]
    kept = [folder / "folds" / f".notes.pkl.{ours}.tmp",  # this process's own: maybe being written
            folder / "folds" / f".{safe_name('s3')}.pkl.{gone}.tmp"]  # just written: maybe another machine's
    for path in stale + kept:
        path.write_bytes(b"half a file")
    make_old(*stale, kept[0])
    run_loso(LINEAR, DATA, "smoke", scheduler="sync", results_dir=tmp_path, progress=False)
    assert not any(path.exists() for path in stale) and all(path.exists() for path in kept)


def test_cache_entries_and_decoded_videos_left_half_written_are_removed(tmp_path, monkeypatch, smoke_root):
    from mecore.data import load_dataset
    from mecore.preprocess.cache import EntryWriter, entry_path, open_entry
    from mecore.spot import decode_video

    video = load_dataset("synth_casme_sq", root=smoke_root / "casme_sq").videos["15_0102"]
    path = entry_path(tmp_path / "cache", video, "test", {"a": 1})
    path.parent.mkdir(parents=True)
    stale = path.with_name(f".{path.name}.{dead_pid()}.tmp")
    stale.write_bytes(b"half an array")
    make_old(stale)
    assert open_entry(path, "test", {"a": 1}, "source") is None and not stale.exists()
    stale.write_bytes(b"half an array")
    make_old(stale)
    with EntryWriter(path, (2, 3), np.uint8, "test", {"a": 1}, "source") as writer:
        assert not stale.exists()
        writer.write(np.zeros((2, 3), np.uint8))
    assert open_entry(path, "test", {"a": 1}, "source").shape == (2, 3)

    monkeypatch.setenv("MECORE_CACHE", str(tmp_path / "cache"))
    decoded = tmp_path / "cache" / "spot" / "decoded"
    leftover = decoded / f".clip-0123456789ab.{dead_pid()}.tmp"
    leftover.mkdir(parents=True)
    (leftover / "frame_000000.png").write_bytes(b"")
    make_old(leftover)
    movie = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(movie), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (32, 32))
    for _ in range(3):
        writer.write(np.full((32, 32, 3), 90, np.uint8))
    writer.release()
    folder, fps = decode_video(movie)
    assert not leftover.exists() and len(list(folder.glob("frame_*.png"))) == 3 and fps == pytest.approx(30.0)
    assert not list(decoded.glob(".*.tmp"))


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "metrics.csv"
    target.write_text("old")
    full_disk = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", lambda descriptor: (_ for _ in ()).throw(full_disk))
    with pytest.raises(OSError, match="No space"):
        loso_module.write_atomically(target, b"new")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_fold_errors_and_loso_errors_are_distinct_classes():
    assert issubclass(ResultsWriteError, LosoError) and issubclass(RunLockedError, LosoError)
    assert issubclass(LosoError, ValueError) and not issubclass(FoldError, LosoError)


def test_spot_with_a_frame_rate_of_zero_is_one_line(capsys, tmp_path):
    """``--fps 0`` is refused before any model or video work, naming the value."""
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    assert main(["spot", str(video), "--model", "mdmd", "--dataset", "synth_casme_sq", "--profile", "smoke",
                 "--fps", "0"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "clip.mp4: --fps must be a positive number of frames per second, got 0" in err[0], err


def test_a_checkpoint_half_saved_by_a_killed_training_is_removed_by_the_next_fit(tmp_path):
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    from mecore.train import OptimizerSpec, TrainConfig, fit

    gone = dead_pid()
    stale = tmp_path / f".checkpoint.pt.{gone}.tmp"
    recent = tmp_path / f".best.pt.{gone}.tmp"  # just written: maybe another machine's, kept
    stale.write_bytes(b"half a checkpoint")
    recent.write_bytes(b"half a checkpoint")
    make_old(stale)
    data = TensorDataset(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))
    fit(nn.Linear(3, 2), nn.CrossEntropyLoss(), data, None, TrainConfig(epochs=1, batch_size=2, optimizer=OptimizerSpec("sgd", lr=0.1), monitor="train_loss"),
        checkpoint_dir=tmp_path, progress=False)
    assert not stale.exists() and recent.exists() and (tmp_path / "checkpoint.pt").exists()
