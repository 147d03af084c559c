"""BiFPN-I3D (mecore.models.bifpn_i3d): inflation, BiFPN levels and fusion weights, focal loss, shapes, streamed
inputs, step limits and micro-batches, checkpoint keys and configuration overrides."""
import math
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import mecore.models.bifpn_i3d as bifpn_i3d
from mecore.config import ConfigError
from mecore.inputs import Rows, streaming_std
from mecore.models import LosoFold, get_model
from mecore.preprocess import CropSpec, preprocess_video
from mecore.postprocess import apply_regression
from mecore.train import FIT_LOG, CheckpointError
from mecore.models.bifpn_i3d import (EXPRESSION, LEVEL_STRIDES, BiFPN, BiFPNI3D, FusionNode, SpottingLoss,
                                     TwoStreamClips, candidate_targets, focal_loss, inflate_conv,
                                     i3d_flow_input, load_i3d_checkpoint, load_inputs, load_pretrained,
                                     micro_batch_size, tiling, train_model)

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
    train_videos, size = videos[1:], config.input.load_size
    frames, flows, scale = load_inputs(dataset, videos, train_videos, config)
    assert all(isinstance(rows, Rows) for rows in [*frames.values(), *flows.values()])
    crop, step = CropSpec(**config.input.crop), config.input.flow_step
    old_frames, old_flows = {}, {}  # the former load_frames / load_flows + normalise_flows, in memory
    for name in videos:
        entries = preprocess_video(dataset.video(name), crop, flow_steps=(step,), flow_method=config.input.flow_method,
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
    length, input_size = config.input.clip_length, config.input.input_size
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
    paper = get_model("bifpn_i3d").config("paper").train
    assert paper.batch_size % paper.micro_batch == 0
    with pytest.raises(ValueError, match="micro_batch must be >= 2"):
        micro_batch_size(1, 8)


def test_micro_batches_accumulate_to_the_batch(monkeypatch):
    """A step of batch 4 in micro-batches of 2: two forward passes of 2 clips, one optimiser step of 4."""
    rng = np.random.default_rng(0)
    frames = {"v": Rows(rng.integers(0, 256, (96, 24, 24), dtype=np.uint8))}
    flows = {"v": Rows(rng.normal(size=(96, 20, 20, 2)).astype(np.float16))}
    expressions = pd.DataFrame({"video": ["v"], "onset": [10], "offset": [20]})
    config = get_model("bifpn_i3d").config("smoke").set({"input.clip_length": 32, "train.batch_size": 4,
                                                         "train.micro_batch": 2, "train.epochs": 1})
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
    paper = spec.config("paper")
    assert paper.train.batch_size == 32 and paper.train.lr == 1e-4 and paper.source("train.lr") == "Sec. IV-B"
    dataset = load_dataset("synth_casme_sq", root=smoke_root / "casme_sq")
    # batch 2 of the 8 training clips: 4 steps an epoch; max_steps stops the first epoch after 3
    config = spec.config("smoke", overrides={"train.batch_size": 2, "trial.max_steps": 3, "test.top_threshold": 0.0})
    subjects = dataset.subjects
    record = run_fold(spec, dataset, config, subjects[0], subjects[1:], tmp_path, seed=0, resume=False,
                      num_threads=None)
    assert (FIT_LOG[-1]["samples"], FIT_LOG[-1]["batch_size"], len(FIT_LOG[-1]["step_seconds"])) == (8, 2, 3)
    predictions = record["predictions"]
    assert len(predictions) and set(predictions["type"]) <= {"micro", "macro"}
    assert predictions["score"].between(0, 1).all() and (predictions["onset"] <= predictions["offset"]).all()
    assert set(predictions["video"]) <= {n for n, v in dataset.videos.items() if v.subject == subjects[0]}
    # the spec's checkpoints are the fold's model_dir checkpoint, which the fold just wrote
    fold = LosoFold(dataset, subjects[0], subjects[1:], config, tmp_path / "unused")
    assert spec.checkpoints(fold) == [tmp_path / subjects[0] / "checkpoint.pt"] and spec.checkpoints(fold)[0].is_file()
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):  # the fold's resume reaches fit
        run_fold(spec, dataset, config, subjects[1], [subjects[0], *subjects[2:]], tmp_path, seed=0, resume=True,
                 num_threads=None)


def test_checkpoints_are_keyed_by_all_but_the_test_and_run_groups(smoke_root):
    """Runs differing only in post-processing (``test``) or in their number (``run``) share one training; any
    other group (here ``train``, ``trial``, ``input.max_fps``) trains anew."""
    from mecore.data import load_dataset
    from mecore.loso import safe_name

    spec = get_model("bifpn_i3d")
    dataset = load_dataset("synth_casme_sq", root=smoke_root / "casme_sq")
    subjects = dataset.subjects
    config = spec.config("smoke", dataset.name)

    def folder(changes):
        fold = LosoFold(dataset, subjects[0], subjects[1:], config.set(changes), smoke_root / "unused")
        return bifpn_i3d.model_dir(fold)

    base = folder({})
    assert base.parts[-4] == "bifpn_i3d_models" and base.name == safe_name(subjects[0])
    assert folder({"test.top_threshold": 0.3, "test.t_nms": 0.4, "test.micro_max_seconds": 1.0,
                   "run.repeats": 5}) == base
    for changes in ({"train.lr": 1e-3}, {"trial.max_steps": 3}, {"model.fc_width": 8}, {"input.max_fps": 10}):
        assert folder(changes) != base, changes
    assert bifpn_i3d.checkpoints(LosoFold(dataset, subjects[0], subjects[1:], config, smoke_root)) == [
        base / "checkpoint.pt"]


# piergiaj/pytorch-i3d, pytorch_i3d.py (InceptionI3d, Carreira & Zisserman's Inception-v1 I3D): units in order,
# (name, in channels, out channels, kernel); Mixed_* (name, in channels, [b0, b1a, b1b, b2a, b2b, b3b] widths)
PUBLISHED_STEM = (("Conv3d_1a_7x7", None, 64, 7), ("Conv3d_2b_1x1", 64, 64, 1), ("Conv3d_2c_3x3", 64, 192, 3))
PUBLISHED_MIXED = (("Mixed_3b", 192, [64, 96, 128, 16, 32, 32]), ("Mixed_3c", 256, [128, 128, 192, 32, 96, 64]),
                   ("Mixed_4b", 480, [192, 96, 208, 16, 48, 64]), ("Mixed_4c", 512, [160, 112, 224, 24, 64, 64]),
                   ("Mixed_4d", 512, [128, 128, 256, 24, 64, 64]), ("Mixed_4e", 512, [112, 144, 288, 32, 64, 64]),
                   ("Mixed_4f", 528, [256, 160, 320, 32, 128, 128]), ("Mixed_5b", 832, [256, 160, 320, 32, 128, 128]),
                   ("Mixed_5c", 832, [384, 192, 384, 48, 128, 128]))


def pytorch_i3d_state(in_channels: int, seed: int = 0, batches_tracked: bool = True) -> dict[str, torch.Tensor]:
    """A random ``InceptionI3d(400, in_channels=...)`` state dict with the published names and shapes: each unit
    ``<name>.conv3d.weight`` (no bias) and ``<name>.bn.*``; ``logits.conv3d`` 400 x 1024 with a bias. Checkpoints
    saved before PyTorch 0.4.1 lack ``num_batches_tracked`` (``batches_tracked=False``)."""
    g = torch.Generator().manual_seed(seed)
    state = {}

    def unit(name, inp, out, k):
        state[f"{name}.conv3d.weight"] = torch.randn(out, inp, k, k, k, generator=g)
        state.update({f"{name}.bn.weight": torch.rand(out, generator=g) + 0.5,
                      f"{name}.bn.bias": torch.randn(out, generator=g),
                      f"{name}.bn.running_mean": torch.randn(out, generator=g),
                      f"{name}.bn.running_var": torch.rand(out, generator=g) + 0.5})
        if batches_tracked:
            state[f"{name}.bn.num_batches_tracked"] = torch.randint(1, 10**6, (), generator=g)

    for name, inp, out, k in PUBLISHED_STEM:
        unit(name, inp or in_channels, out, k)
    for name, inp, (b0, b1a, b1b, b2a, b2b, b3b) in PUBLISHED_MIXED:
        for branch, (i, o, k) in {"b0": (inp, b0, 1), "b1a": (inp, b1a, 1), "b1b": (b1a, b1b, 3),
                                  "b2a": (inp, b2a, 1), "b2b": (b2a, b2b, 3), "b3b": (inp, b3b, 1)}.items():
            unit(f"{name}.{branch}", i, o, k)
    state["logits.conv3d.weight"] = torch.randn(400, 1024, 1, 1, 1, generator=g)
    state["logits.conv3d.bias"] = torch.randn(400, generator=g)
    return state


def our_i3d_name(name: str) -> str:
    """The entry of mecore's I3D that a published entry lands on: the stem units are Sequential positions 0, 2, 3
    (max poolings between them), Mixed_3* stage 0 from position 0, Mixed_4* and Mixed_5* stages 1, 2 from
    position 1 (after their pooling); branches b0 -> branch0, b1a/b1b -> branch1.0/1, b3b -> branch3.1 (after the
    pooling); a unit's conv3d is its position 0, bn position 1."""
    positions = {"Conv3d_1a_7x7": "stem.0", "Conv3d_2b_1x1": "stem.2", "Conv3d_2c_3x3": "stem.3",
                 "Mixed_3b": "stages.0.0", "Mixed_3c": "stages.0.1", "Mixed_4b": "stages.1.1", "Mixed_4c": "stages.1.2",
                 "Mixed_4d": "stages.1.3", "Mixed_4e": "stages.1.4", "Mixed_4f": "stages.1.5", "Mixed_5b": "stages.2.1",
                 "Mixed_5c": "stages.2.2"}
    branches = {"b0": "branch0", "b1a": "branch1.0", "b1b": "branch1.1", "b2a": "branch2.0", "b2b": "branch2.1",
                "b3b": "branch3.1"}
    parts = name.split(".")
    prefix = positions[parts[0]] + ("." + branches[parts[1]] if parts[1] in branches else "")
    layer, field = parts[-2], parts[-1]
    return f"{prefix}.{'0' if layer == 'conv3d' else '1'}.{field}"


@pytest.mark.parametrize("grey", [False, True])
def test_pytorch_i3d_checkpoints_land_in_the_two_streams(tmp_path, grey):
    rgb, flow = pytorch_i3d_state(3, seed=1), pytorch_i3d_state(2, seed=2, batches_tracked=False)
    assert len(rgb) == 57 * 6 + 2 and len(flow) == 57 * 5 + 2  # 57 units (3 + 9 x 6); logits weight and bias
    torch.save(rgb, tmp_path / "rgb_imagenet.pt")
    torch.save(flow, tmp_path / "flow_imagenet.pt")
    config = get_model("bifpn_i3d").config("paper").set({
        "model.bifpn_channels": 8, "model.bifpn_layers": 1, "model.crn_channels": 8, "model.fc_width": 8,
        "model.pretrained.rgb": str(tmp_path / "rgb_imagenet.pt"),
        "model.pretrained.flow": str(tmp_path / "flow_imagenet.pt")})
    if grey:
        config = config.set({"input.crop.gray": True})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # both streams given: no paper warning
        model = bifpn_i3d.build_model(config)
    for key, state, stream in (("rgb", rgb, model.backbone.appearance), ("flow", flow, model.backbone.flow)):
        report, own = model.pretrained_report[key], stream.state_dict()
        assert report["format"] == "pytorch-i3d" and report["dropped"] == ["logits.conv3d.bias", "logits.conv3d.weight"]
        landed = {our_i3d_name(name) for name in state if not name.startswith("logits.")}
        assert report["loaded"] == len(state) - 2 == len(landed)
        assert landed | {k for k in own if k.endswith("num_batches_tracked")} == set(own)  # nothing of ours left out
        for name, value in state.items():
            if name.startswith("logits."):
                continue
            summed = grey and key == "rgb" and name == "Conv3d_1a_7x7.conv3d.weight"
            expected = value.sum(dim=1, keepdim=True) if summed else value
            assert torch.equal(own[our_i3d_name(name)], expected), (key, name)
        assert all(m.eps == 1e-3 for m in stream.modules() if isinstance(m, torch.nn.BatchNorm3d))
        assert (report["adapted"] is not None) == (grey and key == "rgb")
    assert i3d_flow_input(config) and not i3d_flow_input(get_model("bifpn_i3d").config("paper"))


def test_i3d_checkpoints_are_refused_at_other_widths_or_streams(tmp_path):
    path = tmp_path / "rgb_imagenet.pt"
    torch.save(pytorch_i3d_state(3), path)
    smoke = get_model("bifpn_i3d").config("smoke")
    with pytest.raises(ValueError, match=r"rgb_imagenet\.pt: pytorch-i3d checkpoints fit the full-width I3D only.*"
                                         r"model\.width = 1\.0"):
        bifpn_i3d.build_model(smoke.set({"model.pretrained.rgb": str(path)}))
    flow_stream = bifpn_i3d.I3D(2, 1.0)
    with pytest.raises(ValueError, match=r"rgb_imagenet\.pt: Conv3d_1a_7x7.conv3d.weight has shape \(64, 3, 7, 7, 7\)"):
        load_i3d_checkpoint(flow_stream, torch.load(path, weights_only=True), str(path))
    with pytest.raises(ConfigError, match=r"model\.pretrained has no 'appearance'.*model\.pretrained\.rgb, "
                                          r"model\.pretrained\.flow, model\.pretrained\.backbone"):
        smoke.set({"model.pretrained.appearance": str(path)})


def test_our_backbone_weights_load_through_the_configuration(tmp_path):
    """``model.pretrained.backbone``: a state dict of our two-stream backbone, loaded whole; not with rgb/flow."""
    smoke = get_model("bifpn_i3d").config("smoke")
    torch.manual_seed(1)
    source = bifpn_i3d.build_model(smoke).backbone.state_dict()
    torch.save(source, tmp_path / "backbone.pt")
    torch.manual_seed(2)
    model = bifpn_i3d.build_model(smoke.set({"model.pretrained.backbone": str(tmp_path / "backbone.pt")}))
    assert all(torch.equal(value, model.backbone.state_dict()[name]) for name, value in source.items())
    assert model.pretrained_report["flow"] == {"format": "mecore", "source": str(tmp_path / "backbone.pt")}
    with pytest.raises(ValueError, match="either backbone .* or rgb and flow"):
        bifpn_i3d.build_model(smoke.set({"model.pretrained.backbone": str(tmp_path / "backbone.pt"),
                                         "model.pretrained.flow": str(tmp_path / "backbone.pt")}))


def test_paper_profile_warns_without_pretrained_streams(tmp_path):
    config = get_model("bifpn_i3d").config("paper").set({"model.bifpn_channels": 8, "model.bifpn_layers": 1,
                                                         "model.crn_channels": 8, "model.fc_width": 8})
    with pytest.warns(UserWarning, match=r"model\.pretrained gives no weights for the rgb and flow.*NOT the paper's "
                                         r"configuration.*--set model\.pretrained\.rgb="):
        bifpn_i3d.build_model(config)
    torch.save(pytorch_i3d_state(3), tmp_path / "rgb.pt")
    with pytest.warns(UserWarning, match=r"no weights for the flow I3D stream"):
        bifpn_i3d.build_model(config.set({"model.pretrained.rgb": str(tmp_path / "rgb.pt")}))
    assert all(get_model("bifpn_i3d").config(p).train.mixed_precision for p in ("smoke", "default", "paper"))


def test_pretrained_flow_is_read_as_the_checkpoint_was_trained():
    """With a pytorch-i3d flow stream, flow is clipped to +-20 px and divided by 20 (the checkpoints' input)."""
    flows = {"v": Rows(np.stack([np.full((20, 20, 2), v, np.float16) for v in np.linspace(-40, 40, 32)]))}
    frames = {"v": Rows(np.zeros((32, 20, 20), np.uint8))}
    data = TwoStreamClips(frames, flows, bifpn_i3d.I3D_FLOW_BOUND, [("v", 0)], NO_EXPRESSIONS, 32, 16, 20,
                          train=False, flow_clip=1.0)
    (_, flow), _ = data[0]
    expected = torch.from_numpy(np.linspace(-40, 40, 32).astype(np.float16)).float().div(20).clamp(-1, 1)
    torch.testing.assert_close(flow[0, :, 0, 0], expected)


def test_one_step_under_bfloat16_autocast_matches_float32(smoke_root, precision_step):
    """The smoke network on a training batch of the smoke set as :func:`mecore.train.fit` sees it ((frames, flow)
    clips and NaN-padded expressions): one step in float32 and one under CPU bfloat16 autocast (coarser than
    CUDA's float16). Losses within 1 %. The backbone's gradient at initialisation is ill-conditioned even in
    float32 (relative input noise at bfloat16's rounding turns it by tens of degrees), so the whole gradient's
    cosine is only required positive; with the backbone frozen (its forward still under autocast) the BiFPN and
    CRN gradients must agree to a cosine of 0.99."""
    from mecore.data import load_dataset

    torch.set_num_threads(1)
    config = get_model("bifpn_i3d").config("smoke")
    dataset = load_dataset("synth_casme_sq", root=smoke_root / "casme_sq")
    videos = sorted(dataset.videos)[:2]
    frames, flows, scale = load_inputs(dataset, videos, videos, config)
    length = min(config.input.clip_length, *(len(frames[v]) for v in videos))
    data = TwoStreamClips(frames, flows, scale, tiling({v: len(frames[v]) for v in videos}, length),
                          bifpn_i3d.expression_indices(dataset, videos), length, config.input.input_size,
                          config.input.load_size, train=True)
    torch.manual_seed(0)
    batch_size = config.train.batch_size
    inputs, targets = next(iter(torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True)))
    assert inputs[0].shape == (batch_size, 1, length, 16, 16) and inputs[1].shape[1] == 2
    model = bifpn_i3d.build_model(config)
    loss = SpottingLoss(length, config.train.iou_positive, config.train.focal_gamma, config.train.focal_alpha)
    whole = precision_step(model, loss, inputs, targets, loss_rtol=0.01, min_cosine=0.0)
    for parameter in model.backbone.parameters():
        parameter.requires_grad_(False)
    head = precision_step(model, loss, inputs, targets, loss_rtol=0.01, min_cosine=0.99)
    assert whole["loss_amp"] == head["loss_amp"]


def test_every_profile_reads_samm_lv_at_most_30_fps():
    """At 200 fps a 160-frame candidate spans 0.8 s and no SAMM-LV macro-expression of ~420 frames could be its
    positive: every profile, the paper's included, reads SAMM-LV at every 7th frame; CAS(ME)^2 as it is."""
    spec = get_model("bifpn_i3d")
    for profile in spec.configs:
        assert spec.config(profile, "samm_lv").input.max_fps == 30, profile
        assert spec.config(profile, "casme_sq").input.max_fps is None, profile
