"""STSNet_SW (Fu et al. 2023): windows at video edges, shared frame features, top-M key frames,
segment merging (Fig. 4) and duration relabelling (Table 4), training windows, a LOSO fold."""
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import mecore.models.stsnet as stsnet
from mecore.config import ConfigError
from mecore.models import get_model
from mecore.models.stsnet import (CONFIGS, STSNet, TrainingWindows, build_model, count_parameters,
                                  load_backbone_weights, micro_max_frames, select_key_frames, spot_from_labels,
                                  window_centres, window_indices)
from mecore.postprocess import labels_to_intervals, merge_label_gaps

TINY = {"crop_size": 32, "widths": (4, 8, 8, 16), "blocks": (1, 1, 1, 1), "gru_hidden": 4}


def tiny_model(seed=0) -> STSNet:
    torch.manual_seed(seed)
    return STSNet(**TINY).eval()


def test_windows_skip_the_first_and_last_two_frames():
    assert window_centres(10, 5).tolist() == [2, 3, 4, 5, 6, 7]
    windows = window_indices(10, 5)
    assert windows.shape == (6, 5)
    assert windows[0].tolist() == [0, 1, 2, 3, 4] and windows[-1].tolist() == [5, 6, 7, 8, 9]
    assert (windows[:, 2] == window_centres(10, 5)).all()
    assert window_indices(5, 5).tolist() == [[0, 1, 2, 3, 4]]  # exactly one window
    assert window_indices(4, 5).shape == (0, 5)  # too short: no centre at all
    assert window_centres(7, 3).tolist() == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="odd"):
        window_centres(10, 4)


def test_shared_frame_features_equal_per_window_recomputation():
    model = tiny_model()
    frames = torch.rand(13, 32, 32, generator=torch.Generator().manual_seed(1))
    shared, shared_scores = model.video_probabilities(frames, batch_size=7, shared=True)
    recomputed, recomputed_scores = model.video_probabilities(frames, batch_size=7, shared=False)
    assert shared.shape == (9, 3) and shared_scores.shape == (9, 5)
    assert torch.allclose(shared, recomputed, atol=1e-5)
    assert torch.allclose(shared_scores, recomputed_scores, atol=1e-5)
    # and both equal the training path, one window at a time
    with torch.no_grad():
        windows = frames[torch.as_tensor(window_indices(13, 5))]
        direct = torch.softmax(model(windows), dim=1)
    assert torch.allclose(shared, direct, atol=1e-5)
    assert torch.allclose(shared.sum(dim=1), torch.ones(9))


def test_top_m_selection_keeps_time_order_and_passes_gradients():
    scores = torch.tensor([[0.1, 0.9, 0.3, 0.8, 0.7], [0.5, 0.5, 0.5, 0.2, 0.5]], requires_grad=True)
    indices, gates = select_key_frames(scores, 3)
    assert indices.tolist() == [[1, 3, 4], [0, 1, 2]]  # the top 3 in time order; ties go to earlier frames
    assert torch.equal(gates.detach(), torch.ones(2, 3))  # forward: plain selection
    gates.sum().backward()
    assert scores.grad.tolist() == [[0, 1, 0, 1, 1], [1, 1, 1, 0, 0]]  # backward: reaches the chosen scores
    with pytest.raises(ValueError, match="key frames"):
        select_key_frames(scores, 6)


def test_the_loss_reaches_the_key_frame_scorer_through_the_selection():
    model = tiny_model().train()
    windows = torch.rand(4, 5, 32, 32, generator=torch.Generator().manual_seed(2))
    loss = torch.nn.functional.cross_entropy(model(windows), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    for name, parameter in model.key_frames.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_key_frames_are_the_top_scored_frames_of_each_window():
    model = tiny_model()
    features = torch.randn(3, 5, 16, 1, 1, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        _, scores, indices = model.classify_windows(features)
    assert ((scores > 0) & (scores < 1)).all()
    expected = scores.argsort(dim=1, descending=True)[:, :3].sort(dim=1).values
    assert torch.equal(indices, expected)


def test_segment_merging_on_the_fig4_example():
    # Fig. 4: a micro-expression predicted as two segments split by one "no expression" frame
    predicted = np.array([0, 0, 1, 1, 0, 1, 1, 1, 0, 0])
    frames = np.arange(100, 110)
    assert merge_label_gaps(predicted).tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 0, 0]
    before = labels_to_intervals(predicted, frames, by_type=True)
    assert before[["onset", "offset"]].values.tolist() == [[102, 103], [105, 107]]
    probabilities = np.tile([[0.2, 0.7, 0.1]], (10, 1))
    merged = spot_from_labels(predicted, probabilities, frames, "merge", max_micro=15)
    assert merged[["onset", "offset", "type"]].values.tolist() == [[102, 107, "micro"]]
    assert merged["score"].tolist() == pytest.approx([0.7])
    assert len(spot_from_labels(predicted, probabilities, frames, "none", 15)) == 2
    # a two-frame pause, or neighbours of different types, are left alone
    assert merge_label_gaps([1, 0, 0, 1]).tolist() == [1, 0, 0, 1]
    assert merge_label_gaps([1, 0, 2]).tolist() == [1, 0, 2]


def test_duration_relabelling_after_merging():
    labels = np.zeros(60, np.int64)
    labels[5:25] = 1  # a 20-frame "micro" run: longer than 15 frames -> macro
    labels[30:34], labels[35:40] = 2, 2  # a 4 + gap + 5 "macro" run, merged to 10 frames -> micro
    probabilities = np.tile([[0.4, 0.3, 0.3]], (60, 1))
    spotted = spot_from_labels(labels, probabilities, np.arange(60), "duration", max_micro=15)
    assert spotted[["onset", "offset", "type"]].values.tolist() == [[5, 24, "macro"], [30, 39, "micro"]]
    assert spotted["score"].tolist() == pytest.approx([0.6, 0.6])
    with pytest.raises(ValueError, match="post-processing"):
        spot_from_labels(labels, probabilities, np.arange(60), "smooth", 15)


def test_balanced_training_windows():
    crops = np.arange(30, dtype=np.float32)[:, None, None] * np.ones((1, 8, 8), np.float32)
    labels = np.zeros(30, np.int64)
    labels[10:13], labels[20:28] = 1, 2
    torch.manual_seed(0)
    data = TrainingWindows([(crops, labels)], k=5, per_class=10)
    assert len(data) == 30
    drawn = [data[i] for i in range(len(data))]
    assert np.bincount([y for _, y in drawn]).tolist() == [10, 10, 10]
    for window, y in drawn:
        centre = int(window[2, 0, 0])
        assert window.shape == (5, 8, 8) and labels[centre] == y and 2 <= centre <= 27
        assert window[:, 0, 0].tolist() == list(range(centre - 2, centre + 3))
    every = TrainingWindows([(crops, labels)], k=5)
    assert len(every) == 26 and int(every[0][0][2, 0, 0]) == 2


def test_decision_weights_undo_the_balanced_sampling():
    labels = np.zeros(30, np.int64)
    labels[10:13], labels[20:28] = 1, 2
    crops = np.zeros((30, 8, 8), np.float32)
    centre_counts = np.array([15, 3, 8])  # classes of the 26 centres 2..27
    balanced = TrainingWindows([(crops, labels)], k=5, per_class=10)
    np.testing.assert_allclose(balanced.decision_weights("training"), 3 * centre_counts / 26)
    # a network that learned nothing (uniform posterior under balanced sampling) then decides by the training shares
    uniform = np.full(3, 1 / 3) * balanced.decision_weights("training")
    np.testing.assert_allclose(uniform / uniform.sum(), centre_counts / 26)
    assert balanced.decision_weights("sampled").tolist() == [1, 1, 1]
    assert TrainingWindows([(crops, labels)], k=5).decision_weights("training").tolist() == [1, 1, 1]
    only_none = TrainingWindows([(crops, np.zeros(30, np.int64))], k=5, per_class=10)
    assert only_none.decision_weights("training").tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="decision prior"):
        balanced.decision_weights("uniform")


def test_paper_profile_is_resnet18_with_a_64_channel_bigru():
    config = CONFIGS["paper"]
    with pytest.warns(UserWarning, match=r"backbone_weights.*NOT the paper's configuration"):
        model = build_model(config)
    # ResNet-18 without its classifier, 1-channel 5x5 stem: 11,176,512 - 7*7*3*64 + 5*5*1*64
    assert count_parameters(model.backbone) == 11_168_704
    features = model.frame_features(torch.zeros(2, 128, 128))
    assert features.shape == (2, 512, 4, 4)
    assert model.temporal.gru.input_size == 512 and 2 * model.temporal.gru.hidden_size == 64
    assert model.temporal.fc.in_features == 4 * 4 * 64 and model.temporal.fc.out_features == 3
    train = config.train
    assert (config.input.k, config.model.m, train.epochs, train.lr, train.min_lr) == (5, 3, 30, 1e-3, 1e-8)
    assert config.source("train.lr") == "Sec. 3.2" and config.source("model.m") == "Sec. 2.2"
    assert train.windows_per_class is None  # every window
    # the code's util.tr_epoch: one window a pass, loss / 8, a step every 8 windows
    assert (train.batch_size, train.micro_batch) == (8, 1)
    assert all(c.train.mixed_precision for c in CONFIGS.values())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the other profiles build without the paper warning
        build_model(CONFIGS["smoke"])


def test_profiles_are_deltas_of_the_paper_profile_and_datasets_change_only_their_overrides():
    spec = get_model("stsnet_sw")
    paper = spec.config("paper")
    assert list(paper) == ["input", "model", "train", "test", "trial", "run"]
    for profile in ("default", "smoke"):
        assert set(spec.config(profile).flat()) == set(paper.flat())  # every key exists in the paper profile
    # Table 4's durations per dataset (0.5 s elsewhere); SAMM-LV read at every 7th frame outside the paper profile
    for profile in ("paper", "default", "smoke"):
        casme, samm = spec.config(profile, "synth_casme_sq"), spec.config(profile, "samm_lv")
        assert (casme.test.micro_max_frames, samm.test.micro_max_frames) == (15, 100)
        assert spec.config(profile).test.micro_max_frames is None
        assert casme.input.max_fps is None
        assert samm.input.max_fps == (None if profile == "paper" else 30)
    assert micro_max_frames(paper.test, 50.0) == 25  # 0.5 s
    assert micro_max_frames(spec.config("paper", "casme_sq").test, 50.0) == 15
    # overrides by dotted key, checked against the paper profile's types
    assert spec.config("smoke", overrides={"train.windows_per_class": None}).train.windows_per_class is None
    assert spec.config("paper", overrides={"input.reference_half_s": 0.5}).input.reference_half_s == 0.5
    with pytest.raises(ConfigError, match="windows_per_class"):
        spec.config("smoke", overrides={"train.windows_per_class": "all"})
    with pytest.raises(ConfigError, match="unknown configuration key 'train.postprocess'"):
        spec.config("smoke", overrides={"train.postprocess": "none"})


def torchvision_resnet18_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state_dict named and shaped as torchvision's ``resnet18`` (``conv1`` 7x7 RGB, ``bn1``, ``layer1-4``
    of two basic blocks, ``downsample`` on the first block of layers 2-4, ``fc`` 1000 x 512), written from that
    published architecture, not from our model."""
    g = torch.Generator().manual_seed(seed)
    state = {}

    def conv(name, out, inp, k):
        state[f"{name}.weight"] = torch.randn(out, inp, k, k, generator=g)

    def bn(name, c):
        state.update({f"{name}.weight": torch.rand(c, generator=g) + 0.5, f"{name}.bias": torch.randn(c, generator=g),
                      f"{name}.running_mean": torch.randn(c, generator=g),
                      f"{name}.running_var": torch.rand(c, generator=g) + 0.5,
                      f"{name}.num_batches_tracked": torch.randint(1, 10**6, (), generator=g)})

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inplanes = 64
    for layer, planes in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            name = f"layer{layer}.{block}"
            conv(f"{name}.conv1", planes, inplanes, 3)
            bn(f"{name}.bn1", planes)
            conv(f"{name}.conv2", planes, planes, 3)
            bn(f"{name}.bn2", planes)
            if block == 0 and layer > 1:
                conv(f"{name}.downsample.0", planes, inplanes, 1)
                bn(f"{name}.downsample.1", planes)
            inplanes = planes
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 512, generator=g), torch.randn(1000, generator=g)
    assert len(state) == 122  # torchvision's resnet18().state_dict(): 20 convolutions, 20 batch norms x 5, fc x 2
    return state


def test_a_torchvision_resnet18_lands_in_the_backbone(tmp_path):
    state = torchvision_resnet18_state()
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(state, path)
    config = CONFIGS["paper"].set({"model.backbone_weights": str(path)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # weights given: no paper warning
        model = build_model(config)
    own = model.backbone.state_dict()
    report = model.backbone_report
    assert report["format"] == "torchvision" and report["dropped"] == ["fc.bias", "fc.weight"]
    assert report["loaded"] == len(state) - 2 == len(own)  # everything but the classifier, every entry of ours

    def ours(name):  # torchvision name -> our name (the published ResNet layout onto mecore's)
        name = name.replace("bn1.", "stem.1.", 1) if name.startswith("bn1.") else name
        for layer in range(1, 5):
            name = name.replace(f"layer{layer}.", f"stages.{layer - 1}.", 1) if name.startswith(f"layer{layer}.") \
                else name
        return name.replace(".downsample.", ".shortcut.")

    for name, value in state.items():
        if name.startswith("fc.") or name == "conv1.weight":
            continue
        assert torch.equal(own[ours(name)], value), name
    # the stem: RGB summed to grey, 7x7 resampled bilinearly (corners on corners, taps at 0, 1.5, 3, 4.5, 6) x 49/25
    stem, grey = own["stem.0.weight"], state["conv1.weight"].sum(dim=1)
    assert stem.shape == (64, 1, 5, 5)
    scale = 49 / 25
    torch.testing.assert_close(stem[:, 0, ::2, ::2], grey[:, ::3, ::3] * scale)  # taps on the 7x7 grid
    torch.testing.assert_close(stem[:, 0, 0, 1], (grey[:, 0, 1] + grey[:, 0, 2]) / 2 * scale)
    torch.testing.assert_close(stem[:, 0, 1, 1], grey[:, 1:3, 1:3].mean(dim=(1, 2)) * scale)
    direct = load_backbone_weights(build_model(CONFIGS["paper"].set({"model.expects_pretrained": False})).backbone,
                                   path)
    assert direct["adapted"].startswith("conv1.weight (64, 3, 7, 7) -> stem.0.weight (64, 1, 5, 5)")
    ones = {**state, "conv1.weight": torch.ones(64, 3, 7, 7)}
    torch.save(ones, path)
    backbone = build_model(config.set({"model.backbone_weights": None, "model.expects_pretrained": False})).backbone
    load_backbone_weights(backbone, path)
    torch.testing.assert_close(backbone.state_dict()["stem.0.weight"].sum(dim=(1, 2, 3)), torch.full((64,), 147.0))


def test_a_torchvision_resnet_of_other_widths_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "affectnet_resnet18.pt"
    torch.save(torchvision_resnet18_state(), path)
    with pytest.raises(ValueError, match=r"affectnet_resnet18\.pt: a torchvision ResNet of widths \[64, 128, 256, "):
        build_model(CONFIGS["smoke"].set({"model.backbone_weights": str(path)}))  # widths 4-16
    broken = {k: v for k, v in torchvision_resnet18_state().items() if not k.startswith("layer3.1.")}
    torch.save(broken, path)
    with pytest.raises(ValueError, match="affectnet_resnet18.pt"):
        build_model(CONFIGS["paper"].set({"model.backbone_weights": str(path)}))


def test_one_step_under_bfloat16_autocast_matches_float32(smoke_root, precision_step):
    """The smoke network on a training batch of the smoke set as :func:`mecore.train.fit` sees it (windows
    (B, K, S, S) minus the sliding median, class codes): one step in float32 and one under CPU bfloat16 autocast
    (coarser than CUDA's float16). Tolerances: losses within 1 %, gradient cosine at least 0.9."""
    from mecore.data import load_dataset

    torch.set_num_threads(1)
    config = CONFIGS["smoke"]
    dataset = load_dataset("synth_casme_sq", root=smoke_root / "casme_sq")
    videos = [(stsnet.video_input(dataset, name, config.input), stsnet.frame_labels(dataset, name))
              for name in sorted(dataset.videos)[:2]]
    train = config.train
    windows = TrainingWindows(videos, config.input.k, train.windows_per_class, train.random_crop)
    torch.manual_seed(0)
    inputs, targets = next(iter(torch.utils.data.DataLoader(windows, batch_size=train.batch_size, shuffle=True)))
    assert inputs.shape == (train.batch_size, 5, 32, 32) and inputs.dtype == torch.float32
    model = build_model(config)
    result = precision_step(model, torch.nn.CrossEntropyLoss(), inputs, targets, loss_rtol=0.01, min_cosine=0.9)
    assert result["loss_float32"] > 0


def test_backbone_weights_are_loaded_or_rejected_by_name(tmp_path):
    config = CONFIGS["smoke"]
    source = build_model(config)
    path = tmp_path / "resnet.pt"
    torch.save(source.backbone.state_dict(), path)
    loaded = build_model(config.set({"model.backbone_weights": str(path)}))
    for a, b in zip(source.backbone.state_dict().values(), loaded.backbone.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        build_model(config.set({"model.backbone_weights": str(tmp_path / "missing.pt")}))
    torch.save({"not": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt"):
        build_model(config.set({"model.backbone_weights": str(tmp_path / "bad.pt")}))


def test_a_smoke_fold_spots_intervals_and_saves_frame_scores(smoke_root, tmp_path):
    from mecore.data import load_dataset
    from mecore.loso import run_loso

    torch.set_num_threads(1)
    dataset = load_dataset("synth_casme_sq", root=smoke_root / "casme_sq")
    assert get_model("stsnet_sw").spotting_convention == "stsnet"
    spec = get_model("stsnet_sw")
    result = run_loso("stsnet_sw", dataset, "smoke", config={"train.epochs": 1}, scheduler="sync",
                      results_dir=tmp_path, progress=False)
    assert set(result.metrics.index) == {"micro", "macro", "overall"}
    assert (result.metrics["convention"] == "stsnet").all()
    saved = stsnet.load_frame_scores(result.folder)
    assert sorted(saved) == sorted(dataset.subjects)
    with pytest.raises(ValueError, match="decide"):
        stsnet.respot(saved, "merge")  # saved: the network's probabilities, no labels of any test setting
    test = spec.config("smoke", dataset.name).test
    records = stsnet.decide(saved, test)
    for record in records.values():
        assert np.isfinite(record["history"]["train_loss"]).all()
        assert record["max_micro"] == 15  # Table 4, CAS(ME)^2
        for video in record["videos"].values():
            n = len(video["frame"])
            assert video["probabilities"].shape == (n, 3) and video["labels"].shape == (n,)
            assert (video["labels"][:2] == 0).all() and (video["labels"][-2:] == 0).all()
    compared = ["video", "onset", "offset", "type"]
    pd.testing.assert_frame_equal(stsnet.respot(records, "merge")[compared], result.predictions[compared])
    # other test settings re-predict the same training (shared checkpoints) and leave the first run's frame scores
    other = {"train.epochs": 1, "test.decision_prior": "sampled", "test.postprocess": "none"}
    again = run_loso("stsnet_sw", dataset, "smoke", config=other, scheduler="sync", results_dir=tmp_path,
                     progress=False)
    assert again.folder != result.folder and again.checkpoints == result.checkpoints
    sampled = stsnet.decide(stsnet.load_frame_scores(again.folder), test.set({"decision_prior": "sampled"}))
    pd.testing.assert_frame_equal(stsnet.respot(sampled, "none")[compared], again.predictions[compared])
    pd.testing.assert_frame_equal(stsnet.respot(stsnet.decide(stsnet.load_frame_scores(result.folder), test),
                                                "merge")[compared], result.predictions[compared])


def test_sliding_median_reference_subtracts_the_local_median_computed_once(smoke_root, tmp_path, monkeypatch):
    from mecore.data import load_dataset
    monkeypatch.setenv("MECORE_CACHE", str(tmp_path))
    data = load_dataset("synth_casme_sq", profile="smoke")
    name = sorted(data.videos)[0]
    inputs = CONFIGS["smoke"].set({"input.reference": "sliding_median", "input.reference_half_s": 0.2}).input
    frames = stsnet.video_input(data, name, inputs)[:]
    crops = stsnet.face_crops(data, name, inputs)[:].astype(np.float32) / 255
    half = round(0.2 * data.video(name).fps)
    for i in (0, len(crops) // 2, len(crops) - 1):  # fewer frames at the ends
        expected = crops[i] - np.median(crops[max(0, i - half):i + half + 1], axis=0)
        np.testing.assert_allclose(frames[i], expected, rtol=0, atol=1e-7)
    entries = sorted(tmp_path.rglob("sliding_median-*.npy"))
    assert len(entries) == 1 and np.load(entries[0], mmap_mode="r").dtype == np.float16
    written = entries[0].stat().st_mtime_ns
    np.testing.assert_array_equal(stsnet.video_input(data, name, inputs)[:], frames)
    assert entries[0].stat().st_mtime_ns == written  # read, not recomputed
    stsnet.video_input(data, name, inputs.set({"reference_half_s": 0.4}))
    assert len(list(tmp_path.rglob("sliding_median-*.npy"))) == 2  # another window, another entry
    with pytest.raises(ValueError, match="unknown reference"):
        stsnet.video_input(data, name, inputs.set({"reference": "mean"}))


def old_video_frames(crops: np.ndarray, reference, half: int = 0) -> np.ndarray:
    """The former in-memory input of a whole video: float32 crops / 255 minus a float32 reference."""
    frames = np.asarray(crops, dtype=np.float32) / 255
    if reference == "video_median":
        frames -= np.median(frames, axis=0)
    elif reference == "sliding_median":
        frames -= np.stack([np.median(frames[max(0, i - half):i + half + 1], axis=0) for i in range(len(frames))])
    return frames


@pytest.mark.parametrize("reference", [None, "video_median", "sliding_median"])
def test_streamed_windows_equal_the_in_memory_input(smoke_root, tmp_path, monkeypatch, reference):
    from mecore.data import load_dataset
    monkeypatch.setenv("MECORE_CACHE", str(tmp_path))
    data = load_dataset("synth_casme_sq", profile="smoke")
    name = sorted(data.videos)[0]
    config = CONFIGS["smoke"].set({"input.reference": reference, "input.reference_half_s": 0.2}).input
    half = round(0.2 * data.video(name).fps)
    inputs = stsnet.video_input(data, name, config)
    old = old_video_frames(stsnet.face_crops(data, name, config)[:], reference, half)
    labels = stsnet.frame_labels(data, name)
    windows = TrainingWindows([(inputs, labels)], k=5)
    assert len(windows) == len(old) - 4
    streamed = np.stack([windows[w][0].numpy() for w in range(len(windows))])  # read from the cache
    rows = window_indices(len(old), 5)
    assert streamed.dtype == np.float32 and streamed.shape == (len(rows), 5, 32, 32)
    np.testing.assert_array_equal(inputs[:][rows], streamed)
    if reference != "sliding_median":
        np.testing.assert_array_equal(streamed, old[rows])  # bit for bit
        return
    # a median over an odd number of frames is one frame's value: bit for bit; over an even number (a few
    # frames at the ends) float32 averaged a/255 and b/255, we divide the exact (a + b) / 2 by 255: 1 ulp at most
    counts = np.array([min(len(old), i + half + 1) - max(0, i - half) for i in range(len(old))])
    odd = counts % 2 == 1
    assert odd.sum() >= len(old) - 2 * half and not odd.all()
    np.testing.assert_array_equal(streamed[odd[rows]], old[rows][odd[rows]])
    assert 0 < np.abs(streamed - old[rows]).max() <= 2 ** -24


def test_video_median_is_computed_streaming_bit_for_bit():
    rng = np.random.default_rng(4)
    for n in (1, 2, 7, 10, 2049):  # odd and even counts, more frames than a chunk
        crops = rng.integers(0, 256, (n, 6, 5), dtype=np.uint8)
        expected = np.median(crops.astype(np.float32) / 255, axis=0)
        got = stsnet.video_median(crops, chunk=1000)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)


class CountingInput(stsnet.VideoInput):
    """A VideoInput that records the largest row range read at once."""

    largest = 0

    def __getitem__(self, index):
        rows = super().__getitem__(index)
        CountingInput.largest = max(CountingInput.largest, len(rows))
        return rows


def old_video_probabilities(model, frames: torch.Tensor, batch_size: int):
    """The former whole-video pass: every frame's maps in memory, then the windows in batches of batch_size // K."""
    windows = torch.as_tensor(window_indices(len(frames), model.k))
    with torch.no_grad():
        features = torch.cat([model.frame_features(frames[i:i + batch_size]) for i in range(0, len(frames), batch_size)])
        outputs, scores = [], []
        step = max(1, batch_size // model.k)
        for start in range(0, len(windows), step):
            logits, window_scores, _ = model.classify_windows(features[windows[start:start + step]])
            outputs.append(torch.softmax(logits, dim=1))
            scores.append(window_scores)
    return torch.cat(outputs), torch.cat(scores)


@pytest.mark.parametrize("n, batch_size", [(23, 7), (40, 10), (6, 256), (5, 3), (4, 3)])
def test_chunked_video_scoring_equals_the_whole_video_pass(n, batch_size):
    model = tiny_model()
    rng = np.random.default_rng(n)
    crops = rng.integers(0, 256, (n, 32, 32), dtype=np.uint8)
    sliding = (rng.integers(0, 511, (n, 32, 32)) / 2).astype(np.float16)  # medians of raw values: half-integers
    inputs = CountingInput(crops, sliding=sliding)
    whole = torch.from_numpy(inputs[:])
    CountingInput.largest = 0
    probabilities, labels, scores = stsnet.score_video(model, inputs, batch_size)
    assert 0 < CountingInput.largest <= batch_size or n < 5  # never the whole video at once
    assert probabilities.shape == (n, 3) and scores.shape == (n, 5)
    if n < 5:
        assert (labels == 0).all() and np.isnan(scores).all()
        return
    expected, expected_scores = old_video_probabilities(model, whole, batch_size)
    assert torch.equal(torch.from_numpy(probabilities[2:-2]), expected)  # bit for bit
    assert torch.equal(torch.from_numpy(scores[2:-2]), expected_scores)
    assert (labels[:2] == 0).all() and np.isnan(scores[:2]).all() and np.isnan(scores[-2:]).all()
    # the per-window recomputation reads batches too, with the same outputs up to rounding
    CountingInput.largest = 0
    recomputed, recomputed_scores = model.video_probabilities(inputs, batch_size, shared=False)
    assert CountingInput.largest <= max(1, batch_size // 5) + 4
    assert torch.allclose(recomputed, expected, atol=1e-5) and torch.allclose(recomputed_scores, expected_scores, atol=1e-5)


def test_the_training_windows_pickle_small(smoke_root, tmp_path, monkeypatch):
    import pickle

    from mecore.data import load_dataset
    monkeypatch.setenv("MECORE_CACHE", str(tmp_path))
    data = load_dataset("synth_casme_sq", profile="smoke")
    config = CONFIGS["smoke"]
    names = sorted(data.videos)[:3]
    videos = [(stsnet.video_input(data, name, config.input), stsnet.frame_labels(data, name)) for name in names]
    windows = TrainingWindows(videos, k=5, per_class=16, random_crop=config.train.random_crop)
    frames = sum(len(inputs) for inputs, _ in videos)
    size = len(pickle.dumps(windows))
    # labels (1 byte a frame), window indices (4 bytes a window) and entry paths; the frames would be S * S * 4 each
    assert size < 6 * frames + 16_384, size
    copy = pickle.loads(pickle.dumps(windows))
    torch.manual_seed(5)
    drawn = [windows[i] for i in range(6)]
    torch.manual_seed(5)
    for (a, y), (b, z) in zip(drawn, [copy[i] for i in range(6)]):
        assert torch.equal(a, b) and y == z
    every = TrainingWindows(videos, k=5)
    assert len(pickle.dumps(every)) < 2 * frames + 16_384


def test_a_smoke_fold_with_max_steps_trains_that_many_steps(smoke_root, tmp_path):
    from mecore import train
    from mecore.data import load_dataset
    from mecore.loso import run_loso

    torch.set_num_threads(1)
    dataset = load_dataset("synth_casme_sq", root=smoke_root / "casme_sq")
    result = run_loso("stsnet_sw", dataset, "smoke", scheduler="sync", results_dir=tmp_path, progress=False,
                      folds=1, max_steps=3)
    assert len(train.FIT_LOG[-1]["step_seconds"]) == 3
    records = stsnet.load_frame_scores(result.folder)
    assert len(records) == 1
    history = next(iter(records.values()))["history"]
    assert len(history) == 1  # the smoke profile's epochs have more than three steps: stopped in the first
