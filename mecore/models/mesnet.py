"""MESNet (Wang et al. 2021): 2+1D backbone with pre-training, Clip Proposal Network (CPN) and
Classification-Regression Network (CRN) for spotting micro-expression intervals in long videos.

Backbone (Sec. III-A, Table I, Fig. 2): Table I's 2D CNN on every frame (shared weights), vectorised to
``L = H*W/4``, then two 1D convolutions (kernel 3, 128 channels, ReLU) over time; pre-trained with FC 300 - FC 300 -
dropout 0.5 - FC 2 (Eq. 8). CPN: five dilated sub-networks (Table II), windows of 7-15 frames, Eqs. 10-11. CRN:
proposals resampled to ``N_CR`` frames, two 1D convolutions, FC 300 - FC 300 - dropout, class and boundary heads
(Sec. III-C, Eqs. 12-13). All three trained as Eq. 14.

Readings where the paper is ambiguous:

* **Padding.** "padding 2" (Table I, Sec. III-A) counts the zeros in total (PyTorch ``padding=1``): only then do
  the stated sizes (``H/16 x W/16 x 64``, ``L = HW/4``, ``S in R^{128 x N}``, ``N_s``) hold. H, W divisible by 16.
* **CPN width** (not in Table II): 128, the width of ``S``; output ``n`` of sub-network ``s`` sees frames
  ``[n - 2, n - 2 + R_s - 1]``, clipped.
* **Eq. 10** "nearest ME" = the ME of highest IoU. **Eq. 11** mask M per mini-batch: every ME window; each
  non-ME window with probability (ME windows / non-ME windows).
* **Regression at test time** (Eq. 12): ``b - a = (b' - a') / (1 + r1 - r2)``, denominator floored at 0.1.
* **CRN training proposals** (``V_pro``, Eq. 12): CPN windows >= T_CPN after NMS, labelled as Eq. 10
  (IoU > 0.7); ``train.max_proposals`` caps them (None in ``paper``). **Post-processing** (Sec. III-D, Table VIII):
  >= T_CPN, NMS per clip, then per video; CRN: >= T_CRN, regressed, NMS per video.
* **L2** (Eqs. 11, 12, 14): one ``lambda/2 sum w^2`` over every parameter but the CRN's two output layers.
* **Unstated sizes**: ``N_pre = N_CR = 16``, macro clip end ``apex + 8``, 64 px input; CRN convolutions start random.
* **Input** ("optical flow", Sec. IV-A-3): flow (dx, dy) from t to t + ``input.flow_step`` on a 128 px crop in one
  fixed box per video, area-averaged to the input size, divided by the training std. ``paper``: TV-L1, step 1;
  ``default``: reduced TV-L1, step 4 (box, flow, optimiser and CRN balance chosen in notebook 10).
* **SAMM**: ``paper`` takes Sec. IV-A-3's SAMM values (no macro samples: no r_MaE given) at 200 fps with
  flow step 7 (35 ms, near CAS(ME)^2's 33 ms): the 670-frame clip is resampled to 100 rows, about every 7th, so
  each row's flow reaches the next row seen (a 1-frame flow spans a seventh of that motion: expected, not
  measured, to lose subtle MEs in TV-L1's noise). Other profiles read SAMM-LV at every 7th frame (max_fps 30).
* **Resampled targets**: an ME's fractional bounds in a resampled clip are rounded to the nearest frame for the
  labels (Eq. 10); regression targets keep the fractions.
* **Repeats** (Sec. IV-C): median of three train/validation divisions on CAS(ME)^2, one on SAMM ("negligible").
* **Mixed precision** on CUDA (float16 autocast); every loss is a cross-entropy from float32 logits.
* **Optimiser** (Sec. III-D): ``paper`` plain SGD, batch 2, lr 1e-4, lambda 0.01; ``default`` Adam, lambda 1e-4
  and a **balanced CRN loss** (``train.balance_crn``, not in the paper): Eq. 11's mask M on the CRN's proposals too.
* **Samplers** (Sec. IV-A-3, III-D): clips of ``l_MESNet`` frames, ``r_tME`` / ``r_tMaE`` / ``r_tNL`` per ME,
  drawn once per fold from the seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mecore import paths, references
from mecore.config import TRAINING_EXCLUDES, Config, cite
from mecore.data.dataset import Dataset
from mecore.data.splits import mesnet_train_val_split
from mecore.loso import training_dir
from mecore.models import LosoFold, ModelSpec, register
from mecore.inputs import Rows, clip_starts, expression_indices, flow_rows, resample_time, streaming_std
from mecore.preprocess import CropSpec
from mecore.postprocess import ME, NON_ME, apply_regression, regression_targets, temporal_nms, window_labels
from mecore.train import (CHECKPOINT_NAME, L2Penalty, OptimizerSpec, TrainConfig, TrainResult, fit, predict,
                          seed_everything, select_by_validation, validation_accuracy)

SPATIAL_CHANNELS = (8, 16, 32, 64)  # Table I
TEMPORAL_CHANNELS = 128  # Sec. III-A
FC_WIDTH = 300  # Sec. III-A, III-C
# Table II: sub-network -> ((kernel, dilation) of layer 1, (kernel, dilation) of layer 2)
CPN_SUBNETWORKS = (((3, 1), (1, 1)), ((3, 1), (3, 1)), ((3, 1), (3, 2)), ((3, 1), (3, 3)), ((3, 2), (3, 3)))
PAPER_RECEPTIVE_FIELDS = references.MESNET_RECEPTIVE_FIELDS  # Sec. III-B, on F


# ----------------------------------------------------------------------------------- architecture
def receptive_field(layers) -> int:
    """Receptive field of stacked 1D convolutions ``[(kernel, dilation), ...]``: 1 + sum (k - 1) r (Eq. 9)."""
    return 1 + sum((kernel - 1) * dilation for kernel, dilation in layers)


class SpatialCNN(nn.Module):
    """Table I: four 3x3 convolutions (8, 16, 32, 64 channels, ReLU) each followed by 2x2 max pooling."""

    def __init__(self, in_channels: int):
        super().__init__()
        layers, channels = [], in_channels
        for width in SPATIAL_CHANNELS:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2)]
            channels = width
        self.layers = nn.Sequential(*layers)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(M, C, H, W) -> (M, L), L = 64 * H/16 * W/16 = H*W/4."""
        return self.layers(frames).flatten(1)


class TemporalConvs(nn.Module):
    """Two 1D convolutions, kernel 3, 128 channels, ReLU (Sec. III-A; the CRN's, Sec. III-C).

    ``padding`` 1 keeps the length (backbone, ``S in R^{128 x N}``); the CRN uses 0. A CRN that
    shares the backbone's weights (Table VI ablation) calls the backbone's module with padding 0.
    """

    def __init__(self, in_channels: int, padding: int):
        super().__init__()
        self.padding = padding
        self.conv1 = nn.Conv1d(in_channels, TEMPORAL_CHANNELS, 3)
        self.conv2 = nn.Conv1d(TEMPORAL_CHANNELS, TEMPORAL_CHANNELS, 3)

    def forward(self, features: torch.Tensor, padding: int | None = None) -> torch.Tensor:
        """(B, L, T) -> (B, 128, T - 4 + 4 * padding)."""
        pad = self.padding if padding is None else padding
        hidden = F.relu(F.conv1d(features, self.conv1.weight, self.conv1.bias, padding=pad))
        return F.relu(F.conv1d(hidden, self.conv2.weight, self.conv2.bias, padding=pad))


class Backbone(nn.Module):
    """2+1D Spatiotemporal Convolutional Network (Sec. III-A, Fig. 2)."""

    def __init__(self, in_channels: int, frame_size: int):
        super().__init__()
        if frame_size % 16:
            raise ValueError(f"frame size must be divisible by 16 (four 2x2 poolings), got {frame_size}")
        self.feature_length = frame_size * frame_size // 4  # L = H*W/4
        self.spatial = SpatialCNN(in_channels)
        self.temporal = TemporalConvs(self.feature_length, padding=1)

    def forward(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, C, H, W) -> spatial features f (B, N, L) and spatiotemporal features S (B, 128, N)."""
        batch, n_frames = clips.shape[:2]
        spatial = self.spatial(clips.flatten(0, 1)).view(batch, n_frames, -1)
        return spatial, self.temporal(spatial.transpose(1, 2))


def fully_connected(in_features: int) -> nn.Sequential:
    """FC 300 - ReLU - FC 300 - ReLU - dropout 0.5 (Sec. III-A pre-training head, Sec. III-C CRN)."""
    return nn.Sequential(nn.Linear(in_features, FC_WIDTH), nn.ReLU(), nn.Linear(FC_WIDTH, FC_WIDTH), nn.ReLU(),
                         nn.Dropout(0.5))


class PretrainNet(nn.Module):
    """The backbone with its pre-training classifier, ME vs non-ME on clips of ``n_pre`` frames (Eq. 8)."""

    def __init__(self, in_channels: int, frame_size: int, n_pre: int):
        super().__init__()
        self.backbone = Backbone(in_channels, frame_size)
        self.hidden = fully_connected(TEMPORAL_CHANNELS * n_pre)
        self.output = nn.Linear(FC_WIDTH, 2)  # softmax is in the cross-entropy

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        _, spatiotemporal = self.backbone(clips)
        return self.output(self.hidden(spatiotemporal.flatten(1)))


class ClipProposalNetwork(nn.Module):
    """Table II: five sub-networks of two dilated 1D convolutions, no padding; the first layer is shared
    by sub-networks 1-4. Output ``s`` scores ``N - R_s + 1`` windows of ``R_s`` frames."""

    def __init__(self, hidden: int = TEMPORAL_CHANNELS, backbone_padding: int = 1):
        super().__init__()
        (k1, r1), _ = CPN_SUBNETWORKS[0]
        self.shared_first = nn.Conv1d(TEMPORAL_CHANNELS, hidden, k1, dilation=r1)
        (k5, r5), _ = CPN_SUBNETWORKS[4]
        self.first5 = nn.Conv1d(TEMPORAL_CHANNELS, hidden, k5, dilation=r5)
        self.second = nn.ModuleList(nn.Conv1d(hidden, 2, k, dilation=r) for _, (k, r) in CPN_SUBNETWORKS)
        backbone_layers = [(3, 1), (3, 1)]  # the backbone's two temporal convolutions
        self.receptive_fields = tuple(receptive_field(backbone_layers + list(layers)) for layers in CPN_SUBNETWORKS)
        assert self.receptive_fields == PAPER_RECEPTIVE_FIELDS, self.receptive_fields
        self.shift = 2 * backbone_padding  # frames by which the "same" padding moves a window's start

    def forward(self, spatiotemporal: torch.Tensor) -> list[torch.Tensor]:
        """S (B, 128, N) -> five logit maps (B, 2, N_s)."""
        shared, fifth = F.relu(self.shared_first(spatiotemporal)), F.relu(self.first5(spatiotemporal))
        return [layer(shared if s < 4 else fifth) for s, layer in enumerate(self.second)]

    def windows(self, n_frames: int) -> list[np.ndarray]:
        """Per sub-network, the clip frames [start, end] (inclusive, clipped) of each output: (N_s, 2)."""
        out = []
        for field in self.receptive_fields:
            starts = np.arange(n_frames - (field - 4) + 1) - self.shift  # N_s = N - (R_s - 4) + 1 outputs on S
            out.append(np.stack([np.clip(starts, 0, n_frames - 1),
                                 np.clip(starts + field - 1, 0, n_frames - 1)], axis=1))
        return out


class ClassificationRegressionNetwork(nn.Module):
    """Sec. III-C, Fig. 5: proposal features (N_CR frames) -> two 1D convolutions (no padding) ->
    FC 300 - FC 300 - dropout -> class logits (2) and boundary offsets (r1', r2')."""

    def __init__(self, feature_length: int, n_cr: int, shared_temporal: TemporalConvs | None = None):
        super().__init__()
        self.n_cr = n_cr
        self.own_temporal = None if shared_temporal is not None else TemporalConvs(feature_length, padding=0)
        self._shared = [shared_temporal]  # a list, so the shared module is not registered twice
        self.hidden = fully_connected(TEMPORAL_CHANNELS * (n_cr - 4))
        self.classify = nn.Linear(FC_WIDTH, 2)
        self.regress = nn.Linear(FC_WIDTH, 2)

    def forward(self, proposal_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, N_CR, L) -> class logits (P, 2), regression (P, 2)."""
        temporal = self.own_temporal or self._shared[0]
        hidden = self.hidden(temporal(proposal_features.transpose(1, 2), padding=0).flatten(1))
        return self.classify(hidden), self.regress(hidden)


@dataclass
class MESNetOutput:
    """What :class:`MESNet` returns for a batch of clips.

    ``cpn_logits``: five (B, 2, N_s) maps; ``proposals``: (P, 4) rows (clip index, start, end, CPN ME
    probability), clip frames; ``crn_logits``, ``crn_regression``: (P, 2) each; ``n_frames``: clip length N.
    """

    n_frames: int
    cpn_logits: list[torch.Tensor]
    proposals: torch.Tensor
    crn_logits: torch.Tensor
    crn_regression: torch.Tensor


class MESNet(nn.Module):
    """Backbone -> CPN -> proposals (>= T_CPN, NMS at T_nms per clip) -> CRN (Sec. III, Figs. 2, 4, 5)."""

    def __init__(self, in_channels: int, frame_size: int, n_cr: int = 16, shared_temporal: bool = False,
                 t_cpn: float = 0.5, t_nms: float = 0.5, max_proposals: int | None = None):
        super().__init__()
        self.backbone = Backbone(in_channels, frame_size)
        self.cpn = ClipProposalNetwork()
        self.crn = ClassificationRegressionNetwork(self.backbone.feature_length, n_cr,
                                                   self.backbone.temporal if shared_temporal else None)
        self.t_cpn, self.t_nms, self.max_proposals = t_cpn, t_nms, max_proposals

    def forward(self, clips: torch.Tensor) -> MESNetOutput:
        spatial, spatiotemporal = self.backbone(clips)
        cpn_logits = self.cpn(spatiotemporal)
        proposals = self.propose(cpn_logits, clips.shape[1])
        crn_logits, crn_regression = self.classify_proposals(spatial, proposals)
        return MESNetOutput(clips.shape[1], cpn_logits, proposals, crn_logits, crn_regression)

    def classify_proposals(self, spatial: torch.Tensor, proposals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The CRN on each proposal's spatial features ``f`` resampled to N_CR frames: class logits (P, 2) and
        boundary offsets (P, 2); empty when there is no proposal."""
        if not len(proposals):
            return spatial.new_zeros((0, 2)), spatial.new_zeros((0, 2))
        features = torch.stack([resample_time(spatial[int(b), int(s):int(e) + 1], self.crn.n_cr)
                                for b, s, e, _ in proposals.tolist()])
        return self.crn(features)

    @torch.no_grad()
    def propose(self, cpn_logits: list[torch.Tensor], n_frames: int, t_cpn: float | None = None,
                t_nms: float | None = None) -> torch.Tensor:
        """Windows whose ME probability is >= T_CPN, after temporal NMS per clip: (P, 4) on the CPU.
        ``t_cpn`` and ``t_nms`` default to the model's own (a threshold sweep passes its values)."""
        t_cpn = self.t_cpn if t_cpn is None else t_cpn
        t_nms = self.t_nms if t_nms is None else t_nms
        windows = self.cpn.windows(n_frames)
        rows = []
        for logits, bounds in zip(cpn_logits, windows):
            probability = logits.float().softmax(dim=1)[:, ME].cpu().numpy()  # float32 under autocast too
            clip, index = np.nonzero(probability >= t_cpn)
            rows.append(np.column_stack([clip, bounds[index], probability[clip, index]]))
        table = pd.DataFrame(np.concatenate(rows), columns=["video", "onset", "offset", "score"])
        table = table.astype({"video": int, "onset": int, "offset": int})
        kept = temporal_nms(table, t_nms)
        if self.max_proposals is not None:
            kept = kept.sort_values("score", ascending=False, kind="stable").groupby("video").head(self.max_proposals)
        return torch.tensor(kept[["video", "onset", "offset", "score"]].to_numpy(np.float64), dtype=torch.float32)


# ------------------------------------------------------------------------------------------ losses
def balance_mask(positive: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Eq. 11's random mask M: 1 on every positive; a negative is kept with probability
    (number of positives) / (number of negatives), so none is kept when there is no positive."""
    n_positive, n_negative = int(positive.sum()), int((~positive).sum())
    keep_probability = min(1.0, n_positive / n_negative) if n_negative else 0.0
    draw = torch.rand(positive.shape, generator=generator, device="cpu").to(positive.device)
    return (positive | (draw < keep_probability)).float()


def cpn_loss(cpn_logits: list[torch.Tensor], labels: list[torch.Tensor],
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Eq. 11 without the L2 term: cross-entropy over the windows kept by the random mask M
    (:func:`balance_mask`), divided by sum M. ``labels``: per sub-network (B, N_s) class indices."""
    logits = torch.cat([map_.transpose(1, 2).reshape(-1, 2) for map_ in cpn_logits])
    target = torch.cat([label.reshape(-1) for label in labels]).to(logits.device)
    mask = balance_mask(target == ME, generator)
    losses = F.cross_entropy(logits, target, reduction="none")
    return (mask * losses).sum() / mask.sum().clamp(min=1.0)


def crn_loss(logits: torch.Tensor, regression: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor,
             balanced: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """Eq. 12 without the L2 term: mean over proposals of cross-entropy + S * (E(r1' - t1) + E(r2' - t2)),
    E the smooth L1 of Eq. 13, S = 1 for ME proposals. ``balanced`` (not in the paper) averages over the
    proposals kept by Eq. 11's mask instead of all. Zero (with a graph) when there are no proposals."""
    if len(logits) == 0:
        return logits.sum() + regression.sum()
    is_me = labels == ME
    mask = balance_mask(is_me, generator) if balanced else torch.ones_like(is_me, dtype=torch.float32)
    smooth = F.smooth_l1_loss(regression, torch.nan_to_num(targets), reduction="none", beta=1.0).sum(dim=1)
    losses = F.cross_entropy(logits, labels, reduction="none") + is_me.float() * smooth
    return (mask * losses).sum() / mask.sum().clamp(min=1.0)


class MESNetLoss:
    """Eq. 14, L_CPN + L_CRN (the L2 term is added by :class:`mecore.train.L2Penalty`).

    Targets are each clip's expressions as a (B, K, 2) tensor of clip-frame intervals, NaN-padded.
    """

    def __init__(self, model: MESNet, iou_positive: float = 0.7, balance_crn: bool = False):
        self.windows = model.cpn.windows
        self.iou_positive, self.balance_crn = iou_positive, balance_crn

    def __call__(self, output: MESNetOutput, targets: torch.Tensor) -> torch.Tensor:
        expressions = [clip[~torch.isnan(clip[:, 0])].numpy() for clip in targets.cpu()]
        labels = []
        for bounds in self.windows(output.n_frames):
            labels.append(torch.tensor(np.stack([window_labels(bounds, clip, self.iou_positive)[0]
                                                 for clip in expressions])))
        loss = cpn_loss(output.cpn_logits, labels)
        proposal_labels, proposal_targets = proposal_training_targets(output.proposals, expressions,
                                                                      self.iou_positive)
        device = output.crn_logits.device
        return loss + crn_loss(output.crn_logits, output.crn_regression, proposal_labels.to(device),
                               proposal_targets.to(device), self.balance_crn)


def proposal_training_targets(proposals: torch.Tensor, expressions: list[np.ndarray],
                              iou_positive: float = 0.7) -> tuple[torch.Tensor, torch.Tensor]:
    """CRN labels (Eq. 10 on proposals) and regression targets (Eq. 12; NaN for non-ME proposals)."""
    labels = np.full(len(proposals), NON_ME)
    targets = np.full((len(proposals), 2), np.nan)
    rows = proposals.numpy()
    for clip, truth in enumerate(expressions):
        here = np.flatnonzero(rows[:, 0] == clip)
        if len(here) == 0:
            continue
        bounds = rows[here, 1:3]
        label, nearest = window_labels(bounds, truth, iou_positive)
        labels[here] = label
        me = label == ME
        if me.any():
            targets[here[me]] = regression_targets(bounds[me], truth[nearest[me]])
    return torch.tensor(labels), torch.tensor(targets, dtype=torch.float32)


# --------------------------------------------------------------------------------------------- data
@dataclass
class VideoFlow:
    """One video's flow (:func:`mecore.inputs.flow_rows`: (N, S, S, 2) float16 cache rows, the last
    ``flow_step`` rows zero) divided by ``scale``, read only when sliced: ``flow[a:b]`` is the (b - a, 2, S, S)
    float32 tensor of rows a..b-1. Pickles as the cache entry's path and the scale."""

    rows: Rows
    scale: float

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: slice) -> torch.Tensor:
        block = torch.from_numpy(self.rows[index].astype(np.float32))
        return (block.permute(0, 3, 1, 2) / self.scale).contiguous()


def stream_flows(dataset: Dataset, videos, train_videos, inputs: Config,
                 progress: bool = False) -> dict[str, VideoFlow]:
    """Per video of ``videos`` its :class:`VideoFlow`: the optical flow (dx, dy) from frame t to frame
    t + ``inputs.flow_step`` on the face crop ``inputs.crop``, area-averaged to ``inputs.input_size`` px
    (``inputs``: the ``input`` group; cached, computed where missing), divided by the standard deviation of the
    ``train_videos``' flows (accumulated chunk by chunk, :func:`mecore.inputs.streaming_std`)."""
    rows = {name: video_flow(dataset, inputs, name)
            for name in tqdm(list(dict.fromkeys(videos)), desc="flows", disable=not progress, leave=False)}
    scale = max(streaming_std([rows[name] for name in train_videos]), 1e-6)
    return {name: VideoFlow(entry, scale) for name, entry in rows.items()}


def video_flow(dataset: Dataset, inputs: Config, name: str) -> Rows:
    """One video's cached flow rows (:func:`stream_flows`, before scaling), computed where missing; ``dataset`` is
    read as the folds read it (``inputs.max_fps``)."""
    video = dataset.at_most_fps(inputs.max_fps).video(name)
    return flow_rows(video, CropSpec(**inputs.crop), inputs.flow_step, inputs.flow_method, size=inputs.input_size,
                     channels="xy")


def prepare(dataset: Dataset, config: Config, name: str) -> None:
    """The model's ``prepare`` (:class:`mecore.models.ModelSpec`): one video's flow, once, before the folds."""
    video_flow(dataset, config.input, name)


def free_starts(expressions: pd.DataFrame, video: str, n_frames: int, length: int) -> np.ndarray:
    """Start indices of clips of ``length`` frames in ``video`` that overlap no annotated expression."""
    busy = np.zeros(n_frames + 1, dtype=np.int64)
    for row in expressions[expressions["video"] == video].itertuples():
        busy[int(row.onset)] += 1
        busy[min(int(row.offset) + 1, n_frames)] -= 1
    covered = np.concatenate([[0], np.cumsum(np.cumsum(busy)[:n_frames] > 0)])
    starts = np.arange(max(n_frames - length + 1, 0))
    return starts[covered[starts + length] - covered[starts] == 0]


def _random_free_clips(expressions: pd.DataFrame, lengths: dict[str, int], length: int, count: int,
                       rng: np.random.Generator) -> list[tuple[str, int]]:
    """``count`` clips (video, start) of ``length`` frames without any expression, uniformly over all
    positions; where no such clip exists (short, busy videos), clips without a micro-expression."""
    for excluded in (expressions, expressions[expressions["type"] == "micro"]):
        candidates = [(video, start) for video, n in lengths.items()
                      for start in free_starts(excluded, video, n, length)]
        if candidates or not count:
            return [candidates[i] for i in rng.choice(len(candidates), count)] if count else []
    raise ValueError(f"no clip of {length} frames without a micro-expression in videos {sorted(lengths)}")


def pretraining_clips(expressions: pd.DataFrame, lengths: dict[str, int], config: Config,
                      rng: np.random.Generator) -> list[tuple[str, int, int, int]]:
    """Sec. III-A pre-training samples (video, first, last, class): the n_l MEs (onset..offset);
    n_l r_noL clips of l_noL frames without any label; n_l r_MaE macro-expressions from onset to apex + k
    (``config``: the ``pretrain`` group)."""
    micro = expressions[expressions["type"] == "micro"]
    clips = [(row.video, int(row.onset), int(row.offset), ME) for row in micro.itertuples()]
    n_l = len(clips)
    for video, start in _random_free_clips(expressions, lengths, config.l_nol, round(n_l * config.r_nol), rng):
        clips.append((video, int(start), int(start) + config.l_nol - 1, NON_ME))
    macro = expressions[expressions["type"] == "macro"]
    count = round(n_l * config.r_mae)
    if count and len(macro):
        chosen = rng.choice(len(macro), count, replace=count > len(macro))
        for row in macro.iloc[chosen].itertuples():
            apex = row.offset if pd.isna(row.apex) else row.apex  # no apex annotated: the offset stands in
            last = min(int(apex) + config.macro_k, lengths[row.video] - 1)
            clips.append((row.video, int(row.onset), max(last, int(row.onset)), NON_ME))
    return clips


def mesnet_training_clips(expressions: pd.DataFrame, lengths: dict[str, int], config: Config,
                          rng: np.random.Generator) -> list[tuple[str, int]]:
    """Sec. III-D training clips (video, start) of l_MESNet frames: r_tME per ME at random positions that
    contain it, r_tMaE per ME around randomly chosen macro-expressions, r_tNL per ME without any expression."""
    micro, macro = expressions[expressions["type"] == "micro"], expressions[expressions["type"] == "macro"]
    n_me, clip_length, train = len(micro), config.input.clip_length, config.train

    def around(row, count):
        n = lengths[row.video]
        length = min(clip_length, n)
        low, high = sorted((int(row.onset), int(row.offset) - length + 1))
        low, high = min(max(low, 0), n - length), min(max(high, 0), n - length)
        return [(row.video, int(start)) for start in rng.integers(low, high + 1, count)]

    clips = [clip for row in micro.itertuples() for clip in around(row, train.r_tme)]
    count = round(n_me * train.r_tmae)
    if count and len(macro):
        for index in rng.choice(len(macro), count, replace=count > len(macro)):
            clips += around(macro.iloc[index], 1)
    clips += _random_free_clips(expressions, lengths, clip_length, round(n_me * train.r_tnl), rng)
    return clips


class PretrainClips(torch.utils.data.Dataset):
    """Items (clip resampled to ``n_pre`` frames (n_pre, 2, S, S), class) of :func:`pretraining_clips`; each
    item reads its clip's rows from the cache (:class:`VideoFlow`)."""

    def __init__(self, flows: dict[str, VideoFlow], clips: list[tuple[str, int, int, int]], n_pre: int):
        self.flows, self.clips, self.n_pre = flows, clips, n_pre

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int):
        video, first, last, label = self.clips[index]
        return resample_time(self.flows[video][first:last + 1], self.n_pre), label


class MESNetClips(torch.utils.data.Dataset):
    """Items (clip of ``clip_length`` frames resampled to ``clip_frames`` (n, 2, S, S), MEs (K, 2)):
    the micro-expressions overlapping the clip in resampled clip frames, NaN-padded to a common K. Each item
    reads its clip's rows from the cache (:class:`VideoFlow`)."""

    def __init__(self, flows: dict[str, VideoFlow], clips: list[tuple[str, int]], micro: pd.DataFrame,
                 clip_length: int, clip_frames: int):
        self.flows, self.clips, self.clip_length, self.clip_frames = flows, clips, clip_length, clip_frames
        self.targets = []
        for video, start in clips:
            length = min(clip_length, len(flows[video]))
            rows = micro[(micro["video"] == video) & (micro["offset"] >= start) & (micro["onset"] < start + length)]
            scale = (clip_frames - 1) / max(length - 1, 1)
            self.targets.append((rows[["onset", "offset"]].to_numpy(float) - start) * scale)
        self.width = max([1] + [len(t) for t in self.targets])

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int):
        video, start = self.clips[index]
        flow = self.flows[video]
        clip = resample_time(flow[start:start + min(self.clip_length, len(flow))], self.clip_frames)
        target = torch.full((self.width, 2), float("nan"))
        target[:len(self.targets[index])] = torch.tensor(self.targets[index], dtype=torch.float32)
        return clip, target


# ----------------------------------------------------------------------------------------- training
def optimizer_spec(optim: Config) -> OptimizerSpec:
    """The optimiser of the ``optim`` group (pre-training and training alike)."""
    return OptimizerSpec(optim.optimizer, optim.lr, momentum=optim.momentum)


def train_config(config: Config, epochs: int, seed: int, exclude: tuple[str, ...], **options) -> TrainConfig:
    """:class:`mecore.train.TrainConfig` of the ``optim`` group (Sec. III-D) and ``trial.max_steps``; L2 over every
    parameter but those whose names start with ``exclude``."""
    optim = config.optim
    return TrainConfig(optimizer_spec(optim), epochs=epochs, batch_size=optim.batch_size, micro_batch=optim.micro_batch,
                       max_steps=config.trial.max_steps, l2=L2Penalty(optim.l2, exclude=exclude), seed=seed,
                       mixed_precision=optim.mixed_precision, **options)


def pretrain_backbone(flows: dict[str, VideoFlow], expressions: pd.DataFrame, train_videos, val_videos,
                      config: Config, seed: int = 0, checkpoint_dir: str | Path | None = None,
                      progress: bool = False, resume: bool | str = "auto") -> tuple[TrainResult, pd.DataFrame, dict]:
    """Pre-train the backbone as an ME / non-ME classifier (Sec. III-A, Eq. 8) and keep, over
    ``pretrain.candidates`` random initialisations, the one of best validation accuracy (Sec. IV-A-3, IV-B,
    Table III; stopping at the first that reaches ``pretrain.good_enough``). Reads ``config``'s ``input``,
    ``optim``, ``pretrain`` and ``trial`` groups only (the groups that key its checkpoints).

    Returns the chosen training result, the candidates table and a Table III-style summary of the
    selected network on the validation clips (clips, ME clips, T = correct, TP, loss, accuracy).
    """
    pretrain, rng = config.pretrain, np.random.default_rng(seed)
    lengths = {name: len(flow) for name, flow in flows.items()}
    train_clips = pretraining_clips(expressions[expressions["video"].isin(train_videos)],
                                    {v: lengths[v] for v in train_videos}, pretrain, rng)
    val_clips = pretraining_clips(expressions[expressions["video"].isin(val_videos)],
                                  {v: lengths[v] for v in val_videos}, pretrain, rng)
    settings = train_config(config, pretrain.epochs, seed, ("output.",), monitor="val_accuracy", maximize=True,
                            validate_every=pretrain.validate_every, restore_best=True)
    frame_size, n_pre = config.input.input_size, pretrain.n_pre
    seeds = [seed * 1000 + i for i in range(pretrain.candidates)]
    result, table = select_by_validation(
        lambda: PretrainNet(2, frame_size, n_pre), seeds, F.cross_entropy,
        PretrainClips(flows, train_clips, n_pre), PretrainClips(flows, val_clips, n_pre),
        settings, good_enough=pretrain.good_enough, checkpoint_dir=checkpoint_dir,
        val_metrics=validation_accuracy, resume=resume if checkpoint_dir else False, progress=progress)
    val_data = PretrainClips(flows, val_clips, n_pre)
    logits = predict(result.model, val_data, batch_size=32)
    labels = torch.tensor([clip[3] for clip in val_clips])
    correct = logits.argmax(dim=1) == labels
    summary = {"training clips": len(train_clips), "training ME clips": sum(c[3] == ME for c in train_clips),
               "total clips": len(val_clips), "ME clips": int((labels == ME).sum()), "T": int(correct.sum()),
               "TP": int((correct & (labels == ME)).sum()), "loss": float(F.cross_entropy(logits, labels)),
               "accuracy": float(correct.float().mean())}
    return result, table, summary


def build_mesnet(config: Config) -> MESNet:
    """MESNet for ``input.input_size`` px flow frames with the ``train`` group's CRN and proposal settings."""
    train = config.train
    return MESNet(2, config.input.input_size, n_cr=train.n_cr, shared_temporal=train.shared_temporal,
                  t_cpn=train.t_cpn, t_nms=train.t_nms, max_proposals=train.max_proposals)


def train_mesnet(flows: dict[str, VideoFlow], expressions: pd.DataFrame, train_videos, config: Config,
                 backbone_state: dict | None = None, seed: int = 0, checkpoint_dir: str | Path | None = None,
                 progress: bool = False, resume: bool | str = "auto") -> TrainResult:
    """Train MESNet end to end with Eq. 14 (``optim`` group, Sec. III-D) for ``train.epochs`` epochs, the
    backbone initialised from ``backbone_state`` (the pre-trained one; None: random, Table V)."""
    torch.manual_seed(seed)
    model = build_mesnet(config)
    if backbone_state is not None:
        model.backbone.load_state_dict(backbone_state)
    rng = np.random.default_rng(seed + 1)
    train = expressions[expressions["video"].isin(train_videos)]
    lengths = {v: len(flows[v]) for v in train_videos}
    clips = mesnet_training_clips(train, lengths, config, rng)
    data = MESNetClips(flows, clips, train[train["type"] == "micro"], config.input.clip_length,
                       config.input.clip_frames)
    settings = train_config(config, config.train.epochs, seed, ("crn.classify.", "crn.regress."),
                            monitor="train_loss", restore_best=False)
    return fit(model, MESNetLoss(model, config.train.iou_positive, config.train.balance_crn), data, None, settings,
               checkpoint_dir=checkpoint_dir, resume=resume if checkpoint_dir else False, progress=progress)


# ---------------------------------------------------------------------------------------- prediction
@dataclass
class ClipBatch:
    """The threshold-free part of a forward pass on a batch of a video's clips: the clips' first frames,
    their spatial features ``f`` (B, N, L) and the CPN's logit maps."""

    starts: list[int]
    spatial: torch.Tensor
    cpn_logits: list[torch.Tensor]


def clip_outputs(model: MESNet, flow: VideoFlow, inputs: Config, batch_size: int = 8) -> Iterator[ClipBatch]:
    """Backbone and CPN on every clip of one video (Sec. III-D): clips of l_MESNet frames overlapping by
    l_overlap, resampled to ``clip_frames`` (``inputs``: the ``input`` group); yielded ``batch_size`` clips at a
    time, each batch's rows read from the cache when it is reached. Nothing here depends on T_CPN, T_CRN or T_nms."""
    model.eval()
    device = next(model.parameters()).device
    length = min(inputs.clip_length, len(flow))
    starts = clip_starts(len(flow), inputs.clip_length, inputs.clip_overlap)
    for first in range(0, len(starts), batch_size):
        batch = starts[first:first + batch_size]
        with torch.no_grad():
            clips = torch.stack([resample_time(flow[s:s + length], inputs.clip_frames) for s in batch]).to(device)
            spatial, spatiotemporal = model.backbone(clips)
            outputs = ClipBatch(batch, spatial, model.cpn(spatiotemporal))
        yield outputs


@torch.no_grad()
def scored_proposals(model: MESNet, batches: Iterable[ClipBatch], n_frames: int, inputs: Config, t_cpn: float,
                     t_nms: float) -> tuple[np.ndarray, np.ndarray]:
    """CPN proposals (>= ``t_cpn``, NMS at ``t_nms`` per clip) and their CRN refinements, in video frame
    positions (fractional): rows [onset, offset, CPN probability] and [onset, offset, CRN ME probability].
    ``inputs``: the ``input`` group (clip geometry)."""
    length = min(inputs.clip_length, n_frames)
    scale = (length - 1) / (inputs.clip_frames - 1)
    cpn_rows, crn_rows = [np.zeros((0, 3))], [np.zeros((0, 3))]
    for batch in batches:
        proposals = model.propose(batch.cpn_logits, inputs.clip_frames, t_cpn, t_nms)
        if not len(proposals):
            continue
        crn_logits, crn_regression = model.classify_proposals(batch.spatial, proposals)
        proposals = proposals.numpy()
        offset = np.asarray(batch.starts, float)[proposals[:, 0].astype(int)][:, None]
        bounds = proposals[:, 1:3]
        cpn_rows.append(np.column_stack([offset + bounds * scale, proposals[:, 3]]))
        refined = apply_regression(bounds, crn_regression.float().cpu().numpy())
        probability = crn_logits.float().softmax(dim=1)[:, ME].cpu().numpy()
        crn_rows.append(np.column_stack([offset + refined * scale, probability]))
    return np.concatenate(cpn_rows), np.concatenate(crn_rows)


def video_intervals(rows: np.ndarray, threshold: float, t_nms: float, frame_numbers, video: str) -> pd.DataFrame:
    """Rows [onset, offset, score] of :func:`scored_proposals` with score >= ``threshold``, rounded to the
    video's frame numbers, then temporal NMS over the whole video at ``t_nms`` (Sec. III-D)."""
    frame_numbers = np.asarray(frame_numbers)
    rows = rows[rows[:, 2] >= threshold]
    onset = np.clip(np.rint(rows[:, 0]), 0, len(frame_numbers) - 1).astype(int)
    offset = np.clip(np.rint(rows[:, 1]), 0, len(frame_numbers) - 1).astype(int)
    frame = pd.DataFrame({"video": video, "onset": frame_numbers[np.minimum(onset, offset)],
                          "offset": frame_numbers[np.maximum(onset, offset)], "type": "micro", "score": rows[:, 2]})
    return temporal_nms(frame, t_nms).reset_index(drop=True)


def spot_video(model: MESNet, flow: VideoFlow, frame_numbers, video: str, config: Config,
               batch_size: int = 8) -> tuple[pd.DataFrame, pd.DataFrame]:
    """CPN and CRN intervals of one video (Sec. III-D): clips of l_MESNet frames overlapping by
    l_overlap, resampled to ``clip_frames``; CPN windows >= T_CPN; CRN probability >= T_CRN and its
    regressed boundaries; temporal NMS (T_nms) over each video. Frame numbers of the video. Memory holds one
    batch of clips (and the proposals so far) whatever the video's length."""
    t_cpn, t_nms = config.train.t_cpn, config.train.t_nms  # they also select the CRN's training proposals
    batches = clip_outputs(model, flow, config.input, batch_size)
    cpn_rows, crn_rows = scored_proposals(model, batches, len(flow), config.input, t_cpn, t_nms)
    return (video_intervals(cpn_rows, t_cpn, t_nms, frame_numbers, video),
            video_intervals(crn_rows, config.test.t_crn, t_nms, frame_numbers, video))


# --------------------------------------------------------------------------------------------- LOSO
# The backbone's pre-training reads the input, split, optim, pretrain and trial groups; its checkpoints are keyed by
# them: the configuration without train, test and run. (The input group's clip geometry, unread by pre-training, keys
# it too; optim.micro_batch keys it although pre-training's per-clip mean loss changes only by float rounding: the
# checkpoint's TrainConfig records it and a resume under another is refused.)
PRETRAIN_EXCLUDES = ("train", "test", "run")


@dataclass
class FoldModel:
    """What :func:`train_fold` leaves: the trained MESNet, its inputs and how it was trained."""

    model: MESNet
    flows: dict[str, VideoFlow]
    train_videos: list[str]
    val_videos: list[str]
    pretraining: TrainResult | None
    candidates: pd.DataFrame | None
    pretraining_summary: dict | None
    training: TrainResult


def model_dir(fold: LosoFold, exclude: tuple[str, ...] = TRAINING_EXCLUDES) -> Path:
    """The fold's checkpoint folder shared by ``mesnet_cpn`` and ``mesnet_crn``: keyed by the dataset, the seed and
    the configuration without the groups ``exclude`` (default: ``test`` and ``run``, the training's key;
    :data:`PRETRAIN_EXCLUDES`: the backbone pre-training's)."""
    return training_dir(SPECS["mesnet_crn"], fold, fold.config.keyed(exclude), "mesnet_models")


def trained_checkpoints(fold: LosoFold) -> list[Path]:
    """The file a finished fold reloads (``ModelSpec.checkpoints``): the trained MESNet of :func:`train_fold`, keyed
    as there on the dataset read at ``input.max_fps``."""
    return [model_dir(fold.at_most_fps()) / "mesnet" / CHECKPOINT_NAME]


def train_fold(fold: LosoFold) -> FoldModel:
    """Split (Sec. IV-A-3), open the flows (:func:`stream_flows`), pre-train and select the backbone, train MESNet
    (checkpointed)."""
    fold = fold.at_most_fps()
    config, split = fold.config, fold.config.split
    train_videos, val_videos = mesnet_train_val_split(
        fold.dataset.annotations, fold.test_subject, seed=fold.seed, min_train=split.min_train,
        min_val=split.min_val, reference=split.reference)
    flows = stream_flows(fold.dataset, train_videos + val_videos + fold.test_videos, train_videos, config.input,
                         fold.progress)
    expressions = expression_indices(fold.dataset, train_videos + val_videos)
    pretraining = candidates = summary = None
    if config.pretrain.enabled:
        pretraining, candidates, summary = pretrain_backbone(
            flows, expressions, train_videos, val_videos, config, fold.seed,
            model_dir(fold, PRETRAIN_EXCLUDES) / "pretrain", fold.progress, fold.resume)
        backbone_state = pretraining.model.backbone.state_dict()
    else:
        backbone_state = None
    training = train_mesnet(flows, expressions, train_videos, config, backbone_state, fold.seed,
                            model_dir(fold) / "mesnet", fold.progress, fold.resume)
    return FoldModel(training.model, flows, train_videos, val_videos, pretraining, candidates, summary, training)


def run_fold(fold: LosoFold) -> pd.DataFrame:
    """Train (or reload) the fold's MESNet and spot the left-out subject's videos with the CPN or the CRN."""
    fold = fold.at_most_fps()
    trained = train_fold(fold)
    spotted = []
    for name in fold.test_videos:
        cpn, crn = spot_video(trained.model, trained.flows[name], fold.dataset.video(name).frame_numbers, name,
                              fold.config)
        spotted.append(cpn if fold.config.test.output == "cpn" else crn)
    return pd.concat(spotted, ignore_index=True)


# a threshold setting's names -> their configuration keys (T_CPN and T_nms also select the CRN's training proposals)
THRESHOLD_KEYS = {"t_cpn": "train.t_cpn", "t_crn": "test.t_crn", "t_nms": "train.t_nms"}


def predict_with_thresholds(dataset: Dataset, settings: list[dict], profile: str | None = None, *, seed: int = 0,
                            progress: bool = True) -> list[dict[str, pd.DataFrame]]:
    """LOSO predictions of both stages under several test-time threshold settings (Sec. IV-C-4, Tables VII-VIII).

    Each setting maps some of ``t_cpn``, ``t_crn``, ``t_nms`` to a value (T_nms = 1 is "no NMS": an IoU never
    exceeds 1); missing keys take the profile's values (``train.t_cpn``, ``test.t_crn``, ``train.t_nms``:
    :data:`THRESHOLD_KEYS`). Our reading of Tables VII-VIII: the thresholds vary at test time on one trained
    model per fold. T_CPN and T_nms also select the proposals the CRN trains on, so each fold's network is the
    one trained with the profile's configuration (:func:`train_fold`, which trains only when its checkpoint is
    missing) and the swept values change only what the trained network proposes (T_CPN, T_nms per clip), keeps
    (T_CRN) and suppresses (T_nms per video). The backbone and the CPN run once per video for all settings.

    Returns per setting ``{"cpn": DataFrame, "crn": DataFrame}`` pooled over the folds, in the format of
    :func:`mecore.loso.run_loso`'s predictions (subject, video, onset, offset, type, score); at the profile's
    own thresholds they equal ``run_loso("mesnet_cpn" / "mesnet_crn", dataset, profile).predictions``.
    """
    profile = paths.profile(profile)
    config = SPECS["mesnet_crn"].config(profile, dataset.name)
    for setting in settings:
        unknown = set(setting) - set(THRESHOLD_KEYS)
        if unknown:
            raise ValueError(f"threshold setting {setting}: unknown keys {sorted(unknown)}; "
                             f"allowed: {list(THRESHOLD_KEYS)}")
    chosen = [{**{name: config.get_path(key) for name, key in THRESHOLD_KEYS.items()}, **setting}
              for setting in settings]
    subjects = list(dataset.subjects)
    pooled: list[dict[str, list[pd.DataFrame]]] = [{"cpn": [], "crn": []} for _ in chosen]
    for subject in tqdm(subjects, desc="MESNet threshold sweep", disable=not progress):
        seed_everything(seed)  # as mecore.loso.run_fold, in case the fold still has to be trained
        fold = LosoFold(dataset, subject, [s for s in subjects if s != subject], config,
                        workdir=paths.runs_dir() / "mesnet_models", seed=seed).at_most_fps()
        trained = train_fold(fold)
        spotted: list[dict[str, list[pd.DataFrame]]] = [{"cpn": [], "crn": []} for _ in chosen]
        for name in fold.test_videos:
            flow, frame_numbers = trained.flows[name], fold.dataset.video(name).frame_numbers
            # (T_CPN, T_nms) -> scored proposals, shared by the settings that differ in T_CRN; filled batch by
            # batch of clips, so that memory holds one batch's features for every setting
            keys = list(dict.fromkeys((setting["t_cpn"], setting["t_nms"]) for setting in chosen))
            parts = {key: ([], []) for key in keys}
            for batch in clip_outputs(trained.model, flow, config.input):
                for key in keys:
                    cpn_rows, crn_rows = scored_proposals(trained.model, [batch], len(flow), config.input, *key)
                    parts[key][0].append(cpn_rows)
                    parts[key][1].append(crn_rows)
            proposals = {key: (np.concatenate(cpn), np.concatenate(crn)) for key, (cpn, crn) in parts.items()}
            for setting, out in zip(chosen, spotted):
                cpn_rows, crn_rows = proposals[(setting["t_cpn"], setting["t_nms"])]
                out["cpn"].append(video_intervals(cpn_rows, setting["t_cpn"], setting["t_nms"], frame_numbers, name))
                out["crn"].append(video_intervals(crn_rows, setting["t_crn"], setting["t_nms"], frame_numbers, name))
        for out, total in zip(spotted, pooled):
            for stage in ("cpn", "crn"):
                table = pd.concat(out[stage], ignore_index=True)
                table.insert(0, "subject", subject)
                total[stage].append(table)
    return [{stage: pd.concat(total[stage], ignore_index=True) for stage in ("cpn", "crn")} for total in pooled]


PAPER = Config({  # Wang et al. 2021, CAS(ME)^2 settings; unmarked values are ours (module docstring)
    "input": {"crop": {"size": 128, "box": "median", "detect_every": 15},  # one fixed box per video (notebook 10)
              "flow_method": "tvl1", "flow_step": 1,  # "optical flow" (Sec. IV-A-3): our reading, consecutive frames
              "input_size": 64,  # not stated
              "clip_length": cite(100, "Sec. IV-A-3"), "clip_overlap": cite(20, "Sec. IV-A-3"),  # l_MESNet, L_overlap
              "clip_frames": 100,  # N of a clip: l_MESNet at 30 fps; SAMM's clips are resampled to it
              "max_fps": cite(None, "Sec. IV-A-3", type=float)},  # every frame: the frame counts are at native rates
    # the train/validation division of both stages: 7:3 of the videos, >= 64 % / 15 % of the dataset's MEs
    "split": {"reference": cite("dataset", "Sec. IV-A-3"), "min_train": cite(0.64, "Sec. IV-A-3"),
              "min_val": cite(0.15, "Sec. IV-A-3")},
    "optim": {"optimizer": cite("sgd", "Sec. III-D"), "lr": cite(1e-4, "Sec. III-D"),  # pre-training and training
              "momentum": cite(0.0, "Sec. III-D"), "batch_size": cite(2, "Sec. III-D"), "l2": cite(0.01, "Sec. III-D"),
              "mixed_precision": True,  # float16 autocast on CUDA
              # batch 2 fits any device: no micro-batches. They would change MESNet's gradient, not only its
              # rounding: Eq. 11's mask M is drawn from each pass's ME / non-ME ratio, the masked means are per pass.
              "micro_batch": None},
    "pretrain": {"enabled": cite(True, "Sec. III-A"), "epochs": cite(10_000, "Sec. IV-A-3"),
                 "validate_every": cite(10, "Sec. IV-A-3"), "candidates": cite(5, "Sec. IV-A-3"),
                 "good_enough": cite(0.9, "Sec. IV-A-3"), "n_pre": 16,  # N_pre: not stated
                 "l_nol": cite(16, "Sec. IV-A-3"), "r_nol": cite(1.0, "Sec. IV-A-3"), "r_mae": cite(0.5, "Sec. IV-A-3"),
                 "macro_k": 8},  # k: not stated
    "train": {"epochs": cite(30, "Sec. IV-A-3"), "r_tme": cite(10, "Sec. IV-A-3"), "r_tmae": cite(4, "Sec. IV-A-3"),
              "r_tnl": cite(2, "Sec. IV-A-3"), "n_cr": 16,  # N_CR: not stated
              "shared_temporal": cite(False, "Table VI"), "iou_positive": cite(0.7, "Eq. 10"),
              # T_CPN and T_nms select the CRN's training proposals (V_pro, Eq. 12) as well as the output
              "t_cpn": cite(0.5, "Sec. IV-C-5"), "t_nms": cite(0.5, "Sec. IV-C-5"),
              "max_proposals": cite(None, "Eq. 12", type=int),  # V_pro: every proposal
              "balance_crn": False},  # not in the paper (module docstring)
    "test": {"output": "crn", "t_crn": cite(0.5, "Sec. IV-C-5")},
    "trial": {"max_steps": None},
    "run": {"repeats": cite(3, "Sec. IV-C")},  # the median of three divisions on CAS(ME)^2
})
# default: reduced TV-L1 every 4 frames, 32 px, Adam with lambda 1e-4, a balanced CRN loss, at most 32 proposals
# per clip (measured in notebook 10), and a budget: fewer epochs, candidates and training clips per ME
DEFAULT = PAPER.set({"input.flow_method": "tvl1_reduced", "input.flow_step": 4, "input.input_size": 32,
                     "split.reference": "fold", "optim.optimizer": "adam", "optim.l2": 1e-4, "pretrain.epochs": 20,
                     "pretrain.validate_every": 2, "pretrain.candidates": 2, "train.epochs": 8, "train.r_tme": 4,
                     "train.r_tmae": 2, "train.r_tnl": 2, "train.max_proposals": 32, "train.balance_crn": True,
                     "run.repeats": 1})
SMOKE = DEFAULT.set({"input.crop.size": 64, "input.flow_method": "dis", "optim.lr": 1e-3, "pretrain.epochs": 4,
                     "pretrain.validate_every": 1, "pretrain.candidates": 1, "train.epochs": 3, "train.r_tme": 1,
                     "train.r_tmae": 1, "train.r_tnl": 1, "train.max_proposals": 8,
                     "split.min_train": 0.25})  # 3 one-video subjects: 64 % of the MEs cannot fit in one training video
PROFILES = {"smoke": SMOKE, "default": DEFAULT, "large": DEFAULT, "paper": PAPER}
# Sec. IV-A-3 for SAMM (200 fps): l_noL = 100, l_MESNet = 670, L_overlap = 134, r_tME = 10, r_tNL = 4, 85 epochs;
# the paper gives no r_MaE / r_tMaE for SAMM (no macro samples) and no k (8 frames at 30 fps -> 53 at 200 fps).
# Other profiles read SAMM-LV at every 7th frame (28.6 fps), where the CAS(ME)^2 frame counts apply as they are.
PAPER_SAMM = {"pretrain.l_nol": cite(100, "Sec. IV-A-3"), "pretrain.r_mae": 0.0, "pretrain.macro_k": 53,
              "train.r_tmae": 0, "train.r_tnl": cite(4, "Sec. IV-A-3"), "input.clip_length": cite(670, "Sec. IV-A-3"),
              "input.clip_overlap": cite(134, "Sec. IV-A-3"), "train.epochs": cite(85, "Sec. IV-A-3"),
              "run.repeats": 1, "input.flow_step": 7}  # see "SAMM" in the module docstring
DATASET_OVERRIDES = {"paper": {"samm_lv": PAPER_SAMM},
                     "default": {"samm_lv": {"input.max_fps": 30}}, "large": {"samm_lv": {"input.max_fps": 30}},
                     # the smoke SAMM-LV twin's 4 s videos hold no 100-frame clip free of expressions
                     "smoke": {"samm_lv": {"input.max_fps": 30, "input.clip_length": 40, "input.clip_overlap": 8}}}
SPECS = {}
for _output in ("cpn", "crn"):
    SPECS[f"mesnet_{_output}"] = register(ModelSpec(
        name=f"mesnet_{_output}", task="spotting", paper="Wang et al. 2021", run_fold=run_fold,
        configs={profile: config.set({"test.output": _output}) for profile, config in PROFILES.items()},
        spotting_convention="mesnet", dataset_overrides=DATASET_OVERRIDES, checkpoints=trained_checkpoints,
        prepare=prepare))
