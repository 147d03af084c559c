"""MESNet (mecore.models.mesnet): shapes, receptive fields, Eq. 10-13 pieces, clips, streamed inputs, registration."""
import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from mecore.metrics import interval_iou
from mecore.models import get_model
from mecore.models.mesnet import (ME, NON_ME, PAPER_RECEPTIVE_FIELDS, MESNet, MESNetLoss, PretrainNet,
                                  apply_regression, clip_starts, cpn_loss, free_starts, regression_targets,
                                  resample_time, window_labels)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MESNet(2, 32, max_proposals=8).eval()


@pytest.mark.parametrize("n_frames", [100, 37, 16])
def test_output_shapes(model, n_frames):
    clips = torch.randn(2, n_frames, 2, 32, 32)
    spatial, spatiotemporal = model.backbone(clips)
    assert spatial.shape == (2, n_frames, 32 * 32 // 4)  # L = H*W/4
    assert spatiotemporal.shape == (2, 128, n_frames)  # S in R^{128 x N}
    output = model(clips)
    for logits, field, bounds in zip(output.cpn_logits, PAPER_RECEPTIVE_FIELDS, model.cpn.windows(n_frames)):
        assert logits.shape == (2, 2, n_frames - (field - 4) + 1)  # N_s = N - (k1-1) r1 - (k2-1) r2
        assert bounds.shape == (logits.shape[2], 2)
    n_proposals = len(output.proposals)
    assert output.proposals.shape == (n_proposals, 4)
    assert output.crn_logits.shape == output.crn_regression.shape == (n_proposals, 2)
    assert n_proposals <= 2 * 8  # max_proposals per clip


def test_pretrain_net_shape():
    net = PretrainNet(2, 48, n_pre=16)
    assert net(torch.randn(3, 16, 2, 48, 48)).shape == (3, 2)
    with pytest.raises(ValueError, match="divisible by 16"):
        PretrainNet(2, 40, n_pre=16)


def test_receptive_fields_on_F_are_7_to_15():
    torch.manual_seed(1)
    net = MESNet(2, 16)
    assert net.cpn.receptive_fields == (7, 9, 11, 13, 15)
    n_frames, position = 40, 10
    spatial = torch.randn(1, 16 * 16 // 4, n_frames, requires_grad=True)  # F, (B, L, N)
    maps = net.cpn(net.backbone.temporal(spatial))
    for logits, field, bounds in zip(maps, PAPER_RECEPTIVE_FIELDS, net.cpn.windows(n_frames)):
        gradient, = torch.autograd.grad(logits[0, 0, position], spatial, retain_graph=True)
        frames = np.flatnonzero(gradient.abs().sum(dim=1)[0].numpy() > 0)
        assert len(frames) == field  # the window length on F, checked through the network itself
        assert (frames[0], frames[-1]) == tuple(bounds[position])  # and windows() names those frames


def test_window_labels_use_iou_above_threshold():
    windows = np.array([[0, 9], [0, 6], [20, 30], [2, 11]])
    truths = np.array([[0, 9], [21, 30]])
    labels, nearest = window_labels(windows, truths)
    # IoU 1, 0.7 (not > 0.7), 10/11, 8/12
    assert labels.tolist() == [ME, NON_ME, ME, NON_ME]
    assert nearest.tolist() == [0, -1, 1, -1]
    labels, nearest = window_labels(windows, np.zeros((0, 2)))
    assert (labels == NON_ME).all() and (nearest == -1).all()


def test_masked_cpn_loss_ignores_masked_negatives():
    torch.manual_seed(0)
    logits = [torch.randn(1, 2, 50)]
    labels = [torch.full((1, 50), NON_ME)]
    labels[0][0, 7] = ME
    keep = torch.rand(50, generator=torch.Generator().manual_seed(3)) < 1 / 49  # M: P(keep negative) = 1/49
    mask = keep | (labels[0][0] == ME)
    assert 1 <= int(mask.sum()) < 50
    loss = cpn_loss(logits, labels, torch.Generator().manual_seed(3))
    per_window = torch.nn.functional.cross_entropy(logits[0][0].T, labels[0][0], reduction="none")
    assert torch.isclose(loss, per_window[mask].mean())
    changed = logits[0].clone()
    changed[0, :, ~mask] = torch.randn(2, int((~mask).sum())) * 10  # masked negatives may say anything
    assert torch.isclose(cpn_loss([changed], labels, torch.Generator().manual_seed(3)), loss)
    changed[0, :, 7] += torch.tensor([-5.0, 5.0])  # the ME window always counts
    assert not torch.isclose(cpn_loss([changed], labels, torch.Generator().manual_seed(3)), loss)
    # without any ME window every negative is masked (keep probability 0): nothing to learn
    assert cpn_loss(logits, [torch.full((1, 50), NON_ME)]) == 0


def test_regression_target_round_trip():
    rng = np.random.default_rng(0)
    truths = np.sort(rng.uniform(0, 100, (200, 2)), axis=1) + np.array([0, 3])
    proposals = np.sort(truths + rng.uniform(-4, 4, (200, 2)), axis=1)
    ratio = (proposals[:, 1] - proposals[:, 0]) / (truths[:, 1] - truths[:, 0])  # = 1 + r1 - r2
    proposals, truths = proposals[ratio > 0.1], truths[ratio > 0.1]  # below 0.1 the length is floored
    targets = regression_targets(proposals, truths)
    assert np.allclose(targets[:, 0], (truths[:, 0] - proposals[:, 0]) / (truths[:, 1] - truths[:, 0]))
    assert np.allclose(apply_regression(proposals, targets), truths)
    assert np.allclose(apply_regression(proposals, np.zeros_like(proposals)), proposals)  # zero offsets: unchanged


def test_mesnet_loss_backpropagates():
    torch.manual_seed(0)
    net = MESNet(2, 32, t_cpn=0.0, max_proposals=4).train()  # t_cpn 0: every window may be proposed
    targets = torch.tensor([[[10.0, 20.0], [float("nan")] * 2], [[50.0, 58.0], [70.0, 80.0]]])
    output = net(torch.randn(2, 60, 2, 32, 32))
    assert len(output.proposals) > 0
    loss = MESNetLoss(net)(output, targets)
    loss.backward()
    assert torch.isfinite(loss)
    assert net.crn.classify.weight.grad.abs().sum() > 0 and net.cpn.shared_first.weight.grad.abs().sum() > 0


def test_shared_temporal_parameters_are_counted_once():
    own, shared = MESNet(2, 32), MESNet(2, 32, shared_temporal=True)
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert count(own) - count(shared) == sum(p.numel() for p in own.crn.own_temporal.parameters())
    assert shared.crn(torch.randn(3, 16, 256))[0].shape == (3, 2)


def test_resample_time_and_clips():
    sequence = torch.arange(5.0)[:, None]
    assert torch.allclose(resample_time(sequence, 9)[:, 0], torch.arange(9.0) / 2)
    assert torch.allclose(resample_time(sequence, 5), sequence)
    starts = clip_starts(1200, 100, 20)
    assert starts[:3] == [0, 80, 160] and starts[-1] == 1100
    assert clip_starts(250, 100, 20) == [0, 80, 150]  # the last clip ends at the last frame
    assert clip_starts(60, 100, 20) == [0]


def test_free_starts_avoid_expressions():
    expressions = pd.DataFrame({"video": ["v", "v"], "onset": [10, 40], "offset": [19, 44]})
    starts = free_starts(expressions, "v", 60, 10)
    assert starts.tolist() == [0, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 45, 46, 47, 48, 49, 50]


def test_registered_profiles():
    from mecore.models import mesnet

    for name, output in (("mesnet_cpn", "cpn"), ("mesnet_crn", "crn")):
        spec = get_model(name)
        assert spec.task == "spotting" and spec.spotting_convention == "mesnet"
        assert spec.checkpoints is mesnet.trained_checkpoints
        paper = spec.config("paper")
        assert paper.test.output == output and all(c.test.output == output for c in spec.configs.values())
        optim, train = paper.optim, paper.train
        assert (optim.lr, optim.batch_size, optim.l2, train.epochs) == (1e-4, 2, 0.01, 30)
        assert (train.r_tme, train.r_tmae, train.r_tnl) == (10, 4, 2)
        assert (paper.input.clip_length, paper.input.clip_overlap, paper.input.clip_frames) == (100, 20, 100)
        assert paper.source("optim.lr") == "Sec. III-D" and paper.source("train.t_cpn") == "Sec. IV-C-5"
        assert set(spec.configs) >= {"smoke", "default", "paper"}
    # the two specs differ in test.output only
    cpn, crn = (get_model(name).config("default", "samm_lv") for name in ("mesnet_cpn", "mesnet_crn"))
    assert cpn.set({"test.output": "crn"}) == crn


def largest_overlap(spotted: pd.DataFrame) -> float:
    """The largest IoU between two intervals of the same video."""
    largest = 0.0
    for _, video in spotted.groupby("video"):
        onset, offset = video["onset"].to_numpy(), video["offset"].to_numpy()
        overlap = interval_iou(onset[:, None], offset[:, None], onset[None], offset[None])
        np.fill_diagonal(overlap, 0)
        largest = max(largest, float(overlap.max(initial=0)))
    return largest


def test_predict_with_thresholds_matches_loso_and_filters(tmp_path, smoke_root, monkeypatch):
    """At the profile's thresholds the sweep gives run_loso's predictions exactly; a higher T_CRN keeps a
    subset of the CRN intervals; T_nms bounds the overlap of kept intervals (1: no NMS); unknown keys are refused."""
    from mecore.data import load_dataset
    from mecore.loso import run_loso
    from mecore.models import mesnet

    monkeypatch.setattr(mesnet, "model_dir", lambda fold, exclude=None: tmp_path / "models" / fold.test_subject)
    torch.set_num_threads(1)
    dataset = load_dataset("synth_casme_sq", root=smoke_root / "casme_sq")
    loso = {stage: run_loso(f"mesnet_{stage}", dataset, "smoke", scheduler="sync", results_dir=tmp_path / "loso",
                            progress=False).predictions for stage in ("crn", "cpn")}
    config = get_model("mesnet_crn").config("smoke")
    assert {name: config.get_path(key) for name, key in mesnet.THRESHOLD_KEYS.items()} == \
        {"t_cpn": config.train.t_cpn, "t_crn": config.test.t_crn, "t_nms": config.train.t_nms}
    low = min(config.test.t_crn, 0.4)
    own, loose, strict, no_nms = mesnet.predict_with_thresholds(
        dataset, [{}, {"t_crn": low}, {"t_crn": 0.7}, {"t_nms": 1.0}], "smoke", progress=False)
    for stage in ("cpn", "crn"):
        pd.testing.assert_frame_equal(own[stage], loso[stage])
    assert list(own["crn"].columns) == ["subject", "video", "onset", "offset", "type", "score"]
    key = ["video", "onset", "offset"]
    strict_rows = strict["crn"][key].merge(loose["crn"][key], how="left", indicator=True)
    assert (strict_rows["_merge"] == "both").all() and len(strict["crn"]) <= len(loose["crn"])
    pd.testing.assert_frame_equal(loose["cpn"], own["cpn"])  # T_CRN does not touch the first stage
    assert largest_overlap(own["cpn"]) <= config.train.t_nms  # per-video NMS at the profile's T_nms
    assert largest_overlap(no_nms["cpn"]) > config.train.t_nms  # T_nms = 1: overlapping windows stay
    with pytest.raises(ValueError, match="t_eval"):
        mesnet.predict_with_thresholds(dataset, [{"t_eval": 0.3}], "smoke")


def test_streamed_clips_equal_the_in_memory_flows(smoke_root):
    """A clip read through the datasets equals the former in-memory computation (full-size float32 flow,
    adaptive_avg_pool2d to the input size, zero rows for the last flow_step frames, divided by the std of the
    training videos' concatenation) within float16 rounding."""
    from mecore.data import load_dataset
    from mecore.models import mesnet
    from mecore.preprocess import CropSpec, preprocess_video
    from mecore.preprocess.face import to_gray
    from mecore.preprocess.flow import window_flows

    config = get_model("mesnet_crn").config("smoke")
    dataset = load_dataset("synth_casme_sq", root=smoke_root / "casme_sq")
    names = sorted(dataset.videos)
    train, test = names[:2], names[2]
    crop, step, size = CropSpec(**config.input.crop), config.input.flow_step, config.input.input_size
    old = {}
    for name in names:
        crops = np.asarray(preprocess_video(dataset.video(name), crop, progress=False)["crops"])
        grey = crops if crop.gray else np.stack([to_gray(face) for face in crops])
        full = torch.from_numpy(window_flows(grey, 0, step, config.input.flow_method)[..., :2]).permute(0, 3, 1, 2)
        pooled = torch.nn.functional.adaptive_avg_pool2d(full, size)
        old[name] = torch.cat([pooled, pooled.new_zeros((step, *pooled.shape[1:]))])
    old_scale = torch.cat([old[name].flatten() for name in train]).std()
    flows = mesnet.stream_flows(dataset, names, train, config.input)
    assert flows[test].scale == pytest.approx(float(old_scale), rel=1e-3)
    for name in names:
        assert len(flows[name]) == dataset.video(name).n_frames == len(old[name])
        torch.testing.assert_close(flows[name][0:len(old[name])], old[name] / old_scale, rtol=1e-3, atol=1e-3)

    def assert_resampled_close(streamed, rows, n):  # the rows' tolerance carried through the interpolation
        expected, bound = resample_time(rows, n), 1e-3 + 1e-3 * resample_time(rows.abs(), n)
        assert streamed.shape == expected.shape and streamed.dtype == torch.float32
        assert ((streamed - expected).abs() <= bound).all()

    normalised = old[test] / old_scale
    clip_length, clip_frames, start = 40, 25, 320  # a clip over the zero rows at the video's end
    clips = mesnet.MESNetClips(flows, [(test, start)], pd.DataFrame(columns=["video", "onset", "offset"]),
                               clip_length, clip_frames)
    assert_resampled_close(clips[0][0], normalised[start:start + clip_length], clip_frames)
    pretrain = mesnet.PretrainClips(flows, [(test, 10, 30, ME)], config.pretrain.n_pre)
    assert_resampled_close(pretrain[0][0], normalised[10:31], config.pretrain.n_pre)


@pytest.mark.parametrize("n_frames", [200, 20_000])
def test_datasets_hold_no_video_arrays(tmp_path, n_frames):
    """The training datasets keep cache paths and index lists: their pickled size does not grow with the videos'
    length, and an unpickled dataset (a DataLoader worker's copy) reads the same clips."""
    from mecore.inputs import Rows
    from mecore.models import mesnet

    rng = np.random.default_rng(0)
    flows = {}
    for name in ("a", "b"):
        path = tmp_path / f"{name}.npy"
        np.save(path, rng.normal(size=(n_frames - 4, 16, 16, 2)).astype(np.float16))
        flows[name] = mesnet.VideoFlow(Rows(path, length=n_frames), 1.7)
    micro = pd.DataFrame({"video": ["a", "b"], "onset": [20, 50], "offset": [30, 60]})
    datasets = [mesnet.MESNetClips(flows, [("a", 0), ("b", 30), ("b", 100)], micro, 100, 50),
                mesnet.PretrainClips(flows, [("a", 20, 30, ME), ("b", 100, 115, NON_ME)], 16)]
    for data in datasets:
        blob = pickle.dumps(data)
        assert len(blob) < 8_000, len(blob)  # a 200-frame video's rows alone are 200 KB
        copy = pickle.loads(blob)
        for index in range(len(data)):
            torch.testing.assert_close(copy[index][0], data[index][0])
    clip = datasets[0][2][0]
    rows = np.concatenate([np.load(tmp_path / "b.npy"), np.zeros((4, 16, 16, 2))])[100:200].astype(np.float32)
    torch.testing.assert_close(clip, resample_time(torch.from_numpy(rows).permute(0, 3, 1, 2) / 1.7, 50))


def test_fold_with_max_steps_trains_that_many_steps(tmp_path, smoke_root, monkeypatch):
    """``max_steps`` (run_loso's trial of a configuration) reaches pre-training and MESNet training and keys the
    checkpoint folders; predictions stream clip batches from the cache."""
    from mecore import train
    from mecore.config import TRAINING_EXCLUDES
    from mecore.data import load_dataset
    from mecore.loso import run_loso
    from mecore.models import LosoFold, mesnet

    assert mesnet.SPECS["mesnet_crn"].config("paper").optim.micro_batch is None
    dataset = load_dataset("synth_casme_sq", root=smoke_root / "casme_sq")
    config = mesnet.SPECS["mesnet_crn"].config("smoke")
    full, trial = (LosoFold(dataset, dataset.subjects[0], dataset.subjects[1:], values, tmp_path)
                   for values in (config, config.set({"trial.max_steps": 2})))
    for exclude in (TRAINING_EXCLUDES, mesnet.PRETRAIN_EXCLUDES):  # a trial's checkpoints never stand in for a run's
        assert mesnet.model_dir(full, exclude) != mesnet.model_dir(trial, exclude)
    folders = []

    def model_dir(fold, exclude=TRAINING_EXCLUDES):
        folders.append(fold.config.trial.max_steps)
        return tmp_path / "models" / fold.test_subject / ("pretrain-keys" if exclude == mesnet.PRETRAIN_EXCLUDES
                                                          else "all")

    monkeypatch.setattr(mesnet, "model_dir", model_dir)
    torch.set_num_threads(1)
    logged = len(train.FIT_LOG)
    # validate_every 2 > the epochs a 2-step trial lasts: the trial's last epoch is validated all the same
    result = run_loso("mesnet_crn", dataset, "smoke", config={"pretrain.validate_every": 2}, scheduler="sync",
                      results_dir=tmp_path / "loso", folds=1, max_steps=2, progress=False)
    fits = train.FIT_LOG[logged:]
    assert len(fits) == config.pretrain.candidates + 1  # every pre-training candidate, then MESNet
    assert [len(record["step_seconds"]) for record in fits] == [2] * len(fits)
    pretraining = torch.load(tmp_path / "models" / dataset.subjects[0] / "pretrain-keys" / "pretrain" / "seed-0" /
                             train.CHECKPOINT_NAME, weights_only=True)
    assert pretraining["steps"] == 2 and not np.isnan(pretraining["history"][-1]["val_accuracy"])
    assert set(folders) == {2}
    checkpoint = torch.load(tmp_path / "models" / dataset.subjects[0] / "all" / "mesnet" / train.CHECKPOINT_NAME,
                            weights_only=True)
    assert checkpoint["steps"] == 2 and checkpoint["finished"]
    assert list(result.predictions.columns)[:5] == ["subject", "video", "onset", "offset", "type"]
    assert set(result.predictions["subject"]) <= {dataset.subjects[0]}


def test_one_step_under_bfloat16_autocast_matches_float32(precision_step):
    """Eq. 8 (pre-training) and Eq. 14 (MESNet) from float32 logits: a bfloat16 autocast step stays within 5 %
    of the float32 loss and keeps the gradient's direction (cosine >= 0.95)."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    pretrain = PretrainNet(2, 32, n_pre=16)
    precision_step(pretrain, F.cross_entropy, torch.randn(4, 16, 2, 32, 32), torch.tensor([0, 1, 0, 1]))
    net = MESNet(2, 32, t_cpn=0.0, max_proposals=4)
    targets = torch.tensor([[[10.0, 20.0], [float("nan")] * 2], [[50.0, 58.0], [70.0, 80.0]]])
    precision_step(net, MESNetLoss(net), torch.randn(2, 60, 2, 32, 32), targets)


def test_paper_profile_settings_per_dataset():
    """Sec. IV-C's three divisions on CAS(ME)^2, one on SAMM; SAMM's flow spans 7 frames at 200 fps; AMP on."""
    spec = get_model("mesnet_crn")
    casme, samm = spec.config("paper", "casme_sq"), spec.config("paper", "samm_lv")
    assert (casme.run.repeats, samm.run.repeats) == (3, 1)
    assert (casme.input.flow_step, samm.input.flow_step, samm.input.clip_length) == (1, 7, 670)
    assert casme.optim.mixed_precision and spec.config("default").run.repeats == 1
    assert spec.config("default", "samm_lv").input.max_fps == 30 and spec.config("default").input.max_fps is None


def test_checkpoint_folders_are_keyed_by_the_groups_each_stage_reads(smoke_root):
    """Pre-training is keyed without ``train``, ``test`` and ``run``; training without ``test`` and ``run``: a test
    setting changes no folder, a ``train`` setting only the training's, an ``optim``, ``split``, ``pretrain`` or
    ``input`` setting both; ``mesnet_cpn`` and ``mesnet_crn`` share them; the spec's checkpoints are the training's."""
    from mecore.data import load_dataset
    from mecore.models import LosoFold, mesnet

    dataset = load_dataset("synth_casme_sq", root=smoke_root / "casme_sq")
    config = mesnet.SPECS["mesnet_crn"].config("smoke")

    def folders(changes):
        fold = LosoFold(dataset, dataset.subjects[0], dataset.subjects[1:], config.set(changes), smoke_root)
        return mesnet.model_dir(fold, mesnet.PRETRAIN_EXCLUDES), mesnet.model_dir(fold)

    pretraining, training = folders({})
    assert pretraining != training
    for changes in ({"test.t_crn": 0.9}, {"test.output": "cpn"}, {"run.repeats": 3}):
        assert folders(changes) == (pretraining, training), changes
    for changes in ({"train.epochs": 5}, {"train.t_cpn": 0.6}, {"train.t_nms": 0.4}, {"train.max_proposals": 4}):
        changed = folders(changes)
        assert changed[0] == pretraining and changed[1] != training, changes
    for changes in ({"optim.lr": 1e-2}, {"split.min_val": 0.2}, {"pretrain.n_pre": 8}, {"input.flow_step": 2}):
        changed = folders(changes)
        assert changed[0] != pretraining and changed[1] != training, changes
    fold = LosoFold(dataset, dataset.subjects[0], dataset.subjects[1:], config, smoke_root)
    for name in ("mesnet_cpn", "mesnet_crn"):
        assert get_model(name).checkpoints(fold) == [training / "mesnet" / "checkpoint.pt"]
