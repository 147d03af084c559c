"""Fu et al. 2023, STSNet_SW: ResNet frame features, key-frame attention, per-pixel bi-GRU, sliding windows.

Per-frame classification (Sec. 2, Fig. 1): a K = 5 window centred on each frame (first / last K // 2 "none",
Sec. 2.1) says if its centre shows none / micro / macro. ResNet-18 per frame (Sec. 2.1; grey, 5x5 stride-2 stem as the
code's ``models/resnet.py``), ``p_k`` of C x H x W; VASNet-style key-frame scores ``z_k``, the M = 3 highest kept in
time order (Sec. 2.2, Eqs. 1-6, Fig. 2); a bi-GRU shared by all H x W positions over the key frames, averaged over
steps, dropout 0.5, FC softmax, loss Eq. 7 (Sec. 2.3, Fig. 3). SGD 0.9, wd 5e-4, lr 1e-3 cosine to 1e-8, 30 epochs,
LOSO (Sec. 3.2). Post-processing (Sec. 2.4, 3.2): "none" (Tables 1-2), Fig. 4 merging (Table 3), duration relabelling
(Table 4: micro if <= 15 frames CAS(ME)^2, 100 SAMM-LV). Metrics: ``"stsnet"`` (Eqs. 8-15), MEGC.

Choices where the paper is silent or ambiguous (published code cited where it settles one):

* **SAMM-LV's 200 fps.** ``paper`` windows consecutive frames, other profiles every 7th (``input.max_fps`` 30).
  Table 4 durations stay in the video's own frame numbers.
* **Key-frame features.** Eqs. 1-6 need vectors: ``p_k`` averaged over H x W (as ``resnet.py``'s commented code).
  **Eq. 4**: ``W3 p_i`` (printed ``W3 p_k`` ignores attention); ``1 / sqrt(C)`` scaling; dropout 0.5, no bias.
* **Trainable selection.** Straight-through gate ``1 + z_k - stopgrad(z_k)`` on the top-M maps (the code reads
  offline masks; ``BinarizedF`` commented out). Ties go to the earlier frame.
* **Temporal module.** "two ... bi-GRUs", C' = 64: ``nn.GRU(512, 32, 2, bidirectional=True)`` as the code. Three
  classes, as the paper (the code trains one two-class network per type).
* **Inputs.** Grey crops in one fixed box per video, in [0, 1] as ``ToTorchFormatTensor(div=True)``; training
  crops as ``GroupScaleRandomCrop``. **Reference** (not paper; stand-in for missing pre-training):
  ``"sliding_median"`` subtracts the median within ``input.reference_half_s`` = 1 s (offline, cached; notebook 13).
* **Pre-training** (ImageNet, then AffectNet, Sec. 2.1): nothing bundled or downloaded. ``model.backbone_weights``
  takes our ResNet's or a torchvision ResNet-18's ``state_dict``: RGB kernels summed to grey (exact for a grey frame
  copied to three channels; ImageNet mean / std not applied), 7x7 resampled bilinearly to our 5x5 stem and scaled
  by 49 / 25 (the whole filter at 5/7 scale, flat-patch response kept; a centre crop would cut it). The code's
  ``premodel`` keeps only same-name same-shape entries, so there a 7x7 RGB ``conv1`` would stay random.
* **Training windows.** All (``paper``) or ``train.windows_per_class`` per epoch, Bayes-reweighted (notebook 13).
* **Batch.** The code loads one window at a time, divides each loss by 8 and steps every 8 windows (an epoch's last
  1-7 one step, their mean; ``util.tr_epoch``): ``paper`` = batch 8 in passes of one window, the same gradients.
* **Mixed precision** (CUDA float16) on; Eq. 7's logits and the key-frame scorer (top-M compares scores) in float32.
* **Post-processing order.** Duration rule on merged labels (Table 4 vs 3; elsewhere micro if <= 0.5 s); score = mean
  class probability; merging registered (the paper's conclusion). **No model selection**: final weights (``main.py``
  picks by test accuracy).

Profiles (:mod:`mecore.config`): ``PAPER`` = above, 128 x 128, widths 64-512, every window, batch 8, lr 1e-3.
``DEFAULT``: same depth, K, M, bi-GRU and schedule, 64 x 64 crops, widths 8-64, 12 epochs of 3 x 320 balanced
windows, batch 16, lr 0.016, sliding-median reference. ``SMOKE``: two tiny epochs (tests)."""
from __future__ import annotations

import math
import re
import warnings

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from mecore import paths
from mecore.config import Config, cite
from mecore.data.dataset import Dataset
from mecore.inputs import Rows, crop_rows
from mecore.loso import load_frame_scores, with_frame_scores  # noqa: F401  (load_frame_scores: re-exported for notebooks)
from mecore.models import LosoFold, ModelSpec, count_parameters, register  # noqa: F401  (notebooks import it here)
from mecore.preprocess import CropSpec
from mecore.preprocess.cache import EntryWriter, entry_path, open_entry, source_fingerprint
from mecore.postprocess import (STSNET_MICRO_MAX_FRAMES, TYPE_CODES, intervals_to_labels, labels_to_intervals,
                             merge_label_gaps, relabel_by_duration)
from mecore.train import OptimizerSpec, ScheduleSpec, TrainConfig, fit
from mecore.weights import load_mapped, read_state_dict

CLASSES = ("none", "micro", "macro")  # indices = TYPE_CODES (0 none, 1 micro, 2 macro)
POSTPROCESSING = ("none", "merge", "duration")  # Tables 1-2, Table 3, Table 4
PRIORS = ("training", "sampled")  # class shares the per-frame decisions assume (TrainingWindows.decision_weights)
assert all(CLASSES[code] == name for name, code in TYPE_CODES.items())


# ------------------------------------------------------------------------------------ windows
def window_centres(n_frames: int, k: int = 5) -> np.ndarray:
    """Indices of the frames that centre a window of ``k`` frames: all but the first and last k // 2."""
    if k < 1 or k % 2 == 0:
        raise ValueError(f"the window size K must be odd and positive, got {k}")
    half = k // 2
    return np.arange(half, max(n_frames - half, half), dtype=np.int64)


def window_indices(n_frames: int, k: int = 5) -> np.ndarray:
    """(T, k) frame indices of every window, row t centred on ``window_centres(n_frames, k)[t]``."""
    centres = window_centres(n_frames, k)
    return centres[:, None] + np.arange(-(k // 2), k // 2 + 1)[None, :]


# ------------------------------------------------------------------------------------ network
class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions with batch norm and an identity (or 1x1) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet-18 (He et al. 2016) for grey frames: (N, 1, S, S) -> (N, widths[-1], S / 32, S / 32).

    Stem: 5x5 stride-2 convolution, batch norm, ReLU, 3x3 stride-2 max pooling (the STSNet_SW code);
    then four stages of ``blocks`` basic blocks, the last three starting with stride 2. No pooling or
    classifier at the end: the temporal module reads the maps.
    """

    def __init__(self, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2)):
        super().__init__()
        self.widths, self.blocks = tuple(widths), tuple(blocks)
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 5, 2, padding=2, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, padding=1))
        stages, in_channels = [], widths[0]
        for stage, (width, count) in enumerate(zip(widths, blocks)):
            layers = [BasicBlock(in_channels if i == 0 else width, width, 2 if stage and i == 0 else 1)
                      for i in range(count)]
            stages.append(nn.Sequential(*layers))
            in_channels = width
        self.stages = nn.Sequential(*stages)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(frames))


class KeyFrameScorer(nn.Module):
    """Eqs. 1-6: importance scores z in (0, 1) of the K frames of each window.

    Input (B, K, C) frame vectors; output (B, K). ``alpha = (W1 P)^T (W2 p_k) / sqrt(C)``, softmax over
    the window, ``b_k = sum_i alpha_ki W3 p_i``, ``g_k = LayerNorm(Dropout(U b_k + p_k))``,
    ``z_k = sigmoid(L2(LayerNorm(Dropout(ReLU(L1 g_k)))))``.
    """

    def __init__(self, channels: int, dropout: float = 0.5):
        super().__init__()
        self.w1, self.w2, self.w3, self.u = (nn.Linear(channels, channels, bias=False) for _ in range(4))
        self.dropout = nn.Dropout(dropout)
        self.norm_g = nn.LayerNorm(channels)
        self.l1 = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(), nn.Dropout(dropout), nn.LayerNorm(channels))
        self.l2 = nn.Linear(channels, 1)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        logits = self.w2(p) @ self.w1(p).transpose(1, 2) / math.sqrt(p.shape[-1])  # [b, k, i] = alpha_{k,i}
        b = torch.softmax(logits, dim=-1) @ self.w3(p)
        g = self.norm_g(self.dropout(self.u(b) + p))
        return torch.sigmoid(self.l2(self.l1(g))).squeeze(-1)


def select_key_frames(scores: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``m`` frames of highest score per window, in time order, with straight-through gates.

    Returns (indices (B, m), gates (B, m)); a gate is ``1 + z - stopgrad(z)``: 1 in value, derivative
    1 with respect to its frame's score. Ties go to the earlier frame.
    """
    if not 1 <= m <= scores.shape[1]:
        raise ValueError(f"cannot select M = {m} key frames from windows of K = {scores.shape[1]}")
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    indices = order[:, :m].sort(dim=1).values
    chosen = scores.gather(1, indices)
    return indices, (chosen - chosen.detach()) + 1


class TemporalModule(nn.Module):
    """Sec. 2.3: one bi-GRU (``layers`` stacked, ``hidden`` units per direction) shared by all H x W
    positions, outputs averaged over the key frames, dropout, a fully connected layer over the classes.

    Input (B, M, C, H, W); output (B, classes) logits (softmax in the loss, Eq. 7).
    """

    def __init__(self, channels: int, map_size: int, hidden: int = 32, layers: int = 2, dropout: float = 0.5,
                 classes: int = len(CLASSES)):
        super().__init__()
        self.gru = nn.GRU(channels, hidden, layers, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * hidden * map_size * map_size, classes)

    def forward(self, keys: torch.Tensor) -> torch.Tensor:
        b, m, c, h, w = keys.shape
        sequences = keys.permute(0, 3, 4, 1, 2).reshape(b * h * w, m, c)
        hidden = self.gru(sequences)[0].mean(dim=1)  # (B H W, C')
        features = hidden.reshape(b, h * w * hidden.shape[-1])
        return self.fc(self.dropout(features))


class STSNet(nn.Module):
    """STSNet_SW (Fig. 1). ``model(windows)`` with windows (B, K, S, S) in [0, 1] -> (B, 3) logits of the
    centre frames; :meth:`video_probabilities` scores a whole video with shared frame features."""

    def __init__(self, crop_size: int = 128, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), k: int = 5,
                 m: int = 3, gru_hidden: int = 32, gru_layers: int = 2, dropout: float = 0.5,
                 key_dropout: float = 0.5):
        super().__init__()
        if m > k:
            raise ValueError(f"M = {m} key frames cannot exceed the window size K = {k}")
        window_centres(k, k)  # checks K
        self.k, self.m = k, m
        self.backbone = ResNet(tuple(widths), tuple(blocks))
        map_size = math.ceil(crop_size / 32)
        self.key_frames = KeyFrameScorer(widths[-1], key_dropout)
        self.temporal = TemporalModule(widths[-1], map_size, gru_hidden, gru_layers, dropout)

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, S, S) frames -> (N, C, H, W) ResNet maps."""
        return self.backbone(frames.unsqueeze(1))

    def classify_windows(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, K, C, H, W) window features -> logits (B, 3), key-frame scores (B, K), key frames (B, M).
        The scorer runs in float32 under autocast: the top-M choice compares scores."""
        with torch.autocast(features.device.type, enabled=False):
            scores = self.key_frames(features.float().mean(dim=(3, 4)))
        indices, gates = select_key_frames(scores, self.m)
        picked = indices[:, :, None, None, None].expand(-1, -1, *features.shape[2:])
        keys = features.gather(1, picked) * gates[:, :, None, None, None]
        return self.temporal(keys), scores, indices

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        b, k = windows.shape[:2]
        if k != self.k:
            raise ValueError(f"windows of {k} frames given to a network built for K = {self.k}")
        features = self.frame_features(windows.reshape(b * k, *windows.shape[2:]))
        return self.classify_windows(features.reshape(b, k, *features.shape[1:]))[0]

    @torch.no_grad()
    def video_probabilities(self, frames, batch_size: int = 256, shared: bool = True
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class probabilities (T, 3) and key-frame scores (T, K) of every window of one video's input frames
        (N, S, S): a tensor, an array or a :class:`VideoInput` (read ``batch_size`` frames at a time).

        ``shared``: the ResNet runs once per frame and the windows are cut from its maps; otherwise
        every window recomputes its K frames (the published code's way; for the benchmark and test).
        Memory holds a batch of frames and the maps of at most ``batch_size + batch_size // K + K`` frames,
        never the whole video: the maps are computed ``batch_size`` frames at a time from the first frame (those
        that windows not yet classified still need are kept for the next batch), and the windows are classified
        ``batch_size // K`` at a time from the first window as soon as their frames' maps are there. Frames and
        windows fall into the same batches however the video is read, so the outputs equal those of one pass
        over the whole video in memory. Call in eval mode (batch norm and dropout), as :func:`score_video` does.
        """
        device = next(self.parameters()).device
        n, k = len(frames), self.k
        total = len(window_centres(n, k))  # windows; window w holds frames w .. w + K - 1
        step = max(1, batch_size // k)
        offsets = torch.arange(k, device=device)
        outputs, scores = [], []

        def classify(window_features: torch.Tensor) -> None:
            logits, window_scores, _ = self.classify_windows(window_features)
            outputs.append(torch.softmax(logits.float(), dim=1).cpu())
            scores.append(window_scores.float().cpu())

        def read(start: int, stop: int) -> torch.Tensor:
            rows = frames[start:stop]
            if not isinstance(rows, torch.Tensor):
                rows = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
            return rows.to(device)

        if shared:
            features, first, done = None, 0, 0  # features: maps of frames first, first + 1, ...; done: windows
            for start in range(0, n if total else 0, batch_size):
                new = self.frame_features(read(start, min(start + batch_size, n)))
                features = new if features is None else torch.cat([features, new])
                ready = min(total, start + len(new) - k + 1)  # windows whose K maps are all computed
                while done < total and (done + step <= ready or ready == total):
                    stop = min(done + step, total)
                    rows = torch.arange(done, stop, device=device)[:, None] + offsets - first
                    classify(features[rows])
                    done = stop
                features, first = features[done - first:], done
        else:
            for done in range(0, total, step):
                stop = min(done + step, total)
                window_frames = read(done, stop + k - 1)  # the frames of windows done .. stop - 1
                rows = torch.arange(stop - done, device=device)[:, None] + offsets
                window_features = self.frame_features(window_frames[rows.reshape(-1)])
                classify(window_features.reshape(len(rows), k, *window_features.shape[1:]))
        if not outputs:
            return torch.zeros(0, len(CLASSES)), torch.zeros(0, self.k)
        return torch.cat(outputs), torch.cat(scores)


def build_model(config: Config) -> STSNet:
    """The network of a configuration (``input.crop.size``, ``input.k`` and the ``model`` group), with
    ``model.backbone_weights`` loaded when given (:func:`load_backbone_weights`; its report in
    ``model.backbone_report``). With ``model.expects_pretrained`` (``paper``) and no weights it warns: the paper
    starts from pre-trained weights."""
    net = config.model
    model = STSNet(config.input.crop.size, net.widths, net.blocks, config.input.k, net.m, net.gru_hidden,
                   net.gru_layers, net.dropout, net.key_dropout)
    model.backbone_report = None
    if net.backbone_weights:
        model.backbone_report = load_backbone_weights(model.backbone, net.backbone_weights)
    elif net.expects_pretrained:
        warnings.warn("stsnet_sw: model.backbone_weights is None, so the ResNet-18 starts from random weights; "
                      "Fu et al. 2023 (Sec. 2.1) start from ImageNet, then AffectNet weights: this is NOT the paper's "
                      "configuration (give a torchvision ResNet-18 state_dict file: --set model.backbone_weights=PATH)",
                      UserWarning, stacklevel=2)
    return model


def torchvision_resnet_names(blocks=(2, 2, 2, 2)) -> dict[str, str]:
    """Our :class:`ResNet` module prefix of each torchvision ResNet module prefix (``bn1`` -> ``stem.1``,
    ``layer2.0.downsample.1`` -> ``stages.1.0.shortcut.1``, ...); ``conv1`` -> ``stem.0`` needs adapting."""
    names = {"conv1": "stem.0", "bn1": "stem.1"}
    for stage, count in enumerate(blocks):
        for block in range(count):
            ours, theirs = f"stages.{stage}.{block}", f"layer{stage + 1}.{block}"
            for layer in ("conv1", "bn1", "conv2", "bn2"):
                names[f"{theirs}.{layer}"] = f"{ours}.{layer}"
            names[f"{theirs}.downsample.0"] = f"{ours}.shortcut.0"
            names[f"{theirs}.downsample.1"] = f"{ours}.shortcut.1"
    return names


def adapt_stem_kernel(weight: torch.Tensor, size: int) -> torch.Tensor:
    """A torchvision first-convolution kernel (C_out, 3, k, k) for our grey stem (C_out, 1, size, size): summed over
    the input channels (a grey frame copied to R, G and B gives exactly that), then resampled bilinearly (corners on
    corners) to ``size`` and multiplied by k^2 / size^2, so that a flat kernel keeps its sum."""
    grey = weight.float().sum(dim=1, keepdim=True)
    if grey.shape[-1] != size:
        grey = F.interpolate(grey, size=(size, size), mode="bilinear", align_corners=True)
        grey = grey * (weight.shape[-1] ** 2 / size ** 2)
    return grey


def load_torchvision_resnet(backbone: ResNet, state: dict, source: str = "state_dict") -> dict:
    """Load a torchvision ResNet ``state_dict`` (``conv1``, ``bn1``, ``layer1.0.conv1``, ..., ``fc``) into ``backbone``:
    names mapped by :func:`torchvision_resnet_names`, ``conv1`` adapted (:func:`adapt_stem_kernel`), ``fc.*`` dropped
    (our network has no ImageNet classifier). A checkpoint without ``num_batches_tracked`` keeps ours. Raises one
    line naming ``source`` when its widths or depths differ from the backbone's or an entry fits nowhere.
    Returns a report: format, entries loaded, entries dropped, the adaptation."""
    widths = [tuple(state[k].shape)[0] if k in state else None
              for k in ("conv1.weight", *(f"layer{i}.0.conv2.weight" for i in range(1, 5)))]
    blocks = tuple(len({m.group(1) for k in state if (m := re.match(rf"layer{i}\.(\d+)\.", k))})
                   for i in range(1, 5))
    if widths[0] != backbone.widths[0] or tuple(widths[1:]) != backbone.widths or blocks != backbone.blocks:
        raise ValueError(f"{source}: a torchvision ResNet of widths {widths[1:]} and blocks {list(blocks)}; the "
                         f"model's ResNet has widths {list(backbone.widths)} and blocks {list(backbone.blocks)} "
                         f"(set model.widths and model.blocks to the checkpoint's)")
    names, own_stem = torchvision_resnet_names(backbone.blocks), tuple(backbone.state_dict()["stem.0.weight"].shape)
    dropped = sorted(k for k in state if k.startswith("fc."))

    def target_of(key: str) -> str | None:
        module, _, field = key.rpartition(".")
        return f"{names[module]}.{field}" if module in names else None

    def adapt(key: str, value: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        return adapt_stem_kernel(value, shape[-1]) if key == "conv1.weight" else value

    loaded = load_mapped(backbone, state, source, target_of, dropped, "torchvision ResNet-18 state_dict", adapt)
    return {"format": "torchvision", "source": source, "loaded": loaded, "dropped": dropped,
            "adapted": f"conv1.weight {tuple(state['conv1.weight'].shape)} -> stem.0.weight "
                       f"{own_stem}: summed over RGB, bilinear resampling x k^2 / size^2"}


def load_backbone_weights(backbone: ResNet, path) -> dict:
    """Load ``path``, a ``state_dict`` file of our :class:`ResNet` (keys ``stem.*``, ``stages.*``) or of a torchvision
    ResNet-18 (keys ``conv1.*``, ``layer1.*``, ...: :func:`load_torchvision_resnet`), told apart by the key names.
    Never downloads. Returns the loading report; raises naming the file when it is missing or does not fit."""
    state = read_state_dict(path, "backbone_weights")
    if "conv1.weight" in state and any(k.startswith("layer1.") for k in state):
        return load_torchvision_resnet(backbone, state, str(path))
    try:
        backbone.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: neither a state_dict of mecore.models.stsnet.ResNet with widths "
                         f"{list(backbone.widths)} nor a torchvision ResNet-18's ({error})") from error
    return {"format": "mecore", "source": str(path), "loaded": len(state), "dropped": [], "adapted": None}


# ------------------------------------------------------------------------------------ data
def face_crops(dataset: Dataset, name: str, inputs: Config) -> Rows:
    """Cached grey face crops (N, S, S) uint8 of one video (``inputs``: a configuration's ``input`` group, which
    :func:`video_input` and :func:`sliding_median` take too), as lazy :class:`mecore.inputs.Rows`."""
    return crop_rows(dataset.video(name), CropSpec(**inputs.crop))


REFERENCES = (None, "video_median", "sliding_median")


class VideoInput:
    """One video's network input (N, S, S) float32, read a row range at a time: its face crops scaled to
    [0, 1] minus a label-free reference (see the docstring).

    ``crops``: :class:`Rows` (N, S, S) uint8. ``sliding``: :class:`Rows` (N, S, S) float16 of per-frame
    medians of the raw crop values (:func:`sliding_median`), divided by 255 when read; ``fixed``: one
    (S, S) float32 frame in [0, 1] subtracted from every frame (:func:`video_median`). ``inputs[a:b]``
    reads rows a..b-1 only; pickling keeps the entries' paths and the one fixed frame, never the frames.
    """

    def __init__(self, crops: Rows | np.ndarray, sliding: Rows | np.ndarray | None = None,
                 fixed: np.ndarray | None = None):
        if sliding is not None and fixed is not None:
            raise ValueError("give a sliding or a fixed reference, not both")
        self.crops = crops if isinstance(crops, Rows) else Rows(np.asarray(crops))
        self.sliding = sliding if sliding is None or isinstance(sliding, Rows) else Rows(np.asarray(sliding))
        self.fixed = None if fixed is None else np.asarray(fixed, dtype=np.float32)
        if self.sliding is not None and len(self.sliding) != len(self.crops):
            raise ValueError(f"{len(self.sliding)} reference rows for {len(self.crops)} frames")

    def __len__(self) -> int:
        return len(self.crops)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.crops.shape

    def __getitem__(self, index: slice) -> np.ndarray:
        if not isinstance(index, slice):
            raise TypeError("a VideoInput is read by row ranges, inputs[a:b]")
        start, stop, step = index.indices(len(self))
        if step != 1:
            raise ValueError("a VideoInput is read by contiguous row ranges")
        stop = max(start, stop)
        frames = self.crops[start:stop].astype(np.float32) / 255
        if self.sliding is not None:
            frames -= self.sliding[start:stop].astype(np.float32) / 255
        elif self.fixed is not None:
            frames -= self.fixed
        return frames


def video_input(dataset: Dataset, name: str, inputs: Config) -> VideoInput:
    """One video's network input (:class:`VideoInput`) under the ``input`` group ``inputs``: face crops minus the
    reference ``inputs.reference``: None, ``"video_median"`` the video's median frame (:func:`video_median`) or
    ``"sliding_median"`` the median of the frames within ``inputs.reference_half_s`` seconds of each frame
    (:func:`sliding_median`)."""
    if inputs.reference not in REFERENCES:
        raise ValueError(f"unknown reference {inputs.reference!r}; choose one of {REFERENCES}")
    crops = face_crops(dataset, name, inputs)
    if inputs.reference == "video_median":
        return VideoInput(crops, fixed=video_median(crops))
    if inputs.reference == "sliding_median":
        return VideoInput(crops, sliding=sliding_median(dataset, name, inputs))
    return VideoInput(crops)


def prepare(dataset: Dataset, config: Config, name: str) -> None:
    """The model's ``prepare`` (:class:`mecore.models.ModelSpec`): one video's cached input (crops and reference)
    as the folds read it (``input.max_fps``), once, before the folds."""
    video_input(dataset.at_most_fps(config.input.max_fps), name, config.input)


def video_median(crops: Rows | np.ndarray, chunk: int = 1024) -> np.ndarray:
    """The median frame (S, S) float32 of uint8 crops scaled to [0, 1], equal bit for bit to
    ``np.median(crops.astype(np.float32) / 255, axis=0)``, from per-pixel histograms of the raw values
    accumulated ``chunk`` frames at a time (the video's frames are never all in memory)."""
    rows = crops if isinstance(crops, Rows) else Rows(np.asarray(crops))
    if rows.dtype != np.uint8 or not len(rows):
        raise ValueError(f"video_median needs uint8 crops of at least one frame, got {rows!r}")
    pixels = int(np.prod(rows.row_shape))
    counts = np.zeros(pixels * 256, np.int64)
    offsets = np.arange(pixels, dtype=np.int64) * 256
    for block in rows.chunks(chunk):
        counts += np.bincount((block.reshape(len(block), pixels) + offsets).ravel(), minlength=pixels * 256)
    cumulative = counts.reshape(pixels, 256).cumsum(axis=1)
    n = len(rows)

    def order_statistic(rank: int) -> np.ndarray:  # the rank-th smallest value (from 0) of each pixel, scaled
        return (np.argmax(cumulative > rank, axis=1).astype(np.float32) / 255).reshape(rows.row_shape)

    if n % 2:
        return order_statistic(n // 2)
    # np.median of float32 values: the mean of the two middle ones, summed and halved in float32
    return (order_statistic(n // 2 - 1) + order_statistic(n // 2)) / np.float32(2)


def sliding_median(dataset: Dataset, name: str, inputs: Config, chunk: int = 256) -> Rows:
    """Per frame, the median of a video's raw (uint8) face-crop values within ``inputs.reference_half_s``
    seconds of it (fewer frames at the ends), (N, S, S) float16 :class:`Rows`, kept in the preprocessing cache:
    every LOSO fold and every ``spot`` call reads it instead of recomputing a median over 2 s of frames per
    frame. A median of uint8 values is an integer or a half-integer, which float16 holds exactly (up to 1024);
    :class:`VideoInput` divides it by 255. Computed ``chunk`` frames at a time (plus the window's margins)."""
    video = dataset.video(name)
    half = max(1, round(inputs.reference_half_s * float(video.fps)))
    params = {"crop": CropSpec(**inputs.crop).cache_key(), "half_window_frames": half,
              "values": "raw_uint8_median_float16"}
    path, fingerprint = entry_path(paths.cache_dir(), video, "sliding_median", params), source_fingerprint(video)
    if open_entry(path, "sliding_median", params, fingerprint) is not None:
        return Rows(path)
    crops = face_crops(dataset, name, inputs)
    n = len(crops)
    with EntryWriter(path, crops.shape, np.float16, "sliding_median", params, fingerprint) as entry:
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            low = max(0, start - half)
            block = crops[low:min(n, stop + half)]
            entry.write(np.stack([np.median(block[max(0, i - half) - low:i + half + 1 - low], axis=0)
                                  for i in range(start, stop)]))
    return Rows(path)


def frame_labels(dataset: Dataset, name: str) -> np.ndarray:
    """Per-frame class codes of one video: 0 none, 1 micro, 2 macro (micro wins where they overlap)."""
    return intervals_to_labels(dataset.intervals(name), dataset.video(name).frame_numbers, by_type=True)


class TrainingWindows(torch.utils.data.Dataset):
    """Windows ``(K, S, S) float32, centre class`` from videos ``[(inputs, labels), ...]``, each window's K
    frames read from the cache when the item is drawn (``inputs``: a :class:`VideoInput`, or an (N, S, S) float
    array of input frames in memory; ``labels``: per-frame class codes).

    ``per_class`` None: every window once (item i is the i-th window, videos in order). Otherwise
    ``per_class`` items per class present among the centres, item i of class ``i % classes``, each a centre
    of that class drawn at random (PyTorch's global generator, which :func:`mecore.train.fit` seeds). Holds the
    inputs' entry paths, the labels and window indices (a few bytes per frame), never frames: it pickles
    small for ``DataLoader`` workers.
    """

    def __init__(self, videos, k: int = 5, per_class: int | None = None, random_crop: float = 1.0):
        self.k, self.per_class, self.random_crop = k, per_class, random_crop
        self.inputs = [inputs for inputs, _ in videos]
        self.labels = [np.asarray(labels).astype(np.int8) for _, labels in videos]
        counts = [len(window_centres(len(inputs), k)) for inputs in self.inputs]
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # first window of each video
        if not self.offsets[-1]:
            raise ValueError(f"no window of K = {k} frames fits in the training videos")
        half = k // 2
        classes = np.concatenate([labels[half:half + count] for labels, count in zip(self.labels, counts)])
        index_type = np.int32 if self.offsets[-1] < 2**31 else np.int64
        self.pools = ([] if per_class is None else
                      [np.flatnonzero(classes == c).astype(index_type) for c in range(len(CLASSES)) if (classes == c).any()])
        self.training_shares = np.bincount(classes, minlength=len(CLASSES)) / len(classes)
        present = self.training_shares > 0
        self.sampled_shares = self.training_shares if per_class is None else present / present.sum()

    def decision_weights(self, prior: str) -> np.ndarray:
        """Per-class factors on the network's probabilities: ``"sampled"`` ones (the posterior under the
        class shares the network was trained on); ``"training"`` the training frames' shares over the
        sampled ones (Bayes' rule for a changed prior; ones when every window is used)."""
        if prior not in PRIORS:
            raise ValueError(f"unknown decision prior {prior!r}; choose one of {PRIORS}")
        if prior == "sampled":
            return np.ones(len(CLASSES))
        return np.divide(self.training_shares, self.sampled_shares, out=np.ones(len(CLASSES)),
                         where=self.sampled_shares > 0)

    def __len__(self) -> int:
        return int(self.offsets[-1]) if self.per_class is None else self.per_class * len(self.pools)

    def centre(self, window: int) -> tuple[int, int]:
        """(video, centre frame) of the ``window``-th window of all videos."""
        v = int(np.searchsorted(self.offsets, window, side="right")) - 1
        return v, int(window - self.offsets[v]) + self.k // 2

    def __getitem__(self, index: int):
        if self.per_class is None:
            if not 0 <= index < len(self):
                raise IndexError(f"window {index} of {len(self)}")
            v, t = self.centre(index)
        else:
            pool = self.pools[index % len(self.pools)]
            v, t = self.centre(int(pool[int(torch.randint(len(pool), (1,)))]))
        half = self.k // 2
        window = self.inputs[v][t - half:t + half + 1]
        if self.random_crop > 1:
            window = random_crop(window, self.random_crop)
        return torch.from_numpy(np.ascontiguousarray(window)), int(self.labels[v][t])


def random_crop(window: np.ndarray, scale: float) -> np.ndarray:
    """The published code's ``GroupScaleRandomCrop``: every frame of the window scaled by ``scale``
    (144 / 128) and cut at one random S x S position (PyTorch's global generator)."""
    size = window.shape[-1]
    large = round(size * scale)
    y, x = (int(v) for v in torch.randint(large - size + 1, (2,)))
    scaled = [cv2.resize(frame, (large, large), interpolation=cv2.INTER_LINEAR) for frame in window]
    return np.stack([frame[y:y + size, x:x + size] for frame in scaled])


# ------------------------------------------------------------------------------------ labels -> intervals
def micro_max_frames(test: Config, fps: float) -> int:
    """Table 4's duration threshold, ``test.micro_max_frames`` (15 frames on CAS(ME)^2, 100 on SAMM-LV:
    :data:`DATASET_OVERRIDES`), or 0.5 s at ``fps`` when it is None (other sets)."""
    return round(0.5 * fps) if test.micro_max_frames is None else test.micro_max_frames


def spot_from_labels(labels, probabilities, frame_numbers, postprocess: str, max_micro: int) -> pd.DataFrame:
    """Intervals (onset, offset, type, score) of one video from its per-frame class codes.

    ``postprocess``: "none" (runs of equal labels), "merge" (Fig. 4 first) or "duration" (merge, then
    Table 4's relabelling). ``probabilities`` (N, 3) give each interval's score: the mean probability
    of its class (of any expression, for "duration") over its frames.
    """
    if postprocess not in POSTPROCESSING:
        raise ValueError(f"unknown post-processing {postprocess!r}; choose one of {POSTPROCESSING}")
    labels, frame_numbers = np.asarray(labels), np.asarray(frame_numbers)
    if postprocess != "none":
        labels = merge_label_gaps(labels)
    if postprocess == "duration":
        intervals = relabel_by_duration(labels, frame_numbers, max_micro)
        frame_score = 1 - probabilities[:, 0]
        per_interval = [frame_score] * len(intervals)
    else:
        intervals = labels_to_intervals(labels, frame_numbers, by_type=True)
        per_interval = [probabilities[:, TYPE_CODES[t]] for t in intervals["type"]]
    starts = np.searchsorted(frame_numbers, intervals["onset"].to_numpy())
    ends = np.searchsorted(frame_numbers, intervals["offset"].to_numpy())
    intervals["score"] = [float(np.mean(s[a:e + 1])) for s, a, e in zip(per_interval, starts, ends)]
    return intervals[["onset", "offset", "type", "score"]]


def reweight(probabilities: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame probabilities (N, 3) float32 times ``weights`` (:meth:`TrainingWindows.decision_weights`),
    renormalised, and their labels (argmax). Frames that centre no window keep probability 1 for "none"."""
    if weights is not None:
        probabilities = probabilities * weights
        probabilities = (probabilities / probabilities.sum(axis=1, keepdims=True)).astype(np.float32)
    return probabilities, probabilities.argmax(axis=1)


def score_video(model: STSNet, frames, batch_size: int = 256, weights: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame probabilities (N, 3), labels (N,) and key-frame scores (N, K) of one video's input
    frames (a :class:`VideoInput`, read ``batch_size`` frames at a time, or an array), the probabilities
    the network's or, given ``weights``, reweighted (:func:`reweight`). Frames that centre no window (the first
    and last K // 2) get probability 1 for "none" and NaN scores.
    """
    model.eval()
    window_probabilities, window_scores = model.video_probabilities(frames, batch_size)
    centres = window_centres(len(frames), model.k)
    probabilities = np.zeros((len(frames), len(CLASSES)), np.float32)
    probabilities[:, 0] = 1
    probabilities[centres] = window_probabilities.numpy()
    scores = np.full((len(frames), model.k), np.nan, np.float32)
    scores[centres] = window_scores.numpy()
    return *reweight(probabilities, weights), scores


# ------------------------------------------------------------------------------------ one LOSO fold
def run_fold(fold: LosoFold) -> pd.DataFrame:
    """Train on the training subjects' videos, label every frame of the test subject's videos, spot.

    Keeps with the fold's result (:func:`mecore.loso.with_frame_scores`) what the ``test`` group does not change:
    the test videos' per-frame network probabilities, key-frame scores and true labels, each prior's decision
    weights, the frame rate and the training history (:func:`mecore.loso.load_frame_scores` reads them back;
    :func:`decide` labels them under a ``test`` group, :func:`respot` spots).
    """
    fold = fold.at_most_fps()
    config, dataset = fold.config, fold.dataset
    inputs, train, test = config.input, config.train, config.test
    videos = [(video_input(dataset, n, inputs), frame_labels(dataset, n)) for n in fold.train_videos]
    train_config = TrainConfig(
        optimizer=OptimizerSpec("sgd", train.lr, momentum=train.momentum, weight_decay=train.weight_decay),
        schedule=ScheduleSpec("cosine", train.min_lr), epochs=train.epochs, batch_size=train.batch_size,
        monitor="train_loss", restore_best=False, seed=fold.seed,
        drop_last=False,  # as the code; a pass of one window still gives batch norm its K frames
        micro_batch=train.micro_batch, max_steps=config.trial.max_steps, mixed_precision=train.mixed_precision)
    windows = TrainingWindows(videos, inputs.k, train.windows_per_class, train.random_crop)
    result = fit(build_model(config), nn.CrossEntropyLoss(), windows, None,
                 train_config, checkpoint_dir=fold.workdir, resume=fold.resume, progress=fold.progress)
    scored = {}
    for name in fold.test_videos:
        probabilities, _, key_scores = score_video(result.model, video_input(dataset, name, inputs),
                                                   test.eval_batch_size)
        scored[name] = {"frame": dataset.video(name).frame_numbers, "probabilities": probabilities,
                        "key_scores": key_scores, "truth": frame_labels(dataset, name)}
    record = {"videos": scored, "history": result.history, "fps": float(dataset.video(fold.test_videos[0]).fps),
              "prior_weights": {prior: windows.decision_weights(prior) for prior in PRIORS}}
    return with_frame_scores(spot_fold(decide_fold(record, test), test.postprocess), record)


def decide_fold(record: dict, test: Config) -> dict:
    """One fold's saved record (:func:`run_fold`) decided under the ``test`` group: per video ``probabilities``
    reweighted for ``test.decision_prior`` and ``labels``; the fold's ``weights`` and ``max_micro``
    (:func:`micro_max_frames`)."""
    if test.decision_prior not in PRIORS:
        raise ValueError(f"unknown decision prior {test.decision_prior!r}; choose one of {PRIORS}")
    weights, videos = record["prior_weights"][test.decision_prior], {}
    for name, video in record["videos"].items():
        probabilities, labels = reweight(video["probabilities"], weights)
        videos[name] = {**video, "probabilities": probabilities, "labels": labels}
    return {**record, "videos": videos, "weights": weights, "max_micro": micro_max_frames(test, record["fps"])}


def decide(records: dict[str, dict], test: Config) -> dict[str, dict]:
    """The records of a LOSO run (:func:`mecore.loso.load_frame_scores`: subject -> saved record) decided under
    the ``test`` group (a configuration's, e.g. ``config.test`` or ``config.test.set({"decision_prior": "sampled"})``),
    as :func:`decide_fold`: what :func:`respot` and the notebooks read."""
    return {subject: decide_fold(record, test) for subject, record in records.items()}


def spot_fold(record: dict, postprocess: str) -> pd.DataFrame:
    """Intervals (``video``, onset, offset, type, score) of one decided fold record (:func:`decide_fold`)."""
    if "max_micro" not in record:
        raise ValueError("frame scores as saved (undecided): label them first, stsnet.decide(records, config.test)")
    tables = []
    for name, video in record["videos"].items():
        intervals = spot_from_labels(video["labels"], video["probabilities"], video["frame"], postprocess,
                                     record["max_micro"])
        intervals.insert(0, "video", name)
        tables.append(intervals)
    return pd.concat(tables, ignore_index=True)


def respot(records: dict[str, dict], postprocess: str) -> pd.DataFrame:
    """Intervals of every test video of a LOSO run, its records decided (:func:`decide`), under ``postprocess``."""
    tables = [spot_fold(record, postprocess) for record in records.values()]
    for subject, table in zip(records, tables):
        table.insert(0, "subject", subject)
    return pd.concat(tables, ignore_index=True)


# ------------------------------------------------------------------------------------ registration
PAPER = Config({
    "input": {"crop": {"size": 128, "box": "median", "detect_every": 15},  # 128 x 128 grey: the published code's
              "k": cite(5, "Sec. 2.1"),
              "reference": cite(None, "Sec. 2.1: the frames as they are", type=str),  # others: REFERENCES
              "reference_half_s": cite(None, "Sec. 2.1: no reference", type=float),
              "max_fps": cite(None, "Sec. 2.1: consecutive frames", type=float)},  # our reading at 200 fps
    "model": {"widths": cite([64, 128, 256, 512], "Sec. 2.1"), "blocks": cite([2, 2, 2, 2], "Sec. 2.1"),
              "m": cite(3, "Sec. 2.2"), "key_dropout": 0.5,  # our reading of Eqs. 1-6: VASNet's dropout
              "gru_hidden": cite(32, "Sec. 2.3"), "gru_layers": cite(2, "Sec. 2.3"), "dropout": cite(0.5, "Sec. 2.3"),
              "backbone_weights": cite(None, "Sec. 2.1: ImageNet, then AffectNet; none bundled", type=str),
              "expects_pretrained": cite(True, "Sec. 2.1")},
    "train": {"windows_per_class": cite(None, "Sec. 2.1: every window", type=int),
              "random_crop": 144 / 128,  # the code's GroupScaleRandomCrop
              "lr": cite(1e-3, "Sec. 3.2"), "min_lr": cite(1e-8, "Sec. 3.2"), "momentum": cite(0.9, "Sec. 3.2"),
              "weight_decay": cite(5e-4, "Sec. 3.2"), "epochs": cite(30, "Sec. 3.2"),
              "batch_size": 8, "micro_batch": 1,  # the code's util.tr_epoch: 8 windows a step, one a pass
              "mixed_precision": True},  # ours: CUDA float16 (see the docstring)
    "test": {"postprocess": cite("merge", "Sec. 2.4, Table 3"),
             "micro_max_frames": cite(None, "Sec. 3.2, Table 4: per dataset", type=int),  # None (other sets): 0.5 s
             "decision_prior": "training",  # ours: a no-op when every window is used
             "eval_batch_size": 256},  # ours
    "trial": {"max_steps": None},
    "run": {"repeats": 1},
})
DEFAULT = PAPER.set({"input.crop.size": 64, "input.reference": "sliding_median", "input.reference_half_s": 1.0,
                     "model.widths": [8, 16, 32, 64], "model.expects_pretrained": False,
                     "train.windows_per_class": 320, "train.epochs": 12, "train.batch_size": 16,
                     "train.micro_batch": None, "train.lr": 0.016})
SMOKE = DEFAULT.set({"input.crop.size": 32, "model.widths": [4, 8, 8, 16], "model.blocks": [1, 1, 1, 1],
                     "model.gru_hidden": 8, "train.windows_per_class": 16, "train.epochs": 2, "train.batch_size": 8,
                     "train.lr": 0.008})
CONFIGS = {"paper": PAPER, "default": DEFAULT, "smoke": SMOKE}

# Table 4's micro-expression durations (Sec. 3.2), in each video's own frame numbers. 200 fps SAMM-LV read at every
# 7th frame (28.6 fps) outside the paper profile: five consecutive frames at 200 fps span 25 ms, less than the rise
# of a micro-expression, and every frame costs a ResNet pass.
_TABLE4 = {family: {"test.micro_max_frames": frames} for family, frames in STSNET_MICRO_MAX_FRAMES.items()}
_EVERY_7TH = {**_TABLE4, "samm_lv": {**_TABLE4["samm_lv"], "input.max_fps": 30}}
DATASET_OVERRIDES = {"paper": _TABLE4, "default": _EVERY_7TH, "smoke": _EVERY_7TH}
register(ModelSpec(name="stsnet_sw", task="spotting", paper="Fu et al. 2023", run_fold=run_fold, configs=CONFIGS,
                   spotting_convention="stsnet", dataset_overrides=DATASET_OVERRIDES, prepare=prepare))
