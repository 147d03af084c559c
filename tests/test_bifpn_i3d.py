"""BiFPN-I3D (mecore.models.bifpn_i3d): inflation, BiFPN levels and fusion weights, focal loss, shapes."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import mecore.models.bifpn_i3d as bifpn_i3d
from mecore.models import get_model
from mecore.train import CheckpointError
from mecore.models.bifpn_i3d import (EXPRESSION, LEVEL_STRIDES, BiFPN, BiFPNI3D, FusionNode, SpottingLoss,
                                     TwoStreamClips, candidate_targets, focal_loss, inflate_conv, load_pretrained)
from mecore.models.mesnet import apply_regression

SMALL = dict(frame_channels=1, width=0.0625, bifpn_channels=8, bifpn_layers=2, crn_channels=8, fc_width=16)


@pytest.mark.parametrize("time", [1, 3, 7])
def test_inflated_kernel_answers_a_static_clip_like_the_2d_kernel(time):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 5, 3, stride=2, padding=1)
    frame = torch.randn(1, 3, 12, 12)
    clip = frame.unsqueeze(2).repeat(1, 1, 9, 1, 1)  # nine identical frames
    response = inflate_conv(conv, time)(clip)
    assert response.shape == (1, 5, 9, 6, 6)
    for t in range(time // 2, 9 - time // 2):  # frames whose window holds no temporal zero padding
        torch.testing.assert_close(response[:, :, t], conv(frame), atol=1e-5, rtol=1e-5)
    if time > 1:  # at the ends the zero padding enters, as in I3D
        assert not torch.allclose(response[:, :, 0], conv(frame), atol=1e-3)


def test_load_pretrained_inflates_2d_weights_and_names_bad_files(tmp_path):
    torch.manual_seed(0)
    conv2d = torch.nn.Conv2d(2, 4, 3, padding=1, bias=False)
    conv3d = torch.nn.Conv3d(2, 4, 3, padding=1, bias=False)
    path = tmp_path / "weights.pt"
    torch.save({"weight": conv2d.weight.detach()}, path)
    load_pretrained(conv3d, path)
    frame = torch.randn(1, 2, 8, 8)
    torch.testing.assert_close(conv3d(frame.unsqueeze(2).repeat(1, 1, 5, 1, 1))[:, :, 2], conv2d(frame),
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_pretrained(conv3d, tmp_path / "missing.pt")
    torch.save({"weight": torch.zeros(4, 2, 5, 5)}, path)
    with pytest.raises(ValueError, match="weights.pt.*weight has shape"):
        load_pretrained(conv3d, path)


@pytest.mark.parametrize("n_frames", [160, 100, 37])
def test_bifpn_gives_five_levels_of_common_width(n_frames):
    torch.manual_seed(0)
    model = BiFPNI3D(**SMALL).eval()
    frames, flow = torch.randn(2, 1, n_frames, 16, 16), torch.randn(2, 2, n_frames, 16, 16)
    p3, p4, p5 = model.backbone(frames, flow)
    assert [x.shape[2] for x in (p3, p4, p5)] == [math.ceil(n_frames / s) for s in LEVEL_STRIDES[:3]]
    levels = model.levels(frames, flow)
    assert [tuple(x.shape) for x in levels] == [(2, 8, math.ceil(n_frames / s)) for s in LEVEL_STRIDES]
    bifpn = BiFPN((6, 10, 12), channels=4, layers=3)
    out = bifpn(torch.randn(3, 6, 40), torch.randn(3, 10, 20), torch.randn(3, 12, 10))
    assert [tuple(x.shape) for x in out] == [(3, 4, 40), (3, 4, 20), (3, 4, 10), (3, 4, 5), (3, 4, 3)]


def test_fusion_weights_are_non_negative_and_normalised():
    node = FusionNode(channels=4, n_inputs=3)
    with torch.no_grad():
        node.weights.copy_(torch.tensor([2.0, -1.0, 0.5]))
    weights = node.normalised_weights()
    assert (weights >= 0).all() and weights[1] == 0  # ReLU before the weights (Eq. 1-2)
    assert torch.isclose(weights.sum(), torch.tensor(1.0), atol=1e-3)
    torch.testing.assert_close(weights, torch.tensor([2.0, 0.0, 0.5]) / (2.5 + node.epsilon))
    # the output is the convolution of the weighted sum of the (SE-rescaled) inputs
    inputs = [torch.randn(2, 4, 10) for _ in range(3)]
    node.eval()
    expected = node.conv(sum(w * node.attention(x) for w, x in zip(weights, inputs)))
    torch.testing.assert_close(node(inputs), expected)


def test_focal_loss_is_cross_entropy_at_gamma_zero_and_down_weights_easy_samples():
    torch.manual_seed(0)
    logits, labels = torch.randn(50, 2) * 3, torch.randint(0, 2, (50,))
    torch.testing.assert_close(focal_loss(logits, labels, gamma=0.0), F.cross_entropy(logits, labels, reduction="none"))
    focal = focal_loss(logits, labels, gamma=2.0)
    assert (focal <= F.cross_entropy(logits, labels, reduction="none") + 1e-7).all()
    weighted = focal_loss(logits, labels, gamma=2.0, alpha=0.25)
    torch.testing.assert_close(weighted, focal * torch.where(labels == EXPRESSION, 0.25, 0.75))


@pytest.mark.parametrize("n_frames", [160, 64])
def test_output_shapes_follow_the_candidates(n_frames):
    torch.manual_seed(0)
    model = BiFPNI3D(**SMALL).eval()
    logits, offsets = model(torch.randn(2, 1, n_frames, 16, 16), torch.randn(2, 2, n_frames, 16, 16))
    candidates = BiFPNI3D.candidates(n_frames)
    assert logits.shape == offsets.shape == (2, len(candidates), 2)
    for level, stride in enumerate(LEVEL_STRIDES):  # a level of T_l positions gives T_l - 4 candidates
        rows = candidates[candidates[:, 2] == level]
        assert len(rows) == max(math.ceil(n_frames / stride) - 4, 0)
        if len(rows):
            assert rows[0, 0] == 0 and rows[0, 1] == min(5 * stride, n_frames) - 1
            assert (np.diff(rows[:, 0]) == stride).all()


def test_candidate_targets_round_trip_and_loss_backpropagates():
    candidates = BiFPNI3D.candidates(160)
    truths = [np.array([[20.0, 30.0], [60.0, 100.0]]), np.zeros((0, 2))]
    labels, targets = candidate_targets(candidates, truths, 0.5)
    positive = labels[0] == EXPRESSION
    assert positive.any() and (labels[1] != EXPRESSION).all()
    assert torch.isnan(targets[0, ~positive]).all() and not torch.isnan(targets[0, positive]).any()
    restored = apply_regression(candidates[positive.numpy(), :2], targets[0, positive].numpy())
    assert set(map(tuple, np.round(restored))) == {(20.0, 30.0), (60.0, 100.0)}
    torch.manual_seed(0)
    model = BiFPNI3D(**SMALL)
    padded = torch.tensor([[[20.0, 30.0], [60.0, 100.0]], [[np.nan, np.nan]] * 2])
    loss = SpottingLoss(160)(model(torch.randn(2, 1, 160, 16, 16), torch.randn(2, 2, 160, 16, 16)), padded)
    loss.backward()
    assert torch.isfinite(loss) and model.backbone.flow.stem[0][0].weight.grad.abs().sum() > 0


def test_training_flip_negates_horizontal_flow():
    frames = {"v": torch.arange(2 * 6 * 6, dtype=torch.float32).view(1, 2, 6, 6)}
    flows = {"v": torch.stack([torch.ones(2, 6, 6), torch.full((2, 6, 6), 2.0)])}
    data = TwoStreamClips(frames, flows, [("v", 0)], pd.DataFrame(columns=["video", "onset", "offset"]), 2, 6,
                          train=True)
    seen = set()
    for seed in range(20):
        torch.manual_seed(seed)
        (clip, flow), target = data[0]
        flipped = bool(flow[0].mean() < 0)
        seen.add(flipped)
        assert torch.equal(clip, frames["v"].flip(-1) if flipped else frames["v"])
        assert (flow[1] == 2).all() and target.shape == (1, 2) and torch.isnan(target).all()
    assert seen == {True, False}


def test_registered_fold_runs_on_smoke(tmp_path, smoke_root, monkeypatch):
    from mecore.data import load_dataset
    from mecore.loso import run_fold

    monkeypatch.setattr(bifpn_i3d, "model_dir", lambda fold: tmp_path / fold.test_subject)
    spec = get_model("bifpn_i3d")
    assert spec.spotting_convention == "mesnet" and {"smoke", "default", "paper"} <= set(spec.configs)
    assert spec.config("paper")["batch_size"] == 32 and spec.config("paper")["lr"] == 1e-4
    dataset = load_dataset("synth_casme_sq", root=smoke_root / "casme_sq")
    config = {**spec.config("smoke"), "epochs": 1, "top_threshold": 0.0}
    subjects = dataset.subjects
    record = run_fold(spec, dataset, config, subjects[0], subjects[1:], tmp_path, seed=0, resume=False,
                      num_threads=None)
    predictions = record["predictions"]
    assert len(predictions) and set(predictions["type"]) <= {"micro", "macro"}
    assert predictions["score"].between(0, 1).all() and (predictions["onset"] <= predictions["offset"]).all()
    assert set(predictions["video"]) <= {n for n, v in dataset.videos.items() if v.subject == subjects[0]}
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):  # the fold's resume reaches fit
        run_fold(spec, dataset, config, subjects[1], [subjects[0], *subjects[2:]], tmp_path, seed=0, resume=True,
                 num_threads=None)
