"""Leave-one-subject-out (LOSO) evaluation: one fold per subject, resumable, fanned out over Dask.

MESNet (Wang et al. 2021, Sec. IV-A-3), Yap et al. 2022 (Sec. 3.3), STSNet_SW (Fu et al. 2023, Sec. 3.2) and
Feature Refinement (Zhou et al., Sec. 4.2) evaluate this way; He et al. 2023 (BiFPN-I3D) state no protocol, and
LOSO is our choice for it, so that all four spotters are compared on the same folds. Repeats
(:func:`run_repeats`): a paper that summarises several runs (MESNet: the median of three train/validation
divisions, Sec. IV-C; FR: the mean of at least ten rounds, Sec. 4.2) is rerun with seeds ``seed, seed + 1, ...``
(divisions, samplers and initial weights); a profile's ``repeats`` gives the count and is in no run's key.

A fold is a pure task (model spec, dataset, configuration, left-out subject) -> predictions, written at once,
atomically, to a results folder named by a hash of everything that decides the predictions (model, dataset
content, profile, configuration, seed, mecore version), so a rerun skips finished folds and a changed
configuration never reuses stale ones::

    <results_dir>/<model>/<dataset>/<profile>-<key>/
        config.json              what the key was computed from
        .lock                    the pid and host of the run computing in the folder (while it runs)
        folds/<subject>.pkl      one finished fold: predictions and timing
        checkpoints/<subject>/   the fold's training checkpoints (mecore.train)
        predictions.csv folds.csv metrics.csv    pooled results, rewritten by every run of at least their folds

Dataset content is the annotation table, the video names and the frames' fingerprint
(:func:`mecore.preprocess.cache.source_fingerprint`: folder, file names, sizes, modification times), plus a
synthetic set's stamp; ``<subject>`` is :func:`safe_name` (readable name + hash of the exact name). One run
computes in a folder at a time (a second waits for the ``.lock`` or stops naming its owner; a lock of a dead pid
is taken over); temporary files of a killed run are removed by the next; an unwritable results folder stops the
run at once, naming the path.

Folds run in this process (``scheduler="sync"``), on a ``LocalCluster`` sized to the machine (the default), or
on any running Dask cluster given by its address (dask-jobqueue's ``SLURMCluster``; dask-cuda's
``LocalCUDACluster`` for several GPUs; workers need the same installation and the data at the same path). On CPU
the results are the same on every path (one thread a fold, :func:`fold_threads`). Predictions are pooled over
folds and scored once by :mod:`mecore.metrics`; per-fold scores are reported beside them.
"""
from __future__ import annotations

import argparse
import atexit
import errno
import hashlib
import json
import logging
import os
import pickle
import re
import socket
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Mapping

import cv2
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

import mecore
from mecore import metrics, paths
from mecore.paths import write_atomically  # noqa: F401  (spot, fr and recognise import it from here too)
from mecore.config import Config, ConfigError, parse_overrides
from mecore.data.dataset import Dataset, DatasetError
from mecore.models import LosoFold, ModelSpec, UnknownModelError, available_models, get_model
from mecore.preprocess.cache import STALE_AFTER_S, pid_alive, remove_stale, source_fingerprint
from mecore.train import CheckpointError, seed_everything

RECOGNITION_COLUMNS = ("video", "label", "prediction")
SPOTTING_COLUMNS = ("video", "onset", "offset", "type")
ONE_FOLD_PER_PROCESS = threading.Lock()


LOCK_NAME = ".lock"
DISK_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT}  # a fold failing so cannot save anything
log = logging.getLogger(__name__)


class FoldError(RuntimeError):
    """One or more folds failed; the message names each failed subject and its error.

    ``failures`` maps each failed subject to its exception; ``folder`` is the run's results folder."""

    def __init__(self, message: str, failures: dict | None = None, folder: Path | None = None):
        super().__init__(message)
        self.failures, self.folder = dict(failures or {}), folder


class LosoError(ValueError):
    """Bad input, or a results folder, lock or scheduler that stops a run: the message is one line naming the
    value, file or address and what to do."""


class ResultsWriteError(LosoError):
    """The results folder cannot be written (read-only, full, no permission); names the path."""


class RunLockedError(LosoError):
    """Another run computes in the same results folder; names its pid and host and the lock file."""


class SchedulerError(LosoError):
    """The Dask scheduler at the given address cannot be reached."""


@dataclass
class LosoResult:
    """Pooled predictions, per-fold table and pooled metrics of one LOSO run.

    ``metrics``: for recognition one row of pooled accuracy, UF1 and UAR; for spotting the
    :func:`mecore.metrics.spotting_counts` table (micro, macro, overall). ``recognition`` holds the
    full :class:`mecore.metrics.RecognitionResult` (confusion matrix, per class). ``computed`` lists
    the subjects whose folds this call ran; the others were read from the results folder. ``checkpoints`` holds a
    folder per fold (weights, frame scores), shared by runs that differ only in ``test`` settings. ``data_stamp`` is a
    synthetic set's stamp (its generator seed, sizes and version; None for a real dataset).
    """

    model: str
    dataset: str
    profile: str
    key: str
    folder: Path
    checkpoints: Path
    predictions: pd.DataFrame
    folds: pd.DataFrame
    metrics: pd.DataFrame
    recognition: metrics.RecognitionResult | None
    computed: list[str]
    data_stamp: dict | None = None

    def report(self) -> str:
        """The pooled metrics table and the per-fold table as text."""
        data = f", synthetic seed {self.data_stamp.get('seed')}" if self.data_stamp else ""
        return (f"LOSO {self.model} on {self.dataset} (profile {self.profile}{data}, key {self.key}); "
                f"results in {self.folder}\n\npooled over {len(self.folds)} folds:\n"
                f"{self.metrics.to_string()}\n\nper fold:\n{self.folds.to_string(index=False)}")


def run_loso(
    model: str | ModelSpec,
    dataset: Dataset,
    profile: str | None = None,
    *,
    config: Mapping[str, Any] | None = None,
    seed: int = 0,
    scheduler: str | None = None,
    n_workers: int | None = None,
    threads_per_fold: int | None = None,
    results_dir: str | Path | None = None,
    resume: bool | Literal["auto"] = "auto",
    convention: str | None = None,
    t_eval: float = 0.5,
    progress: bool = True,
    folds: int | None = None,
    max_steps: int | None = None,
    wait: float = 0.0,
) -> LosoResult:
    """Run (or finish) LOSO of ``model`` on ``dataset`` and score the pooled predictions.

    ``config`` overrides entries of the model's configuration for ``profile``: ``{"train.lr": 3e-4}``, checked
    against the configuration's keys and types (:class:`mecore.config.Config`). ``scheduler``:
    ``"sync"`` runs folds one after another in this process; None or
    ``"local"`` uses this process's ``LocalCluster`` of ``n_workers`` workers (default: one per CPU core, or
    one sharing the GPU when CUDA is present), started by the first such run and kept for the later ones
    (:func:`local_client`); any other string is the
    address of a running Dask scheduler (``tcp://host:8786``). Every fold, on every path, runs with
    PyTorch and OpenCV set to ``threads_per_fold`` threads (default :func:`fold_threads`: 1 on CPU),
    so its numbers do not depend on the scheduler or the machine's cores. ``resume`` goes to each
    fold's trainer: ``"auto"`` continues an interrupted fold from its checkpoint, True requires one.
    Spotting is scored with ``convention`` (default: the model's paper's, else MEGC 2020) at IoU >=
    ``t_eval``. ``results_dir`` defaults to ``mecore.paths.runs_dir() / "loso"``.

    A trial of a configuration on a large dataset: ``folds`` runs only the first ``folds`` subjects' folds (the
    tables then cover those subjects only) and ``max_steps`` stops every training after that many optimiser
    steps. ``max_steps`` enters the configuration (``trial.max_steps``, which every model passes to
    :class:`mecore.train.TrainConfig`), so a trial's folds and checkpoints never stand in for a full run's.

    ``wait``: seconds to wait for another run computing in the same results folder (its ``.lock``) before
    stopping with :class:`RunLockedError`; the finished folds of that run are then reused.

    Raises :class:`LosoError` (one line) for a model of another task than the dataset, a dataset of fewer
    than two subjects, a results folder that cannot be written, a locked folder or an unreachable
    scheduler; :class:`FoldError` when folds fail (finished folds are kept).
    """
    clock = time.perf_counter()
    spec = get_model(model) if isinstance(model, str) else model
    profile = paths.profile(profile)
    check_task(spec, dataset)
    everyone = list(dataset.subjects)
    if len(everyone) < 2:
        raise LosoError(f"LOSO needs at least two subjects; dataset {dataset.name!r} ({dataset.root}) has "
                        f"{len(everyone)}: {everyone}; train and test on a dataset of several subjects")
    check_file_names(everyone, dataset.name)
    if folds is not None and folds < 1:
        raise LosoError(f"folds must be >= 1, got {folds}")
    run_config = configuration(spec, dataset, profile, config)
    if max_steps is not None:
        if max_steps < 1:
            raise LosoError(f"max_steps must be >= 1, got {max_steps}")
        run_config = run_config.set({"trial.max_steps": int(max_steps)})
    key, description = run_key(spec, dataset, profile, run_config, seed)
    folder = Path(results_dir or paths.runs_dir() / "loso") / spec.name / dataset.name / f"{profile}-{key}"
    # checkpoints are keyed by the training groups only: runs that differ in `test` settings share them
    trained = run_key(spec, dataset, profile, run_config.keyed(), seed)[0]
    description["checkpoints"] = f"{profile}-trained-{trained}"
    description["annotations"] = [str(path) for path in dataset.sources]  # what was read (the key has its content)
    with _writing(folder / "folds"):
        (folder / "folds").mkdir(parents=True, exist_ok=True)
    with run_lock(folder, wait):
        with _writing(folder / "config.json"):
            write_atomically(folder / "config.json", json.dumps(description, indent=2, sort_keys=True).encode())
        _remove_stale_temporaries(folder)
        result = _run_locked(spec, dataset, profile, key, folder, run_config, everyone, everyone[:folds], seed,
                             scheduler, n_workers, threads_per_fold, resume, convention, t_eval, progress,
                             description.get("synthetic"))
    record_timing(result, time.perf_counter() - clock)
    return result


def run_together(calls: list[Mapping[str, Any]]) -> list[LosoResult]:
    """Several LOSO runs at once, each given as :func:`run_loso`'s keyword arguments (``model``, ``dataset``,
    ``profile``, ...): on this process's LocalCluster (``scheduler`` None or ``"local"``) their folds share the
    workers, so a run's last folds never leave a core idle while the next run waits (two runs of three folds on two
    workers take three rounds, not four). Returns the results in the order of ``calls``; the first failure is
    raised once every run has stopped."""
    if not calls:
        return []
    with ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix="mecore-loso") as pool:
        futures = [pool.submit(run_loso, **call) for call in calls]
        wait(futures)
    return [future.result() for future in futures]


TIMINGS_ENV = "MECORE_TIMINGS"


def record_timing(result: LosoResult, seconds: float) -> None:
    """Append one JSON line about this run to the file named by ``$MECORE_TIMINGS``, if set (``python -m mecore
    notebooks`` sets it for its kernels and tabulates the lines per notebook); never fails the run."""
    target = os.environ.get(TIMINGS_ENV)
    if not target:
        return
    trained, total = len(result.computed), len(result.folds)
    line = {"model": result.model, "dataset": result.dataset, "profile": result.profile, "key": result.key,
            "folder": str(result.folder), "seconds": round(seconds, 3), "folds": total, "folds_computed": trained,
            "status": "reused" if trained == 0 else "computed" if trained == total else "resumed",
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "pid": os.getpid()}
    try:
        with open(target, "a", encoding="utf-8") as file:
            file.write(json.dumps(line) + "\n")
    except OSError as error:
        log.warning("could not record LOSO timing in %s: %s", target, error)


def _run_locked(spec, dataset, profile, key, folder, run_config, everyone, subjects, seed, scheduler, n_workers,
                threads_per_fold, resume, convention, t_eval, progress, data_stamp) -> LosoResult:
    """The body of :func:`run_loso`, run while holding the results folder's lock."""
    records = {s: _read_fold(fold_file(folder, s)) for s in subjects if fold_file(folder, s).exists()}
    pending = [s for s in subjects if s not in records]
    checkpoints = checkpoints_folder(folder)
    tasks = [dict(spec=spec, config=run_config, subject=s, train_subjects=[t for t in everyone if t != s],
                  workdir=checkpoints / safe_name(s), seed=seed, resume=resume) for s in pending]

    def finished(record: dict) -> None:
        path = fold_file(folder, record["subject"])
        with _writing(path):
            write_atomically(path, pickle.dumps(record))
        records[record["subject"]] = record

    failures: dict[str, BaseException] = {}
    bar = tqdm(total=len(subjects), initial=len(records), desc=f"LOSO {spec.name}", disable=not progress)
    threads = threads_per_fold or fold_threads()
    try:
        if tasks and scheduler == "sync":
            for task in tasks:
                try:
                    finished(run_fold(dataset=dataset, progress=progress, num_threads=threads, **task))
                except Exception as error:
                    failures[task["subject"]] = error
                bar.update(1)
                if _disk_failure(failures):
                    break  # the folds still to compute could not be saved either
        elif tasks:
            _run_on_dask(scheduler, n_workers, threads, dataset, tasks, finished, failures, bar)
    finally:
        bar.close()
    disk = _disk_failure(failures)
    if disk is not None:
        left = [s for s in pending if s not in records and s not in failures]
        raise ResultsWriteError(f"{_one_line(disk)}; LOSO of {spec.name} on {dataset.name} stopped: "
                                f"{len(records)} of {len(subjects)} folds are kept in {folder}"
                                + (f", {len(left)} were not started" if left else "")) from disk
    if failures:
        lines = "\n".join(f"  {s}: {type(e).__name__}: {e}" for s, e in failures.items())
        raise FoldError(f"{len(failures)} of {len(subjects)} LOSO folds of {spec.name} on {dataset.name} "
                        f"failed (finished folds are kept in {folder}):\n{lines}", failures, folder
                        ) from next(iter(failures.values()))

    predictions = pd.concat([records[s]["predictions"] for s in subjects], ignore_index=True)
    fold_table = pd.DataFrame([{
        "subject": s, "n_predictions": len(records[s]["predictions"]), "seconds": records[s]["seconds"],
        "started": records[s]["started"], "worker": records[s]["worker"], "threads": records[s].get("threads"),
        "computed_now": s in pending,
    } for s in subjects])
    pooled, per_fold, recognition = score(spec, predictions, dataset, convention, t_eval, subjects)
    fold_table = fold_table.merge(per_fold, on="subject", how="left")
    if _tables_cover(folder) <= set(map(str, subjects)):  # never replace the tables of more folds by fewer
        for name, table, index in (("predictions.csv", predictions, False), ("folds.csv", fold_table, False),
                                   ("metrics.csv", pooled, True)):
            with _writing(folder / name):
                write_atomically(folder / name, table.to_csv(index=index).encode())
    return LosoResult(spec.name, dataset.name, profile, key, folder, checkpoints, predictions, fold_table, pooled,
                      recognition, pending, data_stamp)


def _tables_cover(folder: Path) -> set[str]:
    """The subjects the results folder's tables (``folds.csv``) cover; none where there are no tables yet. A call
    of fewer folds (``folds=``, an ablation on some subjects) then leaves the whole run's tables as they are."""
    try:
        return set(pd.read_csv(folder / "folds.csv", usecols=["subject"], dtype=str)["subject"])
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return set()


def check_task(spec: ModelSpec, dataset: Dataset) -> None:
    """A spotting model needs a spotting dataset (long videos), a recognition model a recognition one (clips)."""
    kind = getattr(dataset, "kind", "spotting")
    if spec.task == kind:
        return
    fitting = [name for name in available_models() if get_model(name).task == kind]
    raise LosoError(f"model {spec.name!r} is a {spec.task} model but dataset {dataset.name!r} is a {kind} dataset"
                    f" ({'long videos' if kind == 'spotting' else 'expression clips'}); choose a {kind} model"
                    + (f" ({', '.join(fitting)})" if fitting else "") + f" or a {spec.task} dataset")


def check_file_names(subjects: list, dataset_name: str) -> None:
    """Every subject gets its own fold file and checkpoint folder: :func:`safe_name` must not map two
    subjects to one name (compared ignoring case, for case-insensitive file systems)."""
    seen: dict[str, object] = {}
    for subject in subjects:
        name = safe_name(subject).lower()
        if name in seen:
            raise LosoError(f"dataset {dataset_name!r}: subjects {seen[name]!r} and {subject!r} map to one file "
                            f"name {safe_name(subject)!r}; rename one of them in the annotations")
        seen[name] = subject


def configuration(spec: ModelSpec, dataset: Dataset, profile: str, overrides: Mapping[str, Any] | None = None):
    """The model's configuration for ``profile`` on ``dataset`` with ``overrides``; a wrong key or type is a
    :class:`LosoError` naming it and the valid choices."""
    try:
        return spec.config(profile, dataset.name, overrides)
    except ConfigError as error:
        raise LosoError(f"model {spec.name!r}: {error}") from None


def repeat_count(model: str | ModelSpec, dataset: Dataset, profile: str | None = None,
                 config: Mapping[str, Any] | None = None) -> int:
    """The number of runs the profile's ``run.repeats`` asks for."""
    spec = get_model(model) if isinstance(model, str) else model
    value = configuration(spec, dataset, paths.profile(profile), config).run.repeats
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise LosoError(f"model {spec.name!r}: 'repeats' must be a positive integer, got {value!r}")
    return value


def run_repeats(model: str | ModelSpec, dataset: Dataset, profile: str | None = None, *,
                repeats: int | None = None, seed: int = 0, config: Mapping[str, Any] | None = None,
                **run_loso_kwargs) -> list[LosoResult]:
    """``repeats`` LOSO runs (default: the profile's ``repeats``) with seeds ``seed, seed + 1, ...``; each is an
    ordinary :func:`run_loso` run with its own results folder, so finished runs are reused."""
    count = repeat_count(model, dataset, profile, config) if repeats is None else int(repeats)
    if count < 1:
        raise LosoError(f"repeats must be >= 1, got {repeats}")
    return [run_loso(model, dataset, profile, seed=seed + r, config=config, **run_loso_kwargs) for r in range(count)]


def summarise_repeats(values, how: Literal["median", "mean"] = "mean") -> dict:
    """The median or mean of one figure over repeated runs, with its spread: ``value``, ``spread`` (the standard
    deviation, ddof 1, for ``mean``; half the interquartile range for ``median``), ``low``, ``high`` and ``runs``."""
    values = np.asarray(list(values), dtype=float)
    if values.size == 0:
        raise ValueError("no runs to summarise")
    if how == "mean":
        value, spread = values.mean(), (values.std(ddof=1) if values.size > 1 else 0.0)
    elif how == "median":
        value = np.median(values)
        spread = (np.percentile(values, 75) - np.percentile(values, 25)) / 2
    else:
        raise ValueError(f"how must be 'median' or 'mean', got {how!r}")
    return {"value": float(value), "spread": float(spread), "low": float(values.min()),
            "high": float(values.max()), "runs": int(values.size), "how": how}


def run_fold(spec: ModelSpec, dataset: Dataset, config: dict, subject: str, train_subjects: list[str],
             workdir: Path, seed: int, resume: bool | Literal["auto"], num_threads: int | None,
             progress: bool = False) -> dict:
    """One fold: seed, train on ``train_subjects``, predict ``subject``; returns the fold record.

    ``num_threads`` sets PyTorch's and OpenCV's thread counts for the fold (None: leave them) and
    restores them afterwards. The random generators and thread counts are per process, so folds
    given to threads of one process (a Dask worker with several threads, an in-process cluster) run
    one at a time: run concurrently, one fold's draws would shift another's.
    """
    with thread_counts(num_threads) as threads:
        started = datetime.now(timezone.utc)
        clock = time.perf_counter()
        seed_everything(seed)
        fold = LosoFold(dataset=dataset, test_subject=subject, train_subjects=train_subjects, config=config,
                        workdir=Path(workdir), seed=seed, resume=resume, progress=progress)
        predictions = spec.run_fold(fold)
        seconds = time.perf_counter() - clock
    _check_predictions(spec, subject, predictions)
    frame_scores = predictions.attrs.pop(FRAME_SCORES, None)
    predictions = predictions.reset_index(drop=True)
    predictions.insert(0, "subject", subject)
    record = {
        "subject": subject, "predictions": predictions, "seconds": seconds,
        "started": started.isoformat(), "worker": f"{socket.gethostname()}:{os.getpid()}", "threads": threads,
    }
    if frame_scores is not None:
        record[FRAME_SCORES] = frame_scores
    return record


def prepare_video(spec: ModelSpec, dataset: Dataset, config: dict, name: str, num_threads: int | None) -> None:
    """``spec.prepare`` for one video (the cache entries its folds read), with the folds' thread counts, so an
    entry computed here is the one a fold would have computed."""
    with thread_counts(num_threads):
        spec.prepare(dataset, config, name)


@contextmanager
def thread_counts(num_threads: int | None):
    """PyTorch's and OpenCV's thread counts set to ``num_threads`` (None: left) for the block, restored after it;
    yields PyTorch's count. One block at a time per process (:data:`ONE_FOLD_PER_PROCESS`)."""
    with ONE_FOLD_PER_PROCESS:
        before = torch.get_num_threads(), cv2.getNumThreads()
        if num_threads is not None:
            torch.set_num_threads(num_threads)
            cv2.setNumThreads(num_threads)
        try:
            yield torch.get_num_threads()
        finally:
            torch.set_num_threads(before[0])
            cv2.setNumThreads(before[1])


FRAME_SCORES = "frame_scores"


def with_frame_scores(predictions: pd.DataFrame, record: dict) -> pd.DataFrame:
    """``predictions`` carrying ``record`` (a fold's per-frame scores and what its post-processing chose), which
    :func:`run_fold` stores in the fold's result file beside the predictions: it belongs to the run, whose
    ``test`` settings may differ from another run's sharing the same checkpoints."""
    predictions.attrs[FRAME_SCORES] = record
    return predictions


def fold_threads() -> int:
    """The threads a fold computes with unless told otherwise: 1 on CPU, every core with CUDA.

    PyTorch sums a CPU convolution's gradient in an order that depends on the thread count (the Yap
    3D-CNN's gradients differ by ~1e-8 between 1 and 2 threads), and over a fold's hundreds of steps
    that moves the results (Yap on the CAS(ME)^2 twin: macro F1 0.136 at 1 thread, 0.147 at 2). One
    thread a fold makes a fold's numbers the same in this process, on a LocalCluster and on a remote
    cluster, on any number of cores; the cores are used by running folds side by side (one worker per
    core). With CUDA the GPU computes and the threads only feed it.
    """
    return (os.cpu_count() or 1) if torch.cuda.is_available() else 1


def training_dir(spec: ModelSpec, fold: LosoFold, config: dict, folder: str) -> Path:
    """A fold's checkpoint folder, ``runs/<folder>/<dataset>/<key>/<subject>``, keyed by the dataset, the seed,
    the model's code and ``config`` (the groups that decide the trained weights, e.g. ``fold.config.keyed()``):
    runs that differ only in ``test`` settings share one training."""
    key, _ = run_key(spec, fold.dataset, "models", config, fold.seed)
    return paths.runs_dir() / folder / fold.dataset.name / key / safe_name(fold.test_subject)


def run_key(spec: ModelSpec, dataset: Dataset, profile: str, config, seed: int) -> tuple[str, dict]:
    """The results key: a hash of what decides the predictions, and the description it hashes.

    ``config``: a :class:`mecore.config.Config` (its ``run`` group, how many runs, is left out) or the dict of
    the groups a checkpoint depends on. ``code`` is :attr:`ModelSpec.code_version`: editing the model's module
    never reuses results or checkpoints of the old code (they stay in their folders).
    The dataset enters by its annotation table and video names (``dataset_content``), the fingerprint of its
    videos' frames (``frames``, :func:`frames_fingerprint`) and, for a synthetic set, its stamp
    (``synthetic``: the generator seed, sizes and version)."""
    content = hashlib.sha256(pd.util.hash_pandas_object(dataset.annotations, index=False).to_numpy().tobytes())
    content.update("\n".join(sorted(dataset.videos)).encode())
    description = {
        "model": spec.name, "task": spec.task, "dataset": dataset.name, "dataset_content": content.hexdigest(),
        "frames": frames_fingerprint(dataset), "subjects": list(dataset.subjects), "profile": profile,
        "config": config.keyed(("run",)) if isinstance(config, Config) else config, "seed": seed,
        "mecore_version": mecore.__version__, "code": spec.code_version,
    }
    stamp = synthetic_stamp(dataset)
    if stamp is not None:
        description["synthetic"] = stamp
    try:
        text = json.dumps(description, sort_keys=True)
    except TypeError as error:
        raise TypeError(f"model {spec.name!r}: its configuration must be JSON-serialisable ({error})") from None
    return hashlib.sha256(text.encode()).hexdigest()[:12], description


def frames_fingerprint(dataset: Dataset) -> str:
    """A hash over the dataset's videos of :func:`mecore.preprocess.cache.source_fingerprint` (frame folder,
    frame file names, sizes and modification times; the preprocessing cache's key): it changes when any frame
    the folds read changes, costs one ``stat`` per frame file, and is kept on the dataset object (a Dataset
    also keeps its videos' file lists; load the dataset again after changing its frames). A video whose frame
    folder cannot be listed enters as such (its folds would fail on it)."""
    cached = dataset.__dict__.get("_frames_fingerprint")
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    for name in sorted(dataset.videos):
        try:
            print_ = source_fingerprint(dataset.videos[name])
        except (DatasetError, OSError) as error:
            print_ = f"unreadable: {type(error).__name__}"
        digest.update(f"{name}\t{print_}\n".encode())
    value = digest.hexdigest()
    dataset.__dict__["_frames_fingerprint"] = value
    return value


def synthetic_stamp(dataset: Dataset) -> dict | None:
    """The stamp of a synthetic set (``mecore_synthetic.json`` in its root: seed, profile, sizes, generator
    version), or None for a real dataset."""
    from mecore.data.synthetic import STAMP_NAME

    root = Path(dataset.root)
    try:
        base = root if root.is_dir() else root.parent  # cde's root is its label file
        stamp = json.loads((base / STAMP_NAME).read_text())
    except (OSError, ValueError, TypeError):
        return None
    return stamp if isinstance(stamp, dict) else None


def score(spec: ModelSpec, predictions: pd.DataFrame, dataset: Dataset, convention: str | None = None,
          t_eval: float = 0.5, subjects: list[str] | None = None
          ) -> tuple[pd.DataFrame, pd.DataFrame, metrics.RecognitionResult | None]:
    """Pooled metrics table, per-fold metrics (one row per subject) and, for recognition, the full result;
    spotting is scored against the ground truth of ``subjects`` (default: all of the dataset's)."""
    subjects = list(dataset.subjects) if subjects is None else list(subjects)
    if spec.task == "recognition":
        labels, predicted = predictions["label"].to_numpy(), predictions["prediction"].to_numpy()
        pooled = metrics.recognition_metrics(labels, predicted)
        with warnings.catch_warnings():  # the pooled call has already warned about absent classes
            warnings.simplefilter("ignore")
            per_fold = metrics.recognition_metrics(labels, predicted, folds=predictions["subject"].to_numpy(),
                                                   averaging="per_fold").per_fold
        table = pd.DataFrame([{"n": len(predictions), "accuracy": pooled.accuracy, "uf1": pooled.uf1,
                               "uar": pooled.uar}], index=pd.Index(["pooled"], name="averaging"))
        per_fold = per_fold.drop(columns="n").rename(columns={"fold": "subject"})
        return table, per_fold, pooled
    convention = convention or spec.spotting_convention or "megc2020"
    ground_truth = dataset.annotations[dataset.annotations["subject"].isin(subjects)]
    videos = [*dataset.videos, *dataset.spot_videos] or None  # videos without any expression are known too
    table = metrics.spotting_counts(ground_truth, predictions, convention, t_eval, videos=videos)
    rows = []
    for subject in subjects:
        with warnings.catch_warnings():  # the pooled call has already warned about unknown videos and types
            warnings.simplefilter("ignore")
            overall = metrics.spotting_counts(ground_truth[ground_truth["subject"] == subject],
                                              predictions[predictions["subject"] == subject], convention,
                                              t_eval, videos=videos).loc["overall"]
        rows.append({"subject": subject, **overall[["tp", "fp", "fn", "precision", "recall", "f1"]].to_dict()})
    return table, pd.DataFrame(rows), None


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments that name a run: model, dataset, root of a licensed copy, profile (``loso``, ``plan``)."""
    parser.add_argument("--model", required=True, metavar="MODEL",
                        help="a registered model: " + ", ".join(available_models()))
    parser.add_argument("--dataset", required=True, help="a dataset name for mecore.data.load_dataset")
    parser.add_argument("--root", type=Path, help="folder of a licensed copy (real datasets; synth_* need none)")
    parser.add_argument("--profile", choices=paths.PROFILES, help="default: $MECORE_PROFILE or 'default'")
    parser.add_argument("--workbook", type=Path, help="the annotation workbook to read when the root holds several "
                                                      "(default: the newest release; the choice is reported)")
    parser.add_argument("--set", action="append", default=[], metavar="GROUP.KEY=VALUE", dest="overrides",
                        help="change one configuration entry, e.g. --set train.lr=3e-4 --set test.t_nms=0.4 "
                             "(repeatable; values read as JSON: numbers, true/false, null, lists)")


def add_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``loso`` subcommand (``python -m mecore loso --model NAME --dataset NAME ...``).

    The parsed arguments carry the handler: ``sys.exit(args.handler(args))``.
    """
    parser = subparsers.add_parser(
        "loso", help="leave-one-subject-out evaluation of a model on a dataset",
        description="Run LOSO (one fold per subject), resuming finished folds, and print the pooled "
                    "and per-fold result tables.")
    add_run_arguments(parser)
    parser.add_argument("--scheduler", help="'sync' (this process), 'local' (a LocalCluster sized to this "
                                            "machine; the default) or a Dask scheduler address, "
                                            "e.g. tcp://10.1.2.3:8786")
    parser.add_argument("--workers", type=int,
                        help="LocalCluster workers (default: one per core; one when CUDA is present)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, metavar="R",
                        help="R runs with seeds seed..seed+R-1, summarised (default: the profile's 'repeats', "
                             "else 1)")
    parser.add_argument("--results", type=Path, help="results folder (default: <mecore home>/runs/loso)")
    parser.add_argument("--convention", choices=metrics.SPOTTING_CONVENTIONS,
                        help="spotting convention (default: the model's paper's)")
    parser.add_argument("--folds", type=int, metavar="K",
                        help="run only the first K subjects' folds (a trial; the tables cover those subjects)")
    parser.add_argument("--max-steps", type=int, metavar="N",
                        help="stop every training after N optimiser steps (a trial of a configuration: results "
                             "are kept apart from full runs)")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="wait this long for another run computing in the same results folder (default: "
                             "stop at once with its pid)")
    parser.set_defaults(handler=_cli)
    return parser


# --------------------------------------------------------------------------------------------------


def _cli(args: argparse.Namespace) -> int:
    """``loso``: bad input, an unusable results folder or scheduler, and failed folds give one line on stderr
    naming the value, file or address and what to do, and exit code 2."""
    try:
        spec = get_model(args.model)
        profile = paths.profile(args.profile)
        dataset = load_for_cli(args, profile)
        for line in dataset_notes(dataset):
            print(line)
        overrides = parse_overrides(args.overrides)
        results = run_repeats(spec, dataset, profile, repeats=args.repeats, seed=args.seed, config=overrides,
                              scheduler=args.scheduler,
                              n_workers=args.workers, results_dir=args.results, convention=args.convention,
                              folds=args.folds, max_steps=args.max_steps, wait=args.wait)
    except (UnknownModelError, LosoError, FoldError, DatasetError, CheckpointError, ConfigError) as error:
        print(f"mecore loso: error: {_one_line(error)}", file=sys.stderr)
        return 2
    for result in results:
        print(result.report(), "\n")
    if len(results) > 1:
        print(repeats_table(results).to_string())
    return 0


def load_for_cli(args: argparse.Namespace, profile: str) -> Dataset:
    """The dataset named by ``--dataset``/``--root``/``--workbook``; a bad name, root or file is a :class:`LosoError`."""
    from mecore.data import load_dataset

    options = {"workbook": args.workbook} if getattr(args, "workbook", None) else {}
    try:
        return load_dataset(args.dataset, root=args.root, profile=paths.data_profile(profile), **options)
    except OSError as error:
        raise LosoError(f"dataset {args.dataset!r}: {_one_line(error)}") from error
    except TypeError as error:  # a loader without a workbook (SMIC's folders, CDE's label file)
        raise LosoError(f"dataset {args.dataset!r} reads no workbook: drop --workbook ({error})") from error
    except ValueError as error:  # an unknown name, a missing root, a bad workbook (DatasetError)
        raise LosoError(_one_line(error)) from error


def dataset_notes(dataset: Dataset) -> list[str]:
    """What a run should say about its data before it starts: the annotation files read and every repair or
    report of the loader (a duplicate kept, a workbook chosen among several, a subject left out), as ``data check``
    prints them."""
    notes = [f"{dataset.name}: annotations read from {', '.join(map(str, dataset.sources))}"] if dataset.sources else []
    return notes + [f"{dataset.name}: {repair}" for repair in dataset.repairs]


def headline(result: LosoResult) -> dict:
    """The figures a repeats table summarises: accuracy, UF1, UAR (recognition) or overall F1, precision,
    recall (spotting)."""
    if result.recognition is not None:
        return {name: float(result.metrics.loc["pooled", name]) for name in ("accuracy", "uf1", "uar")}
    overall = result.metrics.loc["overall"]
    return {name: float(overall[name]) for name in ("f1", "precision", "recall")}


def repeats_table(results: list[LosoResult], how: Literal["median", "mean"] | None = None) -> pd.DataFrame:
    """One row per headline figure: its median or mean over the runs (default: median for spotting, as MESNet
    reports; mean for recognition, as FR reports), the spread, range and number of runs."""
    how = how or ("mean" if results[0].recognition is not None else "median")
    figures = pd.DataFrame([headline(r) for r in results])
    return pd.DataFrame({name: summarise_repeats(figures[name], how) for name in figures}).T


def _run_on_dask(scheduler, n_workers, threads, dataset, tasks, finished, failures, bar) -> None:
    """Submit every fold to a Dask cluster and record each as it completes."""
    from distributed import as_completed

    local = scheduler in (None, "local")
    if local:
        cores = os.cpu_count() or 1
        client = local_client(n_workers or (1 if torch.cuda.is_available() else cores))
    else:
        client = _connect(scheduler)
    futures: dict = {}
    try:
        shared = client.scatter(dataset, broadcast=True, hash=False)  # this run's own copy, released with it
        spec, config = tasks[0]["spec"], tasks[0]["config"]
        if spec.prepare is not None:  # each video's inputs once, spread over the workers, then the folds
            futures = {client.submit(prepare_video, spec, shared, config, name, threads, pure=False): name
                       for name in dataset.videos}
            for future in as_completed(futures, loop=client.loop):
                if future.status == "error":  # the folds that read the video meet the error again and report it
                    log.debug("preparing video %s failed: %s", futures[future], future.exception())
        futures = {client.submit(run_fold, dataset=shared, num_threads=threads, pure=False, **task):
                   task["subject"] for task in tasks}
        for future in as_completed(futures, loop=client.loop):
            try:
                finished(future.result())
            except Exception as error:
                failures[futures[future]] = error
            bar.update(1)
            if _disk_failure(failures):  # the folds still running could not be saved either
                client.cancel([f for f in futures if not f.done()])
                break
    finally:
        if local:  # the cluster stays for the process's next run: stop what this run left running on it
            client.cancel(list(futures))
        else:
            client.close()


_LOCAL_CLUSTERS: dict[int, tuple] = {}
_LOCAL_LOCK = threading.Lock()


def local_client(workers: int):
    """A client of this process's ``LocalCluster`` of ``workers`` one-thread worker processes, started by the first
    run that asks for it and kept for every later one: a notebook's LOSO runs then share two warm workers instead
    of starting (and importing PyTorch in) new processes for each run. A cluster that is no longer running is
    replaced; the clusters close when the process exits.

    The workers start without Dask's default ``MALLOC_TRIM_THRESHOLD_=65536``: setting it turns off glibc's
    adaptive mmap threshold, so every large tensor is mapped and unmapped afresh, and a PyTorch fold trains about
    1.5 times slower. Dask's nanny also writes its worker variables into this process's environment; they are put
    back, so later child processes (flow workers) start as this one did."""
    import dask
    from distributed import Client, LocalCluster

    with _LOCAL_LOCK:  # runs started together (run_together) share one cluster
        entry = _LOCAL_CLUSTERS.get(workers)
        if entry is not None and entry[1].status == "running" and str(entry[0].status.name) == "running":
            return entry[1]
        if entry is not None:
            _close_local(workers)
        environment = dict(os.environ)
        try:
            with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", silence_logs=logging.ERROR)
        finally:
            os.environ.clear()
            os.environ.update(environment)
        _LOCAL_CLUSTERS[workers] = (cluster, Client(cluster, set_as_default=False))
        if len(_LOCAL_CLUSTERS) == 1:
            atexit.register(close_local_clusters)
        return _LOCAL_CLUSTERS[workers][1]


def _close_local(workers: int) -> None:
    cluster, client = _LOCAL_CLUSTERS.pop(workers)
    for closing in (client, cluster):
        try:
            closing.close()
        except Exception as error:  # a cluster already gone: nothing left to close
            log.debug("closing the local Dask cluster: %s", error)


def close_local_clusters() -> None:
    """Close the LocalClusters :func:`local_client` started (at exit, or to free their workers' memory now)."""
    for workers in list(_LOCAL_CLUSTERS):
        _close_local(workers)


def _connect(scheduler: str):
    """A Dask client of the scheduler at ``scheduler``, or :class:`SchedulerError` within dask's connect timeout
    (plus a grace) when nothing answers there, or something that is not a Dask scheduler does (an HTTP server
    accepts the connection and never completes the handshake; other servers' replies decode as garbage)."""
    import dask
    from dask.utils import parse_timedelta
    from distributed import Client

    seconds = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), "s")
    outcome: dict = {}

    def connect() -> None:
        try:
            outcome["client"] = Client(scheduler, timeout=seconds)
        except BaseException as error:  # anything a non-Dask reply raises (MemoryError from a garbage length)
            outcome["error"] = error

    thread = threading.Thread(target=connect, daemon=True, name="mecore-dask-connect")
    thread.start()
    thread.join(seconds + 10)
    hint = "start it or correct the address, or run with --scheduler local (this machine) or sync (this process)"
    if thread.is_alive():
        raise SchedulerError(f"the address {scheduler!r} accepted a connection but gave no Dask scheduler's answer "
                             f"within {seconds + 10:g} s (another kind of server?); {hint}")
    if "error" in outcome:
        raise SchedulerError(f"cannot reach the Dask scheduler at {scheduler!r} ({_one_line(outcome['error'])}); "
                             f"{hint}")
    return outcome["client"]


def _check_predictions(spec: ModelSpec, subject: str, predictions) -> None:
    required = RECOGNITION_COLUMNS if spec.task == "recognition" else SPOTTING_COLUMNS
    if not isinstance(predictions, pd.DataFrame):
        raise TypeError(f"model {spec.name!r}, fold {subject!r}: run_fold must return a DataFrame, "
                        f"got {type(predictions).__name__}")
    missing = [c for c in required if c not in predictions]
    if missing:
        raise ValueError(f"model {spec.name!r}, fold {subject!r}: predictions lack columns {missing} "
                         f"(a {spec.task} model returns {list(required)})")


def safe_name(subject: str) -> str:
    """A subject's name as a file name (its fold's checkpoint folder and result file): the name with every
    character but ASCII letters, digits, ``_``, ``.`` and ``-`` replaced by ``_`` (at most 40 of them), then
    ``-`` and 10 hex digits of the SHA-256 of the exact name, so ``李`` and ``王`` (both ``_``) or ``S1`` and
    ``s1`` (on a case-insensitive file system) get files of their own (:func:`check_file_names` refuses a
    dataset where two names would still meet)."""
    text = str(subject)
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:40].lstrip(".") or "_"
    return f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def subjects_by_file_name(folder: Path) -> dict[str, str]:
    """``safe_name(subject) -> subject`` for the subjects of the LOSO run in ``folder`` (from its config.json):
    what a reader of ``checkpoints/<safe name>/`` needs to name the subject back."""
    subjects = json.loads((Path(folder) / "config.json").read_text())["subjects"]
    return {safe_name(subject): subject for subject in subjects}


def checkpoints_folder(folder) -> Path:
    """The checkpoint folder of the LOSO run in ``folder`` (one subfolder per fold, named by :func:`safe_name`):
    ``<profile>-trained-<key of the training groups>`` beside it, named in its ``config.json``."""
    folder = Path(folder)
    try:
        name = json.loads((folder / "config.json").read_text())["checkpoints"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise FoldError(f"{folder / 'config.json'}: does not name the run's checkpoint folder ({error}); rerun "
                        f"the LOSO") from None
    return folder.parent / name


def load_frame_scores(folder) -> dict[str, dict]:
    """What each finished fold of the LOSO run in ``folder`` kept with :func:`with_frame_scores` (Yap et al.'s and
    STSNet_SW's per-frame scores): subject -> record."""
    folder = Path(folder)
    subjects = json.loads((folder / "config.json").read_text())["subjects"]
    records = {}
    for subject in subjects:
        path = fold_file(folder, subject)
        if path.exists():
            record = _read_fold(path)
            if FRAME_SCORES not in record:
                raise FoldError(f"{path}: the fold kept no frame scores (a model that saves none, or an older "
                                f"mecore); delete it to recompute the fold")
            records[subject] = record[FRAME_SCORES]
    return records


def fold_file(folder: Path, subject: str) -> Path:
    """Where a LOSO run in ``folder`` keeps the finished fold of ``subject``."""
    return folder / "folds" / f"{safe_name(subject)}.pkl"


def _read_fold(path: Path) -> dict:
    try:
        record = pickle.loads(path.read_bytes())
    except Exception as error:
        raise FoldError(f"{path}: fold result is corrupt or unreadable ({type(error).__name__}: {error}); "
                        f"delete it to recompute the fold") from error
    if not isinstance(record, dict) or "predictions" not in record:
        raise FoldError(f"{path}: not a LOSO fold result; delete it to recompute the fold")
    return record


class _writing:
    """Turn an OSError of the file system (read-only, full, no permission) while writing ``path`` into a
    :class:`ResultsWriteError` naming the path."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, error_type, error, traceback):
        if isinstance(error, OSError) and not isinstance(error, FileExistsError):
            raise ResultsWriteError(_disk_message(self.path, error)) from error
        return False


def _disk_message(path: Path, error: OSError) -> str:
    reason = error.strerror or type(error).__name__
    where = error.filename or path
    return (f"{where}: cannot write LOSO results ({reason}); free space or make the folder writable, or pass "
            f"another results folder (--results)")


def _disk_failure(failures: dict) -> BaseException | None:
    """The first failure that is the file system's (a full or read-only disk), or None."""
    for error in failures.values():
        cause = error
        while cause is not None:
            if isinstance(cause, ResultsWriteError) or (isinstance(cause, OSError)
                                                        and cause.errno in DISK_ERRORS):
                return cause
            cause = cause.__cause__
    return None


def _one_line(error: BaseException) -> str:
    """An error's message on one line; a FoldError's first failure with the others named."""
    if isinstance(error, FoldError) and error.failures:
        subjects = list(error.failures)
        first = error.failures[subjects[0]]
        text = f"fold {subjects[0]}: {type(first).__name__}: {_one_line(first)}"
        if len(subjects) > 1:
            text += f" ({len(subjects) - 1} more folds failed: {', '.join(map(str, subjects[1:]))})"
        return f"{text}; finished folds are kept in {error.folder}"
    text = str(error.args[0]) if len(error.args) == 1 else str(error)
    if isinstance(error, OSError) and error.strerror:
        text = f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    return re.sub(r"\s*\n\s*", "; ", text.strip()) or type(error).__name__


def _remove_stale_temporaries(folder: Path) -> None:
    """Temporary files a killed or disk-full run left in the results folder, its folds and its checkpoints."""
    remove_stale(folder)
    remove_stale(folder / "folds")
    checkpoints = checkpoints_folder(folder)
    if checkpoints.is_dir():
        for sub in checkpoints.iterdir():
            if sub.is_dir():
                remove_stale(sub)


def _lock_owner(lock: Path) -> dict | None:
    try:
        owner = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


class run_lock:
    """Hold ``<folder>/.lock`` (the pid, host and start of this process) while a run computes in ``folder``.

    A lock held by a process that runs (or runs on another host) is waited for ``wait`` seconds, then
    :class:`RunLockedError` names it; a lock of a pid that no longer runs on this host, or an unreadable
    lock untouched for :data:`mecore.preprocess.cache.STALE_AFTER_S` seconds, is stale: it is moved aside
    and taken over, with a warning."""

    def __init__(self, folder: Path, wait: float = 0.0, poll: float = 0.5):
        self.lock, self.wait, self.poll = Path(folder) / LOCK_NAME, float(wait), poll
        self.me = {"pid": os.getpid(), "host": socket.gethostname(),
                   "started": datetime.now(timezone.utc).isoformat()}

    def __enter__(self):
        deadline = time.monotonic() + self.wait
        announced = False
        while True:
            try:
                with _writing(self.lock):
                    descriptor = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = _lock_owner(self.lock)
                if self._stale(owner):
                    self._take_over(owner)
                    continue
                if time.monotonic() >= deadline:
                    who = (f"pid {owner.get('pid')} on {owner.get('host')}, started {owner.get('started')}"
                           if owner else "a process that is still writing it")
                    raise RunLockedError(
                        f"{self.lock}: another LOSO run computes in this results folder ({who}); wait for it (its "
                        f"finished folds are reused; --wait SECONDS) or, if that process is gone, delete the lock")
                if not announced:
                    log.warning("waiting for %s (held by %s)", self.lock, owner)
                    announced = True
                time.sleep(max(0.0, min(self.poll, deadline - time.monotonic())))
                continue
            try:
                with _writing(self.lock), os.fdopen(descriptor, "w") as handle:
                    handle.write(json.dumps(self.me))
            except BaseException:
                self.lock.unlink(missing_ok=True)
                raise
            return self

    def _stale(self, owner: dict | None) -> bool:
        if owner is None:  # being written this instant, or garbage: stale once old
            try:
                return time.time() - self.lock.stat().st_mtime >= STALE_AFTER_S
            except FileNotFoundError:
                return False
        if owner.get("host") != socket.gethostname():
            return False  # a process of another machine: cannot tell, so it counts as running
        try:
            return not pid_alive(int(owner.get("pid")))
        except (TypeError, ValueError):
            return True

    def _take_over(self, owner: dict | None) -> None:
        """Move the stale lock aside (atomically) and delete it, unless a fresh lock took its place meanwhile."""
        aside = self.lock.with_name(f"{LOCK_NAME}.stale.{os.getpid()}")
        try:
            os.replace(self.lock, aside)
        except FileNotFoundError:
            return  # another process moved it first
        if _lock_owner(aside) != owner:  # we moved a lock just taken by another process: put it back
            try:
                os.link(aside, self.lock)
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            return
        aside.unlink(missing_ok=True)
        log.warning("%s: took over the stale lock of %s (that process no longer runs)", self.lock, owner)

    def __exit__(self, *exc) -> bool:
        if _lock_owner(self.lock) == self.me:
            self.lock.unlink(missing_ok=True)
        return False
