"""BiFPN-I3D (mecore.models.bifpn_i3d): inflation, BiFPN levels and fusion weights, focal loss, shapes, streamed
inputs, step limits and micro-batches."""
import math
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import mecore.models.bifpn_i3d as bifpn_i3d
from mecore.inputs import Rows, streaming_std
from mecore.models import get_model
from mecore.preprocess import CropSpec, preprocess_video
from mecore.spotting import apply_regression
from mecore.train import FIT_LOG, CheckpointError
from mecore.models.bifpn_i3d import (EXPRESSION, LEVEL_STRIDES, BiFPN, BiFPNI3D, FusionNode, SpottingLoss,
                                     TwoStreamClips, candidate_targets, focal_loss, inflate_conv,
                                     load_inputs, load_pretrained, micro_batch_size, tiling, train_model)

NO_EXPRESSIONS = pd.DataFrame(columns=["video", "onset", "offset"])

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
    crops = np.arange(2 * 6 * 6, dtype=np.uint8).reshape(2, 6, 6)
    flow = np.stack([np.ones((2, 6, 6)), np.full((2, 6, 6), 2.0)], axis=-1).astype(np.float16)
    data = TwoStreamClips({"v": Rows(crops)}, {"v": Rows(flow)}, 0.5, [("v", 0)], NO_EXPRESSIONS, 2, 6, 6,
                          train=True)
    expected = torch.from_numpy(crops).float()[None] / 127.5 - 1
    seen = set()
    for seed in range(20):
        torch.manual_seed(seed)
        (clip, motion), target = data[0]
        flipped = bool(motion[0].mean() < 0)
        seen.add(flipped)
        assert torch.equal(clip, expected.flip(-1) if flipped else expected)
        assert (motion[0].abs() == 2).all() and (motion[1] == 4).all()  # divided by the scale 0.5
        assert target.shape == (1, 2) and torch.isnan(target).all()
    assert seen == {True, False}


def test_streamed_clips_equal_the_in_memory_inputs(smoke_root):
    """A clip read row by row from the cache equals the former whole-video tensors: frames bit for bit (same
    float ops per frame), flows (float16 dx, dy at load_size, divided by the training std) within float16
    rounding; and the dataset pickles as paths and index lists, without any video's rows."""
    from mecore.data import load_dataset

    config = get_model("bifpn_i3d").config("smoke")
    dataset = load_dataset("synth_casme_sq", root=smoke_root / "casme_sq")
    videos = sorted(dataset.videos)
    train_videos, size = videos[1:], config["load_size"]
    frames, flows, scale = load_inputs(dataset, videos, train_videos, config)
    assert all(isinstance(rows, Rows) for rows in [*frames.values(), *flows.values()])
    crop, step = CropSpec(**config["crop"]), config["flow_step"]
    old_frames, old_flows = {}, {}  # the former load_frames / load_flows + normalise_flows, in memory
    for name in videos:
        entries = preprocess_video(dataset.video(name), crop, flow_steps=(step,), flow_method=config["flow_method"],
                                   progress=False)
        crops = torch.from_numpy(np.array(entries["crops"]))[:, None].float() / 127.5 - 1
        old_frames[name] = F.adaptive_avg_pool2d(crops, size).transpose(0, 1).contiguous()
        motion = F.adaptive_avg_pool2d(torch.from_numpy(np.array(entries[f"flow{step}"][..., :2])).float()
                                       .permute(0, 3, 1, 2), size)
        old_flows[name] = torch.cat([motion, motion.new_zeros((step, *motion.shape[1:]))]).transpose(0, 1)
        assert len(frames[name]) == len(flows[name]) == dataset.video(name).n_frames == old_frames[name].shape[1]
    old_scale = torch.cat([old_flows[name].flatten() for name in train_videos]).std()
    assert scale == pytest.approx(float(old_scale), rel=2e-3)
    assert streaming_std([flows[name] for name in train_videos], chunk_bytes=50_000) == pytest.approx(scale, rel=1e-12)
    length, input_size = config["clip_length"], config["input_size"]
    clips = tiling({name: len(frames[name]) for name in videos}, length)
    data = TwoStreamClips(frames, flows, scale, clips, NO_EXPRESSIONS, length, input_size, size, train=False)
    margin = (size - input_size) // 2
    window = (..., slice(margin, margin + input_size), slice(margin, margin + input_size))
    for index in (0, len(clips) - 1):  # the last clip of the last video holds the zero flow rows
        video, start = clips[index]
        (clip, motion), _ = data[index]
        assert torch.equal(clip, old_frames[video][:, start:start + length][window])
        old_motion = (old_flows[video][:, start:start + length] / old_scale)[window]
        torch.testing.assert_close(motion, old_motion, rtol=4e-3, atol=4e-3 * float(old_motion.abs().max()))
    assert (motion[:, -step:] == 0).all()
    # the dataset holds paths and index lists: a few kB, whatever the videos' length
    blob = pickle.dumps(data)
    assert len(blob) < 8_000 < sum(len(rows) * rows.row_bytes for rows in frames.values())
    restored = pickle.loads(blob)
    for index in range(len(data)):
        assert all(torch.equal(a, b) for a, b in zip(restored[index][0], data[index][0]))


def test_micro_batch_size_keeps_every_pass_above_one_clip():
    assert micro_batch_size(None, 32) is None and micro_batch_size(32, 32) is None and micro_batch_size(40, 8) is None
    assert micro_batch_size(8, 32) == 8 and micro_batch_size(5, 32) == 5
    assert micro_batch_size(4, 5) == 3  # 5 = 4 + 1 would leave a pass of one clip
    assert micro_batch_size(3, 7) == 4  # 3 and 2 both leave one; 4 + 3
    assert get_model("bifpn_i3d").config("paper")["batch_size"] % get_model("bifpn_i3d").config("paper")[
        "micro_batch"] == 0
    with pytest.raises(ValueError, match="micro_batch must be >= 2"):
        micro_batch_size(1, 8)


def test_micro_batches_accumulate_to_the_batch(monkeypatch):
    """A step of batch 4 in micro-batches of 2: two forward passes of 2 clips, one optimiser step of 4."""
    rng = np.random.default_rng(0)
    frames = {"v": Rows(rng.integers(0, 256, (96, 24, 24), dtype=np.uint8))}
    flows = {"v": Rows(rng.normal(size=(96, 20, 20, 2)).astype(np.float16))}
    expressions = pd.DataFrame({"video": ["v"], "onset": [10], "offset": [20]})
    config = {**get_model("bifpn_i3d").config("smoke"), "clip_length": 32, "batch_size": 4, "micro_batch": 2,
              "epochs": 1}
    passes = []
    build = bifpn_i3d.build_model

    def counted(cfg):
        model = build(cfg)
        model.register_forward_pre_hook(lambda module, args: passes.append(len(args[0])))
        return model

    monkeypatch.setattr(bifpn_i3d, "build_model", counted)
    result = train_model(frames, flows, 1.0, expressions, ["v"], config)
    assert passes == [2, 2] and len(result.history) == 1  # 5 clips, drop_last: one step of 4
    log = FIT_LOG[-1]
    assert (log["samples"], log["batch_size"], log["micro_batch"], len(log["step_seconds"])) == (5, 4, 2, 1)


def test_registered_fold_runs_on_smoke(tmp_path, smoke_root, monkeypatch):
    from mecore.data import load_dataset
    from mecore.loso import run_fold

    monkeypatch.setattr(bifpn_i3d, "model_dir", lambda fold: tmp_path / fold.test_subject)
    spec = get_model("bifpn_i3d")
    assert spec.spotting_convention == "mesnet" and {"smoke", "default", "paper"} <= set(spec.configs)
    assert spec.config("paper")["batch_size"] == 32 and spec.config("paper")["lr"] == 1e-4
    dataset = load_dataset("synth_casme_sq", root=smoke_root / "casme_sq")
    # batch 2 of the 8 training clips: 4 steps an epoch; max_steps stops the first epoch after 3
    config = {**spec.config("smoke"), "batch_size": 2, "max_steps": 3, "top_threshold": 0.0}
    subjects = dataset.subjects
    record = run_fold(spec, dataset, config, subjects[0], subjects[1:], tmp_path, seed=0, resume=False,
                      num_threads=None)
    assert (FIT_LOG[-1]["samples"], FIT_LOG[-1]["batch_size"], len(FIT_LOG[-1]["step_seconds"])) == (8, 2, 3)
    predictions = record["predictions"]
    assert len(predictions) and set(predictions["type"]) <= {"micro", "macro"}
    assert predictions["score"].between(0, 1).all() and (predictions["onset"] <= predictions["offset"]).all()
    assert set(predictions["video"]) <= {n for n, v in dataset.videos.items() if v.subject == subjects[0]}
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):  # the fold's resume reaches fit
        run_fold(spec, dataset, config, subjects[1], [subjects[0], *subjects[2:]], tmp_path, seed=0, resume=True,
                 num_threads=None)
