"""The classical spotting baselines of MESNet Table X: LBP-chi^2 feature difference and MDMD.

Both turn a video of face crops into one score per frame and threshold it at
``mean + p (max - mean)``; neither learns anything, so they are the floor every learned spotter
must beat. Per expression type a frame distance ``k`` sets the time scale (micro / macro).

* **LBP-chi^2** (Moilanen, Zhao and Pietikainen, ICPR 2014): the chi^2 distance between
  the LBP block histograms of the current frame and the average of the frames ``k`` before and
  after it; per frame the mean of the largest third of the 6 x 6 block distances; contrasted by
  subtracting the mean of that value at +-k (negative values set to 0).
* **MDMD** (Wang et al., Neurocomputing 2017; as run by the MEGC 2020 baseline, He et al. 2020,
  Sec. II-B-2): optical flow from the head frame F(i-k) to the current frame F(i) and to the tail
  frame F(i+k); per block, the main direction of the head->current flow among 4 direction bins,
  the mean of the largest third of the magnitude differences of its vectors; per frame the mean of
  the largest third of the block values; the relative difference
  r(i) = d(i) - (d(i-k+1) + d(i+k-1)) / 2.

Intervals (MESNet Sec. IV-C-5: "LBP-chi^2 and MDMD settings is the same as [43]", the MEGC 2020
baseline): ``mode="runs"`` takes runs of frames above the threshold and keeps those whose length
fits the expression type (7-16 / >= 17 frames on CAS(ME)^2, 47-105 / >= 106 on SAMM-LV);
``mode="peaks"`` is Moilanen's original reading, [peak - k, peak + k] around peaks at least k apart.
Frames closer than about 2k to either end of a video get no score (the methods need F(i +- 2k)).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import pandas as pd
from skimage.feature import local_binary_pattern

from mecore import paths
from mecore.data.dataset import Dataset, Video, dataset_family
from mecore.preprocess import CropSpec, optical_flow, preprocess_video
from mecore.preprocess.cache import EntryWriter, entry_path, open_entry, source_fingerprint
from mecore.preprocess.pipeline import run_parallel
from mecore.postprocess import filter_by_length, labels_to_intervals, peak_intervals, relative_threshold

METHODS = ("lbp_chi2", "mdmd")
# MEGC 2020 baseline (He et al. 2020, Sec. II-B-3; evaluation.md): k per type and kept lengths in frames.
MEGC2020_BASELINE = {
    "casme_sq": {"fps": 30.0, "k": {"micro": 12, "macro": 39}, "lengths": {"micro": (7, 16), "macro": (17, None)}},
    "samm_lv": {"fps": 200.0, "k": {"micro": 80, "macro": 260}, "lengths": {"micro": (47, 105), "macro": (106, None)}},
}
LBP_POINTS, LBP_RADIUS = 8, 1  # LBP(8, 1) with the 59-bin uniform (u2) mapping
LBP_BINS = LBP_POINTS * (LBP_POINTS - 1) + 3


def megc2020_parameters(dataset: str, fps: float | None = None) -> dict:
    """``k`` and length limits of the MEGC 2020 baseline for a dataset name (``casme_sq``,
    ``samm_lv``, or their ``synth_`` twins), scaled to ``fps`` when it differs from the dataset's."""
    family = dataset_family(dataset)
    if family not in MEGC2020_BASELINE:
        raise ValueError(f"no MEGC 2020 baseline parameters for {dataset!r}; known: {', '.join(MEGC2020_BASELINE)}")
    reference = MEGC2020_BASELINE[family]
    scale = 1.0 if fps is None else fps / reference["fps"]
    k = {t: max(1, int(round(v * scale))) for t, v in reference["k"].items()}
    lengths = {t: (max(1, int(round(lo * scale))), None if hi is None else int(round(hi * scale)))
               for t, (lo, hi) in reference["lengths"].items()}
    return {"k": k, "lengths": lengths}


# ------------------------------------------------------------------------- blocks
def _blocks(image: np.ndarray, grid: int) -> np.ndarray:
    """(grid * grid, pixels) values of a centred grid x grid block split (edge remainders dropped)."""
    h, w = image.shape[:2]
    bh, bw = h // grid, w // grid
    y0, x0 = (h - bh * grid) // 2, (w - bw * grid) // 2
    trimmed = image[y0:y0 + bh * grid, x0:x0 + bw * grid]
    blocks = trimmed.reshape(grid, bh, grid, bw, *image.shape[2:]).swapaxes(1, 2)
    return blocks.reshape(grid * grid, bh * bw, *image.shape[2:])


def _mean_of_largest_third(values: np.ndarray) -> np.ndarray:
    """Mean of the largest ceil(n / 3) values along the last axis."""
    top = int(np.ceil(values.shape[-1] / 3))
    return -np.mean(np.sort(-values, axis=-1)[..., :top], axis=-1)


# -------------------------------------------------------------------------- LBP-chi^2
def lbp_histograms(crops: np.ndarray, grid: int = 6) -> np.ndarray:
    """(N, grid * grid, 59) normalised LBP(8, 1) u2 histograms of every block of every grey crop."""
    histograms = np.empty((len(crops), grid * grid, LBP_BINS), np.float32)
    offsets = (np.arange(grid * grid) * LBP_BINS)[:, None]
    for i, crop in enumerate(crops):
        codes = _blocks(local_binary_pattern(crop, LBP_POINTS, LBP_RADIUS, method="nri_uniform").astype(np.int64), grid)
        counts = np.bincount((codes + offsets).ravel(), minlength=grid * grid * LBP_BINS)
        histograms[i] = counts.reshape(grid * grid, LBP_BINS) / codes.shape[1]
    return histograms


def lbp_chi2_curve(histograms: np.ndarray, k: int) -> np.ndarray:
    """Moilanen et al. 2014 contrasted feature difference C(i) per frame (NaN where undefined).

    ``histograms``: :func:`lbp_histograms` of the video's crops. F(i) = mean of the largest third
    of the block chi^2 distances between frame i and the average of frames i - k and i + k
    (the paper's M = 1/3 of the blocks); C(i) = max(F(i) - (F(i - k) + F(i + k)) / 2, 0)
    defined for 2k <= i < N - 2k.
    """
    n = len(histograms)
    curve = np.full(n, np.nan)
    if n <= 4 * k:
        return curve
    current, average = histograms[k:n - k], (histograms[:n - 2 * k] + histograms[2 * k:]) / 2
    total = current + average
    chi2 = ((current - average) ** 2 / np.where(total > 0, total, 1)).sum(axis=-1)
    feature = np.full(n, np.nan)
    feature[k:n - k] = _mean_of_largest_third(chi2)
    contrast = feature[2 * k:n - 2 * k] - (feature[k:n - 3 * k] + feature[3 * k:n - k]) / 2
    curve[2 * k:n - 2 * k] = np.maximum(contrast, 0)
    return curve


# ------------------------------------------------------------------------------- MDMD
def main_directional_difference(flow_hc: np.ndarray, flow_ht: np.ndarray, grid: int = 6,
                                n_directions: int = 4) -> float:
    """MDMD frame value d(i) from the head->current and head->tail flows (MEGC 2020 baseline Eqs.).

    Per block, flow vectors of head->current are binned into ``n_directions`` equal sectors; the
    main direction is the fullest sector; for its pixels the differences rho_HC - rho_HT are sorted
    and the largest third averaged. The frame value is the mean of the largest third of the block
    values (our choice of s = 1/3 of the blocks, as Moilanen's M; the papers leave s open).
    """
    rho_hc, theta = cv2.cartToPolar(flow_hc[..., 0], flow_hc[..., 1])
    rho_ht, _ = cv2.cartToPolar(flow_ht[..., 0], flow_ht[..., 1])
    sector = _blocks(np.minimum((theta / (2 * np.pi) * n_directions).astype(np.int64), n_directions - 1), grid)
    difference = _blocks(rho_hc - rho_ht, grid)
    counts = (sector[..., None] == np.arange(n_directions)).sum(axis=1)
    in_main = sector == counts.argmax(axis=1)[:, None]
    ordered = -np.sort(-np.where(in_main, difference, -np.inf), axis=1)
    cumulative = np.cumsum(np.where(np.isfinite(ordered), ordered, 0), axis=1)
    top = np.ceil(in_main.sum(axis=1) / 3).astype(np.int64)
    block_values = cumulative[np.arange(len(top)), top - 1] / top
    return float(_mean_of_largest_third(block_values))


def mdmd_curve(crops: np.ndarray, k: int, grid: int = 6, n_directions: int = 4,
               flow_method: str = "dis") -> np.ndarray:
    """MDMD relative difference r(i) per frame (NaN where undefined), Wang et al. 2017.

    d(i) from :func:`main_directional_difference` with head frame i - k and tail frame i + k
    (defined for k <= i < N - k); r(i) = d(i) - (d(i - k + 1) + d(i + k - 1)) / 2, defined for
    2k - 1 <= i < N - 2k + 1. Flow is :func:`mecore.preprocess.optical_flow` (the baseline used
    RLOF, which OpenCV's contrib build offers only for colour images; DIS is our default).
    """
    n = len(crops)
    curve = np.full(n, np.nan)
    if n <= 4 * k - 2:
        return curve
    d = np.full(n, np.nan)
    for i in range(k, n - k):
        head = crops[i - k]
        d[i] = main_directional_difference(optical_flow(head, crops[i], flow_method),
                                           optical_flow(head, crops[i + k], flow_method), grid, n_directions)
    i = np.arange(2 * k - 1, n - 2 * k + 1)
    curve[i] = d[i] - (d[i - k + 1] + d[i + k - 1]) / 2
    return curve


# --------------------------------------------------------------------- curves -> intervals
@dataclass
class VideoCurves:
    """A baseline's per-frame curve of one video for each expression type, and the k used."""

    video: str
    frame_numbers: np.ndarray
    curves: dict[str, np.ndarray]
    k: dict[str, int]
    lengths: dict[str, tuple[int, int | None]] = field(default_factory=dict)


def video_curves(crops: np.ndarray, frame_numbers, method: str, k: dict[str, int], video: str = "",
                 lengths: dict | None = None, grid: int = 6, flow_method: str = "dis") -> VideoCurves:
    """Curves of ``method`` ("lbp_chi2" or "mdmd") for each type in ``k`` on grey ``crops`` (N, H, W)."""
    if method not in METHODS:
        raise ValueError(f"unknown baseline {method!r}; choose one of {METHODS}")
    crops = np.asarray(crops)
    if method == "lbp_chi2":
        histograms = lbp_histograms(crops, grid)
        curves = {t: lbp_chi2_curve(histograms, kt) for t, kt in k.items()}
    else:
        curves = {t: mdmd_curve(crops, kt, grid, flow_method=flow_method) for t, kt in k.items()}
    return VideoCurves(video, np.asarray(frame_numbers), curves, dict(k), dict(lengths or {}))


def dataset_curves(dataset: Dataset, method: str, crop: CropSpec = CropSpec(), grid: int = 6,
                   flow_method: str = "dis", cache: bool = True, videos=None, workers: int = 1,
                   progress: bool = False) -> list[VideoCurves]:
    """:func:`video_curves` of every video of a long-video dataset with the MEGC 2020 baseline k.

    Faces are cropped by :func:`mecore.preprocess.preprocess_video` and the curves are kept in the same
    disk cache (when ``cache``), so LOSO folds and reruns compute each video's curves once; ``k``
    and the length limits come from :func:`megc2020_parameters` at the video's frame rate.
    ``workers`` > 1 runs videos in that many single-threaded processes.
    """
    names = sorted(dataset.videos) if videos is None else list(videos)
    jobs = [(dataset.video(name), dataset.name, method, crop, grid, flow_method, cache) for name in names]
    return run_parallel(_video_curves_job, jobs, workers, f"{method} {dataset.name}", progress)


def _video_curves_job(video: Video, dataset_name: str, method: str, crop: CropSpec, grid: int,
                      flow_method: str, cache: bool) -> VideoCurves:
    parameters = megc2020_parameters(dataset_name, video.fps)
    key = {"method": method, "crop": crop, "grid": grid, "flow_method": flow_method, "k": parameters["k"]}
    path = entry_path(paths.cache_dir(), video, "curves", key)
    stored = open_entry(path, "curves", key, source_fingerprint(video)) if cache else None
    if stored is not None:
        curves = dict(zip(parameters["k"], np.array(stored)))
        return VideoCurves(video.name, np.asarray(video.frame_numbers), curves, dict(parameters["k"]),
                           dict(parameters["lengths"]))
    crops = preprocess_video(video, crop, cache=cache, progress=False)["crops"]
    result = video_curves(crops, video.frame_numbers, method, parameters["k"], video.name, parameters["lengths"],
                          grid, flow_method)
    if cache:
        table = np.stack([result.curves[t] for t in parameters["k"]]).astype(np.float64)
        with EntryWriter(path, table.shape, table.dtype, "curves", key, source_fingerprint(video)) as writer:
            writer.write(table)
    return result


def spot_intervals(curves: VideoCurves | list[VideoCurves], p: float, mode: str = "runs",
                   length_filter: bool = True) -> pd.DataFrame:
    """Spotted intervals (video, onset, offset, type, score) from baseline curves at threshold ``p``.

    Per video and type the threshold is mean + p (max - mean) of the defined part of the curve
    (Moilanen et al. 2014; MDMD). ``mode="runs"``: runs of frames above it, then (if
    ``length_filter``) the type's length limits (MEGC 2020 baseline); ``mode="peaks"``: peaks at
    least k apart, [peak - k, peak + k]. The score of an interval is its highest curve value.
    """
    if mode not in ("runs", "peaks"):
        raise ValueError(f"mode must be 'runs' or 'peaks', got {mode!r}")
    tables = []
    for item in ([curves] if isinstance(curves, VideoCurves) else curves):
        for expression_type, curve in item.curves.items():
            defined = np.isfinite(curve)
            if not defined.any():
                continue
            values, frames = curve[defined], item.frame_numbers[defined]
            k = item.k[expression_type]
            if mode == "peaks":  # clipped to the video, not to its scored part
                spotted = peak_intervals(values, frames, p, k)
                apex = spotted.pop("apex")
                spotted["onset"] = np.maximum(apex - k, item.frame_numbers[0])
                spotted["offset"] = np.minimum(apex + k, item.frame_numbers[-1])
            else:
                spotted = labels_to_intervals(values > relative_threshold(values, p), frames)
                starts, ends = np.searchsorted(frames, spotted["onset"]), np.searchsorted(frames, spotted["offset"])
                spotted["score"] = [values[s:e + 1].max() for s, e in zip(starts, ends)]
            spotted.insert(0, "video", item.video)
            spotted["type"] = expression_type
            if mode == "runs" and length_filter and item.lengths:
                spotted = filter_by_length(spotted, {expression_type: item.lengths[expression_type]})
            tables.append(spotted)
    columns = ["video", "onset", "offset", "type", "score"]
    return pd.concat(tables, ignore_index=True)[columns] if tables else pd.DataFrame(columns=columns)
