"""One thin trainer on plain PyTorch that every mecore model trains through.

What the papers state about training, and how it is written here:

* STSNet_SW (Fu et al. 2023, Sec. 3.2): SGD, momentum 0.9, weight decay 5e-4, learning rate 1e-3
  cosine-annealed to 1e-8, 30 epochs ->
  ``OptimizerSpec("sgd", 1e-3, momentum=0.9, weight_decay=5e-4)``, ``ScheduleSpec("cosine", 1e-8)``.
* BiFPN-I3D (He et al. 2023, Sec. IV-B): Adam, learning rate 1e-4, batch 32, 30 epochs.
* Feature Refinement (Zhou et al., Sec. 6.1): learning rate 0.0005 with momentum 0.8, batch 32.
* Yap et al. 2022 (Sec. 3.3): training ends when the loss has not improved for 5 consecutive epochs
  -> ``patience=5``.
* MESNet (Wang et al. 2021, Eq. 8, Sec. III-A): cross-entropy plus lambda/2 * sum(w^2) over all
  trainable layers except the last fully-connected one, lambda = 0.01 -> :class:`L2Penalty` with
  ``exclude``; Eq. 12 leaves out the last two fully-connected layers the same way. The backbone is
  validated every 10 epochs and chosen by its validation result, re-initialising until a good one
  is found (Sec. IV-A-3, IV-B, Table III) -> ``validate_every=10``, :func:`select_by_validation`.
  Fig. 7 plots training loss, validation loss (both batch means) and validation accuracy ->
  :func:`plot_history`.

Micro-batches: ``TrainConfig.micro_batch`` splits every batch into passes of at most that many samples whose
gradients accumulate before the one optimiser step, each pass's loss weighted by its share of the batch; for a
loss that averages over samples this is the whole batch's gradient, so a paper's batch (BiFPN-I3D's 32 clips of
160 frames) trains on a device that holds a few clips. Batch normalisation then normalises each pass with its
own statistics (and updates its running averages once per pass), and a loss normalised by a count over the
batch (a focal loss over the positives, a masked mean) is normalised per pass; the models say where that
matters. ``TrainConfig.max_steps`` ends a trial after that many optimiser steps (validating its last epoch).

Mixed precision: with ``TrainConfig.mixed_precision`` on CUDA the model runs under float16 autocast with a
gradient scaler; its outputs are cast to float32 and the loss is computed outside autocast
(:func:`forward_loss`), so every loss sees float32 logits. Each model's profiles set ``mixed_precision`` and say
why; :func:`precision_check` compares one step under autocast with one in float32 (the per-model tests do it
with CPU bfloat16, ``scripts/gpu_check.py`` with CUDA float16).

Runs are seeded and deterministic on CPU. A checkpoint (model, optimiser, scheduler, gradient
scaler, RNG states, epoch, history, best state) is written atomically after every epoch; resuming
continues to the same final weights as an uninterrupted run, because the shuffling order of epoch
``e`` comes from a generator seeded by ``(seed, e)`` and all RNG states are restored.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mecore.preprocess.cache import remove_stale

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or from another configuration; names the file."""


@dataclass(frozen=True)
class OptimizerSpec:
    """Which optimiser, with its hyperparameters. ``weight_decay`` is the optimiser's own (coupled) decay."""

    name: Literal["sgd", "adam"]
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0

    def build(self, parameters: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        if self.name == "sgd":
            return torch.optim.SGD(parameters, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        if self.name == "adam":
            if self.momentum:
                raise ValueError("Adam has no momentum parameter; leave momentum at 0")
            return torch.optim.Adam(parameters, lr=self.lr, weight_decay=self.weight_decay)
        raise ValueError(f"unknown optimiser {self.name!r}; choose 'sgd' or 'adam'")


@dataclass(frozen=True)
class ScheduleSpec:
    """Learning-rate schedule, stepped once per epoch: constant, or cosine annealing down to ``min_lr``."""

    name: Literal["constant", "cosine"] = "constant"
    min_lr: float = 0.0

    def build(self, optimizer: torch.optim.Optimizer, epochs: int) -> torch.optim.lr_scheduler.LRScheduler:
        if self.name == "constant":
            return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
        if self.name == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=self.min_lr)
        raise ValueError(f"unknown schedule {self.name!r}; choose 'constant' or 'cosine'")


@dataclass(frozen=True)
class L2Penalty:
    """The explicit L2 term ``coefficient / 2 * sum(w ** 2)`` of MESNet Eqs. 8 and 12.

    Every trainable parameter (weights and biases) enters the sum except those whose name starts with
    one of ``exclude`` (e.g. ``("classifier.4.",)`` for the last fully-connected layer of Eq. 8).
    """

    coefficient: float
    exclude: tuple[str, ...] = ()

    def penalised(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        return [(name, p) for name, p in model.named_parameters()
                if p.requires_grad and not name.startswith(self.exclude)]

    def __call__(self, model: nn.Module) -> torch.Tensor:
        squares = [p.pow(2).sum() for _, p in self.penalised(model)]
        return self.coefficient / 2 * torch.stack(squares).sum()


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained weights (stored in each checkpoint and checked on resume).

    ``monitor`` names a history column (``val_loss``, ``val_accuracy``, ``train_loss``, ...) used for
    early stopping (``patience`` evaluations without improvement; None: never stop early) and for
    model selection (the returned model has the weights of the best monitored epoch when
    ``restore_best``). Validation runs every ``validate_every`` epochs and after the last one.
    """

    optimizer: OptimizerSpec
    epochs: int
    batch_size: int
    schedule: ScheduleSpec = ScheduleSpec()
    l2: L2Penalty | None = None
    monitor: str = "val_loss"
    maximize: bool = False
    patience: int | None = None
    validate_every: int = 1
    restore_best: bool = True
    seed: int = 0
    mixed_precision: bool = True  # float16 autocast on CUDA (never on CPU); losses always in float32
    num_workers: int | None = None  # DataLoader worker processes; None: loader_workers()
    drop_last: bool = False  # drop a short last training batch (batch normalisation needs > 1 sample)
    micro_batch: int | None = None  # samples per forward/backward pass; None: the whole batch at once
    max_steps: int | None = None  # stop after this many optimiser steps (a trial of a configuration)

    def fingerprint(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class TrainResult:
    """The trained model (best monitored weights when ``restore_best``), its history and how it ended."""

    model: nn.Module
    history: pd.DataFrame
    best_epoch: int | None
    best_value: float | None
    stopped_early: bool
    checkpoint: Path | None = None


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when present, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def loader_workers(device: torch.device, requested: int | None = None) -> int:
    """DataLoader worker processes: ``requested`` if given; else none on the CPU (each LOSO fold computes with one
    thread, and the items' random draws stay in the process, so a seed gives the same numbers) and, on CUDA, up to
    four processes reading and preparing the next batches while the GPU computes. A daemonic process (a Dask
    worker) cannot start processes: it loads in-process."""
    import multiprocessing

    if requested is not None:
        return requested
    if device.type != "cuda" or multiprocessing.current_process().daemon:
        return 0
    return min(4, max(1, (os.cpu_count() or 1) // 2))


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's global generators (CUDA included)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def validation_accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Accuracy of arg-max class scores (the validation accuracy of MESNet Fig. 7)."""
    return {"accuracy": float((outputs.argmax(dim=1) == targets).float().mean())}


def fit(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    train_data: torch.utils.data.Dataset,
    val_data: torch.utils.data.Dataset | None,
    config: TrainConfig,
    *,
    val_metrics: Callable[[Any, Any], dict[str, float]] | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool | Literal["auto"] = False,
    device: str | torch.device | None = None,
    num_threads: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` on ``train_data`` and validate it on ``val_data``.

    Dataset items are ``(inputs, target)``; ``inputs`` may be a tensor or a tuple of tensors (passed
    as ``model(*inputs)``), ``target`` anything ``loss_fn(outputs, targets)`` understands after
    default collation. ``val_metrics(outputs, targets)`` receives the validation outputs and targets
    concatenated over batches and returns named values, recorded as ``val_<name>``.

    ``resume``: False starts afresh (overwriting a checkpoint); True continues from
    ``checkpoint_dir/checkpoint.pt`` and raises :class:`CheckpointError` if it is missing; ``"auto"``
    continues when a checkpoint exists. A corrupt checkpoint or one written under a different
    :class:`TrainConfig` always raises. ``num_threads`` calls ``torch.set_num_threads``; when None
    the current setting is kept.
    """
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    device = resolve_device(device)
    on_cuda = device.type == "cuda"
    monitor_needs_validation = config.monitor.startswith("val_")
    if monitor_needs_validation and val_data is None and (config.patience is not None or config.restore_best):
        raise ValueError(f"monitor {config.monitor!r} needs validation data; pass val_data or monitor 'train_loss'")
    checkpoint = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    if resume and checkpoint is None:
        raise ValueError("resume needs a checkpoint_dir")
    if checkpoint is not None and checkpoint.parent.is_dir():
        remove_stale(checkpoint.parent)  # .checkpoint.pt.<pid>.tmp of runs killed while saving

    model.to(device)
    optimizer = config.optimizer.build(model.parameters())
    scheduler = config.schedule.build(optimizer, config.epochs)
    amp = bool(config.mixed_precision and on_cuda)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    state = _TrainingState()

    if resume and (resume is True or checkpoint.exists()):
        state = _load_checkpoint(checkpoint, config, model, optimizer, scheduler, scaler, device)
    else:
        seed_everything(config.seed)

    bar = tqdm(total=config.epochs, initial=state.epoch, desc="epochs", disable=not progress, leave=False)
    FIT_LOG.append({"samples": len(train_data), "batch_size": config.batch_size, "drop_last": config.drop_last,
                    "micro_batch": min(config.micro_batch or config.batch_size, config.batch_size),
                    "epochs": config.epochs, "device": device.type, "mixed_precision": amp, "step_seconds": [],
                    "step_losses": [], "peak_device_bytes": None})
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    while not state.finished:
        epoch = state.epoch + 1
        started = time.perf_counter()
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
        row.update(_train_one_epoch(model, loss_fn, train_data, config, epoch, optimizer, scaler, amp,
                                    device, progress, state))
        last = epoch == config.epochs or (config.max_steps is not None and state.steps >= config.max_steps)
        if val_data is not None and (epoch % config.validate_every == 0 or last):
            row.update(_validate(model, loss_fn, val_data, config, val_metrics, amp, device))
        scheduler.step()
        row["seconds"] = time.perf_counter() - started
        state.record(row, model, config)
        if config.max_steps is not None and state.steps >= config.max_steps:
            state.finished = True
        if checkpoint is not None:
            _save_checkpoint(checkpoint, config, model, optimizer, scheduler, scaler, state)
        bar.update(1)
        bar.set_postfix(train_loss=f"{row['train_loss']:.4g}")
    bar.close()
    if on_cuda:
        FIT_LOG[-1]["peak_device_bytes"] = torch.cuda.max_memory_allocated(device)

    if config.restore_best and state.best_state is not None:
        model.load_state_dict(state.best_state)
    return TrainResult(model=model, history=pd.DataFrame(state.history), best_epoch=state.best_epoch,
                       best_value=state.best_value, stopped_early=state.stopped_early, checkpoint=checkpoint)


def predict(model: nn.Module, data: torch.utils.data.Dataset, batch_size: int,
            device: str | torch.device | None = None) -> Any:
    """Model outputs for every item of ``data`` (items as in :func:`fit`), concatenated, on the CPU."""
    device = resolve_device(device)
    model.to(device).eval()
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=loader_workers(device),
                        pin_memory=device.type == "cuda")
    outputs = []
    with torch.no_grad():
        for inputs, _ in loader:
            outputs.append(_to_device(_call(model, _to_device(inputs, device)), torch.device("cpu")))
    return _concatenate(outputs)


def select_by_validation(
    build_model: Callable[[], nn.Module],
    seeds: Sequence[int],
    loss_fn: Callable[[Any, Any], torch.Tensor],
    train_data: torch.utils.data.Dataset,
    val_data: torch.utils.data.Dataset,
    config: TrainConfig,
    *,
    good_enough: float | None = None,
    checkpoint_dir: str | Path | None = None,
    **fit_kwargs,
) -> tuple[TrainResult, pd.DataFrame]:
    """Train one model per seed (fresh random initialisation each) and keep the best by validation.

    MESNet (Sec. IV-A-3 and IV-B, Table III) re-initialises and re-trains its backbone until the
    validation result is good, then keeps the selected parameters. Candidates are tried in order;
    with ``good_enough`` the search stops at the first whose best monitored value reaches it.
    Returns the chosen result and a table of every candidate's best monitored value.
    """
    best: TrainResult | None = None
    best_seed = None
    rows = []
    for seed in seeds:
        seed_everything(seed)
        candidate_dir = Path(checkpoint_dir) / f"seed-{seed}" if checkpoint_dir is not None else None
        result = fit(build_model(), loss_fn, train_data, val_data, replace(config, seed=seed),
                     checkpoint_dir=candidate_dir, **fit_kwargs)
        rows.append({"seed": seed, "best_epoch": result.best_epoch, config.monitor: result.best_value})
        if best is None or _better(result.best_value, best.best_value, config.maximize):
            best, best_seed = result, seed
        if good_enough is not None and not _better(good_enough, result.best_value, config.maximize):
            break
    table = pd.DataFrame(rows)
    table["selected"] = table["seed"] == best_seed
    return best, table


def plot_history(history: pd.DataFrame, metric: str = "val_accuracy", title: str | None = None):
    """Training loss, validation loss and a validation metric against epochs (MESNet Fig. 7 style)."""
    import matplotlib.pyplot as plt

    figure, loss_axis = plt.subplots(figsize=(6, 3.5))
    lines = loss_axis.plot(history["epoch"], history["train_loss"], label="training loss (mean batch)")
    if "val_loss" in history:
        validated = history.dropna(subset=["val_loss"])
        lines += loss_axis.plot(validated["epoch"], validated["val_loss"], label="validation loss (mean batch)")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("loss")
    if metric in history:
        metric_axis = loss_axis.twinx()
        validated = history.dropna(subset=[metric])
        lines += metric_axis.plot(validated["epoch"], validated[metric], color="tab:green",
                                  label=metric.replace("val_", "validation ").replace("_", " "))
        metric_axis.set_ylabel(metric)
    loss_axis.legend(lines, [line.get_label() for line in lines], loc="center right")
    if title:
        loss_axis.set_title(title)
    figure.tight_layout()
    return figure


# --------------------------------------------------------------------------------------------------


FIT_LOG: list[dict] = []
"""One record per :func:`fit` call of this process: training samples, batch and micro-batch, device, seconds of
every optimiser step and the peak device memory (CUDA). ``mecore plan`` reads it after a trial fold."""


def split_batch(value: Any, size: int) -> list:
    """A collated batch (tensors, or tuples/lists/dicts of them) cut into micro-batches of ``size`` samples."""
    if isinstance(value, torch.Tensor):
        return list(value.split(size))
    if isinstance(value, (list, tuple)):
        parts = [split_batch(v, size) for v in value]
        return [type(value)(group) for group in zip(*parts)]
    if isinstance(value, dict):
        parts = {k: split_batch(v, size) for k, v in value.items()}
        return [dict(zip(parts, group)) for group in zip(*parts.values())]
    raise TypeError(f"cannot split a batch of {type(value).__name__} into micro-batches")


def batch_length(value: Any) -> int:
    """Number of samples of a collated batch."""
    if isinstance(value, torch.Tensor):
        return len(value)
    if isinstance(value, (list, tuple)):
        return batch_length(value[0])
    if isinstance(value, dict):
        return batch_length(next(iter(value.values())))
    raise TypeError(f"cannot count the samples of a batch of {type(value).__name__}")


@dataclass
class _TrainingState:
    epoch: int = 0
    steps: int = 0
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_value: float | None = None
    best_state: dict | None = None
    evaluations_without_improvement: int = 0
    stopped_early: bool = False
    finished: bool = False

    def record(self, row: dict, model: nn.Module, config: TrainConfig) -> None:
        """Append an epoch's row; update the best epoch, early stopping and whether training is over."""
        self.epoch = row["epoch"]
        validated = "val_loss" in row or not config.monitor.startswith("val_")
        if validated and config.monitor not in row:
            raise ValueError(f"monitor {config.monitor!r} is not among the recorded values {sorted(row)}")
        value = row.get(config.monitor, math.nan)
        if not math.isnan(value):
            improved = self.best_value is None or _better(value, self.best_value, config.maximize)
            if improved:
                self.best_epoch, self.best_value = self.epoch, value
                if config.restore_best:
                    self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                self.evaluations_without_improvement = 0
            else:
                self.evaluations_without_improvement += 1
            row["improved"] = improved
        self.history.append(row)
        self.stopped_early = (config.patience is not None
                              and self.evaluations_without_improvement >= config.patience
                              and self.epoch < config.epochs)
        self.finished = self.stopped_early or self.epoch >= config.epochs


def _better(value: float, reference: float, maximize: bool) -> bool:
    return value > reference if maximize else value < reference


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The shuffling generator of one epoch: a function of (seed, epoch) only, so resuming keeps the order."""
    entropy = np.random.SeedSequence([seed % 2**32, epoch]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(entropy[0]) << 32 | int(entropy[1]))


def _map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``value`` with ``fn`` applied to every tensor in it (also inside lists, tuples, dicts and dataclasses)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        copied = copy.copy(value)
        for item in dataclasses.fields(value):
            object.__setattr__(copied, item.name, _map_tensors(getattr(value, item.name), fn))
        return copied
    if isinstance(value, (list, tuple)):
        return type(value)(_map_tensors(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    return value


def _to_device(value: Any, device: torch.device) -> Any:
    return _map_tensors(value, lambda t: t.to(device, non_blocking=device.type == "cuda"))


def _call(model: nn.Module, inputs: Any) -> Any:
    return model(*inputs) if isinstance(inputs, (list, tuple)) else model(inputs)


def _float32(value: Any) -> Any:
    """``value`` with every floating tensor in it in float32."""
    return _map_tensors(value, lambda t: t.float() if t.is_floating_point() else t)


def forward_loss(model: nn.Module, loss_fn: Callable, inputs: Any, targets: Any,
                 amp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, Any]:
    """``(loss, outputs)``: the model under autocast to ``amp_dtype`` (none when None) on the inputs' device,
    its outputs cast to float32, and ``loss_fn`` computed from them outside autocast, in float32."""
    device_type = (_device_of(inputs) or torch.device("cpu")).type
    with torch.autocast(device_type=device_type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        outputs = _call(model, inputs)
    outputs = _float32(outputs)
    loss = loss_fn(outputs, targets)
    if loss.dtype != torch.float32:
        raise TypeError(f"the loss is {loss.dtype}, not float32: compute it from float32 outputs")
    return loss, outputs


def _device_of(value: Any) -> torch.device | None:
    if isinstance(value, torch.Tensor):
        return value.device
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else []
    return next((found for found in map(_device_of, items) if found is not None), None)


def precision_check(model: nn.Module, loss_fn: Callable, inputs: Any, targets: Any,
                    amp_dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> dict:
    """One training step's loss and gradients in float32 and under autocast to ``amp_dtype``, from the same
    weights and batch (the model is copied; dropout draws are seeded alike). Returns both losses, whether all
    are finite, and the largest gradient difference relative to the float32 gradient's largest magnitude."""
    results = []
    for dtype in (None, amp_dtype):
        replica = copy.deepcopy(model).train()
        replica.zero_grad(set_to_none=True)
        seed_everything(seed)
        loss, _ = forward_loss(replica, loss_fn, inputs, targets, dtype)
        loss.backward()
        grads = [p.grad.detach().float().flatten() if p.grad is not None else torch.zeros(p.numel())
                 for p in replica.parameters() if p.requires_grad]
        results.append((loss.detach(), torch.cat(grads)))
    (loss32, grad32), (loss_amp, grad_amp) = results
    scale = float(grad32.abs().max()) or 1.0
    return {"loss_float32": float(loss32), "loss_amp": float(loss_amp),
            "finite": bool(torch.isfinite(loss32) and torch.isfinite(loss_amp)
                           and torch.isfinite(grad32).all() and torch.isfinite(grad_amp).all()),
            "loss_rel_diff": abs(float(loss_amp) - float(loss32)) / max(abs(float(loss32)), 1e-12),
            "grad_rel_diff": float((grad_amp - grad32).abs().max()) / scale,
            "grad_cosine": float(torch.nn.functional.cosine_similarity(grad32, grad_amp, dim=0))}


def _concatenate(batches: list) -> Any:
    first = batches[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(batches)
    if isinstance(first, (list, tuple)):
        return type(first)(_concatenate(list(parts)) for parts in zip(*batches))
    if isinstance(first, dict):
        return {k: _concatenate([b[k] for b in batches]) for k in first}
    return [item for batch in batches for item in batch]


def _train_one_epoch(model, loss_fn, data, config, epoch, optimizer, scaler, amp, device, progress, state) -> dict:
    loader = DataLoader(data, batch_size=config.batch_size, shuffle=True,
                        generator=_epoch_generator(config.seed, epoch),
                        num_workers=loader_workers(device, config.num_workers),
                        pin_memory=device.type == "cuda", drop_last=config.drop_last)
    model.train()
    losses, penalties = [], []
    bar = tqdm(loader, desc=f"epoch {epoch}", disable=not progress, leave=False)
    for inputs, targets in bar:
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        total = batch_length(targets)
        passes = (zip(split_batch(inputs, config.micro_batch), split_batch(targets, config.micro_batch))
                  if config.micro_batch and config.micro_batch < total else [(inputs, targets)])
        passes, loss = list(passes), 0.0
        for index, (part_inputs, part_targets) in enumerate(passes):
            part_inputs, part_targets = _to_device(part_inputs, device), _to_device(part_targets, device)
            part_loss, _ = forward_loss(model, loss_fn, part_inputs, part_targets, torch.float16 if amp else None)
            share = batch_length(part_targets) / total
            objective = part_loss * share
            if config.l2 is not None and index == len(passes) - 1:  # the explicit L2 term once per step
                penalty = config.l2(model)
                objective = objective + penalty
                penalties.append(float(penalty.detach()))
            scaler.scale(objective).backward()
            loss += float(part_loss.detach()) * share
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss)
        state.steps += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if len(FIT_LOG[-1]["step_seconds"]) < 1000:
            FIT_LOG[-1]["step_seconds"].append(time.perf_counter() - started)
            FIT_LOG[-1]["step_losses"].append(loss)
        bar.set_postfix(loss=f"{np.mean(losses):.4g}")
        if config.max_steps is not None and state.steps >= config.max_steps:
            break
    if not losses:
        raise ValueError("the training data is empty (or smaller than one batch with drop_last)")
    row = {"train_loss": float(np.mean(losses))}
    if not math.isfinite(row["train_loss"]):
        raise FloatingPointError(f"epoch {epoch}: the mean training loss is {row['train_loss']}; "
                                 f"lower the learning rate or check the inputs")
    if penalties:
        row["train_l2"] = float(np.mean(penalties))
    return row


def _validate(model, loss_fn, data, config, val_metrics, amp, device) -> dict:
    loader = DataLoader(data, batch_size=config.batch_size, shuffle=False,
                        num_workers=loader_workers(device, config.num_workers),
                        pin_memory=device.type == "cuda")
    model.eval()
    losses, outputs, targets = [], [], []
    with torch.no_grad():
        for batch_inputs, batch_targets in loader:
            batch_inputs, batch_targets = _to_device(batch_inputs, device), _to_device(batch_targets, device)
            loss, batch_outputs = forward_loss(model, loss_fn, batch_inputs, batch_targets,
                                               torch.float16 if amp else None)
            losses.append(float(loss))
            outputs.append(_to_device(batch_outputs, torch.device("cpu")))
            targets.append(_to_device(batch_targets, torch.device("cpu")))
    if not losses:
        raise ValueError("the validation data is empty")
    row = {"val_loss": float(np.mean(losses))}
    if val_metrics is not None:
        values = val_metrics(_concatenate(outputs), _concatenate(targets))
        row.update({f"val_{name}": float(value) for name, value in values.items()})
    return row


def _rng_states(device: torch.device) -> dict:
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, keys.tolist(), position, has_gauss, cached),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
    }


def _restore_rng_states(states: dict, device: torch.device) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])


def _save_checkpoint(path: Path, config, model, optimizer, scheduler, scaler, state: _TrainingState) -> None:
    """Write the checkpoint to a temporary file in the same folder, then rename it over the old one."""
    device = next(model.parameters()).device
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": config.fingerprint(),
        "epoch": state.epoch,
        "steps": state.steps,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": _rng_states(device),
        "history": state.history,
        "best_epoch": state.best_epoch,
        "best_value": state.best_value,
        "best_state": state.best_state,
        "evaluations_without_improvement": state.evaluations_without_improvement,
        "stopped_early": state.stopped_early,
        "finished": state.finished,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _load_checkpoint(path: Path, config, model, optimizer, scheduler, scaler, device) -> _TrainingState:
    if not path.exists():
        raise CheckpointError(f"{path}: no checkpoint to resume from (resume=True needs one; "
                              f"resume='auto' starts afresh when there is none)")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{path}: checkpoint is corrupt or unreadable ({type(error).__name__}: "
                              f"{error}); delete it to train from scratch") from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a mecore training checkpoint (format {CHECKPOINT_FORMAT})")
    if payload["config"] != config.fingerprint():
        raise CheckpointError(f"{path}: checkpoint was written under another training configuration\n"
                              f"  checkpoint: {payload['config']}\n  requested:  {config.fingerprint()}")
    try:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        scaler.load_state_dict(payload["scaler"])
        _restore_rng_states(payload["rng"], device)
    except (KeyError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"{path}: checkpoint does not fit this model or optimiser ({error})") from error
    return _TrainingState(
        epoch=payload["epoch"], steps=payload.get("steps", 0), history=payload["history"], best_epoch=payload["best_epoch"],
        best_value=payload["best_value"], best_state=payload["best_state"],
        evaluations_without_improvement=payload["evaluations_without_improvement"],
        stopped_early=payload["stopped_early"], finished=payload["finished"],
    )
