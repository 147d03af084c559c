"""The trainer: determinism, resume, checkpoint errors, L2 exclusions, schedules, early stopping, selection."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import matplotlib
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from mecore.train import (
    CheckpointError,
    L2Penalty,
    OptimizerSpec,
    ScheduleSpec,
    TrainConfig,
    fit,
    plot_history,
    predict,
    select_by_validation,
    validation_accuracy,
)

matplotlib.use("Agg")


def make_data(seed: int = 0, n: int = 96, features: int = 8, classes: int = 3) -> TensorDataset:
    """Three Gaussian blobs (fixed centres, noise drawn from ``seed``): learnable, so losses fall."""
    centres = torch.randn(classes, features, generator=torch.Generator().manual_seed(100)) * 2
    labels = torch.arange(n) % classes
    inputs = centres[labels] + torch.randn(n, features, generator=torch.Generator().manual_seed(seed))
    return TensorDataset(inputs, labels)


class TinyClassifier(nn.Module):
    """Two fully-connected layers with dropout, so the RNG matters during training."""

    def __init__(self, features: int = 8, classes: int = 3):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(features, 16), nn.ReLU(), nn.Dropout(0.3))
        self.last = nn.Linear(16, classes)

    def forward(self, x):
        return self.last(self.hidden(x))


def build(seed: int) -> TinyClassifier:
    torch.manual_seed(seed)
    return TinyClassifier()


CONFIG = TrainConfig(
    optimizer=OptimizerSpec("sgd", lr=0.05, momentum=0.9, weight_decay=5e-4),
    schedule=ScheduleSpec("cosine", min_lr=1e-4),
    epochs=6,
    batch_size=16,
    l2=L2Penalty(0.01, exclude=("last.",)),
    monitor="val_accuracy",
    maximize=True,
    restore_best=False,
    seed=3,
)
TRAIN, VAL = make_data(0), make_data(1)


def run(config=CONFIG, **kwargs):
    return fit(build(0), nn.CrossEntropyLoss(), TRAIN, VAL, config, val_metrics=validation_accuracy,
               progress=False, **kwargs)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def comparable(history):
    return history.drop(columns=["seconds"])


def test_same_seed_gives_identical_weights_and_metrics():
    first, second = run(), run()
    assert_same_weights(first.model, second.model)
    assert comparable(first.history).equals(comparable(second.history))
    assert first.history["train_loss"].iloc[-1] < first.history["train_loss"].iloc[0]
    assert first.history["val_accuracy"].iloc[-1] > 0.6


def test_different_seed_gives_different_weights():
    other = run(replace(CONFIG, seed=4))
    assert not torch.equal(weights(run().model)["last.weight"], weights(other.model)["last.weight"])


def test_history_columns_and_final_checkpoint(tmp_path):
    result = run(checkpoint_dir=tmp_path)
    assert list(result.history.columns) == ["epoch", "lr", "train_loss", "train_l2", "val_loss",
                                            "val_accuracy", "seconds", "improved"]
    assert result.history["epoch"].tolist() == [1, 2, 3, 4, 5, 6]
    payload = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert payload["epoch"] == 6 and payload["finished"]
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary files left


class Interrupt(Exception):
    pass


def interrupting_loss(after_calls: int):
    """Cross-entropy that raises mid-epoch after a number of calls, as a kill would stop a run."""
    calls = {"n": 0}
    base = nn.CrossEntropyLoss()

    def loss(outputs, targets):
        calls["n"] += 1
        if calls["n"] > after_calls:
            raise Interrupt
        return base(outputs, targets)

    return loss


def test_resume_reaches_the_same_final_weights(tmp_path):
    uninterrupted = run()
    batches_per_epoch = math.ceil(len(TRAIN) / CONFIG.batch_size) + math.ceil(len(VAL) / CONFIG.batch_size)
    with pytest.raises(Interrupt):  # dies in epoch 4, after epoch 3's checkpoint was written
        fit(build(0), interrupting_loss(3 * batches_per_epoch + 2), TRAIN, VAL, CONFIG,
            val_metrics=validation_accuracy, checkpoint_dir=tmp_path, progress=False)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 3
    torch.manual_seed(12345)  # the caller's RNG state differs after the crash; the checkpoint restores it
    resumed = fit(build(99), nn.CrossEntropyLoss(), TRAIN, VAL, CONFIG, val_metrics=validation_accuracy,
                  checkpoint_dir=tmp_path, resume=True, progress=False)
    assert_same_weights(resumed.model, uninterrupted.model)
    assert comparable(resumed.history).equals(comparable(uninterrupted.history))


def test_resume_of_a_finished_run_trains_no_further(tmp_path):
    first = run(checkpoint_dir=tmp_path)
    again = run(checkpoint_dir=tmp_path, resume=True)
    assert_same_weights(first.model, again.model)
    assert again.history["seconds"].equals(first.history["seconds"])  # rows come from the checkpoint


KILLED_RUN = textwrap.dedent("""
    import sys, time, torch
    from torch import nn
    sys.path.insert(0, {tests!r})
    from test_train import CONFIG, TRAIN, VAL, build
    from mecore.train import fit, validation_accuracy
    base = nn.CrossEntropyLoss()
    def slow_loss(outputs, targets):
        time.sleep(0.02)
        return base(outputs, targets)
    fit(build(0), slow_loss, TRAIN, VAL, CONFIG, val_metrics=validation_accuracy,
        checkpoint_dir={folder!r}, progress=False)
""")


def test_resume_after_a_real_kill(tmp_path):
    """SIGKILL a training process after its second checkpoint, then resume in this process."""
    script = KILLED_RUN.format(tests=str(Path(__file__).parent), folder=str(tmp_path))
    process = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"})
    checkpoint = tmp_path / "checkpoint.pt"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if checkpoint.exists() and torch.load(checkpoint, weights_only=True)["epoch"] >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 2 <= killed_at < CONFIG.epochs
    resumed = run(checkpoint_dir=tmp_path, resume=True)
    assert_same_weights(resumed.model, run().model)


def test_resume_true_without_checkpoint_fails_naming_the_file(tmp_path):
    with pytest.raises(CheckpointError, match=str(tmp_path / "checkpoint.pt")):
        run(checkpoint_dir=tmp_path, resume=True)


def test_corrupt_checkpoint_fails_even_on_auto_resume(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        run(checkpoint_dir=tmp_path, resume="auto")


def test_truncated_checkpoint_fails(tmp_path):
    run(checkpoint_dir=tmp_path)
    data = (tmp_path / "checkpoint.pt").read_bytes()
    (tmp_path / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="checkpoint.pt"):
        run(checkpoint_dir=tmp_path, resume=True)


def test_checkpoint_of_another_configuration_is_refused(tmp_path):
    run(checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="another training configuration"):
        run(replace(CONFIG, epochs=8), checkpoint_dir=tmp_path, resume="auto")


def test_auto_resume_without_checkpoint_starts_afresh(tmp_path):
    assert_same_weights(run(checkpoint_dir=tmp_path, resume="auto").model, run().model)


def test_l2_penalty_leaves_out_excluded_layers():
    model = build(0)
    penalty = L2Penalty(0.01, exclude=("last.",))
    assert [name for name, _ in penalty.penalised(model)] == ["hidden.0.weight", "hidden.0.bias"]
    expected = 0.005 * (model.hidden[0].weight.pow(2).sum() + model.hidden[0].bias.pow(2).sum())
    assert torch.allclose(penalty(model), expected)
    penalty(model).backward()
    assert model.last.weight.grad is None
    assert torch.allclose(model.hidden[0].weight.grad, 0.01 * model.hidden[0].weight)


def test_cosine_schedule_anneals_to_the_floor():
    """STSNet_SW Sec. 3.2: 1e-3 cosine-annealed to 1e-8."""
    config = replace(CONFIG, optimizer=OptimizerSpec("sgd", 1e-3, momentum=0.9, weight_decay=5e-4),
                     schedule=ScheduleSpec("cosine", min_lr=1e-8), epochs=5)
    lrs = run(config).history["lr"].tolist()
    expected = [1e-8 + (1e-3 - 1e-8) * (1 + math.cos(math.pi * e / 5)) / 2 for e in range(5)]
    assert lrs == pytest.approx(expected, rel=1e-9)
    model = build(0)
    optimizer = config.optimizer.build(model.parameters())
    scheduler = config.schedule.build(optimizer, 5)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-8)


def test_adam_trains():
    config = replace(CONFIG, optimizer=OptimizerSpec("adam", 1e-2), schedule=ScheduleSpec(), l2=None)
    history = run(config).history
    assert history["lr"].eq(1e-2).all()
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]


def test_early_stopping_after_patience_without_improvement():
    """Yap et al. Sec. 3.3: stop when the loss has not improved for 5 consecutive epochs."""
    frozen = replace(CONFIG, optimizer=OptimizerSpec("sgd", 0.0), schedule=ScheduleSpec(), l2=None,
                     monitor="val_loss", maximize=False, patience=5, epochs=20)
    result = run(frozen)
    assert result.stopped_early
    assert result.history["epoch"].tolist() == [1, 2, 3, 4, 5, 6]
    assert result.best_epoch == 1


def test_restore_best_returns_the_best_validated_weights(tmp_path):
    config = replace(CONFIG, restore_best=True, epochs=8, validate_every=2)
    result = run(config, checkpoint_dir=tmp_path)
    validated = result.history.dropna(subset=["val_accuracy"])
    assert validated["epoch"].tolist() == [2, 4, 6, 8]
    assert result.best_value == validated["val_accuracy"].max()
    best_rows = validated[validated["val_accuracy"] == result.best_value]
    assert result.best_epoch == best_rows["epoch"].iloc[0]
    best_state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["best_state"]
    for key, value in weights(result.model).items():
        assert torch.equal(value, best_state[key])
    outputs = predict(result.model, VAL, batch_size=32)
    assert validation_accuracy(outputs, VAL.tensors[1])["accuracy"] == pytest.approx(result.best_value)


def test_monitor_that_is_never_recorded_is_an_error():
    with pytest.raises(ValueError, match="val_f1"):
        run(replace(CONFIG, monitor="val_f1"))


def test_select_by_validation_keeps_the_best_seed(tmp_path):
    config = replace(CONFIG, epochs=2, restore_best=True)
    chosen, table = select_by_validation(TinyClassifier, [1, 2, 3], nn.CrossEntropyLoss(), TRAIN, VAL, config,
                                         val_metrics=validation_accuracy, checkpoint_dir=tmp_path,
                                         progress=False)
    assert table["seed"].tolist() == [1, 2, 3]
    assert chosen.best_value == table["val_accuracy"].max()
    assert table.loc[table["selected"], "val_accuracy"].item() == chosen.best_value
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed-1", "seed-2", "seed-3"]
    stopped, short = select_by_validation(TinyClassifier, [1, 2, 3], nn.CrossEntropyLoss(), TRAIN, VAL, config,
                                          good_enough=0.0, val_metrics=validation_accuracy, progress=False)
    assert short["seed"].tolist() == [1]


def test_plot_history_draws_the_three_curves_of_mesnet_fig7():
    figure = plot_history(run().history)
    labels = [line.get_label() for axis in figure.axes for line in axis.get_lines()]
    assert labels == ["training loss (mean batch)", "validation loss (mean batch)", "validation accuracy"]


def test_diverging_training_stops_with_a_clear_error():
    exploding = replace(CONFIG, optimizer=OptimizerSpec("sgd", 1e12), schedule=ScheduleSpec(), l2=None)
    with pytest.raises(FloatingPointError, match="mean training loss is (nan|inf)"):
        run(exploding)


class TwoInputs(nn.Module):
    """No batch norm, no dropout, inputs as a tuple: the gradient of a batch is the mean of its samples'."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 16), nn.Linear(4, 16)
        self.last = nn.Linear(16, 3)

    def forward(self, x, y):
        return self.last(torch.tanh(self.a(x) + self.b(y)))


def test_micro_batches_give_the_gradient_of_the_whole_batch():
    from mecore.train import FIT_LOG

    torch.manual_seed(0)
    data = TensorDataset(torch.randn(24, 8), torch.randn(24, 4), torch.arange(24) % 3)
    pairs = [((x, y), label) for x, y, label in data]
    config = TrainConfig(OptimizerSpec("sgd", lr=0.5), epochs=1, batch_size=12, monitor="train_loss",
                         restore_best=False, l2=L2Penalty(0.01, exclude=("last.",)), seed=1, max_steps=1)
    results = {}
    for micro in (None, 5, 1):
        torch.manual_seed(7)
        model = TwoInputs()
        start = weights(model)
        result = fit(model, nn.CrossEntropyLoss(), pairs, None, replace(config, micro_batch=micro), progress=False)
        results[micro] = {k: start[k] - v for k, v in weights(result.model).items()}  # lr x the step's gradient
        assert FIT_LOG[-1]["micro_batch"] == (micro or 12) and len(FIT_LOG[-1]["step_seconds"]) == 1
        assert result.history["train_loss"].notna().all()
    for micro in (5, 1):  # passes of 5 + 5 + 2 and of 1 sample: the same step as one pass of 12
        for key in results[None]:
            torch.testing.assert_close(results[micro][key], results[None][key], rtol=1e-5, atol=1e-7)
    assert any(results[None][key].abs().max() > 1e-3 for key in results[None])  # the step did move the weights


def test_max_steps_stops_training_mid_epoch_and_is_kept_on_resume(tmp_path):
    config = replace(CONFIG, epochs=4, max_steps=8, monitor="train_loss")  # 6 steps an epoch (96 / 16)
    result = run(config, checkpoint_dir=tmp_path)
    assert list(result.history["epoch"]) == [1, 2]
    resumed = run(config, checkpoint_dir=tmp_path, resume=True)
    assert list(resumed.history["epoch"]) == [1, 2]  # finished: nothing more to train
    assert_same_weights(resumed.model, result.model)


def test_a_run_stopped_by_max_steps_is_validated_in_its_last_epoch():
    config = replace(CONFIG, epochs=10, validate_every=5, max_steps=7, monitor="val_accuracy")
    result = run(config)
    assert list(result.history["epoch"]) == [1, 2] and result.history["val_accuracy"].iloc[-1] >= 0
    assert result.best_value is not None


def test_forward_loss_computes_the_loss_from_float32_outputs_under_autocast():
    """Under autocast the model runs in low precision; the loss always sees float32 outputs, also inside a
    dataclass or a tuple, and a loss that is not float32 is refused."""
    from dataclasses import dataclass as make_dataclass

    from mecore.train import forward_loss

    @make_dataclass
    class Output:
        logits: torch.Tensor
        extra: tuple

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 3)

        def forward(self, x):
            logits = self.linear(x)
            return Output(logits, (logits * 2,))

    torch.manual_seed(0)
    model, inputs, targets = Net(), torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    seen = []

    def loss_fn(output, target):
        seen.append((output.logits.dtype, output.extra[0].dtype))
        return nn.functional.cross_entropy(output.logits, target)

    loss, output = forward_loss(model, loss_fn, inputs, targets, torch.bfloat16)
    assert seen == [(torch.float32, torch.float32)] and loss.dtype == torch.float32
    exact, _ = forward_loss(model, loss_fn, inputs, targets, None)
    assert loss.item() != exact.item() and abs(loss.item() - exact.item()) < 0.05  # bf16 matmul, f32 loss
    with pytest.raises(TypeError, match="float32"):
        forward_loss(model, lambda o, t: o.logits.sum().half(), inputs, targets, None)


def test_precision_check_compares_a_float32_and_an_autocast_step(precision_step):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    inputs, targets = torch.randn(32, 8), torch.randint(0, 3, (32,))
    result = precision_step(model, nn.functional.cross_entropy, inputs, targets, loss_rtol=0.02, min_cosine=0.99)
    assert 0 < result["loss_rel_diff"] < 0.02 and model[0].weight.grad is None  # the model itself is untouched
