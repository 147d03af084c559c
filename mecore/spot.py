"""Spot micro- and macro-expressions in your own video with a model trained under LOSO.

``spot(VIDEO, model=NAME)`` (``python -m mecore spot VIDEO --model NAME``) runs a spotting model that a
LOSO run trained (``python -m mecore loso`` or a notebook) on a video file or a folder of frames:

1. A video file is decoded once, streaming, into lossless PNG frames under
   ``<cache>/spot/decoded/<stem>-<key>/`` (keyed by the file's path, size and modification time).
2. The run is found by name, exactly where :func:`mecore.loso.run_loso` keeps it
   (``runs/loso/<model>/<dataset>/<profile>-<key>/``, seed 0), or given as that folder (``checkpoint``).
3. One fold of that run (``subject``) reloads its trained model and spots the video through the LOSO code
   path itself (:func:`mecore.loso.run_fold` on the training dataset with the video as its only
   ``spot_videos``), so face cropping, the disk cache of crops and flows (computed in chunks) and the
   post-processing are the model's own, and so is what it then holds in memory: flat in the video length for
   MDMD, growing with it for the networks that load a whole video's inputs at once (MESNet, BiFPN-I3D;
   ``scripts/bench_spot.py`` measures it). It never trains the spotter: an unfinished fold or missing weights stop
   it. With ``recogniser``, the recogniser of that fold is trained on first use (:mod:`mecore.recognise`).
4. The intervals (inclusive frame numbers, times in seconds from the first frame) are written as
   ``<out_dir>/<video>_<model>.csv`` with a timeline figure ``<video>_<model>.png`` and ``<video>_<model>.json``
   (the source's path, the run, the fold and the face spotted). ``<video>`` is the file's stem or the folder's
   name; when those outputs already belong to another source of the same name (``control.avi`` after
   ``control.mp4``, or a folder of that name elsewhere) they are kept and this source's go to
   ``<video>-<hash of its path>_<model>.*``.

Checked before any model work: the video has enough frames for the model (MESNet's clips overlap by
``clip_overlap`` frames, so it needs more than that; :func:`minimum_frames`), and it shows a face. When
frames show several faces the spotter crops the cascade's most confident one; :func:`require_face` says which
(where it is, counted from the left) in a warning, and the output's ``.json`` and ``attrs["face"]`` record it.
Temporary decode folders that a killed run left are removed by the next decode.
"""
from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
import shutil
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mecore import paths
from mecore.config import Config, ConfigError
from mecore.data import DATASET_NAMES, dataset_kind, load_dataset
from mecore.data.dataset import FRAME_NUMBER, IMAGE_SUFFIXES, Dataset, DatasetError, Video
from mecore.loso import checkpoints_folder, fold_file, run_fold, run_key, safe_name, write_atomically
from mecore.models import LosoFold, ModelSpec, available_models, get_model
from mecore.preprocess.cache import remove_stale
from mecore.recognise import RECOGNISERS, apex_for, classify, train_recogniser
from mecore.preprocess.face import DETECT_MAX_SIDE, FACE_CASCADE, _cascade, detect_face, to_gray

OUTPUT_COLUMNS = ("onset", "apex", "offset", "type", "score", "onset_s", "offset_s")
SPOT_DATASET = "spot"  # Video.dataset of a user's video: its crops and flows are cached under <cache>/spot/
FACE_SAMPLES = 8  # frames searched for a face before any model work
TYPE_COLOURS = {"macro": "tab:blue", "micro": "tab:red"}  # micro drawn last, over the longer macro bars


class SpotError(ValueError):
    """The model cannot spot: not trained yet, a wrong checkpoint folder, or not a spotting model."""


@dataclass(frozen=True)
class TrainedRun:
    """A LOSO run of a spotting model: its results folder and what its key was computed from."""

    spec: ModelSpec
    dataset: Dataset
    profile: str
    config: Config
    seed: int
    folder: Path

    @property
    def train_command(self) -> str:
        root = None if self.dataset.name.startswith("synth_") else self.dataset.root
        return train_command(self.spec.name, self.dataset.name, self.profile, self.seed, root)


def train_command(model: str, dataset: str, profile: str, seed: int = 0, root=None) -> str:
    """The command that trains what spot needs (with the licensed copy's ``--root``)."""
    return f"python -m mecore loso --model {model} --dataset {dataset}" + (f" --root {root}" if root else "") + \
        f" --profile {profile}" + (f" --seed {seed}" if seed else "")


def spot(video: str | Path, model: str = "mesnet_crn", *, dataset: str = "synth_casme_sq",
         root: str | Path | None = None, profile: str | None = None, subject: str | None = None,
         checkpoint: str | Path | None = None, fps: float | None = None, out_dir: str | Path | None = None,
         results_dir: str | Path | None = None, recogniser: str | None = None, progress: bool = True) -> pd.DataFrame:
    """Spot expressions in ``video`` (a video file OpenCV reads, or a folder of frame images) with ``model``.

    The model is the one a LOSO run of ``model`` on ``dataset`` (``root`` for a licensed copy) under
    ``profile`` with seed 0 trained, found in ``results_dir`` (default ``runs/loso``), or the run folder
    ``checkpoint`` (its ``config.json`` names the model, dataset, profile and seed). ``subject`` picks the
    fold whose model is used (default: the dataset's first subject with a finished fold); a video of the
    dataset spotted with its own subject's fold gives exactly that fold's LOSO predictions. ``fps``
    overrides the file's frame rate; a frame folder without it is read at the training dataset's rate.

    Returns one row per interval, ``onset``, ``apex`` (NaN: no model here gives one), ``offset``
    (inclusive frame numbers), ``type``, ``score``, ``onset_s`` and ``offset_s`` (seconds from the first
    frame), also written to ``<out_dir>/<video>_<model>.csv`` with a timeline ``.png`` (``out_dir``
    default ``runs/spot``; paths in ``.attrs``). Raises :class:`SpotError` for a model not trained or a
    wrong checkpoint, :class:`mecore.data.DatasetError` for an unreadable file, an empty folder or a video
    without a detectable face.

    ``recogniser`` (``fr`` or ``fr_basic_inception``) adds ``emotion`` (a MEGC class) and its probability
    ``emotion_p`` to every interval: the recogniser is trained (once, then reloaded) on the ground truth of the same
    fold's training subjects and reads each interval's onset and middle frame (:mod:`mecore.recognise`).
    """
    check_fps(video, fps)
    if recogniser is not None and recogniser not in RECOGNISERS:
        raise SpotError(f"unknown recogniser {recogniser!r}; choose one of {', '.join(RECOGNISERS)}")
    spec = get_model(model)
    if spec.task != "spotting":
        raise SpotError(f"model {spec.name!r} is a {spec.task} model; spotting models: "
                        f"{', '.join(_spotting_models())}")
    run = checkpoint_run(spec, Path(checkpoint), root) if checkpoint is not None else \
        named_run(spec, dataset, root, profile, results_dir)
    subject = finished_subject(run, subject)
    out = Path(out_dir or paths.runs_dir() / "spot")
    try:  # an output folder that cannot be written is refused before the video is decoded and scored
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SpotError(f"{out}: cannot write spot's output ({error.strerror or error}); make the folder writable "
                        f"or pass another --out") from None
    source = user_video(Path(video), run.dataset, fps, progress)
    needed = minimum_frames(spec, run.config)
    if source.n_frames < needed:
        overlap = run.config.get_path("input.clip_overlap")
        why = f" (its clips overlap by {overlap} frames)" if overlap is not None else ""
        raise DatasetError(f"{video}: {source.n_frames} frames; {spec.name} needs at least {needed}{why}; "
                           f"spot a longer video")
    face = require_face(source)
    fold = LosoFold(dataset=replace(run.dataset, spot_videos={source.name: source}), test_subject=subject,
                    train_subjects=[s for s in run.dataset.subjects if s != subject], config=run.config,
                    workdir=checkpoints_folder(run.folder) / safe_name(subject), seed=run.seed, resume=True,
                    progress=progress)
    missing = [path for path in trained_weights(spec, fold) if not path.exists()]
    if missing:
        raise SpotError(f"{missing[0]}: the trained weights of fold {subject!r} of {run.folder} are missing; "
                        f"retrain them with: {run.train_command}")
    record = run_fold(spec, fold.dataset, fold.config, subject, fold.train_subjects, fold.workdir, fold.seed,
                      resume=True, num_threads=None, progress=progress)
    intervals = interval_table(record["predictions"], source)
    if recogniser is not None:
        intervals = with_emotions(intervals, recogniser, run, subject, fold.dataset, source, progress)
    origin = str(Path(video).resolve())
    figure = timeline_figure(intervals, source, f"{spec.name} ({run.dataset.name}, fold {subject})")
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=100)
    try:
        stem = output_stem(out, origin, source.name, spec.name)
        csv_path, figure_path = out / f"{stem}.csv", out / f"{stem}.png"
        provenance = {"source": origin, "model": spec.name, "run": str(run.folder), "subject": subject,
                      "fps": source.fps, "face": face}
        write_atomically(out / f"{stem}.json", json.dumps(provenance, indent=1).encode())  # claims the name first
        write_atomically(csv_path, intervals.to_csv(index=False).encode())
        write_atomically(figure_path, image.getvalue())
    except OSError as error:
        raise SpotError(f"{out}: cannot write spot's output ({error.strerror or error}); make the folder writable "
                        f"or pass another --out") from None
    intervals.attrs.update(csv=str(csv_path), figure=str(figure_path), subject=subject, run=str(run.folder),
                           fps=source.fps, face=face)
    return intervals


def output_stem(out: Path, origin: str, name: str, model: str) -> str:
    """``<name>_<model>``, unless the outputs of that name in ``out`` belong to another source (their ``.json``
    names another path, or they have none): then ``<name>-<8 hex digits of the path's hash>_<model>``."""
    plain = f"{name}_{model}"
    taken = [out / f"{plain}{suffix}" for suffix in (".json", ".csv", ".png")]
    if not any(path.exists() for path in taken):
        return plain
    try:
        if json.loads(taken[0].read_text()).get("source") == origin:
            return plain
    except (OSError, ValueError, AttributeError):
        pass  # outputs of an unknown source (written before provenance files): keep them
    return f"{name}-{hashlib.sha256(origin.encode()).hexdigest()[:8]}_{model}"


def minimum_frames(spec: ModelSpec, config: Config) -> int:
    """The fewest frames a video needs for ``spec`` under ``config``: more than a flow step
    (``input.flow_step``), and for a model that cuts videos into overlapping clips (MESNet:
    ``input.clip_overlap``), more than the overlap (a shorter video would give clips that advance by zero frames)."""
    needed = 2
    for key in ("input.flow_step", "input.clip_overlap"):
        if config.get_path(key) is not None:
            needed = max(needed, int(config.get_path(key)) + 1)
    return needed


def named_run(spec: ModelSpec, dataset: str, root, profile: str | None, results_dir=None) -> TrainedRun:
    """The LOSO run :func:`mecore.loso.run_loso` would use for ``spec`` on ``dataset`` (seed 0)."""
    profile = paths.profile(profile)
    if dataset in DATASET_NAMES and dataset_kind(dataset) != "spotting":
        raise SpotError(f"dataset {dataset!r} holds expression clips, not long videos: a spotting model is trained "
                        f"on a long-video dataset ({', '.join(n for n in DATASET_NAMES if dataset_kind(n) == 'spotting')});"
                        f" pass one as --dataset")
    runs = Path(results_dir or paths.runs_dir() / "loso") / spec.name / dataset
    if not any(runs.glob(f"{profile}-*/folds/*.pkl")):  # checked before loading (or generating) the dataset
        raise SpotError(f"{runs}: no finished LOSO fold of {spec.name} on {dataset} under profile {profile}; train it "
                        f"first: {train_command(spec.name, dataset, profile, root=root)} (or run its notebook)")
    data = load_dataset(dataset, root=root, profile=paths.data_profile(profile))
    config = spec.config(profile, data.name)  # as run_loso
    key, _ = run_key(spec, data, profile, config, 0)
    return TrainedRun(spec, data, profile, config, 0, runs / f"{profile}-{key}")


def checkpoint_run(spec: ModelSpec, folder: Path, root=None) -> TrainedRun:
    """The LOSO run in ``folder`` (``runs/loso/<model>/<dataset>/<profile>-<key>``), checked against ``spec``
    and against the dataset it names (loaded from ``root`` for a licensed copy)."""
    description_file = folder / "config.json"
    if not description_file.is_file():
        raise SpotError(f"{folder}: not a LOSO run folder (no config.json); pass a folder "
                        f"runs/loso/<model>/<dataset>/<profile>-<key> written by python -m mecore loso")
    try:
        description = json.loads(description_file.read_text())
        name, task, dataset, profile = (description[k] for k in ("model", "task", "dataset", "profile"))
        config, seed, content = description["config"], description["seed"], description["dataset_content"]
    except (ValueError, KeyError, TypeError) as error:
        raise SpotError(f"{description_file}: not a LOSO run description ({type(error).__name__}: {error})") from None
    if task != "spotting":
        raise SpotError(f"{folder}: a LOSO run of {name!r}, a {task} model; spot needs a spotting model's run")
    if name != spec.name:
        raise SpotError(f"{folder}: a LOSO run of {name!r}, not of {spec.name!r}; pass --model {name}")
    if description.get("code") != spec.code_version:
        raise SpotError(f"{folder}: trained by another version of {inspect.getsourcefile(spec.run_fold)} (code "
                        f"{description.get('code')}, now {spec.code_version}); spot with the code that trained it "
                        f"(a checkout of that version) or retrain: {train_command(name, dataset, profile, seed)}")
    data = load_dataset(dataset, root=root, profile=paths.data_profile(profile))
    try:
        config = spec.config(profile, data.name).set(Config(config).flat())
    except ConfigError as error:
        raise SpotError(f"{description_file}: its configuration does not fit {spec.name}'s ({error})") from None
    now = run_key(spec, data, profile, config, seed)[1]
    if now["dataset_content"] != content:
        raise SpotError(f"{folder}: trained on another copy of {dataset!r} than {data.root} (annotations or "
                        f"video list differ); pass the root of the copy it was trained on")
    if "frames" in description and description["frames"] != now["frames"]:
        raise SpotError(f"{folder}: trained on other frames of {dataset!r} than those in {data.root} (frame files "
                        f"changed, or another copy); pass the root of the copy it was trained on")
    if "frames" not in description:
        warnings.warn(f"{folder}: a run of an older mecore that did not record its frames; it cannot be checked "
                      f"against the frames in {data.root}", stacklevel=3)
    return TrainedRun(spec, data, profile, config, seed, folder)


def finished_subject(run: TrainedRun, subject: str | None) -> str:
    """The fold to spot with: ``subject`` (its fold must be finished) or, if None, the first subject with a
    finished fold. Raises :class:`SpotError` otherwise: spot never trains."""
    finished = [s for s in run.dataset.subjects if fold_file(run.folder, s).exists()]
    if not finished:
        others = any(run.folder.parent.glob("*/folds/*.pkl"))
        hint = f"; other runs (another configuration or version) are in {run.folder.parent}: pass one as " \
               f"--checkpoint" if others else ""
        raise SpotError(f"{run.folder}: no finished LOSO fold of {run.spec.name} on {run.dataset.name} "
                        f"(profile {run.profile}, seed {run.seed}); train it first: {run.train_command} "
                        f"(or run its notebook){hint}")
    if subject is None:
        return finished[0]
    if subject not in finished:
        problem = f"the fold of {subject!r} is not finished (finish it with: {run.train_command})" \
            if subject in run.dataset.subjects else f"{subject!r} is not a subject of {run.dataset.name}"
        raise SpotError(f"{run.folder}: {problem}; finished folds: {', '.join(finished)}")
    return subject


def trained_weights(spec: ModelSpec, fold: LosoFold) -> list[Path]:
    """The checkpoint files a finished fold of ``spec`` reloads (:attr:`ModelSpec.checkpoints`), checked before
    any input of the video is computed (flows can take minutes); the trainers, resumed with ``resume=True``,
    would refuse a missing checkpoint only after that."""
    return spec.checkpoints(fold.at_most_fps())  # as the fold functions read the dataset (their keys see the frames)


def check_fps(path, fps: float | None) -> None:
    """A given frame rate must be a positive number (checked before any model or video work)."""
    if fps is not None and not (isinstance(fps, (int, float)) and fps > 0):
        raise DatasetError(f"{path}: --fps must be a positive number of frames per second, got {fps}")


def user_video(path: Path, dataset: Dataset, fps: float | None = None, progress: bool = False) -> Video:
    """The :class:`Video` to spot: a video of ``dataset`` (its own frame folder, as LOSO reads it), another
    frame folder, or a video file decoded by :func:`decode_video`."""
    check_fps(path, fps)
    if path.is_dir():
        resolved = path.resolve()
        for video in dataset.videos.values():
            if Path(video.folder).resolve() == resolved:
                return video if fps is None else replace(video, fps=float(fps))
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DatasetError(f"{path}: no frame images ({', '.join(sorted(IMAGE_SUFFIXES))}) in the folder")
        numbering = "name" if all(FRAME_NUMBER.search(p.stem) for p in files) else "position"
        if fps is None:
            fps = float(np.median([video.fps for video in dataset.videos.values()]))
            warnings.warn(f"{path}: a frame folder carries no frame rate; reading it at {dataset.name}'s {fps:g} fps "
                          f"(pass fps= or --fps)", stacklevel=3)
        folder, name = path, path.name
    elif path.is_file():
        folder, file_fps = decode_video(path, progress)
        if fps is None and file_fps is None:
            raise DatasetError(f"{path}: the file gives no frame rate; pass fps= (--fps)")
        fps, numbering, name = fps or file_fps, "name", path.stem
    else:
        raise DatasetError(f"{path}: no such video file or frame folder")
    if name in dataset.videos:  # Dataset.video() would find the dataset's video of that name
        name = f"spot_{name}"
    return Video(dataset=SPOT_DATASET, subject=SPOT_DATASET, name=name, folder=folder, fps=float(fps),
                 numbering=numbering)


def decode_video(path: Path, progress: bool = False) -> tuple[Path, float | None]:
    """Decode ``path`` once, frame by frame, into lossless PNGs ``frame_000000.png`` (frame 0 = the first)
    under ``<cache>/spot/decoded/``; returns the folder and the file's frame rate (None if it gives none).
    A second call on the unchanged file reuses the folder."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    decoded = paths.cache_dir() / SPOT_DATASET / "decoded"
    remove_stale(decoded)  # .<name>.<pid>.tmp folders of decodes killed or stopped by a full disk
    folder = decoded / f"{safe_name(path.stem)}-{key}"
    info = folder / "video.json"
    if not info.is_file():
        _decode_into(path, folder, progress)
    return folder, json.loads(info.read_text())["fps"]


def _decode_into(path: Path, folder: Path, progress: bool) -> None:
    capture = cv2.VideoCapture(str(path))
    temporary = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    try:
        if not capture.isOpened():
            raise DatasetError(f"{path}: OpenCV cannot read this video file (not a video, or a codec this OpenCV "
                               f"build lacks); convert it, e.g. ffmpeg -i {path.name} out.mp4, or pass a frame folder")
        file_fps = capture.get(cv2.CAP_PROP_FPS)
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
        n_frames = 0
        with tqdm(total=total, desc=f"decode {path.name}", unit="frame", disable=not progress) as bar:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                target = temporary / f"frame_{n_frames:06d}.png"
                if not cv2.imwrite(str(target), frame):
                    raise OSError(f"{target}: could not write a decoded frame")
                n_frames += 1
                bar.update(1)
        if n_frames == 0:
            raise DatasetError(f"{path}: OpenCV opened the file but decoded no frame from it")
        rate = file_fps if np.isfinite(file_fps) and file_fps > 0 else None
        (temporary / "video.json").write_text(json.dumps({"source": str(path.resolve()), "fps": rate,
                                                          "frames": n_frames}))
        try:
            os.replace(temporary, folder)
        except OSError:  # another process finished the same file first
            if not (folder / "video.json").is_file():
                raise
    finally:
        capture.release()
        shutil.rmtree(temporary, ignore_errors=True)


def face_candidates(image: np.ndarray) -> np.ndarray:
    """Every face the cropping's detector (:func:`mecore.preprocess.face.detect_face`) weighs in ``image``,
    as ``(x, y, w, h)`` rows in image pixels, left to right."""
    gray = to_gray(image)
    scale = min(1.0, DETECT_MAX_SIDE / max(gray.shape))
    small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
    small = cv2.equalizeHist(small)
    side = max(20, min(small.shape) // 6)
    boxes, _ = _cascade(FACE_CASCADE).detectMultiScale2(small, scaleFactor=1.1, minNeighbors=5, minSize=(side, side))
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / scale
    return boxes[np.argsort(boxes[:, 0], kind="stable")]


def require_face(video: Video, samples: int = FACE_SAMPLES) -> dict:
    """The face the spotter will crop, after checking that OpenCV's frontal cascade finds one in one of
    ``samples`` frames spread over ``video`` (DatasetError otherwise; the models' own cropping then locates it
    precisely). Where a sampled frame shows several faces, a warning says which one is spotted: the
    cascade's most confident (the cropping's choice), by its place from the left and its box.

    Returns ``{"frame", "box": [x, y, w, h], "faces": how many in that frame, "rank": its place from the left
    (1 = leftmost)}``."""
    numbers = video.frame_numbers
    picked = numbers[np.linspace(0, len(numbers) - 1, min(samples, len(numbers))).round().astype(int)]
    chosen, several = None, None
    for number in picked:
        frame = video.frame(number)
        found = detect_face(frame)
        if found is None:
            continue
        candidates = face_candidates(frame)
        rank = int(np.argmin(np.abs(candidates - found).sum(axis=1))) + 1 if len(candidates) else 1
        record = {"frame": int(number), "box": [round(float(v), 1) for v in found],
                  "faces": max(len(candidates), 1), "rank": rank}
        chosen = chosen or record
        if record["faces"] > 1 and several is None:
            several = record
    if chosen is None:
        raise DatasetError(f"{video.folder}: no face found in any of {len(picked)} frames sampled across video "
                           f"{video.name!r} (OpenCV frontal Haar cascade); spotting needs a frontal face")
    if several is not None:
        x, y, w, h = several["box"]
        place = _ordinal_from_left(several["rank"], several["faces"])
        warnings.warn(f"{video.folder}: {several['faces']} faces in frame {several['frame']} of video "
                      f"{video.name!r}; spotting the {place} one (x {x:.0f}-{x + w:.0f}, y {y:.0f}-{y + h:.0f} px, "
                      f"the detector's most confident), not the other(s); crop the video to the face you want "
                      f"spotted", stacklevel=2)
        chosen = {**chosen, "several_faces_in_frame": several["frame"], "faces_there": several["faces"],
                  "rank_there": several["rank"]}
    return chosen


def _ordinal_from_left(rank: int, count: int) -> str:
    if rank == 1:
        return "leftmost" if count > 2 else "left"
    if rank == count:
        return "rightmost" if count > 2 else "right"
    suffix = {2: "nd", 3: "rd"}.get(rank, "th")
    return f"{rank}{suffix} from the left"


def interval_table(predictions: pd.DataFrame, video: Video) -> pd.DataFrame:
    """The model's intervals of ``video`` in the output layout (:data:`OUTPUT_COLUMNS`)."""
    rows = predictions[predictions["video"] == video.name]
    missing = pd.Series(np.nan, index=rows.index)
    table = pd.DataFrame({
        "onset": rows["onset"].astype("int64"),
        "apex": rows["apex"].astype("float64") if "apex" in rows else missing,
        "offset": rows["offset"].astype("int64"),
        "type": rows["type"].astype(str),
        "score": rows["score"].astype("float64") if "score" in rows else missing,
    }).reset_index(drop=True)
    table["onset_s"] = (table["onset"] - video.first_frame) / video.fps
    table["offset_s"] = (table["offset"] - video.first_frame) / video.fps
    return table


def with_emotions(intervals: pd.DataFrame, recogniser: str, run: TrainedRun, subject: str, dataset: Dataset,
                  source: Video, progress: bool) -> pd.DataFrame:
    """``intervals`` of ``source`` classified by ``recogniser`` trained under fold ``subject`` of ``run``'s dataset."""
    model = train_recogniser(recogniser, run.dataset, subject, run.profile, run.seed, progress=progress)
    rows = intervals.assign(video=source.name)
    classified = classify(model, dataset, rows, apex_for(dataset, rows, "predicted"))
    columns = ["emotion", "emotion_p", *(f"p_{name}" for name in model.trained.classes)]
    return pd.concat([intervals, classified[columns]], axis=1)


def timeline_figure(intervals: pd.DataFrame, video: Video, title: str):
    """Spotted intervals along the video's time axis, bar height = score (1 where a model gives none)."""
    from matplotlib.figure import Figure

    duration = video.n_frames / video.fps
    figure = Figure(figsize=(10, 2.6))
    axis = figure.subplots()
    for kind, colour in TYPE_COLOURS.items():
        rows = intervals[intervals["type"] == kind]
        heights = rows["score"].fillna(1.0)
        axis.bar(rows["onset_s"], heights, width=rows["offset_s"] - rows["onset_s"] + 1 / video.fps, align="edge",
                 color=colour, alpha=0.6, edgecolor=colour, label=f"{kind} ({len(rows)})")
    if "emotion" in intervals:
        for row in intervals.itertuples():
            axis.annotate(f"{row.emotion} {row.emotion_p:.2f}", (row.onset_s, 1.0 if pd.isna(row.score) else row.score),
                          xytext=(0, 2), textcoords="offset points", fontsize=6, rotation=90, va="bottom")
    axis.set_xlim(0, duration)
    scores = intervals["score"].dropna().tolist()
    axis.set_ylim(min([0.0, *scores]), max([1.0, *scores]))
    axis.set_xlabel("time (s)")
    axis.set_ylabel("score")
    axis.set_title(f"{video.name}: {len(intervals)} intervals spotted by {title}", fontsize=10)
    axis.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    return figure


def _spotting_models() -> list[str]:
    return [name for name in available_models() if get_model(name).task == "spotting"]

