"""Feature Refinement (Zhou et al.): attention, proposal loss, fusion, apex rules, sizes, one smoke fold,
mixed precision, seeding and repeated CDMER runs."""
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import mecore.models.fr as fr
from mecore.config import ConfigError
from mecore.models import get_model

SMALL = fr.CONFIGS["smoke"].set({"model.variant": "fr"})


def test_attention_weights_sum_to_one_per_branch():
    torch.manual_seed(0)
    module = fr.ProposalModule(features=20, n_classes=3, detector_width=4)
    z = torch.randn(5, 20).relu()
    weights = module.attention_weights(z)
    assert weights.shape == (5, 3, 20)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(dim=2), torch.ones(5, 3))
    specific, logits = module(z)
    torch.testing.assert_close(specific, weights * z[:, None, :])  # Eq. 3
    assert logits.shape == (5, 3)


def test_proposal_loss_is_the_mean_of_k_binary_losses():
    torch.manual_seed(1)
    logits, targets = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 1, 0])
    probabilities = torch.sigmoid(logits)
    per_detector = []
    for k in range(4):
        truth = (targets == k).float()  # Eq. 4: sample i is of class k
        per_detector.append(-(truth * probabilities[:, k].log() + (1 - truth) * (1 - probabilities[:, k]).log()).mean())
    torch.testing.assert_close(fr.proposal_loss(logits, targets), torch.stack(per_detector).mean())
    class_logits = torch.randn(6, 4)
    total = fr.FRLoss(0.85)((class_logits, logits, None), targets)  # Eq. 8
    torch.testing.assert_close(total, F.cross_entropy(class_logits, targets) + 0.85 * torch.stack(per_detector).mean())
    torch.testing.assert_close(fr.FRLoss()((class_logits, logits[:, :0], None), targets),
                               F.cross_entropy(class_logits, targets))  # Basic Inception: L_cls only


def test_sum_fusion_keeps_the_feature_size_and_concatenation_multiplies_it():
    specific = torch.arange(2 * 3 * 5, dtype=torch.float32).reshape(2, 3, 5)
    torch.testing.assert_close(fr.fuse(specific), specific[:, 0] + specific[:, 1] + specific[:, 2])  # Eq. 6
    assert fr.fuse(specific, "concatenate").shape == (2, 15)
    with pytest.raises(ValueError, match="fusion"):
        fr.fuse(specific, "max")


@pytest.mark.parametrize("variant,features", [("fr", 64), ("fr_fc", 64), ("fr_concatenated", 3 * 64), ("basic", 6272)])
def test_every_variant_gives_class_and_detector_outputs(variant, features):
    model = fr.build_model(SMALL.set({"model.variant": variant}).model, n_classes=3).eval()
    class_logits, detector_logits, refined = model(torch.randn(4, 2, 28, 28))
    assert class_logits.shape == (4, 3)
    assert detector_logits.shape == (4, 0 if variant == "basic" else 3)
    assert refined.shape == (4, features)


def test_variants_are_deltas_of_one_configuration_and_paper_values_are_cited():
    paper = get_model("fr").config("paper")
    assert paper == fr.PAPER and paper.source("train.lambda") == "Sec. 6.1.1" and paper.train["lambda"] == fr.LAMBDA
    assert paper.source("model.filters") == "Sec. 3.1" and paper.model.filters == list(fr.STREAM_FILTERS)
    assert paper.source("run.repeats") == "Sec. 4.2" and paper.run.repeats == 10
    dual = get_model("fr_dual_inception").config("paper").flat()
    changed = {k: v for k, v in dual.items() if paper.flat()[k] != v}
    assert changed == {"model.variant": "basic", "input.apex": "mid"}
    for name in fr.MODELS:  # no dataset changes an FR configuration: CDMER / single-database SGD is a protocol's
        assert get_model(name).dataset_overrides == {}
    single = get_model("fr").config("paper", "synth_casme2", fr.SINGLE_DATABASE_OVERRIDES["paper"])
    assert (single.train.lr, single.train.momentum) == (5e-4, 0.8)  # Sec. 6.1.3-6.1.4
    assert fr.LARGE.source("train.lr") is None  # Adam's lr is ours, not the paper's SGD lr


def test_parameter_counts_match_table7_within_half_a_percent():
    table = fr.parameter_table()
    assert len(table) == 4
    assert table["difference (%)"].abs().max() < 0.5
    fr3 = table.query("model == 'FR' and classes == 3")["ours (M)"].item()
    basic3 = table.query("model == 'Basic Inception' and classes == 3")["ours (M)"].item()
    assert fr3 > basic3


def test_interframe_difference_finds_the_frame_farthest_from_onset():
    rng = np.random.default_rng(0)
    onset = rng.integers(0, 255, (24, 24)).astype(np.float32)
    bump = np.zeros((24, 24), np.float32)
    bump[8:16, 6:18] = 40.0
    intensity = np.array([0, 0.1, 0.3, 0.6, 0.9, 1.0, 0.8, 0.5, 0.2, 0.1])  # peaks at index 5
    clip = np.stack([onset + a * bump for a in intensity])
    assert fr.interframe_diff_apex(clip) == 5
    assert fr.interframe_diff_apex(clip, frame_numbers=np.arange(100, 110)) == 105
    with pytest.raises(ValueError, match="Eq. 1"):
        fr.interframe_diff_apex(np.zeros((0, 4, 4)))


def test_apex_rules_mid_frame_and_annotated():
    rows = pd.DataFrame({"video": ["a", "b"], "onset": [10, 20], "offset": [21, 30],
                         "apex": pd.array([14, 29], dtype="Int64")})
    assert fr.apex_frames(None, rows, "mid").tolist() == [15, 25]
    assert fr.apex_frames(None, rows, "annotated").tolist() == [14, 29]
    with pytest.raises(ValueError, match="apex rule"):
        fr.apex_frames(None, rows, "peak")


def test_chance_baselines_for_three_classes():
    table = fr.chance_baselines(["a"] * 6 + ["b"] * 3 + ["c"] * 3, ["a", "b", "c"])
    assert table.loc["uniform random (expected)", "uar"] == pytest.approx(1 / 3)
    majority = table.iloc[1]
    assert majority["uar"] == pytest.approx(1 / 3) and majority["accuracy"] == pytest.approx(0.5)
    assert majority["uf1"] == pytest.approx((2 * 0.5 / 1.5) / 3)


def test_registered_fold_runs_on_smoke(tmp_path, smoke_root):
    from mecore.data import load_dataset
    from mecore.loso import run_fold

    spec = get_model("fr")
    dataset = load_dataset("synth_smic_hs", root=smoke_root / "smic")
    subjects = dataset.subjects
    config = spec.config("smoke", dataset.name, {"train.epochs": 1})
    record = run_fold(spec, dataset, config, subjects[0], subjects[1:], tmp_path, seed=0, resume=False,
                      num_threads=None)
    predictions = record["predictions"]
    assert len(predictions) == (dataset.annotations["subject"] == subjects[0]).sum()
    classes = fr.dataset_classes(dataset)
    assert set(predictions["prediction"]) <= set(classes)
    probabilities = predictions[[f"p_{c}" for c in classes]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)


def test_mean_attention_norm_scales_the_softmax_weights_by_the_feature_count():
    torch.manual_seed(0)
    as_written = fr.ProposalModule(features=20, n_classes=3, detector_width=4)
    rescaled = fr.ProposalModule(features=20, n_classes=3, detector_width=4, attention_norm="mean")
    rescaled.load_state_dict(as_written.state_dict())
    z = torch.randn(5, 20).relu()
    torch.testing.assert_close(rescaled.attention_weights(z), 20 * as_written.attention_weights(z))
    torch.testing.assert_close(rescaled.attention_weights(z).mean(dim=2), torch.ones(5, 3))
    with pytest.raises(ValueError, match="attention_norm"):
        fr.ProposalModule(features=20, n_classes=3, detector_width=4, attention_norm="max")


def test_the_loss_reads_float32_logits_and_no_softmax_comes_before_it():
    model = fr.build_model(SMALL.model, n_classes=3).eval()
    class_logits, detector_logits, _ = model(torch.randn(4, 2, 28, 28))
    for scores in (class_logits, class_logits.exp()):  # neither probabilities nor log-probabilities
        assert not torch.allclose(scores.sum(dim=1), torch.ones(4))
    targets = torch.tensor([0, 1, 2, 0])
    assert fr.FRLoss()((class_logits.bfloat16(), detector_logits.bfloat16(), None), targets).dtype == torch.float32
    assert all(config.train.mixed_precision is False for config in fr.CONFIGS.values())  # fp32, as the paper's Keras


@pytest.fixture(scope="module")
def smoke_batch(smoke_root):
    """The smoke SMIC-HS clips' flows, scaled as :func:`fr.train` scales them, with their labels."""
    from mecore.data import load_dataset

    dataset = load_dataset("synth_smic_hs", root=smoke_root / "smic")
    rows, classes = dataset.annotations, fr.dataset_classes(dataset)
    flows = fr.clip_flows(dataset, rows, SMALL.input)
    data = fr._tensors(flows, [classes.index(e) for e in rows["emotion"].astype(str)],
                       flows.std(axis=(0, 2, 3)) + 1e-6)
    return (*data.tensors, len(classes))


@pytest.mark.parametrize("variant,attention_norm", [("fr", "sum"), ("fr", "mean"), ("basic", "sum")])
def test_bfloat16_autocast_step_matches_float32_on_a_real_batch(smoke_batch, precision_step, variant, attention_norm):
    """One step of the smoke-sized networks on the smoke SMIC-HS flows: losses within 1 %, gradient cosine >= 0.99."""
    inputs, targets, n_classes = smoke_batch
    torch.manual_seed(0)
    model = fr.build_model(SMALL.set({"model.variant": variant, "model.attention_norm": attention_norm}).model,
                           n_classes)
    result = precision_step(model, fr.FRLoss(), inputs, targets, loss_rtol=0.01, min_cosine=0.99)
    assert result["loss_float32"] > 0


def test_train_seeds_the_weights_and_passes_the_precision_setting(monkeypatch):
    seen = []

    def fake_fit(model, loss_fn, data, val_data, config, **kwargs):
        seen.append(({k: v.clone() for k, v in model.state_dict().items()}, config))
        return type("Result", (), {"model": model, "history": pd.DataFrame()})()

    rows = pd.DataFrame({"video": ["a", "b"], "emotion": ["x", "y"]})
    monkeypatch.setattr(fr, "clip_flows", lambda *args: np.ones((2, 2, 28, 28), np.float32))
    monkeypatch.setattr(fr, "fit", fake_fit)
    for seed, precision in ((3, True), (3, False), (4, False)):
        torch.rand(11)  # the global generators' state before a call must not matter
        fr.train(None, rows, ["x", "y"], SMALL.set({"train.mixed_precision": precision}), seed)
    (first, config), (again, _), (other, _) = seen
    assert config.mixed_precision is True and config.seed == 3
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_cdmer_is_seeded_and_repeats_use_consecutive_seeds(smoke_root, tmp_path, monkeypatch):
    from mecore.data import load_dataset

    source = load_dataset("synth_smic_hs", root=smoke_root / "smic")
    target = load_dataset("synth_smic_vis", root=smoke_root / "smic")
    config = {"train.epochs": 1}

    def run(folder, seed):
        monkeypatch.setattr(fr.paths, "runs_dir", lambda: tmp_path / folder)  # no cached result shared
        torch.rand(7), np.random.rand(3)
        return fr.run_cdmer("fr", source, target, "smoke", config, seed)

    first, again, other = run("a", 0), run("b", 0), run("c", 1)
    pd.testing.assert_frame_equal(first, again)
    probabilities = [c for c in first if c.startswith("p_")]
    assert not np.allclose(first[probabilities], other[probabilities])
    monkeypatch.setattr(fr.paths, "runs_dir", lambda: tmp_path / "a")
    scores = fr.cdmer_repeats("fr", source, target, "smoke", config, repeats=2)
    assert scores["seed"].tolist() == [0, 1]
    assert scores.loc[0, "uf1"] == fr.cdmer_scores(first)["uf1"]
    assert scores.loc[1, "uf1"] == fr.cdmer_scores(other)["uf1"]
    assert len(fr.cdmer_repeats("fr", source, target, "smoke", config)) == fr.CONFIGS["smoke"].run.repeats == 1
    cached = sorted((tmp_path / "a").rglob("*.pkl"))
    again = fr.run_cdmer("fr", source, target, "smoke", {**config, "run.repeats": 4}, 0)  # keyed without "run"
    pd.testing.assert_frame_equal(again, first)
    assert sorted((tmp_path / "a").rglob("*.pkl")) == cached
    with pytest.raises(ConfigError, match="train.lrr"):
        fr.run_cdmer("fr", source, target, "smoke", {"train.lrr": 1e-3}, 0)
