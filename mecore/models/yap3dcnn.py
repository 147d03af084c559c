"""Yap et al. 2022: two-stream 3D-CNN with temporal oriented reference frames and LCN (spotting).

Each frame ``t`` is compared with ``t - s_micro`` (stream 1) and ``t - s_macro`` (stream 2) (Sec. 2.2, Fig. 1).
Both pairs are Local-Contrast-Normalised (Sec. 2.1, Eq. 1) and go through the *same* stream: three blocks of
depthwise separable 3D convolution + batch norm + dropout, global average pooling and a residual dense layer. Two
sigmoid nodes, "micro present" and "macro present" (multi-label); loss Eq. 2, computed from the logits.

Training (Sec. 3.3, Table 3): random skips per sample, augmentation (contrast, gamma, gain, flip, rotation),
early stopping after 5 epochs, LOSO. Testing: k-th frame skips of Moilanen et al., Table 3's published or manual
("Ours**", Tables 5-7) skips, or given ones (``test.skips``), then intervals by the automated (Sec. 4.1) or
manual (Sec. 4.2) IoU method. Table 3's per-dataset values are the ``casme_sq`` / ``samm_lv`` dataset overrides.

Choices where the paper is silent:

* **Eq. 2 sign.** As printed it rewards wrong positives; we minimise the weighted binary cross-entropy the text
  describes, ``-sum_i M_i [W t_i log s_i + (1 - W)(1 - t_i) log(1 - s_i)]``, averaged over the batch.
* **Reference direction.** ``skip`` frames *before* ``t`` (clamped to the first frame): causal.
* **Layers.** Kernels 3x3x3, padding 1; the depthwise convolution strides 2 in space (no pooling named); ReLU
  after batch norm; dropout 0.25; filters 32/64/128 (none given); first block depth multiplier 8 (one grey
  channel), later 1. Residual dense ``relu(x + fc2(relu(fc1(x))))`` in the shared stream; outputs read both.
* **Input.** Grey faces, one fixed (median Haar) box per video, registered to the first crop (affine ECC) in place
  of OpenFace's per-frame alignment (notebook 11). LCN follows the augmentation (Fig. 2), so it is computed per
  sample from the cached crops.
* **Optimiser.** Not named: ``paper`` SGD, momentum 0.9, Table 3's learning rates; other profiles Adam at 1e-3.
* **Validation and thresholds.** Sec. 3.3 validates but names no validation set. Training subjects are held out
  for early stopping (last weights kept, as Keras) and the ROC thresholds of both IoU methods, never test labels:
  the subject after the test subject plus, for a type it has none of, the next subject that has one (subjects
  differ widely, Sec. 3.2). A type no choice can hold is warned about and recorded (thresholds 1: not spotted).
* **k-th frame rule.** k = round(mean(offset - onset) / 2) on the training annotations: durations count
  ``offset - onset`` frames, the count with which Table 2's means give Table 3's 37 / 217 and 6 / 19
  (``offset - onset + 1`` would give 18, not 19, for CAS(ME)^2's MaE).
* **Manual IoU.** Savitzky-Golay window 2k + 1, order 2, merge gap k, ROC threshold on the validation videos.
* **Mixed precision** (float16 autocast, CUDA only): on in every profile, as Eq. 2 is computed in float32 from the
  logits (a float16 probability rounds to 1 above a logit of about 8.3, where a clamp passes no gradient).

Profiles: ``paper`` = Table 3 (112 px, every frame, batch 16, SGD); ``default`` keeps the architecture and recipe
with Adam, 48 px crops, one random frame per 8 training frames (per 24 on SAMM-LV at 200 fps), at most 6 epochs
(a LOSO run in minutes on two CPU cores; notebook 11); ``smoke`` trains a few batches (tests). Ablations (Table 7): :data:`ABLATIONS`.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Mapping

import cv2
import numpy as np
import pandas as pd
import torch
from torch import nn

from mecore.config import Config, cite
from mecore.data.dataset import Dataset
from mecore.data.summary import expression_frames
from mecore.inputs import Rows, crop_rows
from mecore.loso import load_frame_scores, with_frame_scores  # noqa: F401  (load_frame_scores: re-exported for notebooks)
from mecore.metrics import roc_threshold
from mecore.models import LosoFold, ModelSpec, count_parameters, register  # noqa: F401  (notebooks import it here)
from mecore.preprocess import CropSpec, lcn
from mecore.postprocess import (automated_iou_intervals, butterworth_smooth, intervals_to_labels, manual_iou_intervals,
                             normalise, savgol_smooth)
from mecore.train import OptimizerSpec, TrainConfig, fit, predict

TYPES = ("micro", "macro")
SKIP_CHOICES = ("kth", "table3_kth", "table3_manual", "given")  # test.skips (choose_skips)
PAPER_M = (0.1, 0.9)  # Sec. 2.2: M_0 (micro), M_1 (macro)
AUGMENT_RANGE = (0.5, 1.5)  # Sec. 3.3: contrast, gamma and gain
ROTATION_DEGREES = 10.0


# ------------------------------------------------------------------------------------ network
class SeparableConv3d(nn.Sequential):
    """Depthwise 3x3x3 convolution (``depth_multiplier`` maps per input channel, spatial stride 2)
    followed by a pointwise 1x1x1 convolution (MobileNet, Yap Sec. 2.2). ``separable=False`` builds
    the regular convolution it replaces (for the parameter comparison)."""

    def __init__(self, in_channels: int, out_channels: int, depth_multiplier: int = 1, bias: bool = True,
                 separable: bool = True):
        stride, kernel = (1, 2, 2), 3
        if separable:
            middle = in_channels * depth_multiplier
            super().__init__(
                nn.Conv3d(in_channels, middle, kernel, stride, padding=1, groups=in_channels, bias=False),
                nn.Conv3d(middle, out_channels, 1, bias=bias))
        else:
            super().__init__(nn.Conv3d(in_channels, out_channels, kernel, stride, padding=1, bias=bias))


class ConvBlock(nn.Sequential):
    """Depthwise separable 3D convolution, batch normalisation, ReLU, dropout (Fig. 1)."""

    def __init__(self, in_channels: int, out_channels: int, depth_multiplier: int, batch_norm: bool,
                 dropout: float, separable: bool):
        super().__init__(
            SeparableConv3d(in_channels, out_channels, depth_multiplier, bias=not batch_norm, separable=separable),
            nn.BatchNorm3d(out_channels) if batch_norm else nn.Identity(),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout))


class ResidualDense(nn.Module):
    """Two fully connected layers with a skip connection (Sec. 2.2, after ResNet)."""

    def __init__(self, width: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.fc2(torch.relu(self.fc1(x))))


class Stream(nn.Module):
    """One stream: three convolutional blocks, global average pooling, the residual dense layer."""

    def __init__(self, filters=(32, 64, 128), first_depth_multiplier: int = 8, batch_norm: bool = True,
                 dropout: float = 0.25, separable: bool = True):
        super().__init__()
        channels = (1, *filters)
        self.blocks = nn.Sequential(*[
            ConvBlock(channels[i], channels[i + 1], first_depth_multiplier if i == 0 else 1, batch_norm, dropout,
                      separable) for i in range(len(filters))])
        self.dense = ResidualDense(filters[-1])

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        return self.dense(self.blocks(pair).mean(dim=(2, 3, 4)))


class Yap3DCNN(nn.Module):
    """The two-stream network of Fig. 1: ``model(micro_pair, macro_pair)`` -> (batch, 2) logits of the two
    sigmoid output nodes (Sec. 2.2, "Output Layer"); :meth:`scores` applies the sigmoid.

    Each pair is (batch, 1, 2, H, W): the frame and its reference frame. One :class:`Stream` (one
    parameter set) processes both pairs; column 0 of the output is "micro present", column 1 "macro".
    """

    def __init__(self, filters=(32, 64, 128), first_depth_multiplier: int = 8, batch_norm: bool = True,
                 dropout: float = 0.25, separable: bool = True):
        super().__init__()
        self.stream = Stream(tuple(filters), first_depth_multiplier, batch_norm, dropout, separable)
        self.output = nn.Linear(2 * filters[-1], len(TYPES))

    def forward(self, micro_pair: torch.Tensor, macro_pair: torch.Tensor) -> torch.Tensor:
        features = torch.cat([self.stream(micro_pair), self.stream(macro_pair)], dim=1)
        return self.output(features)

    def scores(self, micro_pair: torch.Tensor, macro_pair: torch.Tensor) -> torch.Tensor:
        """The sigmoid outputs in [0, 1], computed in float32."""
        return torch.sigmoid(self(micro_pair, macro_pair).float())


def build_model(model: Config, separable: bool = True) -> Yap3DCNN:
    """The network of a configuration's ``model`` group (ablation flags included)."""
    return Yap3DCNN(model.filters, model.first_depth_multiplier, model.batch_norm, model.dropout, separable)


class WeightedLoss(nn.Module):
    """Eq. 2 with the sign the text describes: ``-sum_i M_i [W t log s + (1 - W)(1 - t) log(1 - s)]``,
    averaged over the batch, from the logits ``z`` (``s = sigmoid(z)``): ``log s = logsigmoid(z)`` and
    ``log(1 - s) = logsigmoid(-z)``, in float32, so no probability is clamped and a confident wrong logit
    keeps its gradient. ``w=0.5, m=(1, 1)`` is plain binary cross-entropy (the ablation), up to a factor 1/2."""

    def __init__(self, w: float, m=PAPER_M):
        super().__init__()
        self.w = w
        self.register_buffer("m", torch.tensor(m, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z, t = logits.float(), targets.float()
        logsigmoid = torch.nn.functional.logsigmoid
        per_label = self.w * t * logsigmoid(z) + (1 - self.w) * (1 - t) * logsigmoid(-z)
        return -(per_label * self.m.to(z.device)).sum(dim=1).mean()


def loss_for(train: Config) -> WeightedLoss:
    """Eq. 2 with the ``train`` group's ``w`` (Table 3's per dataset), or plain cross-entropy (``weighted_loss``
    off, the ablation)."""
    if train.weighted_loss:
        return WeightedLoss(train.w, PAPER_M)
    return WeightedLoss(0.5, (1.0, 1.0))


# ------------------------------------------------------------------------------------ skips and data
def kth_frame_skips(annotations: pd.DataFrame) -> dict[str, int]:
    """Moilanen et al.'s k-th frame per type: round(mean(offset - onset) / 2), the mean distance from an
    interval's onset to its mid-point (Yap Sec. 3.3, Table 3). Rounds halves up."""
    skips = {}
    for expression_type in TYPES:
        rows = annotations[annotations["type"] == expression_type]
        if rows.empty:
            raise ValueError(f"no {expression_type} annotations to compute the k-th frame from")
        skips[expression_type] = max(1, math.floor(float(expression_frames(rows).mean()) / 2 + 0.5))
    return skips


def choose_skips(config: Config, annotations: pd.DataFrame | None, fps: float) -> dict[str, int]:
    """The test skips (Sec. 3.3, Table 3) ``config.test.skips`` names: ``"kth"``, the k-th frame rule on
    ``annotations`` (the training subjects'); ``"table3_kth"`` / ``"table3_manual"``, Table 3's published k-th
    (Ours*) / manual (Ours**, Tables 5-7) skips (``test.table3_kth`` / ``test.table3_manual``, the dataset's),
    scaled from ``input.skip_fps`` to ``fps``; ``"given"``, ``test.given_skips`` ``[micro, macro]``, frames at
    ``fps``."""
    test, choice = config.test, config.test.skips
    if choice == "kth":
        return kth_frame_skips(annotations)
    if choice == "given":
        given = test.given_skips
        if not (isinstance(given, list) and len(given) == len(TYPES)
                and all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in given)):
            raise ValueError(f"test.given_skips {given!r}: give [micro, macro], whole numbers of frames >= 1")
        return dict(zip(TYPES, given))
    if choice in ("table3_kth", "table3_manual"):
        published = test[choice]
        if published is None or config.input.skip_fps is None:
            raise ValueError(f"test.skips {choice!r}: this configuration has no test.{choice} and input.skip_fps "
                             f"(the {', '.join(DATASET_OVERRIDES['paper'])} datasets have Table 3's)")
        scale = fps / config.input.skip_fps
        return {t: max(1, round(k * scale)) for t, k in zip(TYPES, published)}
    raise ValueError(f"unknown test.skips {choice!r}: one of {', '.join(map(repr, SKIP_CHOICES))}")


def kth_frame_from_duration(mean_seconds: float, fps: float) -> int:
    """The same rule from a published mean duration (Yap Table 2): round(fps * mean / 2)."""
    return max(1, math.floor(fps * mean_seconds / 2 + 0.5))


def augment_images(images: np.ndarray, generator: torch.Generator | None = None) -> np.ndarray:
    """One random augmentation (Sec. 3.3) applied alike to every image of a sample, float in [0, 1]:
    contrast, gamma and gain each in [0.5, 1.5], horizontal flip with p = 0.5, rotation of +-10 degrees."""
    low, high = AUGMENT_RANGE
    draws = torch.rand(5, generator=generator).tolist()
    contrast, gamma, gain = (low + (high - low) * u for u in draws[:3])
    flip, angle = draws[3] < 0.5, (2 * draws[4] - 1) * ROTATION_DEGREES
    size = images.shape[-1]
    rotation = cv2.getRotationMatrix2D(((size - 1) / 2, (size - 1) / 2), angle, 1.0)
    out = []
    for image in images:
        image = np.clip((image - image.mean()) * contrast + image.mean(), 0, 1)
        image = np.clip(gain * image ** gamma, 0, 1)
        if flip:
            image = image[:, ::-1]
        out.append(cv2.warpAffine(np.ascontiguousarray(image), rotation, (size, size), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REFLECT))
    return np.stack(out).astype(np.float32)


class ReferencePairs(torch.utils.data.Dataset):
    """Samples ``((micro_pair, macro_pair), labels)`` from videos of face crops.

    ``videos``: list of ``(crops (N, S, S) uint8, labels (N, 2))``; ``crops`` is a
    :class:`mecore.inputs.Rows` of a cache entry (:func:`video_crops`) or an array. Item ``i`` is a window of
    ``stride`` frames; its frame ``t`` is drawn at random inside the window (``stride=1``: every frame once).
    The reference frames are ``t - s`` with ``s`` drawn from ``skips[0]`` (micro stream) and ``skips[1]``
    (macro stream), inclusive ranges (``[k, k]`` for a fixed skip), clamped to the first frame. Random
    draws use PyTorch's global generator, which :func:`mecore.train.fit` seeds.

    An item reads its three crops only (``crops[[t, r1, r2]]``, positioned reads on a :class:`Rows`), and the
    windows are found from one offset per video, so the dataset holds no frames and no per-window list:
    host memory is bounded by the batch, not by the videos' length (a :class:`Rows` pickles as its path).
    """

    def __init__(self, videos, skips, stride: int = 1, augment: bool = False, use_lcn: bool = True):
        self.videos, self.skips, self.augment, self.use_lcn = videos, skips, augment, use_lcn
        self.stride = stride
        counts = [-(-len(crops) // stride) for crops, _ in videos]  # windows per video
        self.offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def window(self, index: int) -> tuple[int, int]:
        """(video, first frame) of window ``index``."""
        index = int(index) + (len(self) if int(index) < 0 else 0)
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} of {len(self)}")
        v = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return v, (index - int(self.offsets[v])) * self.stride

    def __getitem__(self, index: int):
        v, start = self.window(index)
        crops, labels = self.videos[v]
        t = start + _draw(0, min(self.stride, len(crops) - start) - 1)
        references = [max(0, t - _draw(*skip)) for skip in self.skips]
        images = crops[[t, *references]].astype(np.float32) / 255
        if self.augment:
            images = augment_images(images)
        if self.use_lcn:
            images = np.stack([lcn(image) for image in images])
        frame = torch.from_numpy(images[0])
        pairs = tuple(torch.stack([frame, torch.from_numpy(images[i])])[None] for i in (1, 2))
        return pairs, torch.as_tensor(labels[t], dtype=torch.float32)


def _draw(low: int, high: int) -> int:
    return low if high <= low else int(torch.randint(low, high + 1, (1,)))


def video_labels(dataset: Dataset, name: str) -> np.ndarray:
    """(N, 2) per-frame labels of a video: inside a micro interval, inside a macro interval (inclusive)."""
    frames = dataset.video(name).frame_numbers
    return np.stack([intervals_to_labels(dataset.intervals(name, t), frames) for t in TYPES], axis=1).astype(np.float32)


def video_crops(dataset: Dataset, name: str, crop: Mapping) -> Rows:
    """Cached grey face crops (N, S, S) uint8 of one video (``crop``: ``input.crop``) as :class:`mecore.inputs.Rows`:
    the cache entry (:func:`mecore.preprocess.preprocess_video`) is read row by row when indexed, never mapped whole."""
    return crop_rows(dataset.video(name), CropSpec(**crop))


def prepare(dataset: Dataset, config: Config, name: str) -> None:
    """The model's ``prepare`` (:class:`mecore.models.ModelSpec`): one video's cached crops, once, before the
    folds."""
    video_crops(dataset.at_most_fps(config.input.max_fps), name, config.input.crop)


# ------------------------------------------------------------------------------------ scores -> intervals
def smoothed(scores: np.ndarray, method: str, fps: float, k: int) -> np.ndarray:
    """The curve each IoU method thresholds: normalised + Butterworth (automated), Savitzky-Golay (manual)."""
    if method == "automated":
        return butterworth_smooth(normalise(scores), fps)
    return savgol_smooth(scores, 2 * k + 1)


def choose_thresholds(frame_scores: pd.DataFrame, skips: dict[str, int], fps: float) -> dict[tuple[str, str], float]:
    """ROC thresholds (Youden's J) per (IoU method, type) on the smoothed curves of ``frame_scores``
    (columns video, micro_score, macro_score, micro_label, macro_label), pooled over its videos.
    A type without positive frames gets the threshold 1 (nothing spotted)."""
    thresholds = {}
    for method in ("automated", "manual"):
        for expression_type in TYPES:
            curves, labels = [], []
            for _, video in frame_scores.groupby("video", sort=False):
                curves.append(smoothed(video[f"{expression_type}_score"].to_numpy(), method, fps, skips[expression_type]))
                labels.append(video[f"{expression_type}_label"].to_numpy(bool))
            labels = np.concatenate(labels)
            thresholds[method, expression_type] = (roc_threshold(labels, np.concatenate(curves))
                                                   if labels.any() and not labels.all() else 1.0)
    return thresholds


def spot(frame_scores: pd.DataFrame, method: str, thresholds: dict, skips: dict[str, int], fps: float) -> pd.DataFrame:
    """Intervals (video, onset, offset, type, score) from per-frame scores by the automated or manual IoU method."""
    tables = []
    for name, video in frame_scores.groupby("video", sort=False):
        frames = video["frame"].to_numpy()
        for expression_type in TYPES:
            scores, threshold = video[f"{expression_type}_score"].to_numpy(), thresholds[method, expression_type]
            if method == "automated":
                intervals, _ = automated_iou_intervals(scores, frames, fps, threshold=threshold)
            else:
                k = skips[expression_type]
                intervals = manual_iou_intervals(scores, frames, threshold, 2 * k + 1, max_gap=k)
            intervals.insert(0, "video", name)
            intervals["type"] = expression_type
            tables.append(intervals)
    columns = ["video", "onset", "offset", "type", "score"]
    return pd.concat(tables, ignore_index=True)[columns] if tables else pd.DataFrame(columns=columns)


# ------------------------------------------------------------------------------------ one LOSO fold
def score_videos(model: nn.Module, dataset: Dataset, names: list[str], crops: dict, skips: dict[str, int],
                 config: Config) -> pd.DataFrame:
    """Per-frame scores (the sigmoid of the logits) and labels of whole videos at the test skips: one row per
    frame."""
    tables = []
    for name in names:
        labels = video_labels(dataset, name)
        data = ReferencePairs([(crops[name], labels)], [[skips[t], skips[t]] for t in TYPES], use_lcn=config.input.lcn)
        scores = torch.sigmoid(predict(model, data, batch_size=config.test.eval_batch_size).float()).numpy()
        tables.append(pd.DataFrame({
            "video": name, "frame": dataset.video(name).frame_numbers,
            **{f"{t}_score": scores[:, i] for i, t in enumerate(TYPES)},
            **{f"{t}_label": labels[:, i].astype(bool) for i, t in enumerate(TYPES)}}))
    return pd.concat(tables, ignore_index=True)


def require_table3(config: Config, dataset: Dataset) -> None:
    """A ValueError unless ``config`` has the per-dataset values of Table 3 and Sec. 2.2 (a dataset override)."""
    missing = [key for key in TABLE3_KEYS if config.get_path(key) is None]
    if missing:
        raise ValueError(f"yap3dcnn has Table 3 settings for {', '.join(DATASET_OVERRIDES['paper'])} (and their "
                         f"synthetic twins) only, not {dataset.name!r}; set {', '.join(missing)} to run it there")


def validation_subjects(annotations: pd.DataFrame, test_subject: str, train_subjects: list[str]
                        ) -> tuple[list[str], list[str]]:
    """The training subjects held out for early stopping and thresholds, and the types they hold no expression of.

    The subject after ``test_subject`` (all subjects sorted, wrapping round); then, for each type it has no
    expression of (in ``annotations``), the next subject in the same order that has one, unless that would
    leave no subject to train on. The paper validates (Sec. 3.3) without naming how; a validation set without
    a type gives that type no ROC threshold, and subjects differ widely in movements (Sec. 3.2, Fig. 3).
    """
    subjects = sorted([*train_subjects, test_subject])
    start = subjects.index(test_subject)
    order = [subjects[(start + i) % len(subjects)] for i in range(1, len(subjects))]
    held = {s: set(annotations.loc[annotations["subject"] == s, "type"]) for s in order}
    chosen = order[:1]
    for expression_type in TYPES:
        if any(expression_type in held[s] for s in chosen):
            continue
        candidate = next((s for s in order if s not in chosen and expression_type in held[s]), None)
        if candidate is not None and len(chosen) + 1 < len(order):
            chosen.append(candidate)
    missing = [t for t in TYPES if not any(t in held[s] for s in chosen)]
    return chosen, missing


@dataclass
class FoldVideos:
    """A fold's videos: ``fit`` (training subjects not held out), ``val`` (the validation subjects', which choose
    the thresholds), ``test``; the validation subjects and the types they or the fit subjects lack."""

    fit: list[str]
    val: list[str]
    test: list[str]
    val_subjects: list[str]
    val_missing: list[str]
    fit_missing: list[str]


def fold_videos(fold: LosoFold) -> FoldVideos:
    """Split the fold's training videos by :func:`validation_subjects`, warning about a type a part lacks."""
    name = f"yap3dcnn on {fold.dataset.name}, test subject {fold.test_subject}"
    val_subjects, val_missing = validation_subjects(fold.train_rows, fold.test_subject, fold.train_subjects)
    if val_missing:
        warnings.warn(f"{name}: the validation subjects {val_subjects} hold no {' or '.join(val_missing)} expression "
                      f"and no other training subject with one can be spared; {', '.join(val_missing)}: threshold 1, "
                      f"no intervals", stacklevel=3)
    fit_types = set(fold.train_rows.loc[~fold.train_rows["subject"].isin(val_subjects), "type"])
    fit_missing = [t for t in TYPES if t not in fit_types]
    if fit_missing:
        warnings.warn(f"{name}: no subject left to train on (validation: {val_subjects}) has a "
                      f"{' or '.join(fit_missing)} expression", stacklevel=3)
    by_subject = {s: [n for n in fold.train_videos if fold.dataset.videos[n].subject == s] for s in fold.train_subjects}
    return FoldVideos(fit=[n for s in fold.train_subjects if s not in val_subjects for n in by_subject[s]],
                      val=[n for s in val_subjects for n in by_subject[s]], test=fold.test_videos,
                      val_subjects=val_subjects, val_missing=val_missing, fit_missing=fit_missing)


def run_fold(fold: LosoFold) -> pd.DataFrame:
    """Train on ``fold.train_subjects`` (some held out for validation, :func:`fold_videos`), spot the test
    subject's videos.

    Keeps with the fold's result (:func:`mecore.loso.with_frame_scores`; :func:`mecore.loso.load_frame_scores`
    reads them) the test videos' per-frame scores, the skips, the thresholds, the validation subjects and the
    types they (``validation_missing``) or the remaining training subjects (``fit_missing``) lack.
    """
    fold = fold.at_most_fps()
    config, dataset, train = fold.config, fold.dataset, fold.config.train
    require_table3(config, dataset)
    # inputs: face crops of every video the fold reads, the reference-frame skips at the videos' frame rate
    videos = fold_videos(fold)
    crops = {n: video_crops(dataset, n, config.input.crop) for n in videos.fit + videos.val + videos.test}
    fps = float(dataset.video(videos.test[0]).fps)
    scale = fps / config.input.skip_fps
    random_skips = [[max(1, round(lo * scale)), max(1, round(hi * scale))] for lo, hi in train.random_skips]
    skips = choose_skips(config, fold.train_rows, fps)

    def pairs(names, augment):
        return ReferencePairs([(crops[n], video_labels(dataset, n)) for n in names], random_skips, train.stride,
                              augment=augment and train.augment, use_lcn=config.input.lcn)

    # fit
    train_config = TrainConfig(
        optimizer=OptimizerSpec(train.optimizer, train.lr, momentum=train.momentum), epochs=train.epochs,
        batch_size=train.batch_size, patience=train.patience, restore_best=False, seed=fold.seed, drop_last=True,
        micro_batch=train.micro_batch, max_steps=config.trial.max_steps, mixed_precision=train.mixed_precision)
    result = fit(build_model(config.model), loss_for(train), pairs(videos.fit, True), pairs(videos.val, False),
                 train_config, checkpoint_dir=fold.workdir, resume=fold.resume, progress=fold.progress)
    # score: thresholds from the validation videos, frame scores of the test videos
    thresholds = choose_thresholds(score_videos(result.model, dataset, videos.val, crops, skips, config), skips, fps)
    frame_scores = score_videos(result.model, dataset, videos.test, crops, skips, config)
    # post-process, persist
    record = {"frame_scores": frame_scores, "skips": skips, "thresholds": thresholds, "fps": fps,
              "history": result.history, "validation_subjects": videos.val_subjects,
              "validation_missing": videos.val_missing, "fit_missing": videos.fit_missing}
    return with_frame_scores(spot(frame_scores, config.test.postprocess, thresholds, skips, fps), record)


# ------------------------------------------------------------------------------------ registration
PAPER = Config({
    "input": {
        # grey faces, one median Haar box per video (detected every 15 frames), registered to the first crop:
        # our stand-in for OpenFace's per-frame alignment (module docstring)
        "crop": {"size": cite(112, "Sec. 2.1"), "box": "median", "detect_every": 15, "register": True},
        "lcn": cite(True, "Sec. 2.1, Eq. 1"),
        "skip_fps": cite(None, "Sec. 4.1", type=float),  # the frame rate Table 3's skips count frames at
        "max_fps": None},
    "model": {"filters": [32, 64, 128], "first_depth_multiplier": 8,  # not given: ours (module docstring)
              "dropout": 0.25,  # Fig. 1 has dropout, no rate: ours
              "batch_norm": cite(True, "Sec. 2.2, Fig. 1")},
    "train": {
        "random_skips": cite(None, "Table 3", type=list),  # [[micro low, high], [macro low, high]] at skip_fps
        "stride": 1,  # one random frame per window of this many frames an epoch; 1: every frame (our reading)
        "augment": cite(True, "Sec. 3.3"),
        "weighted_loss": cite(True, "Sec. 2.2, Eq. 2"),
        "w": cite(None, "Sec. 2.2", type=float),  # W of Eq. 2
        "optimizer": "sgd", "momentum": 0.9,  # not named: ours (module docstring)
        "lr": cite(None, "Table 3", type=float),
        "batch_size": cite(16, "Table 3"),
        "epochs": 200,  # not given: a cap, early stopping ends the training
        "patience": cite(5, "Sec. 3.3"),
        # The paper's batch of 16 samples (two 2 x 112 x 112 pairs each) fits any device in one pass. The
        # network has batch normalisation: micro-batches would normalise each pass's samples alone (other
        # statistics and running averages than the whole batch's), so None keeps one pass per batch.
        "micro_batch": None,
        "mixed_precision": True},  # float16 autocast on CUDA: safe since Eq. 2 reads float32 logits
    "test": {
        # "kth" from the training annotations (Ours*), "table3_kth", "table3_manual" (Ours**), or "given"
        # (given_skips [micro, macro]): choose_skips
        "skips": cite("kth", "Sec. 3.3"),
        "table3_kth": cite(None, "Table 3", type=list),  # [micro, macro] at input.skip_fps
        "table3_manual": cite(None, "Table 3", type=list),
        "given_skips": None,
        "postprocess": cite("automated", "Sec. 4.1"),  # or "manual" (Sec. 4.2)
        "eval_batch_size": 256},
    "trial": {"max_steps": None},
    "run": {"repeats": 1}})
DEFAULT = PAPER.set({"input.crop.size": 48, "train.stride": 8, "train.epochs": 6,
                     "train.optimizer": "adam", "train.momentum": 0.0, "train.lr": 1e-3})
CONFIGS = {"paper": PAPER, "default": DEFAULT,
           "smoke": DEFAULT.set({"input.crop.size": 32, "model.filters": [8, 16, 32], "train.epochs": 2}),
           "large": DEFAULT.set({"input.crop.size": 112, "train.stride": 2, "train.epochs": 30})}

# Table 3 and Sec. 2.2 per dataset family, every profile: the frame rate Table 3 counts in, random training skips
# (stream 1, stream 2), W of Eq. 2, the published k-th (Ours*) and manual (Ours**) test skips.
TABLE3 = {
    "samm_lv": {"input.skip_fps": 200.0, "train.random_skips": [[25, 75], [200, 400]], "train.w": 0.75,
                "test.table3_kth": [37, 217], "test.table3_manual": [30, 310]},
    "casme_sq": {"input.skip_fps": 30.0, "train.random_skips": [[3, 9], [16, 50]], "train.w": 0.9,
                 "test.table3_kth": [6, 19], "test.table3_manual": [10, 33]},
}
TABLE3_KEYS = ("input.skip_fps", "train.random_skips", "train.w", "train.lr")
DATASET_OVERRIDES = {
    "paper": {"samm_lv": {**TABLE3["samm_lv"], "train.lr": 0.007},  # Table 3's (SGD) learning rates
              "casme_sq": {**TABLE3["casme_sq"], "train.lr": 0.015}},
    # the SAMM-LV twin is read at 200 fps: one training frame per 24 (about 800 an epoch); at 8 (2,400 an epoch) its
    # LOSO run was the costliest of the default notebooks (572 s on two cores)
    "default": {**TABLE3, "samm_lv": {**TABLE3["samm_lv"], "train.stride": 24}},
    "smoke": {**TABLE3, "samm_lv": {**TABLE3["samm_lv"], "train.stride": 40}},
    "large": {**TABLE3, "samm_lv": {**TABLE3["samm_lv"], "train.stride": 8}},
}
ABLATIONS = {"no LCN": {"input.lcn": False}, "no batch norm": {"model.batch_norm": False},  # Table 7
             "no weighted loss": {"train.weighted_loss": False}, "no dropout": {"model.dropout": 0.0}}

register(ModelSpec(name="yap3dcnn", task="spotting", paper="Yap et al. 2022", run_fold=run_fold, configs=CONFIGS,
                   spotting_convention="megc2020", dataset_overrides=DATASET_OVERRIDES, prepare=prepare))
