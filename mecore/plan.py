"""``python -m mecore plan``: what a LOSO run of a model will cost on a dataset, measured before it is run.

A plan runs the model's first LOSO fold as a *trial* in a child process: the first ``trial_subjects`` subjects
(default 4) each keep their first video, cut to its first ``trial_frames`` frames (:meth:`mecore.data.dataset.Video.first`, with its own cache entries),
and training stops after ``steps`` optimiser steps (:class:`mecore.train.TrainConfig` ``max_steps``). Since
every model streams its inputs (:mod:`mecore.inputs`), the trial's peak resident memory is the full run's:
host memory is bounded by the batch, not by the videos. From the trial it reports

* videos, frames and subjects (folds) of the whole dataset at the model's frame rate;
* cache bytes: the entries the trial used (kind and parameters) measured per frame and sized for every video,
  split into what already exists and what will be written, against the free disk;
* peak host RAM of the trial process and, on CUDA, peak device memory per micro-batch;
* batch, micro-batch and accumulation, the measured seconds per optimiser step (the first step excluded when
  there are more), and from them the time of an epoch and of the LOSO run. Training samples per epoch are
  measured in two trials of ``trial_frames`` and twice as many frames and extrapolated linearly to the fold's
  training frames (a sampler that draws a fixed number per epoch extrapolates to that number); where the trial
  already took whole videos, in proportion to the training frames.

It warns when the disk or the memory will not suffice. Preprocessing time (flows, crops) is not in the epoch
times: it is paid once per video and cached.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

from mecore import paths

GIB = 1024 ** 3


def trial_dataset(dataset, frames: int, subjects: int | None = None):
    """The first ``subjects`` subjects (default all), each with its first video cut to its first ``frames``
    frames (or longer, to the end of its first expression of each type), and the annotations inside the cuts."""
    from dataclasses import replace

    chosen = {}
    for subject in dataset.subjects[:subjects]:
        names = sorted(name for name, video in dataset.videos.items() if video.subject == subject)
        if names:
            video = dataset.videos[names[0]]
            ends = dataset.intervals(names[0]).groupby("type")["offset"].min()  # each type's first expression
            needed = int((video.frame_numbers <= ends.max()).sum()) if len(ends) else 0
            chosen[names[0]] = video.first(max(frames, needed))
    rows = dataset.annotations[dataset.annotations["video"].isin(list(chosen))]
    last = rows["video"].map({name: video.last_frame for name, video in chosen.items()})
    rows = rows[rows["offset"] <= last].reset_index(drop=True)
    return replace(dataset, annotations=rows, videos=chosen, spot_videos={})


def _trial(model: str, dataset, profile: str, frames: int, steps: int, device: str | None, out: str,
           subjects: int | None = None, config: Mapping[str, Any] | None = None) -> None:
    """Child process: one LOSO fold of the trial dataset; writes what it measured to ``out`` (JSON)."""
    import resource

    import torch

    from mecore import loso, train
    from mecore.preprocess import cache

    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    record = {"frames": frames}
    try:
        trial = trial_dataset(dataset, frames, subjects)
        record["train_frames"] = sum(v.n_frames for v in trial.videos.values()
                                     if v.subject != trial.subjects[0])
        with tempfile.TemporaryDirectory() as results:
            loso.run_loso(model, trial, profile, config=config, scheduler="sync", folds=1, max_steps=steps,
                          results_dir=results, progress=False)
    except Exception as error:  # reported by the parent with the trial's settings
        record["error"] = f"{type(error).__name__}: {error}"
    record["fits"] = train.FIT_LOG
    record["entries"] = list(cache.USED.values())
    record["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    record["cuda"] = torch.cuda.is_available() and device != "cpu"
    Path(out).write_text(json.dumps(record, default=str))


def run_trial(model: str, dataset, profile: str, frames: int, steps: int, device: str | None = None,
              subjects: int | None = None, config: Mapping[str, Any] | None = None) -> dict:
    """:func:`_trial` in a spawned process (its peak memory is its own); the record it wrote."""
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "trial.json"
        process = context.Process(target=_trial, args=(model, dataset, profile, frames, steps, device, str(out),
                                                       subjects, config))
        process.start()
        process.join()
        if not out.exists():
            raise RuntimeError(f"the trial of {model} ended without a result (exit code {process.exitcode}); "
                               f"lower --trial-frames, or run 'loso --folds 1 --max-steps {steps}' to see why")
        return json.loads(out.read_text())


def cache_sizes(dataset, entries: list[dict]) -> tuple[int, int, list[dict]]:
    """(bytes that exist, bytes to write, one row per entry kind) for every video of ``dataset``, from the
    entries the trial used: bytes per row measured on the trial's entries."""
    from mecore.preprocess.cache import entry_path

    root = paths.cache_dir()
    kinds = {}
    for entry in entries:
        if entry["rows"]:
            key = json.dumps([entry["kind"], entry["params"]], sort_keys=True, default=str)
            kinds.setdefault(key, entry)
    existing = to_write = 0
    rows = []
    for key, entry in kinds.items():
        per_row = (entry["nbytes"] - 128) / entry["rows"]  # .npy header: 128 bytes
        have = write = 0
        for video in dataset.videos.values():
            path = entry_path(root, video, entry["kind"], entry["params"])
            if path.exists():
                have += path.stat().st_size
            else:
                write += int(per_row * video.n_frames + 128)
        existing, to_write = existing + have, to_write + write
        rows.append({"entry": entry["kind"], "bytes per frame": per_row, "exist GB": have / 1e9,
                     "to write GB": write / 1e9})
    return existing, to_write, rows


def plan(model: str, dataset, profile: str, *, steps: int = 3, trial_frames: int = 600,
         trial_subjects: int | None = 4, device: str | None = None,
         config: Mapping[str, Any] | None = None) -> dict:
    """The plan of a LOSO run of ``model`` on ``dataset`` under ``profile`` (see the module docstring);
    ``config`` overrides entries of the profile's configuration (``{"train.lr": 3e-4}``), as in
    :func:`mecore.loso.run_loso`."""
    overrides = config
    from mecore.models import LosoFold, get_model

    spec = get_model(model)
    config = spec.config(profile, dataset.name, overrides)
    view = LosoFold(dataset, "", [], config, Path(".")).at_most_fps().dataset
    subjects = view.subjects
    frames = {name: video.n_frames for name, video in view.videos.items()}
    train_frames = sum(frames.values()) - sum(n for name, n in frames.items()
                                             if view.videos[name].subject == subjects[0])
    first = run_trial(model, view, profile, trial_frames, steps, device, trial_subjects, overrides)
    if "error" in first:
        raise RuntimeError(f"the trial fold of {model} ({trial_frames} frames a subject, {steps} steps) failed: "
                           f"{first['error']}; if the trial's videos are too short for the model, try more "
                           f"--trial-frames")
    second = run_trial(model, view, profile, 2 * trial_frames, 1, device, trial_subjects, overrides)
    existing, to_write, entry_rows = cache_sizes(view, first["entries"])
    fits = []
    for index, fit in enumerate(first["fits"]):
        times = fit["step_seconds"][1:] or fit["step_seconds"]
        seconds = sum(times) / len(times) if times else float("nan")
        samples = fit["samples"]
        other = second["fits"][index]["samples"] if "error" not in second and index < len(second["fits"]) else None
        span = second.get("train_frames", 0) - first["train_frames"]
        if other is not None and span > 0:
            slope = (other - samples) / span
            projected = max(1, round(samples + slope * (train_frames - first["train_frames"])))
        else:  # the trial already took whole videos: samples in proportion to the training frames
            projected = max(1, round(samples * train_frames / max(first["train_frames"], 1)))
        batch = min(fit["batch_size"], projected)
        steps_per_epoch = projected // batch if fit["drop_last"] else math.ceil(projected / batch)
        micro = fit["micro_batch"]
        fits.append({
            "trial samples": samples, "samples per epoch": projected, "batch": fit["batch_size"],
            "micro-batch": micro, "accumulation": math.ceil(fit["batch_size"] / micro),
            "seconds per step": seconds, "steps per epoch": steps_per_epoch, "epochs": fit["epochs"],
            "hours per fold": seconds * steps_per_epoch * fit["epochs"] / 3600,
            "device GB per micro-batch": (fit["peak_device_bytes"] / 1e9 if fit["peak_device_bytes"] else None),
        })
    hours = sum(f["hours per fold"] for f in fits) * len(subjects)
    free_disk = shutil.disk_usage(paths.cache_dir() if paths.cache_dir().exists() else paths.home()).free
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    warnings = []
    if to_write > free_disk:
        warnings.append(f"the cache needs {to_write / 1e9:.1f} GB more but {free_disk / 1e9:.1f} GB are free "
                        f"under {paths.cache_dir()}")
    if first["peak_rss_bytes"] > 0.8 * memory:
        warnings.append(f"peak host RAM {first['peak_rss_bytes'] / GIB:.1f} GiB is more than 80 % of this "
                        f"machine's {memory / GIB:.1f} GiB")
    return {"model": model, "dataset": dataset.name, "profile": profile, "subjects (folds)": len(subjects),
            "videos": len(frames), "frames": sum(frames.values()), "fps": sorted({v.fps for v in view.videos.values()}),
            "cache exists GB": existing / 1e9, "cache to write GB": to_write / 1e9, "cache": entry_rows,
            "free disk GB": free_disk / 1e9, "peak host RAM GiB": first["peak_rss_bytes"] / GIB,
            "machine RAM GiB": memory / GIB, "cuda": first["cuda"], "trainings per fold": fits,
            "hours per LOSO run": hours, "warnings": warnings,
            "trial": f"first fold of {trial_subjects or 'all'} subjects, each with its first video cut to "
                     f"{trial_frames} frames, {steps} steps"}


def _size(gigabytes: float) -> str:
    return f"{gigabytes:.2f} GB" if gigabytes >= 1 else f"{gigabytes * 1000:.1f} MB"


def _duration(hours: float) -> str:
    return f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.1f} min"


def report(result: dict) -> str:
    """The plan as text."""
    lines = [f"plan: {result['model']} on {result['dataset']} (profile {result['profile']})",
             f"  {result['videos']} videos, {result['frames']:,} frames at {result['fps']} fps, "
             f"{result['subjects (folds)']} subjects (LOSO folds)",
             f"  cache: {_size(result['cache exists GB'])} exist, {_size(result['cache to write GB'])} to write "
             f"({result['free disk GB']:.0f} GB free)"]
    for row in result["cache"]:
        lines.append(f"    {row['entry']:<16} {row['bytes per frame']:>10,.0f} B/frame  {_size(row['exist GB']):>10} "
                     f"exist  {_size(row['to write GB']):>10} to write")
    lines.append(f"  peak host RAM {result['peak host RAM GiB']:.2f} GiB of {result['machine RAM GiB']:.0f} "
                 f"({'CUDA' if result['cuda'] else 'CPU'} trial: {result['trial']})")
    for index, fit in enumerate(result["trainings per fold"], 1):
        device = (f", {fit['device GB per micro-batch']:.2f} GB device memory per micro-batch"
                  if fit["device GB per micro-batch"] else "")
        lines.append(f"  training {index}: {fit['samples per epoch']:,} samples an epoch, batch {fit['batch']} = "
                     f"micro-batch {fit['micro-batch']} x {fit['accumulation']}, {fit['seconds per step']:.3f} s a "
                     f"step{device}; {fit['steps per epoch']:,} steps an epoch x {fit['epochs']} epochs = "
                     f"{_duration(fit['hours per fold'])} a fold")
    lines.append(f"  LOSO run: {_duration(result['hours per LOSO run'])} of training on this machine "
                 f"({result['subjects (folds)']} folds, one after another; preprocessing not included)")
    lines += [f"  WARNING: {warning}" for warning in result["warnings"]]
    return "\n".join(lines)


def add_cli(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "plan", help="measure what a LOSO run will cost (RAM, device memory, cache, time) before running it",
        description="Run a short trial of the model's first LOSO fold on a few seconds of every subject's first "
                    "video and report the dataset's size, cache bytes, peak RAM, device memory per micro-batch, "
                    "seconds per step and the time of an epoch and of the LOSO run.")
    from mecore.loso import add_run_arguments

    add_run_arguments(parser)
    parser.add_argument("--steps", type=int, default=3, help="optimiser steps the trial measures (default 3)")
    parser.add_argument("--trial-frames", type=int, default=600,
                        help="frames of each subject's first video in the trial (default 600)")
    parser.add_argument("--trial-subjects", type=int, default=4,
                        help="subjects in the trial (default 4; 0: all)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: CUDA when present")
    parser.add_argument("--json", type=Path, help="also write the plan as JSON to this file")
    parser.set_defaults(handler=_cli)
    return parser


def check_plan_arguments(args) -> None:
    """Numbers the trial cannot run with, a CUDA device this machine lacks, a JSON file that cannot be written:
    refused before the trial (which takes minutes), as :class:`mecore.loso.LosoError`."""
    from mecore.loso import LosoError

    if args.steps < 1:
        raise LosoError(f"--steps must be at least 1, got {args.steps}")
    if args.trial_frames < 2:
        raise LosoError(f"--trial-frames must be at least 2 (a flow needs two frames), got {args.trial_frames}")
    if args.trial_subjects < 0:
        raise LosoError(f"--trial-subjects must be 0 (all) or more, got {args.trial_subjects}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise LosoError("--device cuda: this machine has no CUDA device PyTorch can use; plan on --device cpu, "
                            "or run plan on the GPU machine")
    if args.json is not None and not (args.json.parent.is_dir() and os.access(args.json.parent, os.W_OK)):
        raise LosoError(f"--json {args.json}: the folder {args.json.parent} does not exist or is not writable")


def _cli(args) -> int:
    from mecore.config import ConfigError, parse_overrides
    from mecore.loso import LosoError, check_task, dataset_notes, load_for_cli
    from mecore.models import UnknownModelError, get_model

    try:
        spec = get_model(args.model)
        profile = paths.profile(args.profile)
        dataset = load_for_cli(args, profile)
        overrides = parse_overrides(args.overrides)
        spec.config(profile, dataset.name, overrides)  # a wrong key or type: one line before any trial
        check_task(spec, dataset)
        check_plan_arguments(args)
    except (UnknownModelError, ConfigError, LosoError) as error:
        print(f"mecore plan: error: {error.args[0]}", file=sys.stderr)
        return 2
    for line in dataset_notes(dataset):
        print(line)
    try:
        result = plan(args.model, dataset, profile, steps=args.steps, trial_frames=args.trial_frames,
                      trial_subjects=args.trial_subjects or None, device=args.device, config=overrides)
    except RuntimeError as error:
        print(f"mecore plan: {error}", file=sys.stderr)
        return 2
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0
