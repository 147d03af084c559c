"""Leave-one-subject-out (LOSO) evaluation: one fold per subject, resumable, fanned out over Dask.

Every reproduced paper evaluates this way: MESNet (Wang et al. 2021, Sec. IV-A-3), Yap et al.
2022 (Sec. 3.3), STSNet_SW (Fu et al. 2023, Sec. 3.2), BiFPN-I3D (He et al. 2023, Sec. IV-A) and
Feature Refinement (Zhou et al., Sec. 4.2): each subject in turn is the test set, the others train.

A fold is a pure task (model spec, dataset, configuration, left-out subject) -> predictions. Each
finished fold is written at once, atomically, to the results folder, which is named by a hash of
everything that decides the predictions (model, dataset content, profile, configuration, seed,
mecore version), so a rerun skips finished folds and a changed configuration never reuses stale
ones::

    <results_dir>/<model>/<dataset>/<profile>-<key>/
        config.json              what the key was computed from
        folds/<subject>.pkl      one finished fold: predictions and timing
        checkpoints/<subject>/   the fold's training checkpoints (mecore.train)
        predictions.csv folds.csv metrics.csv    pooled results, rewritten after every run

Folds run in this process (``scheduler="sync"``), on a ``LocalCluster`` sized to the machine (the
default), or on any running Dask cluster given by its scheduler address (for example
dask-jobqueue's ``SLURMCluster`` on an HPC system; workers need the same mecore installation and
the dataset at the same path, i.e. a shared file system; several GPUs on one machine: start
dask-cuda's ``LocalCUDACluster``, one worker per GPU, and pass its address). On CPU the fold results
are the same on every path (one thread a fold, :func:`fold_threads`). Predictions are pooled over
folds and scored once by :mod:`mecore.metrics` (the LOSO standard of the field's papers);
per-fold scores are reported beside them.
"""
from __future__ import annotations

import argparse
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
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import cv2
import pandas as pd
import torch
from tqdm.auto import tqdm

import mecore
from mecore import metrics, paths
from mecore.data.model import Dataset
from mecore.models import LosoFold, ModelSpec, UnknownModelError, get_model
from mecore.train import seed_everything

RECOGNITION_COLUMNS = ("video", "label", "prediction")
SPOTTING_COLUMNS = ("video", "onset", "offset", "type")
ONE_FOLD_PER_PROCESS = threading.Lock()


class FoldError(RuntimeError):
    """One or more folds failed; the message names each failed subject and its error."""


@dataclass
class LosoResult:
    """Pooled predictions, per-fold table and pooled metrics of one LOSO run.

    ``metrics``: for recognition one row of pooled accuracy, UF1 and UAR; for spotting the
    :func:`mecore.metrics.spotting_counts` table (micro, macro, overall). ``recognition`` holds the
    full :class:`mecore.metrics.RecognitionResult` (confusion matrix, per class). ``computed`` lists
    the subjects whose folds this call ran; the others were read from the results folder.
    """

    model: str
    dataset: str
    profile: str
    key: str
    folder: Path
    predictions: pd.DataFrame
    folds: pd.DataFrame
    metrics: pd.DataFrame
    recognition: metrics.RecognitionResult | None
    computed: list[str]

    def report(self) -> str:
        """The pooled metrics table and the per-fold table as text."""
        return (f"LOSO {self.model} on {self.dataset} (profile {self.profile}, key {self.key}); "
                f"results in {self.folder}\n\npooled over {len(self.folds)} folds:\n"
                f"{self.metrics.to_string()}\n\nper fold:\n{self.folds.to_string(index=False)}")


def run_loso(
    model: str | ModelSpec,
    dataset: Dataset,
    profile: str | None = None,
    *,
    config: dict | None = None,
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
) -> LosoResult:
    """Run (or finish) LOSO of ``model`` on ``dataset`` and score the pooled predictions.

    ``config`` overrides entries of the model's configuration for ``profile``. ``scheduler``:
    ``"sync"`` runs folds one after another in this process; None or
    ``"local"`` starts a ``LocalCluster`` of ``n_workers`` workers (default: one per CPU core, or
    one sharing the GPU when CUDA is present; at most one per pending fold); any other string is the
    address of a running Dask scheduler (``tcp://host:8786``). Every fold, on every path, runs with
    PyTorch and OpenCV set to ``threads_per_fold`` threads (default :func:`fold_threads`: 1 on CPU),
    so its numbers do not depend on the scheduler or the machine's cores. ``resume`` goes to each
    fold's trainer: ``"auto"`` continues an interrupted fold from its checkpoint, True requires one.
    Spotting is scored with ``convention`` (default: the model's paper's, else MEGC 2020) at IoU >=
    ``t_eval``. ``results_dir`` defaults to ``mecore.paths.runs_dir() / "loso"``.

    A trial of a configuration on a large dataset: ``folds`` runs only the first ``folds`` subjects' folds (the
    tables then cover those subjects only) and ``max_steps`` stops every training after that many optimiser
    steps. ``max_steps`` enters the configuration (``config["max_steps"]``, which every model passes to
    :class:`mecore.train.TrainConfig`), so a trial's folds and checkpoints never stand in for a full run's.
    """
    spec = get_model(model) if isinstance(model, str) else model
    profile = paths.profile(profile)
    run_config = {**spec.config(profile, dataset.name), **(config or {})}
    if max_steps is not None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        run_config["max_steps"] = int(max_steps)
    key, description = run_key(spec, dataset, profile, run_config, seed)
    folder = Path(results_dir or paths.runs_dir() / "loso") / spec.name / dataset.name / f"{profile}-{key}"
    (folder / "folds").mkdir(parents=True, exist_ok=True)
    write_atomically(folder / "config.json", json.dumps(description, indent=2, sort_keys=True).encode())

    everyone = list(dataset.subjects)
    if len(everyone) < 2:
        raise ValueError(f"LOSO needs at least two subjects; dataset {dataset.name!r} has {everyone}")
    if folds is not None and folds < 1:
        raise ValueError(f"folds must be >= 1, got {folds}")
    subjects = everyone[:folds]
    records = {s: _read_fold(fold_file(folder, s)) for s in subjects if fold_file(folder, s).exists()}
    pending = [s for s in subjects if s not in records]
    tasks = [dict(spec=spec, config=run_config, subject=s, train_subjects=[t for t in everyone if t != s],
                  workdir=folder / "checkpoints" / safe_name(s), seed=seed, resume=resume) for s in pending]

    def finished(record: dict) -> None:
        write_atomically(fold_file(folder, record["subject"]), pickle.dumps(record))
        records[record["subject"]] = record

    failures: dict[str, BaseException] = {}
    bar = tqdm(total=len(subjects), initial=len(records), desc=f"LOSO {spec.name}", disable=not progress)
    threads = threads_per_fold or fold_threads()
    if tasks and scheduler == "sync":
        for task in tasks:
            try:
                finished(run_fold(dataset=dataset, progress=progress, num_threads=threads, **task))
            except Exception as error:
                failures[task["subject"]] = error
            bar.update(1)
    elif tasks:
        _run_on_dask(scheduler, n_workers, threads, dataset, tasks, finished, failures, bar)
    bar.close()
    if failures:
        lines = "\n".join(f"  {s}: {type(e).__name__}: {e}" for s, e in failures.items())
        raise FoldError(f"{len(failures)} of {len(subjects)} LOSO folds of {spec.name} on {dataset.name} "
                        f"failed (finished folds are kept in {folder}):\n{lines}") from next(iter(failures.values()))

    predictions = pd.concat([records[s]["predictions"] for s in subjects], ignore_index=True)
    fold_table = pd.DataFrame([{
        "subject": s, "n_predictions": len(records[s]["predictions"]), "seconds": records[s]["seconds"],
        "started": records[s]["started"], "worker": records[s]["worker"], "threads": records[s].get("threads"),
        "computed_now": s in pending,
    } for s in subjects])
    pooled, per_fold, recognition = score(spec, predictions, dataset, convention, t_eval, subjects)
    fold_table = fold_table.merge(per_fold, on="subject", how="left")
    predictions.to_csv(folder / "predictions.csv", index=False)
    fold_table.to_csv(folder / "folds.csv", index=False)
    pooled.to_csv(folder / "metrics.csv")
    return LosoResult(spec.name, dataset.name, profile, key, folder, predictions, fold_table, pooled,
                      recognition, pending)


def run_fold(spec: ModelSpec, dataset: Dataset, config: dict, subject: str, train_subjects: list[str],
             workdir: Path, seed: int, resume: bool | Literal["auto"], num_threads: int | None,
             progress: bool = False) -> dict:
    """One fold: seed, train on ``train_subjects``, predict ``subject``; returns the fold record.

    ``num_threads`` sets PyTorch's and OpenCV's thread counts for the fold (None: leave them) and
    restores them afterwards. The random generators and thread counts are per process, so folds
    given to threads of one process (a Dask worker with several threads, an in-process cluster) run
    one at a time: run concurrently, one fold's draws would shift another's.
    """
    with ONE_FOLD_PER_PROCESS:
        before = torch.get_num_threads(), cv2.getNumThreads()
        if num_threads is not None:
            torch.set_num_threads(num_threads)
            cv2.setNumThreads(num_threads)
        try:
            started = datetime.now(timezone.utc)
            clock = time.perf_counter()
            seed_everything(seed)
            threads = torch.get_num_threads()
            fold = LosoFold(dataset=dataset, test_subject=subject, train_subjects=train_subjects, config=config,
                            workdir=Path(workdir), seed=seed, resume=resume, progress=progress)
            predictions = spec.run_fold(fold)
            seconds = time.perf_counter() - clock
        finally:
            torch.set_num_threads(before[0])
            cv2.setNumThreads(before[1])
    _check_predictions(spec, subject, predictions)
    predictions = predictions.reset_index(drop=True)
    predictions.insert(0, "subject", subject)
    return {
        "subject": subject, "predictions": predictions, "seconds": seconds,
        "started": started.isoformat(), "worker": f"{socket.gethostname()}:{os.getpid()}", "threads": threads,
    }


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
    """A fold's checkpoint folder, ``runs/<folder>/<dataset>/<key>/<subject>``, keyed by the dataset, the seed and
    ``config`` (the entries that decide the trained weights): runs that differ only in post-processing share
    one training."""
    key, _ = run_key(spec, fold.dataset, "models", config, fold.seed)
    return paths.runs_dir() / folder / fold.dataset.name / key / fold.test_subject


def run_key(spec: ModelSpec, dataset: Dataset, profile: str, config: dict, seed: int) -> tuple[str, dict]:
    """The results key: a hash of what decides the predictions, and the description it hashes."""
    content = hashlib.sha256(pd.util.hash_pandas_object(dataset.annotations, index=False).to_numpy().tobytes())
    content.update("\n".join(sorted(dataset.videos)).encode())
    description = {
        "model": spec.name, "task": spec.task, "dataset": dataset.name, "dataset_content": content.hexdigest(),
        "subjects": list(dataset.subjects), "profile": profile, "config": config, "seed": seed,
        "mecore_version": mecore.__version__,
    }
    try:
        text = json.dumps(description, sort_keys=True)
    except TypeError as error:
        raise TypeError(f"model {spec.name!r}: its configuration must be JSON-serialisable ({error})") from None
    return hashlib.sha256(text.encode()).hexdigest()[:12], description


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
    table = metrics.spotting_counts(ground_truth, predictions, convention, t_eval)
    rows = []
    for subject in subjects:
        overall = metrics.spotting_counts(ground_truth[ground_truth["subject"] == subject],
                                          predictions[predictions["subject"] == subject], convention,
                                          t_eval).loc["overall"]
        rows.append({"subject": subject, **overall[["tp", "fp", "fn", "precision", "recall", "f1"]].to_dict()})
    return table, pd.DataFrame(rows), None


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments that name a run: model, dataset, root of a licensed copy, profile (``loso``, ``plan``)."""
    parser.add_argument("--model", required=True, help="a registered model name")
    parser.add_argument("--dataset", required=True, help="a dataset name for mecore.data.load_dataset")
    parser.add_argument("--root", type=Path, help="folder of a licensed copy (real datasets; synth_* need none)")
    parser.add_argument("--profile", choices=paths.PROFILES, help="default: $MECORE_PROFILE or 'default'")


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
    parser.add_argument("--results", type=Path, help="results folder (default: <mecore home>/runs/loso)")
    parser.add_argument("--convention", choices=metrics.SPOTTING_CONVENTIONS,
                        help="spotting convention (default: the model's paper's)")
    parser.add_argument("--folds", type=int, metavar="K",
                        help="run only the first K subjects' folds (a trial; the tables cover those subjects)")
    parser.add_argument("--max-steps", type=int, metavar="N",
                        help="stop every training after N optimiser steps (a trial of a configuration: results "
                             "are kept apart from full runs)")
    parser.set_defaults(handler=_cli)
    return parser


# --------------------------------------------------------------------------------------------------


def _cli(args: argparse.Namespace) -> int:
    try:
        spec = get_model(args.model)
    except UnknownModelError as error:
        print(f"mecore loso: {error.args[0]}", file=sys.stderr)
        return 2
    from mecore.data import load_dataset

    profile = paths.profile(args.profile)
    dataset = load_dataset(args.dataset, root=args.root, profile=paths.data_profile(profile))
    result = run_loso(spec, dataset, profile, seed=args.seed, scheduler=args.scheduler, n_workers=args.workers,
                      results_dir=args.results, convention=args.convention, folds=args.folds,
                      max_steps=args.max_steps)
    print(result.report())
    return 0


def _run_on_dask(scheduler, n_workers, threads, dataset, tasks, finished, failures, bar) -> None:
    """Submit every fold to a Dask cluster and record each as it completes."""
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler in (None, "local"):
        cores = os.cpu_count() or 1
        workers = min(n_workers or (1 if torch.cuda.is_available() else cores), len(tasks))
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0", silence_logs=logging.ERROR)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        shared = client.scatter(dataset, broadcast=True)
        futures = {client.submit(run_fold, dataset=shared, num_threads=threads, pure=False, **task):
                   task["subject"] for task in tasks}
        for future in as_completed(futures):
            try:
                finished(future.result())
            except Exception as error:
                failures[futures[future]] = error
            bar.update(1)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


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
    """A subject's name as a file name (its fold's checkpoint folder and result file)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(subject))


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


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename it over ``path``."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
