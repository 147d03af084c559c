"""Preprocess videos in one streamed pass (crop, LCN, k-frame flows), cached per video, parallel over videos."""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
from tqdm.auto import tqdm

from mecore import paths
from mecore.data.dataset import Dataset, DatasetError, Video
from mecore.preprocess.cache import EntryWriter, entry_path, open_entry, source_fingerprint
from mecore.preprocess.face import CropSpec, crop_face, detect_face, iter_face_crops, square_box, to_gray
from mecore.preprocess.flow import FLOW_SETTINGS, flow_with_strain, optical_flow, window_flows
from mecore.preprocess.lcn import LCN_SIGMA, LCN_TRUNCATE, lcn


REAL = np.dtype(np.float16)  # real-valued entries (LCN, flows): half the bytes of float32, ~3 significant digits
FLOW_CHANNELS = {"xy": 2, "xys": 3}  # dx, dy (what the spotters read); dx, dy, optical strain


def entry_plan(n_frames: int, crop: CropSpec, lcn_on: bool = False, flow_steps: Sequence[int] = (),
               flow_method: str = "dis", lcn_sigma: float = LCN_SIGMA, flow_channels: str = "xys",
               flow_size: int | None = None) -> dict[str, tuple[str, dict, tuple, np.dtype]]:
    """Output name -> (cache kind, parameters that change it, shape, dtype) of :func:`preprocess_video`:
    what a video's entries will hold, known before anything is computed (``mecore plan`` sizes caches with it)."""
    face_shape = (crop.size, crop.size) if crop.gray else (crop.size, crop.size, 3)
    spec = crop.cache_key()
    plan = {"crops": ("crops", {"crop": spec}, (n_frames, *face_shape), np.dtype(np.uint8))}
    if lcn_on:
        plan["lcn"] = ("lcn", {"crop": spec, "sigma": lcn_sigma, "truncate": LCN_TRUNCATE, "dtype": REAL.name},
                       (n_frames, *face_shape), REAL)
    if flow_channels not in FLOW_CHANNELS:
        raise ValueError(f"unknown flow channels {flow_channels!r}; choose one of {sorted(FLOW_CHANNELS)}")
    size = crop.size if flow_size is None else int(flow_size)
    if not 1 <= size <= crop.size:
        raise ValueError(f"flow_size must be between 1 and the crop size {crop.size}, got {flow_size}")
    for k in flow_steps:
        if k < 1:
            raise ValueError(f"flow steps must be >= 1, got {k}")
        plan[f"flow{k}"] = (f"flow{k}", {"crop": spec, "k": k, "method": flow_method,
                                         "settings": FLOW_SETTINGS[flow_method], "channels": flow_channels,
                                         "size": size, "dtype": REAL.name},
                            (max(n_frames - k, 0), size, size, FLOW_CHANNELS[flow_channels]), REAL)
    return plan


def area_mean(rows: np.ndarray, size: int) -> np.ndarray:
    """Rows (n, H, W[, C]) averaged over areas to (n, size, size[, C]) in float32, with PyTorch's
    ``adaptive_avg_pool2d`` windows (``floor(i H / size)`` to ``ceil((i + 1) H / size)``), so a cache entry
    pooled here equals pooling the full-size rows with torch; no-op at the same size."""
    out = np.asarray(rows, dtype=np.float32)
    for axis in (1, 2):
        n_in = out.shape[axis]
        if n_in == size:
            continue
        starts = (np.arange(size) * n_in) // size
        ends = -((-(np.arange(1, size + 1) * n_in)) // size)
        total = np.cumsum(out, axis=axis, dtype=np.float64)
        total = np.concatenate([np.zeros_like(total.take([0], axis=axis)), total], axis=axis)
        shape = [1] * out.ndim
        shape[axis] = size
        out = ((total.take(ends, axis=axis) - total.take(starts, axis=axis))
               / (ends - starts).reshape(shape)).astype(np.float32)
    return out


def _iter_entry(path: Path, chunk: int) -> Iterator[tuple[None, np.ndarray]]:
    """Read a cached array chunk by chunk with plain reads, so its pages do not stay mapped into this process."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        row = int(np.prod(shape[1:]))
        for start in range(0, shape[0], chunk):
            count = min(chunk, shape[0] - start)
            yield None, np.fromfile(f, dtype, count * row).reshape(count, *shape[1:])


def read_chunks(array: np.ndarray, chunk: int = 1024) -> Iterator[np.ndarray]:
    """``array`` (a cache entry from :func:`preprocess_video` or any array) ``chunk`` rows at a time, as copies;
    an entry is read with plain file reads, so a long video's pages never stay mapped into the process."""
    whole_entry = (isinstance(array, np.memmap) and str(array.filename).endswith(".npy")
                   and np.load(array.filename, mmap_mode="r").shape == array.shape)
    if whole_entry and len(array):
        return (rows for _, rows in _iter_entry(Path(array.filename), chunk))
    return (np.array(array[start:start + chunk]) for start in range(0, max(len(array), 1), chunk))


def preprocess_video(source: Video | np.ndarray, crop: CropSpec = CropSpec(), *, lcn_faces: bool = False,
                     flow_steps: Sequence[int] = (), flow_method: str = "dis", lcn_sigma: float = LCN_SIGMA,
                     flow_channels: str = "xys", flow_size: int | None = None,
                     cache: bool = True, cache_root: Path | str | None = None, chunk: int = 256,
                     progress: bool = True) -> dict[str, np.ndarray]:
    """Face crops, optionally their LCN (Yap et al. Eq. 1) and flows from frame t to t + k, in one streamed pass.

    Returns ``{"crops": (N, S, S) uint8, "lcn": (N, S, S) float16, "flow<k>": (N - k, F, F, C) float16}``
    (LCN and flows only when asked for; colour crops have a trailing 3). Row ``i`` of ``flow<k>`` is the flow
    from the i-th frame to the (i + k)-th (``source.frame_numbers``), computed on the grey crops, with channels
    dx, dy (``flow_channels="xy"``) or dx, dy, optical strain (``"xys"``), area-averaged from S to
    ``flow_size`` = F px (:func:`area_mean`; default S). Real-valued entries are stored as float16: a model
    reads only the channels and the size it needs, at a third of the float32 bytes or less.
    For a Video with ``cache=True`` the results are read-only memory maps of cache
    entries under ``cache_root`` (default ``mecore.paths.cache_dir()``); only missing or invalid entries are
    computed, and memory holds one chunk of frames whatever the video length (read them row range by row
    range with :class:`mecore.inputs.Rows`). An array source (N, H, W[, 3]) is processed in memory.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    n_frames = source.n_frames if isinstance(source, Video) else len(source)
    plan = entry_plan(n_frames, crop, lcn_faces, tuple(flow_steps), flow_method, lcn_sigma, flow_channels, flow_size)
    use_cache = cache and isinstance(source, Video)
    results, paths_todo, fingerprint = {}, {}, None
    if use_cache:
        root = Path(cache_root) if cache_root is not None else paths.cache_dir()
        fingerprint = source_fingerprint(source)
        for name, (kind, params, _, _) in plan.items():
            path = entry_path(root, source, kind, params)
            found = open_entry(path, kind, params, fingerprint)
            if found is None:
                paths_todo[name] = path
            else:
                results[name] = found
    else:
        paths_todo = dict.fromkeys(plan)
    if not paths_todo:
        return results

    with ExitStack() as stack:
        sinks = {}
        for name, path in paths_todo.items():
            kind, params, shape, dtype = plan[name]
            sinks[name] = (stack.enter_context(EntryWriter(path, shape, dtype, kind, params, fingerprint))
                           if use_cache else [])
        chunks = (_iter_entry(results["crops"].filename, chunk) if "crops" in results
                  else iter_face_crops(source, crop, chunk))
        steps = [int(name[4:]) for name in sinks if name.startswith("flow")]
        tail = None
        bar = stack.enter_context(tqdm(total=n_frames, unit="frame", disable=not progress,
                                       desc=f"preprocess {getattr(source, 'name', 'frames')}"))
        for _, crops in chunks:
            outputs = {"crops": crops}
            if "lcn" in sinks:
                outputs["lcn"] = np.stack([lcn(face, lcn_sigma) for face in crops])
            if steps:
                grey = crops if crop.gray else np.stack([to_gray(face) for face in crops])
                window = grey if tail is None else np.concatenate([tail, grey])
                first_new = 0 if tail is None else len(tail)
                for k in steps:
                    _, _, shape, _ = plan[f"flow{k}"]
                    flows = window_flows(window, first_new, k, flow_method)[..., :shape[-1]]
                    outputs[f"flow{k}"] = area_mean(flows, shape[1]) if len(flows) else flows
                tail = window[-max(steps):]
            for name, sink in sinks.items():
                rows = outputs[name].astype(plan[name][3], copy=False)
                (sink.write if use_cache else sink.append)(rows)
            bar.update(len(crops))
    for name, sink in sinks.items():
        if use_cache:
            results[name] = np.load(sink.path, mmap_mode="r")
        else:
            _, _, shape, dtype = plan[name]
            results[name] = np.concatenate(sink) if sink else np.empty(shape, dtype)
    return {name: results[name] for name in plan}


def pair_flow(onset: np.ndarray, apex: np.ndarray, crop: CropSpec = CropSpec(size=128), method: str = "tvl1",
              out_size: int = 28) -> np.ndarray:
    """Flow from an onset frame to an apex frame on the face, resized to out_size x out_size: (out, out, 3).

    Zhou et al. (FR) Sec. 3.1 / 4.2: faces cropped out of onset and apex, TV-L1 flow between them, the flow
    components resized to 28x28. Channels dx, dy, optical strain (FR uses the first two; STSTNet all three).

    Choices where the paper is silent: the face box is detected on the onset frame and reused for the apex
    (a box per frame would add detector jitter as fake global motion to a sub-pixel signal); flow is computed on
    ``crop.size`` faces (default 128) and then shrunk by area averaging; the values stay in pixels of the crop
    (the paper resizes the flow images and does not rescale them).
    """
    box = detect_face(onset)
    if box is None:
        raise DatasetError("no face found in the onset frame (OpenCV frontal Haar cascade)")
    box = square_box(box, crop.margin)
    faces = [crop_face(frame, box, crop.size, 0.0, gray=True) for frame in (onset, apex)]
    motion = flow_with_strain(optical_flow(faces[0], faces[1], method))
    return cv2.resize(motion, (out_size, out_size), interpolation=cv2.INTER_AREA)


def onset_apex_flow(video: Video, onset: int, apex: int, crop: CropSpec = CropSpec(size=128),
                    method: str = "tvl1", out_size: int = 28, cache: bool = True,
                    cache_root: Path | str | None = None, compute: bool = True) -> np.ndarray | None:
    """:func:`pair_flow` between frames ``onset`` and ``apex`` of ``video``, cached like the per-video arrays
    (``compute=False``: the cached flow, or None where there is none)."""
    params = {"crop": crop.cache_key(), "method": method, "settings": FLOW_SETTINGS[method], "onset": int(onset),
              "apex": int(apex), "out_size": out_size}
    if cache:
        root = Path(cache_root) if cache_root is not None else paths.cache_dir()
        path = entry_path(root, video, "onset_apex", params)
        fingerprint = source_fingerprint(video)
        found = open_entry(path, "onset_apex", params, fingerprint)
        if found is not None:
            return np.array(found[0])
    if not compute:
        return None
    try:
        motion = pair_flow(video.frame(onset), video.frame(apex), crop, method, out_size)
    except DatasetError as error:
        raise DatasetError(f"{video.folder}: video {video.name!r}, onset {onset} / apex {apex}: {error}") from None
    if cache:
        with EntryWriter(path, (1, *motion.shape), motion.dtype, "onset_apex", params, fingerprint) as writer:
            writer.write(motion[None])
    return motion


def _single_thread() -> None:
    """Worker initialiser: one OpenCV thread per worker so that workers do not fight over the cores.

    torch is never imported by these workers (spawned, they import only mecore.preprocess), so it has no
    threads to limit.
    """
    cv2.setNumThreads(1)


def _video_entries(video: Video, crop: CropSpec, options: dict) -> dict[str, str]:
    return {name: str(array.filename)
            for name, array in preprocess_video(video, crop, cache=True, progress=False, **options).items()}


def _onset_apex_job(video: Video, onset: int, apex: int, options: dict) -> np.ndarray:
    return onset_apex_flow(video, onset, apex, **options)


def run_parallel(function, jobs: list[tuple], workers: int, desc: str, progress: bool) -> list:
    """``function(*job)`` for every job, in order, over at most ``workers`` spawned single-threaded processes."""
    if workers <= 1 or len(jobs) <= 1:
        return [function(*job) for job in tqdm(jobs, desc=desc, disable=not progress)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_single_thread) as pool:
        futures = [pool.submit(function, *job) for job in jobs]
        return [future.result() for future in tqdm(futures, desc=desc, disable=not progress)]


def preprocess_dataset(dataset: Dataset, crop: CropSpec = CropSpec(), *, workers: int = 2, progress: bool = True,
                       videos: Sequence[str] | None = None, **options) -> dict[str, dict[str, np.ndarray]]:
    """:func:`preprocess_video` (cached) for every video of ``dataset``, ``workers`` videos at a time.

    ``options`` are preprocess_video's (``lcn_faces``, ``flow_steps``, ``flow_method``, ``cache_root``, ...).
    Returns video name -> the memory-mapped outputs.
    """
    names = list(dataset.videos) if videos is None else list(videos)
    jobs = [(dataset.video(name), crop, options) for name in names]
    entries = run_parallel(_video_entries, jobs, workers, f"preprocess {dataset.name}", progress)
    return {name: {key: np.load(path, mmap_mode="r") for key, path in found.items()}
            for name, found in zip(names, entries)}


def onset_apex_flows(dataset: Dataset, rows=None, *, workers: int = 2, progress: bool = True,
                     **options) -> np.ndarray:
    """:func:`onset_apex_flow` for annotation rows (default: all of ``dataset.annotations``): (n, out, out, 3).

    Every row needs an apex; rows without one (SMIC) must have it estimated first (Zhou et al. Eq. 1).
    """
    rows = dataset.annotations if rows is None else rows
    missing = rows[rows["apex"].isna()]
    if len(missing):
        first = missing.iloc[0]
        raise DatasetError(f"{dataset.root}: {len(missing)} annotation rows have no apex frame, first: video "
                           f"{first['video']!r} onset {first['onset']}; estimate the apex before the flow")
    jobs = [(dataset.video(row.video), int(row.onset), int(row.apex), options) for row in rows.itertuples()]
    flows = [None] * len(jobs)
    if workers > 1 and options.get("cache", True):  # cached flows are read here; only the rest go to the workers
        flows = [onset_apex_flow(*job[:3], **job[3], compute=False) for job in jobs]
    missing = [i for i, flow in enumerate(flows) if flow is None]
    computed = run_parallel(_onset_apex_job, [jobs[i] for i in missing], workers, f"onset-apex flow {dataset.name}",
                            progress)
    for i, flow in zip(missing, computed):
        flows[i] = flow
    return np.stack(flows)
