"""Feature Refinement (FR, Zhou et al.): expression-specific feature learning and fusion for micro-expression
recognition from onset-apex optical flow.

Pipeline (Sec. 3, Figs. 1-2): apex annotated (CASME II, SAMM) or, for SMIC, by Eq. 1's inter-frame difference
(Sec. 3.1, 4.2); Dual-Inception (Table 1a, ref. [38]) takes the mid frame. TV-L1 flow onset to apex, at 28x28.
Shared features (Sec. 3.1): one stream per flow component, two Inception-v1 blocks (6, then 16 filters per branch),
each with 2x2 max pooling, streams concatenated. Proposal module (Sec. 3.2, Eqs. 2-5): K attention units
``a_k = softmax(W_k z + b_k)``, ``z*_k = a_k * z``; K detectors (two FC, sigmoid, binary cross-entropy, Eq. 4),
losses averaged (Eq. 5). Fusion (Sec. 3.3, Eqs. 6-8): ``z' = sum_k z*_k``; FC - dropout 0.5 - FC - softmax; loss
``lambda L_prop + L_cls``, lambda = 0.85 (Sec. 6.1.1).

Variants (Table 1, ``model.variant``): ``fr``; ``fr_fc`` (FC proposal units, no attention, 1b); ``fr_concatenated``
(``z*_k`` concatenated, 1c); ``basic`` (no proposal module, 1a); Dual-Inception is ``basic``, ``input.apex="mid"``.

Where the paper is silent or ambiguous, the reading implemented:

* **Sizes from Table 7.** ``z`` is a 1024-unit ReLU FC layer on the 6272-long concatenation, detectors FC 128 -
  FC 1, the FR classifier FC 256 - dropout - FC K, Basic Inception's FC 1024 - dropout 0.5 - FC K: this meets
  Table 7's parameter counts, attention on the raw 6272 would not.
* **Inputs.** One flow component per stream, divided by the training std. Eq. 1 on grey full frames, onset to
  offset (faces are cropped after, Sec. 4.2), also where no apex is annotated.
* **Optimiser.** SGD (only lr and momentum stated): lr 0.001 for the ablation and CDE (Sec. 6.1.1-6.1.2), lr
  0.0005 with momentum 0.8 for CDMER and single databases (Sec. 6.1.3-6.1.4; :data:`SINGLE_DATABASE_OVERRIDES`,
  passed as ``config=``: a protocol's setting, not a dataset's); batch 32; ``paper`` trains 100 epochs (not
  given), last weights; batch-mean losses (Keras), not Eqs. 4, 7's sums.
* **Attention scale** (``model.attention_norm``): Eq. 2's softmax makes each ``a_k`` sum to 1 over the D = 1024
  features, so ``z*_k`` is about ``z / D`` and all after the attention gets about 1/D of its gradient; under that
  SGD, FR as written stays at the class prior (notebook 14, section 4b). ``paper`` therefore uses ``"mean"``:
  ``D * softmax``, each ``a_k`` averaging 1 (not in the paper). The Adam profiles keep Eq. 2 as written (``"sum"``).
* **Precision.** float32 in every profile: the paper trained float32 Keras; float16 would save little at 28x28.
* **Rounds** (Sec. 4.2, "the average of at least ten rounds"): ``run.repeats`` runs, seeds ``seed, seed + 1, ...``
  (10 in ``paper`` and ``large``, 1 in ``default`` and ``smoke``); a seed gives one network in any process.
* **CDMER** (Table 10): trained on the whole source database, the target scored over five stratified folds,
  pooled and averaged; classes by ``cdmer3`` (Table 11).
* **Initialisation.** Keras 2.2.4's defaults (Glorot-uniform, zero biases; Sec. 4.2).

Profiles: ``paper`` as above; ``large``: the paper's sizes, 10 epochs of Adam at 1e-3; ``default``: ``large``
with narrower FC layers (shared 256, detector 64, classifier 128, Basic Inception 256) so 120 CDE folds fit the
budget, and reduced TV-L1 (8 times faster, 0.1 px apart: ``mecore.preprocess.flow``), as MESNet's and BiFPN-I3D's
defaults; ``smoke``: shared 64, detector 16, classifier 32, 2 epochs, reduced TV-L1 on 64 px faces.
"""
from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from mecore import paths, references
from mecore.config import Config, cite
from mecore.data.dataset import Dataset, DatasetError, Video
from mecore.data.splits import kfold_splits, regroup
from mecore.loso import run_key, write_atomically
from mecore.metrics import recognition_metrics
from mecore.models import LosoFold, ModelSpec, count_parameters, get_model, register
from mecore.preprocess import CropSpec, onset_apex_flow, onset_apex_flows
from mecore.preprocess.cache import EntryWriter, entry_path, open_entry, remove_stale, source_fingerprint
from mecore.preprocess.face import to_gray
from mecore.preprocess.pipeline import run_parallel
from mecore.train import OptimizerSpec, TrainConfig, fit, predict, seed_everything

VARIANTS = ("fr", "fr_fc", "fr_concatenated", "basic")
ATTENTION_NORMS = ("sum", "mean")  # a_k sums to 1 (Eq. 2 as written) or averages 1 (the paper profile)
APEX_RULES = ("annotated", "mid")
STREAM_FILTERS = (6, 16)  # Sec. 3.1, after LeNet
INPUT_SIZE = 28  # Sec. 4.2
LAMBDA = 0.85  # Sec. 6.1.1
TABLE7_PARAMETERS = references.FR_TABLE_7_PARAMETERS  # Table 7: variant -> {classes: parameters}


# ----------------------------------------------------------------------------------- apex (Eq. 1)
def interframe_diff_apex(frames: np.ndarray, frame_numbers=None) -> int:
    """Eq. 1: the frame whose mean absolute difference to the first (onset) frame is largest.

    ``frames``: (T, H, W) or (T, H, W, C) images from onset to offset; returns the frame number
    (``frame_numbers[t]``, default ``t``). Ties go to the earliest frame.
    """
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim < 3 or len(frames) == 0:
        raise ValueError(f"Eq. 1 needs a (T, H, W[, C]) clip, got shape {frames.shape}")
    differences = np.abs(frames - frames[0]).reshape(len(frames), -1).mean(axis=1)
    numbers = np.arange(len(frames)) if frame_numbers is None else np.asarray(frame_numbers)
    return int(numbers[int(np.argmax(differences))])


def estimate_apex(video: Video, onset: int, offset: int, cache: bool = True) -> int:
    """:func:`interframe_diff_apex` on the grey frames ``onset..offset`` of ``video``, cached on disk."""
    params = {"rule": "interframe_diff", "frames": "onset..offset inclusive", "onset": int(onset),
              "offset": int(offset)}
    path = entry_path(paths.cache_dir(), video, "apex_eq1", params)
    fingerprint = source_fingerprint(video)
    if cache and (found := open_entry(path, "apex_eq1", params, fingerprint)) is not None:
        return int(found[0])
    clip = [(n, to_gray(image)) for n, image in video.iter_frames(int(onset), int(offset))]
    if not clip:
        raise DatasetError(f"{video.folder}: no frames between onset {onset} and offset {offset}")
    numbers, frames = zip(*clip)
    apex = interframe_diff_apex(np.stack(frames), numbers)
    if cache:
        with EntryWriter(path, (1,), np.int64, "apex_eq1", params, fingerprint) as writer:
            writer.write(np.array([apex], dtype=np.int64))
    return apex


def apex_frames(dataset: Dataset, rows: pd.DataFrame, rule: str = "annotated") -> np.ndarray:
    """Apex frame of every row: annotated, else Eq. 1 (``"annotated"``), or the mid frame (``"mid"``)."""
    if rule not in APEX_RULES:
        raise ValueError(f"unknown apex rule {rule!r}; choose one of {APEX_RULES}")
    apexes = []
    for row in rows.itertuples():
        if rule == "mid":
            apexes.append((int(row.onset) + int(row.offset)) // 2)
        elif pd.isna(row.apex):
            apexes.append(estimate_apex(dataset.video(row.video), int(row.onset), int(row.offset)))
        else:
            apexes.append(int(row.apex))
    return np.array(apexes, dtype=np.int64)


def clip_flows(dataset: Dataset, rows: pd.DataFrame, inputs: Config, workers: int = 1,
               progress: bool = False) -> np.ndarray:
    """Onset-apex flow of every row as (n, 2, 28, 28) float32: horizontal and vertical components. ``inputs``:
    the configuration's ``input`` group (``apex``, ``flow``, ``crop_size``)."""
    rows = rows.assign(apex=apex_frames(dataset, rows, inputs.apex))
    flows = onset_apex_flows(dataset, rows, workers=workers, progress=progress,
                             crop=CropSpec(size=inputs.crop_size), method=inputs.flow, out_size=INPUT_SIZE)
    return np.ascontiguousarray(flows[..., :2].transpose(0, 3, 1, 2), dtype=np.float32)


def precompute_flows(datasets: list[tuple[Dataset, Config]], workers: int = 2, progress: bool = True) -> int:
    """Fill the flow cache for every row of every (dataset, ``input`` group) in one parallel pass (one
    process pool, rather than one per dataset); returns the number of flow pairs."""
    jobs = []
    for dataset, inputs in datasets:
        rows = dataset.annotations
        options = {"crop": CropSpec(size=inputs.crop_size), "method": inputs.flow, "out_size": INPUT_SIZE}
        jobs += [(dataset.video(row.video), int(row.onset), int(apex), *options.values())
                 for row, apex in zip(rows.itertuples(), apex_frames(dataset, rows, inputs.apex))]
    jobs = list({(str(job[0].folder), *job[1:3], str(job[3]), *job[4:]): job for job in jobs}.values())
    run_parallel(onset_apex_flow, jobs, workers, "onset-apex flow", progress)
    return len(jobs)


# ----------------------------------------------------------------------------------- architecture
class InceptionBlock(nn.Module):
    """Inception-v1 block (Szegedy et al.): 1x1 | 1x1-3x3 | 1x1-5x5 | 3x3 max-pool-1x1, ``width`` each, ReLU."""

    def __init__(self, in_channels: int, width: int):
        super().__init__()

        def conv(c_in, kernel):
            return [nn.Conv2d(c_in, width, kernel, padding=kernel // 2), nn.ReLU()]

        self.branches = nn.ModuleList([
            nn.Sequential(*conv(in_channels, 1)),
            nn.Sequential(*conv(in_channels, 1), *conv(width, 3)),
            nn.Sequential(*conv(in_channels, 1), *conv(width, 5)),
            nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), *conv(in_channels, 1)),
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


class TwoStreamInception(nn.Module):
    """Sec. 3.1: per flow component, Inception(6) - pool 2 - Inception(16) - pool 2, flattened and concatenated."""

    def __init__(self, filters=STREAM_FILTERS, size: int = INPUT_SIZE):
        super().__init__()

        def stream():
            layers, channels = [], 1
            for width in filters:
                layers += [InceptionBlock(channels, width), nn.MaxPool2d(2)]
                channels = 4 * width
            return nn.Sequential(*layers, nn.Flatten())

        self.streams = nn.ModuleList([stream(), stream()])
        self.out_features = 2 * 4 * filters[-1] * (size // 2 ** len(filters)) ** 2

    def forward(self, flow: torch.Tensor) -> torch.Tensor:
        return torch.cat([s(flow[:, i:i + 1]) for i, s in enumerate(self.streams)], dim=1)


class ProposalModule(nn.Module):
    """Sec. 3.2: K attention units (Eqs. 2-3, or plain FC layers for FR-fc) and K detectors (FC - FC - sigmoid).

    ``attention_norm``: ``"sum"``, Eq. 2 as written (each ``a_k`` sums to 1, so ``z*_k`` is about ``z / D``);
    ``"mean"``, ``D`` times that (each ``a_k`` averages 1, ``z*_k`` keeps the scale of ``z``)."""

    def __init__(self, features: int, n_classes: int, detector_width: int, attention: bool = True,
                 attention_norm: str = "sum"):
        super().__init__()
        if attention_norm not in ATTENTION_NORMS:
            raise ValueError(f"attention_norm must be one of {ATTENTION_NORMS}, got {attention_norm!r}")
        self.attention = attention
        self.gain = 1.0 if attention_norm == "sum" else float(features)
        self.units = nn.ModuleList([nn.Linear(features, features) for _ in range(n_classes)])
        self.detectors = nn.ModuleList([
            nn.Sequential(nn.Linear(features, detector_width), nn.ReLU(), nn.Linear(detector_width, 1))
            for _ in range(n_classes)])

    def attention_weights(self, z: torch.Tensor) -> torch.Tensor:
        """``a_k = softmax(W_k z + b_k)`` over the feature dimension (times ``D`` for ``"mean"``): (batch, K, D)."""
        return torch.stack([torch.softmax(unit(z), dim=1) for unit in self.units], dim=1) * self.gain

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Expression-specific features ``z*_k`` (batch, K, features) and detector logits (batch, K)."""
        if self.attention:
            specific = self.attention_weights(z) * z.unsqueeze(1)
        else:
            specific = torch.stack([torch.relu(unit(z)) for unit in self.units], dim=1)
        logits = torch.cat([d(specific[:, k]) for k, d in enumerate(self.detectors)], dim=1)
        return specific, logits


def fuse(specific: torch.Tensor, mode: str = "sum") -> torch.Tensor:
    """Eq. 6: element-wise sum of the K expression-specific features (or their concatenation, Table 1c)."""
    if mode == "sum":
        return specific.sum(dim=1)
    if mode == "concatenate":
        return specific.flatten(1)
    raise ValueError(f"fusion must be 'sum' or 'concatenate', got {mode!r}")


def classifier(in_features: int, width: int, n_classes: int, dropout: float) -> nn.Sequential:
    """Sec. 3.3: FC (ReLU) - dropout - FC (softmax in the loss)."""
    return nn.Sequential(nn.Linear(in_features, width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, n_classes))


class FRNet(nn.Module):
    """FR and its ablations. ``forward(flow)`` returns (class logits, detector logits (batch, K or 0),
    the features the classifier sees: refined ``z'`` for FR variants, the stream concatenation for Basic)."""

    def __init__(self, n_classes: int, variant: str = "fr", shared_width: int = 1024, detector_width: int = 128,
                 classifier_width: int = 256, dropout: float = 0.5, filters=STREAM_FILTERS,
                 attention_norm: str = "sum"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown FR variant {variant!r}; choose one of {VARIANTS}")
        self.variant = variant
        self.backbone = TwoStreamInception(filters)
        if variant == "basic":
            self.shared, self.proposal = None, None
            self.classifier = classifier(self.backbone.out_features, shared_width, n_classes, dropout)
            return
        self.shared = nn.Sequential(nn.Linear(self.backbone.out_features, shared_width), nn.ReLU())
        self.proposal = ProposalModule(shared_width, n_classes, detector_width, attention=variant != "fr_fc",
                                       attention_norm=attention_norm)
        fused = shared_width * (n_classes if variant == "fr_concatenated" else 1)
        self.classifier = classifier(fused, classifier_width, n_classes, dropout)

    def forward(self, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.backbone(flow)
        if self.proposal is None:
            return self.classifier(features), features.new_zeros(len(features), 0), features
        specific, detector_logits = self.proposal(self.shared(features))
        refined = fuse(specific, "concatenate" if self.variant == "fr_concatenated" else "sum")
        return self.classifier(refined), detector_logits, refined


def keras_initialise(model: nn.Module) -> nn.Module:
    """Keras 2.2.4's defaults (the paper's framework, Sec. 4.2): Glorot-uniform weights, zero biases."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    return model


def build_model(model: Config, n_classes: int) -> FRNet:
    """The network of the configuration's ``model`` group, Keras-initialised."""
    return keras_initialise(FRNet(n_classes, model.variant, model.shared_width, model.detector_width,
                                  model.classifier_width, model.dropout, tuple(model.filters), model.attention_norm))


def parameter_table(config: Config | None = None) -> pd.DataFrame:
    """Our learnable parameters beside Table 7 (Basic Inception and FR with 3 and 4 classes); ``config``:
    a whole configuration, by default the ``paper`` profile."""
    config = CONFIGS["paper"] if config is None else config
    rows = []
    for variant, name in (("basic", "Basic Inception"), ("fr", "FR")):
        for n_classes in (3, 4):
            ours = count_parameters(build_model(config.set({"model.variant": variant}).model, n_classes))
            paper = TABLE7_PARAMETERS[variant][n_classes]
            rows.append({"model": name, "classes": n_classes, "ours (M)": ours / 1e6, "paper (M)": paper / 1e6,
                         "difference (%)": 100 * (ours - paper) / paper})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------- losses
def proposal_loss(detector_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Eq. 5: the mean over the K detectors of Eq. 4's binary cross-entropy (batch means), the target of
    detector k being "the sample is of class k"."""
    one_hot = F.one_hot(targets, detector_logits.shape[1]).to(detector_logits.dtype)
    per_detector = F.binary_cross_entropy_with_logits(detector_logits, one_hot, reduction="none").mean(dim=0)
    return per_detector.mean()


class FRLoss(nn.Module):
    """Eq. 8: ``lambda * L_prop + L_cls`` (Basic Inception: ``L_cls`` only)."""

    def __init__(self, weight: float = LAMBDA):
        super().__init__()
        self.weight = weight

    def forward(self, outputs, targets: torch.Tensor) -> torch.Tensor:
        class_logits, detector_logits, _ = outputs
        loss = F.cross_entropy(class_logits.float(), targets)
        if detector_logits.shape[1]:
            loss = loss + self.weight * proposal_loss(detector_logits.float(), targets)
        return loss


# ----------------------------------------------------------------------------------- training
@dataclasses.dataclass
class TrainedFR:
    """A trained network with its class order and input scale (per flow component)."""

    model: FRNet
    classes: list[str]
    scale: np.ndarray
    history: pd.DataFrame


def dataset_classes(dataset: Dataset) -> list[str]:
    """The class order: the sorted emotions of the whole (regrouped) annotation table."""
    return sorted(dataset.annotations["emotion"].astype(str).unique())


def _tensors(flows: np.ndarray, labels, scale: np.ndarray) -> torch.utils.data.TensorDataset:
    return torch.utils.data.TensorDataset(torch.from_numpy(flows / scale[None, :, None, None]).float(),
                                          torch.as_tensor(np.asarray(labels), dtype=torch.long))


def train(dataset: Dataset, rows: pd.DataFrame, classes: list[str], config: Config, seed: int = 0,
          workdir: Path | None = None, resume="auto", progress: bool = False) -> TrainedFR:
    """Train the configured variant on ``rows`` of ``dataset`` (labels from ``emotion``); the generators are
    seeded with ``seed`` before the weights are drawn, so a seed gives the same network in any process."""
    flows = clip_flows(dataset, rows, config.input)
    scale = flows.std(axis=(0, 2, 3)) + 1e-6
    labels = [classes.index(e) for e in rows["emotion"].astype(str)]
    settings = config.train
    train_config = TrainConfig(
        optimizer=OptimizerSpec(settings.optimizer, settings.lr, momentum=settings.momentum),
        epochs=settings.epochs, batch_size=settings.batch_size, monitor="train_loss", restore_best=False,
        seed=seed, mixed_precision=settings.mixed_precision, micro_batch=settings.micro_batch,
        max_steps=config.trial.max_steps)
    seed_everything(seed)
    model = build_model(config.model, len(classes))
    result = fit(model, FRLoss(settings["lambda"]), _tensors(flows, labels, scale), None, train_config,
                 checkpoint_dir=workdir, resume=resume if workdir is not None else False, progress=progress)
    return TrainedFR(result.model, classes, scale, result.history)


def outputs(trained: TrainedFR, dataset: Dataset, rows: pd.DataFrame, config: Config):
    """(class probabilities, classifier features) of ``rows``."""
    flows = clip_flows(dataset, rows, config.input)
    logits, _, features = predict(trained.model, _tensors(flows, np.zeros(len(rows)), trained.scale),
                                  batch_size=config.test.eval_batch_size)
    return torch.softmax(logits.float(), dim=1).numpy(), features.numpy()


def predictions(trained: TrainedFR, dataset: Dataset, rows: pd.DataFrame, config: Config) -> pd.DataFrame:
    """One row per clip: video, label, prediction and the class probabilities ``p_<class>``."""
    probabilities, _ = outputs(trained, dataset, rows, config)
    table = pd.DataFrame({"video": rows["video"].to_numpy(), "label": rows["emotion"].astype(str).to_numpy(),
                          "prediction": np.array(trained.classes)[probabilities.argmax(axis=1)]})
    for k, name in enumerate(trained.classes):
        table[f"p_{name}"] = probabilities[:, k]
    return table


def run_fold(fold: LosoFold) -> pd.DataFrame:
    """Train on the training subjects' clips, predict the left-out subject's clips."""
    trained = train(fold.dataset, fold.train_rows, dataset_classes(fold.dataset), fold.config, fold.seed,
                    fold.workdir, fold.resume, fold.progress)
    return predictions(trained, fold.dataset, fold.test_rows, fold.config)


# ----------------------------------------------------------------------------------- protocols
def regrouped(dataset: Dataset, scheme: str) -> Dataset:
    """``dataset`` with its emotions regrouped by ``scheme`` (:data:`mecore.data.splits.REGROUPINGS`)."""
    return dataclasses.replace(dataset, name=f"{dataset.name}_{scheme}",
                               annotations=regroup(dataset.annotations, scheme))


def per_database(predictions_table: pd.DataFrame, dataset: Dataset) -> pd.DataFrame:
    """UF1 / UAR / accuracy on the composite and on each source database (Table 2 layout)."""
    source = dataset.annotations.set_index("video")["source"]
    table = predictions_table.assign(source=predictions_table["video"].map(source))
    classes = dataset_classes(dataset)
    rows = {"composite": table}
    rows.update({name: part for name, part in table.groupby("source")})
    out = {}
    for name, part in rows.items():
        result = recognition_metrics(part["label"], part["prediction"], classes=classes, on_absent="warn")
        out[name] = {"n": len(part), "uf1": result.uf1, "uar": result.uar, "accuracy": result.accuracy}
    return pd.DataFrame(out).T


def run_cdmer(model: str, source: Dataset, target: Dataset, profile: str | None = None,
              config: Mapping[str, Any] | None = None, seed: int = 0, n_folds: int = 5,
              progress: bool = False) -> pd.DataFrame:
    """One CDMER experiment (Table 10): train on the ``cdmer3``-regrouped source, predict the target.

    ``config``: overrides of the profile's configuration, ``{"group.key": value}`` (:data:`SINGLE_DATABASE_OVERRIDES`
    for the paper's). Returns the target's predictions with a ``fold`` column (the stratified five folds, see the
    module docstring); cached under ``runs/fr_cdmer/`` by the source's and target's content, the configuration
    (without its ``run`` group) and ``seed`` (which seeds the weights, the training and the folds). Repeated
    rounds: :func:`cdmer_repeats`.
    """
    spec = get_model(model)
    profile = paths.profile(profile)
    run_config = spec.config(profile, overrides=config)
    source, target = regrouped(source, "cdmer3"), regrouped(target, "cdmer3")
    source_key, _ = run_key(spec, source, profile, run_config, seed)
    target_key, _ = run_key(spec, target, profile, {"n_folds": n_folds}, seed)
    name = f"{source.name}-to-{target.name}-{profile}-{source_key}-{target_key}.pkl"
    path = paths.runs_dir() / "fr_cdmer" / spec.name / name
    if path.exists():
        return pd.read_pickle(path)
    classes = sorted(set(dataset_classes(source)) | set(dataset_classes(target)))
    trained = train(source, source.annotations, classes, run_config, seed, progress=progress)
    table = predictions(trained, target, target.annotations, run_config)
    largest_class = int(target.annotations["emotion"].value_counts().max())
    table["fold"] = "fold1"
    if min(n_folds, largest_class) >= 2:  # a tiny target (smoke) gets fewer folds
        for fold in kfold_splits(target.annotations, min(n_folds, largest_class), seed):
            table.loc[fold.test, "fold"] = fold.name
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent)
    write_atomically(path, pickle.dumps(table))
    return table


def cdmer_repeats(model: str, source: Dataset, target: Dataset, profile: str | None = None,
                  config: Mapping[str, Any] | None = None, *, repeats: int | None = None, seed: int = 0,
                  n_folds: int = 5, progress: bool = False) -> pd.DataFrame:
    """Sec. 4.2 ("the average of at least ten rounds"): ``repeats`` CDMER runs (default: the configuration's
    ``run.repeats``) with seeds ``seed, seed + 1, ...``; one row of :func:`cdmer_scores` per run."""
    count = repeats if repeats is not None else get_model(model).config(paths.profile(profile),
                                                                         overrides=config).run.repeats
    if count < 1:
        raise ValueError(f"repeats must be >= 1, got {count}")
    rows = []
    for run_seed in range(seed, seed + count):
        table = run_cdmer(model, source, target, profile, config, run_seed, n_folds, progress)
        rows.append({"seed": run_seed, "n": len(table), **cdmer_scores(table)})
    return pd.DataFrame(rows)


def cdmer_scores(table: pd.DataFrame) -> dict[str, float]:
    """UF1 and accuracy of a CDMER experiment: pooled over the target and the mean over its folds."""
    pooled = recognition_metrics(table["label"], table["prediction"], on_absent="warn")
    per_fold = recognition_metrics(table["label"], table["prediction"], folds=table["fold"], averaging="per_fold",
                                   on_absent="warn")
    return {"uf1": pooled.uf1, "accuracy": pooled.accuracy, "uf1_fold_mean": per_fold.uf1,
            "accuracy_fold_mean": per_fold.accuracy}


def chance_baselines(labels, classes) -> pd.DataFrame:
    """Chance levels for ``labels``: the expected UF1/UAR/accuracy of a uniform random guess, and the
    scores of always predicting the most frequent class of ``labels``."""
    labels = np.asarray(labels).astype(str)
    classes = list(classes)
    counts = np.array([(labels == c).sum() for c in classes], dtype=float)
    share = counts / counts.sum()
    # uniform guess: recall 1/K and precision share_k per class, F1_k = 2 p r / (p + r)
    f1 = 2 * share / len(classes) / (share + 1 / len(classes))
    majority = classes[int(np.argmax(counts))]
    result = recognition_metrics(labels, np.full(len(labels), majority), classes=classes, on_absent="warn")
    return pd.DataFrame({"uf1": [float(f1.mean()), result.uf1], "uar": [1 / len(classes), result.uar],
                         "accuracy": [1 / len(classes), result.accuracy]},
                        index=pd.Index(["uniform random (expected)", f"majority class ({majority})"], name="baseline"))


# ----------------------------------------------------------------------------------- registration
PAPER = Config({
    "input": {"apex": cite("annotated", "Sec. 3.1, 4.2"),  # Eq. 1 where none is annotated
              "flow": cite("tvl1", "Sec. 3.1, 4.2"),
              "crop_size": 128,  # ours: the face crop the flow is computed on (the paper gives 28x28 flow only)
              "max_fps": None},  # the databases' own frame rates
    "model": {"variant": "fr",  # Table 1's rows: the registered models (MODELS) set it
              "filters": cite(list(STREAM_FILTERS), "Sec. 3.1"),
              "shared_width": 1024, "detector_width": 128, "classifier_width": 256,  # ours, read from Table 7
              "dropout": cite(0.5, "Sec. 3.3"),
              "attention_norm": "mean"},  # ours: D * softmax (module docstring), not in the paper
    "train": {"lambda": cite(LAMBDA, "Sec. 6.1.1"),
              "optimizer": "sgd",  # ours: the paper states lr and momentum only
              "lr": cite(1e-3, "Sec. 6.1.1-6.1.2"),  # ablation and CDE; SINGLE_DATABASE_OVERRIDES for the rest
              "momentum": 0.0,  # ours: stated (0.8) only for CDMER and single databases
              "batch_size": 32,  # the paper's (module docstring, Optimiser); no section recorded here
              "epochs": 100,  # ours: not given; the last weights are kept
              "micro_batch": None,  # ours: 32 flows of 28 x 28 are one pass on any device
              "mixed_precision": False},  # float32, as the paper's Keras
    "test": {"eval_batch_size": 256},  # ours: prediction only
    "trial": {"max_steps": None},
    "run": {"repeats": cite(10, "Sec. 4.2")},  # "the average of at least ten rounds"
})
# Adam profiles: our choice (plain SGD at 1e-3 barely moves FR as written, notebook 14, section 4b).
LARGE = PAPER.set({"train.optimizer": "adam", "train.lr": 1e-3, "train.epochs": 10, "model.attention_norm": "sum"})
DEFAULT = LARGE.set({"model.shared_width": 256, "model.detector_width": 64, "model.classifier_width": 128,
                     "input.flow": "tvl1_reduced", "run.repeats": 1})
SMOKE = DEFAULT.set({"input.flow": "tvl1_reduced", "input.crop_size": 64, "model.shared_width": 64,
                     "model.detector_width": 16, "model.classifier_width": 32, "train.epochs": 2})
CONFIGS = {"paper": PAPER, "default": DEFAULT, "smoke": SMOKE, "large": LARGE}
# The protocol overrides of CDMER and single databases (``config=`` of run_cdmer, run_loso): lr 5e-4 with
# momentum 0.8, Sec. 6.1.3-6.1.4 (the SGD profile only; Adam has no momentum).
SINGLE_DATABASE_OVERRIDES = {"paper": {"train.lr": 5e-4, "train.momentum": 0.8}}
MODELS = {"fr": {}, "fr_fc": {"model.variant": "fr_fc"}, "fr_concatenated": {"model.variant": "fr_concatenated"},
          "fr_basic_inception": {"model.variant": "basic"},
          "fr_dual_inception": {"model.variant": "basic", "input.apex": "mid"}}
SPECS = {name: register(ModelSpec(name=name, task="recognition", paper="Zhou et al. (Feature Refinement)",
                                  run_fold=run_fold, configs={p: c.set(changes) for p, c in CONFIGS.items()}))
         for name, changes in MODELS.items()}
