"""Yap et al. 2022 two-stream 3D-CNN: shared weights, logits, Eq. 2 from logits and under mixed precision, LCN
invariance, k-th frame rule and test-skip choices, the configuration (Table 3 per dataset family, ablations as
dotted keys), validation subjects, a fold, crops streamed from the cache (Rows), micro-batches and step limits."""
import dataclasses
import json
import pickle
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from mecore.config import ConfigError
from mecore.models import get_model
from mecore.models.yap3dcnn import (ABLATIONS, CONFIGS, ReferencePairs, WeightedLoss, Yap3DCNN, augment_images,
                                    build_model, choose_skips, count_parameters, expression_frames,
                                    kth_frame_from_duration, kth_frame_skips, loss_for, spot, validation_subjects,
                                    video_crops, video_labels)

SMALL = {"filters": (4, 8, 8), "first_depth_multiplier": 2}
SPEC = get_model("yap3dcnn")


def pairs(batch=3, size=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 1, 2, size, size, generator=generator) for _ in range(2)]


def test_two_streams_share_one_parameter_set():
    model = Yap3DCNN(**SMALL).eval()
    stream_parameters = count_parameters(model.stream)
    assert count_parameters(model) == stream_parameters + count_parameters(model.output)
    micro, macro = pairs()
    # the same pair in both streams gives the same features: one set of weights
    features = torch.cat([model.stream(micro), model.stream(micro)], dim=1)
    half = features.shape[1] // 2
    assert torch.equal(features[:, :half], features[:, half:])
    # changing a stream weight changes what both streams compute
    before = [model.stream(micro).detach(), model.stream(macro).detach()]
    with torch.no_grad():
        model.stream.dense.fc1.bias.add_(1.0)
    after = [model.stream(micro).detach(), model.stream(macro).detach()]
    assert not torch.allclose(before[0], after[0]) and not torch.allclose(before[1], after[1])


def test_outputs_are_two_logits_per_sample_and_scores_their_sigmoid():
    model = Yap3DCNN(**SMALL).eval()
    micro, macro = pairs(batch=5)
    for scale in (1.0, 1e4):
        logits = model(micro * scale, macro * scale)
        assert logits.shape == (5, 2)
        scores = model.scores(micro * scale, macro * scale)
        assert torch.equal(scores, torch.sigmoid(logits))
        assert ((scores >= 0) & (scores <= 1)).all()
    with torch.no_grad():
        model.output.bias.fill_(-20.0)  # logits, not probabilities: nothing bounds them to [0, 1]
    assert (model(micro, macro) < 0).all()


def test_separable_convolution_has_fewer_parameters():
    model = CONFIGS["paper"].model
    assert count_parameters(build_model(model)) < count_parameters(build_model(model, separable=False))


def test_weighted_loss_has_the_sign_the_text_describes():
    loss = WeightedLoss(w=0.9, m=(0.1, 0.9))
    on = lambda probabilities: loss_of(loss, probabilities)
    targets = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    right = on(([[0.9, 0.9], [0.1, 0.1]], targets))
    wrong = on(([[0.1, 0.1], [0.9, 0.9]], targets))
    assert right < wrong
    # W = 0.9: a missed expression costs more than a false alarm of the same confidence
    missed = on(([[0.5, 0.2]], [[0.0, 1.0]]))
    false_alarm = on(([[0.5, 0.8]], [[0.0, 0.0]]))
    assert missed > false_alarm
    # M = (0.1, 0.9): macro errors weigh nine times micro errors
    micro_error = on(([[0.2, 0.99]], [[1.0, 1.0]]))
    macro_error = on(([[0.99, 0.2]], [[1.0, 1.0]]))
    assert macro_error > 5 * micro_error
    # unweighted: half the plain binary cross-entropy summed over the two labels
    scores = torch.tensor([[0.3, 0.6], [0.8, 0.1]])
    plain = torch.nn.functional.binary_cross_entropy(scores, targets, reduction="none").sum(1).mean()
    assert torch.isclose(loss_of(WeightedLoss(0.5, (1.0, 1.0)), (scores, targets)), plain / 2)


def loss_of(loss, probabilities_and_targets):
    """``loss`` at the logits of the given probabilities."""
    probabilities, targets = (torch.as_tensor(x, dtype=torch.float32) for x in probabilities_and_targets)
    return loss(torch.logit(probabilities), targets)


def probability_formula(scores, targets, w, m, eps=1e-7):
    """Eq. 2 as the model computed it before it returned logits: from clamped probabilities."""
    s = scores.float().clamp(eps, 1 - eps)
    per_label = w * targets * torch.log(s) + (1 - w) * (1 - targets) * torch.log(1 - s)
    return -(per_label * torch.tensor(m)).sum(dim=1).mean()


@pytest.mark.parametrize("w, m", [(0.9, (0.1, 0.9)), (0.75, (0.1, 0.9)), (0.5, (1.0, 1.0))])
def test_loss_from_logits_equals_the_probability_formula(w, m):
    generator = torch.Generator().manual_seed(0)
    logits = (torch.rand(64, 2, generator=generator) - 0.5) * 16  # moderate: |z| < 8, no probability clamped
    targets = (torch.rand(64, 2, generator=generator) < 0.3).float()
    new = WeightedLoss(w, m)(logits, targets)
    old = probability_formula(torch.sigmoid(logits), targets, w, m)
    assert new.dtype == torch.float32
    assert torch.isclose(new, old, rtol=1e-5, atol=1e-7), (float(new), float(old))
    # soft labels too (the formula is linear in t)
    soft = torch.rand(64, 2, generator=generator)
    assert torch.isclose(WeightedLoss(w, m)(logits, soft), probability_formula(torch.sigmoid(logits), soft, w, m),
                         rtol=1e-5, atol=1e-7)


def test_a_confident_wrong_logit_keeps_a_finite_gradient():
    w, m = SPEC.config("paper", "casme_sq").train.w, (0.1, 0.9)
    targets = torch.tensor([[0.0, 1.0]])  # micro absent, macro present: both logits are confidently wrong
    logits = torch.tensor([[12.0, -12.0]], dtype=torch.float16).float().requires_grad_()  # as autocast returns
    WeightedLoss(w, m)(logits, targets).backward()
    gradient = logits.grad[0]
    assert torch.isfinite(gradient).all() and (gradient.abs() > 0).all()
    # d/dz of -M (1 - W) log(1 - sigmoid z) is M (1 - W) sigmoid z; of -M W log sigmoid z, -M W sigmoid(-z)
    expected = torch.tensor([m[0] * (1 - w) * torch.sigmoid(torch.tensor(12.0)),
                             -m[1] * w * torch.sigmoid(torch.tensor(12.0))])
    assert torch.allclose(gradient, expected, rtol=1e-5)
    # the old formula on a float16 probability: sigmoid(12) rounds to 1, the clamp passes no gradient
    half = logits.detach().half().requires_grad_()
    probability_formula(torch.sigmoid(half).float(), targets, w, m).backward()
    assert torch.sigmoid(half)[0, 0] == 1 and half.grad[0, 0] == 0


def smoke_batch(smoke_root, batch=16):
    """A training batch of the smoke CAS(ME)^2 twin as ``fit`` builds it: random skips, augmentation, LCN."""
    from mecore.data import load_dataset

    config = SPEC.config("smoke", "synth_casme_sq")
    dataset = load_dataset("synth_casme_sq", root=smoke_root / "casme_sq")
    names = sorted(dataset.videos)[:2]
    data = ReferencePairs([(video_crops(dataset, n, config.input.crop), video_labels(dataset, n)) for n in names],
                          config.train.random_skips, stride=config.train.stride, augment=True)
    torch.manual_seed(0)
    positives = [i for i in range(len(data)) if data[i][1].any()][: batch // 2]  # expression frames in the batch
    items = [data[i] for i in positives + list(range(0, len(data), max(1, len(data) // batch)))][:batch]
    inputs = tuple(torch.stack([item[0][k] for item in items]) for k in range(2))
    return inputs, torch.stack([item[1] for item in items])


def test_one_step_under_bfloat16_autocast_matches_float32(smoke_root, precision_step):
    # tolerance: the loss within 1 % and the gradients' cosine at least 0.99 (bfloat16 keeps 8 bits of mantissa;
    # the fixture's defaults are 5 % and 0.95)
    inputs, targets = smoke_batch(smoke_root)
    config = SPEC.config("smoke", "synth_casme_sq")
    assert targets.shape == (16, 2) and targets.any() and inputs[0].shape[-1] == config.input.crop.size
    torch.manual_seed(0)
    model = build_model(config.model)
    assert config.train.mixed_precision and CONFIGS["paper"].train.mixed_precision
    figures = precision_step(model, loss_for(config.train), inputs, targets, loss_rtol=0.01, min_cosine=0.99)
    assert figures["loss_float32"] > 0


def test_lcn_inputs_are_invariant_to_brightness_and_contrast():
    rng = np.random.default_rng(0)
    crops = rng.integers(40, 160, size=(12, 24, 24)).astype(np.uint8)
    changed = np.clip(crops.astype(float) * 1.4 + 20, 0, 255).round().astype(np.uint8)
    labels = np.zeros((12, 2), np.float32)
    skips = [[2, 2], [5, 5]]
    original = ReferencePairs([(crops, labels)], skips)[9][0]
    brighter = ReferencePairs([(changed, labels)], skips)[9][0]
    for a, b in zip(original, brighter):
        assert torch.allclose(a, b, atol=0.05)
    raw = ReferencePairs([(crops, labels)], skips, use_lcn=False)[9][0]
    raw_brighter = ReferencePairs([(changed, labels)], skips, use_lcn=False)[9][0]
    assert not torch.allclose(raw[0], raw_brighter[0], atol=0.05)  # without LCN the input does change
    model = Yap3DCNN(**SMALL).eval()
    scores = [model(*(p[None] for p in inputs)) for inputs in (original, brighter)]
    assert torch.allclose(scores[0], scores[1], atol=1e-3)


def test_reference_frames_lie_skip_frames_before_and_clamp_at_the_start():
    crops = np.repeat(np.arange(0, 200, 10, dtype=np.uint8)[:, None, None], 4, axis=1).repeat(4, axis=2)
    labels = np.zeros((20, 2), np.float32)
    labels[12:15, 0] = 1
    data = ReferencePairs([(crops, labels)], [[3, 3], [8, 8]], use_lcn=False)
    (micro, macro), target = data[13]
    frame_of = lambda image: int(round(float(image.mean()) * 255 / 10))  # noqa: E731
    assert [frame_of(micro[0, 0]), frame_of(micro[0, 1]), frame_of(macro[0, 1])] == [13, 10, 5]
    assert target.tolist() == [1.0, 0.0]
    (_, macro), _ = data[4]
    assert frame_of(macro[0, 1]) == 0
    torch.manual_seed(0)
    random = ReferencePairs([(crops, labels)], [[2, 4], [6, 9]], stride=5, use_lcn=False)
    assert len(random) == 4
    for index in range(len(random)):
        (micro, macro), _ = random[index]
        t = frame_of(micro[0, 0])
        assert 5 * index <= t < 5 * index + 5
        assert t - frame_of(micro[0, 1]) in (2, 3, 4) or frame_of(micro[0, 1]) == 0
        assert t - frame_of(macro[0, 1]) in (6, 7, 8, 9) or frame_of(macro[0, 1]) == 0


def test_augmentation_treats_every_image_of_a_sample_alike():
    torch.manual_seed(1)
    image = np.random.default_rng(1).random((16, 16)).astype(np.float32)
    out = augment_images(np.stack([image, image, image]))
    assert out.shape == (3, 16, 16) and out.dtype == np.float32
    assert np.array_equal(out[0], out[1]) and np.array_equal(out[0], out[2])
    assert not np.allclose(out[0], image)
    assert out.min() >= 0 and out.max() <= 1


def annotations(type_spans: dict[str, list[int]]) -> pd.DataFrame:
    rows = [{"type": t, "onset": 100, "offset": 100 + span} for t, spans in type_spans.items() for span in spans]
    return pd.DataFrame(rows)


def test_kth_frame_rule_reproduces_table3_from_table2():
    # Table 2 means (s) -> Table 3 k-th skips: SAMM-LV 0.37 / 2.17 s at 200 fps, CAS(ME)^2 0.42 / 1.25 s at 30 fps
    table3 = {family: SPEC.config("paper", family).test.table3_kth for family in ("samm_lv", "casme_sq")}
    assert [kth_frame_from_duration(0.37, 200), kth_frame_from_duration(2.17, 200)] == table3["samm_lv"]
    assert [kth_frame_from_duration(0.42, 30), kth_frame_from_duration(1.25, 30)] == table3["casme_sq"]
    # durations count offset - onset frames: an interval [100, 112] lasts 12 frames
    assert expression_frames(annotations({"micro": [12]})).tolist() == [12.0]
    # from annotations: mean(offset - onset) 74 and 434 frames -> 37 and 217
    assert kth_frame_skips(annotations({"micro": [70, 78], "macro": [400, 468]})) == {"micro": 37, "macro": 217}
    # mean span 12.6 -> 6.3 -> 6; 37.5 -> 18.75 -> 19; a half rounds up (5 -> 2.5 -> 3)
    assert kth_frame_skips(annotations({"micro": [12, 13, 13, 12, 13], "macro": [37, 38]})) == {"micro": 6, "macro": 19}
    assert kth_frame_skips(annotations({"micro": [5], "macro": [5]}))["micro"] == 3
    with pytest.raises(ValueError, match="micro"):
        kth_frame_skips(annotations({"macro": [10]}))


def test_test_skips_are_the_kth_rule_table3_or_given():
    rows = annotations({"micro": [12, 13, 13, 12, 13], "macro": [37, 38]})
    casme, samm = SPEC.config("default", "synth_casme_sq"), SPEC.config("default", "samm_lv")

    def skips(config, choice, fps, **more):
        return choose_skips(config.set({"test.skips": choice, **more}), rows, fps)

    assert skips(casme, "kth", 30.0) == kth_frame_skips(rows) == {"micro": 6, "macro": 19}
    assert skips(casme, "table3_kth", 30.0) == {"micro": 6, "macro": 19}
    assert skips(casme, "table3_manual", 30.0) == {"micro": 10, "macro": 33}
    assert skips(samm, "table3_manual", 200.0) == {"micro": 30, "macro": 310}
    # Table 3's skips are frames at the paper's frame rate (input.skip_fps): SAMM-LV read at 40 fps takes a fifth
    assert skips(samm, "table3_manual", 40.0) == {"micro": 6, "macro": 62}
    assert skips(casme, "given", 30.0, **{"test.given_skips": [4, 20]}) == {"micro": 4, "macro": 20}
    for bad in ({"test.skips": "table3"}, {"test.skips": "given"}, {"test.skips": "given", "test.given_skips": [4]},
                {"test.skips": "given", "test.given_skips": [0, 3]}):
        with pytest.raises(ValueError):
            choose_skips(casme.set(bad), rows, 30.0)
    # Table 3's skips need a dataset family's overrides; a dict of skips is not a value of test.skips
    with pytest.raises(ValueError, match="table3_kth"):
        choose_skips(SPEC.config("default").set({"test.skips": "table3_kth"}), rows, 30.0)
    with pytest.raises(ConfigError, match="test.skips"):
        casme.set({"test.skips": {"micro": 4, "macro": 20}})
    assert all(config.test.skips == "kth" for config in CONFIGS.values())


def test_table3_values_come_from_the_dataset_family_overrides():
    for name in ("casme_sq", "synth_casme_sq", "samm_lv", "synth_samm_lv"):
        family = name.removeprefix("synth_")
        paper = SPEC.config("paper", name)
        assert paper.train.lr == {"casme_sq": 0.015, "samm_lv": 0.007}[family]  # Table 3: SGD's, paper only
        assert paper.train.w == {"casme_sq": 0.9, "samm_lv": 0.75}[family]  # Sec. 2.2
        assert paper.input.skip_fps == {"casme_sq": 30.0, "samm_lv": 200.0}[family]
        assert paper.train.random_skips == {"casme_sq": [[3, 9], [16, 50]], "samm_lv": [[25, 75], [200, 400]]}[family]
        assert paper.test.table3_manual == {"casme_sq": [10, 33], "samm_lv": [30, 310]}[family]
        for profile in ("smoke", "default", "large"):
            config = SPEC.config(profile, name)
            assert config.train.lr == 1e-3 and config.train.optimizer == "adam"
            assert config.train.w == paper.train.w and config.train.random_skips == paper.train.random_skips
        # training strides per profile and family
        assert [SPEC.config(p, name).train.stride for p in ("smoke", "default", "large", "paper")] == \
            {"casme_sq": [8, 8, 2, 1], "samm_lv": [40, 24, 8, 1]}[family]
    paper = SPEC.config("paper")
    assert paper.train.lr is None and paper.source("train.lr") == "Table 3"  # Table 3 gives one per dataset
    assert paper.source("input.crop.size") == "Sec. 2.1" and paper.source("train.patience") == "Sec. 3.3"


def test_ablations_are_dotted_overrides_and_a_dataset_without_table3_is_refused(tmp_path, smoke_root):
    from mecore.data import load_dataset
    from mecore.models import LosoFold
    from mecore.models.yap3dcnn import run_fold

    base = SPEC.config("default", "casme_sq")
    for name, changes in ABLATIONS.items():
        ablated = SPEC.config("default", "casme_sq", changes)
        assert {k: v for k, v in ablated.flat().items() if base.get_path(k) != v} == changes, name
    assert loss_for(SPEC.config("default", "casme_sq", ABLATIONS["no weighted loss"]).train).w == 0.5
    assert not isinstance(build_model(SPEC.config("default", "casme_sq", ABLATIONS["no batch norm"]).model)
                          .stream.blocks[0][1], torch.nn.BatchNorm3d)
    dataset = load_dataset("synth_casme_sq", root=smoke_root / "casme_sq")
    test, *train = dataset.subjects
    fold = LosoFold(dataset=dataset, test_subject=test, train_subjects=train, config=SPEC.config("smoke"),
                    workdir=tmp_path, resume=False)  # no dataset: no Table 3 values
    with pytest.raises(ValueError, match="input.skip_fps, train.random_skips, train.w"):
        run_fold(fold)


def subjects_table(types_by_subject: dict[str, str]) -> pd.DataFrame:
    """A hand-made annotation table: each subject with its expressions ("m" micro, "M" macro)."""
    names = {"m": "micro", "M": "macro"}
    return pd.DataFrame([{"subject": s, "type": names[c], "onset": 10, "offset": 20}
                         for s, kinds in types_by_subject.items() for c in kinds],
                        columns=["subject", "type", "onset", "offset"])


def test_validation_subjects_hold_both_types():
    table = subjects_table({"a": "mM", "b": "M", "c": "MM", "d": "mM", "e": "M", "f": ""})
    everyone = ["a", "b", "c", "d", "e", "f"]
    train = lambda test: [s for s in everyone if s != test]
    # the next subject holds both types: it alone, as before
    assert validation_subjects(table, "c", train("c")) == (["d"], [])
    # the next subject has no micro-expression: the next one with a micro-expression joins it
    assert validation_subjects(table, "a", train("a")) == (["b", "d"], [])
    # wrapping round past the last subject; a subject with no expression at all needs both types added
    assert validation_subjects(table, "e", train("e")) == (["f", "a"], [])
    assert validation_subjects(table, "d", train("d")) == (["e", "a"], [])
    # only the training rows count (the test subject's own expressions are never looked at)
    assert validation_subjects(table[table["subject"] != "a"], "a", train("a")) == (["b", "d"], [])
    # no training subject has a micro-expression: reported, not filled in
    none_left = subjects_table({"a": "mM", "b": "M", "c": "M"})
    assert validation_subjects(none_left[none_left["subject"] != "a"], "a", ["b", "c"]) == (["b"], ["micro"])
    # never every training subject: one is left to train on, and the missing type is reported
    two = subjects_table({"a": "mM", "b": "M", "c": "m"})
    assert validation_subjects(two[two["subject"] != "a"], "a", ["b", "c"]) == (["b"], ["micro"])


def test_a_fold_whose_validation_lacks_a_type_warns_and_records_it(tmp_path, smoke_root):
    from mecore.data import load_dataset
    from mecore.models import LosoFold
    from mecore.models.yap3dcnn import run_fold

    dataset = load_dataset("synth_casme_sq", root=smoke_root / "casme_sq")
    test, *train = dataset.subjects
    keep = (dataset.annotations["type"] == "macro") | (dataset.annotations["subject"] == test)
    dataset = dataclasses.replace(dataset, annotations=dataset.annotations[keep].reset_index(drop=True))
    # no training subject has a micro-expression; given skips, since the k-th rule needs some
    config = SPEC.config("smoke", dataset.name, {"train.epochs": 1, "trial.max_steps": 2, "test.skips": "given",
                                                 "test.given_skips": [3, 10]})
    fold = LosoFold(dataset=dataset, test_subject=test, train_subjects=train, config=config, workdir=tmp_path,
                    resume=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictions = run_fold(fold)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    saved = predictions.attrs["frame_scores"]  # kept with the fold's result by mecore.loso.run_fold
    assert any(re.search(f"test subject {test}: the validation subjects .* hold no micro", m) for m in messages)
    assert any(re.search(f"test subject {test}: no subject left to train on .* micro", m) for m in messages)
    assert saved["validation_subjects"] == [train[0]]
    assert saved["validation_missing"] == ["micro"] and saved["fit_missing"] == ["micro"]
    assert saved["skips"] == {"micro": 3, "macro": 10}
    assert saved["thresholds"]["automated", "micro"] == 1.0 and (predictions["type"] != "micro").all()


def test_both_iou_methods_turn_a_bump_into_its_interval():
    frames = np.arange(300)
    bump = np.exp(-0.5 * ((frames - 150) / 12.0) ** 2)
    table = pd.DataFrame({"video": "v", "frame": frames, "micro_score": 0.05 * bump, "macro_score": bump})
    thresholds = {(m, t): 0.5 for m in ("automated", "manual") for t in ("micro", "macro")}
    for method in ("automated", "manual"):
        spotted = spot(table, method, thresholds, {"micro": 5, "macro": 20}, fps=30.0)
        macro = spotted[spotted["type"] == "macro"]
        assert len(macro) == 1 and macro["onset"].iloc[0] < 150 < macro["offset"].iloc[0]
        assert list(spotted.columns) == ["video", "onset", "offset", "type", "score"]
    # the automated method normalises each video's scores, the manual one does not
    assert (spot(table, "manual", thresholds, {"micro": 5, "macro": 20}, 30.0)["type"] == "micro").sum() == 0


def test_registered_fold_runs_on_smoke(tmp_path, smoke_root):
    from mecore.data import load_dataset
    from mecore.loso import run_fold

    spec = get_model("yap3dcnn")
    dataset = load_dataset("synth_casme_sq", root=smoke_root / "casme_sq")
    config = spec.config("smoke", dataset.name, {"train.epochs": 1})
    subjects = dataset.subjects
    record = run_fold(spec, dataset, config, subjects[0], subjects[1:], tmp_path, seed=0, resume=False,
                      num_threads=None)
    predictions = record["predictions"]
    assert {"video", "onset", "offset", "type", "score"} <= set(predictions.columns)
    assert set(predictions["type"]) <= {"micro", "macro"}
    saved = record["frame_scores"]
    scores = saved["frame_scores"]
    assert set(scores["video"]) == {n for n, v in dataset.videos.items() if v.subject == subjects[0]}
    assert scores[["micro_score", "macro_score"]].to_numpy().min() >= 0
    assert scores[["micro_score", "macro_score"]].to_numpy().max() <= 1
    assert saved["history"]["train_loss"].notna().all()
    assert saved["validation_subjects"] == [subjects[1]] and saved["validation_missing"] == []


def rows_and_array(tmp_path, frames=45, size=20, seed=3):
    """Random uint8 crops as a cache-like .npy entry read by Rows, and the same crops in memory."""
    from mecore.inputs import Rows

    crops = np.random.default_rng(seed).integers(0, 256, size=(frames, size, size), dtype=np.uint8)
    path = tmp_path / f"crops-{seed}.npy"
    np.save(path, crops)
    return Rows(path), crops


def test_reference_pairs_on_rows_equal_those_on_the_array_bit_for_bit(tmp_path):
    rows, crops = rows_and_array(tmp_path)
    short_rows, short = rows_and_array(tmp_path, frames=7, seed=4)  # a second video, shorter than a window
    labels = np.random.default_rng(5).integers(0, 2, size=(len(crops), 2)).astype(np.float32)
    short_labels = np.ones((len(short), 2), np.float32)
    for stride, augment, use_lcn in ((1, False, True), (8, True, True), (5, True, False)):
        streamed = ReferencePairs([(rows, labels), (short_rows, short_labels)], [[2, 4], [6, 30]], stride,
                                  augment=augment, use_lcn=use_lcn)
        in_memory = ReferencePairs([(crops, labels), (short, short_labels)], [[2, 4], [6, 30]], stride,
                                   augment=augment, use_lcn=use_lcn)
        assert len(streamed) == len(in_memory) == -(-45 // stride) + -(-7 // stride)
        torch.manual_seed(11)
        first = [streamed[i] for i in range(len(streamed))]
        torch.manual_seed(11)
        second = [in_memory[i] for i in range(len(in_memory))]
        for ((a_micro, a_macro), a_target), ((b_micro, b_macro), b_target) in zip(first, second):
            assert a_micro.dtype == torch.float32 and a_micro.shape == (1, 2, 20, 20)
            assert torch.equal(a_micro, b_micro) and torch.equal(a_macro, b_macro) and torch.equal(a_target, b_target)
    # windows map to (video, first frame) as a flat list of them would, the second video after the first
    data = ReferencePairs([(rows, labels), (short_rows, short_labels)], [[1, 1], [2, 2]], stride=10)
    assert [data.window(i) for i in range(len(data))] == [(0, 0), (0, 10), (0, 20), (0, 30), (0, 40), (1, 0)]
    assert data.window(-1) == (1, 0)
    with pytest.raises(IndexError):
        data[len(data)]


def test_reference_pairs_pickle_without_frames(tmp_path):
    rows, crops = rows_and_array(tmp_path, frames=2000, size=32)
    labels = np.zeros((len(crops), 2), np.float32)
    data = ReferencePairs([(rows, labels)], [[2, 4], [6, 9]], stride=1, augment=True)
    size = len(pickle.dumps(data))
    # the per-frame labels (8 bytes a frame) and the path: neither the 2 MB of crops nor a list of windows
    assert size < labels.nbytes + 4096 < crops.nbytes / 50
    torch.manual_seed(0)
    expected = data[1234]
    torch.manual_seed(0)
    restored = pickle.loads(pickle.dumps(data))[1234]  # as a DataLoader worker: opens the file itself
    assert torch.equal(expected[0][0], restored[0][0]) and torch.equal(expected[0][1], restored[0][1])


def test_fold_streams_crops_and_stops_after_max_steps(tmp_path, smoke_root):
    import mecore.train
    from mecore.data import load_dataset
    from mecore.inputs import Rows
    from mecore.loso import run_fold

    spec = get_model("yap3dcnn")
    dataset = load_dataset("synth_casme_sq", root=smoke_root / "casme_sq")
    config = spec.config("smoke", dataset.name, {"train.epochs": 3, "trial.max_steps": 3, "train.micro_batch": 8,
                                                 "train.stride": 4})  # about 5 steps an epoch
    assert spec.config("paper").train.micro_batch is None
    name = next(iter(dataset.videos))
    crops = video_crops(dataset, name, config.input.crop)
    assert isinstance(crops, Rows) and crops.dtype == np.uint8
    assert crops.shape == (dataset.video(name).n_frames, config.input.crop.size, config.input.crop.size)
    subjects = dataset.subjects
    record = run_fold(spec, dataset, config, subjects[1], subjects[:1] + subjects[2:], tmp_path, seed=0,
                      resume=False, num_threads=None)
    log = mecore.train.FIT_LOG[-1]
    assert log["samples"] > 3 * config.train.batch_size  # an epoch has more than three steps: max_steps ended it
    assert len(log["step_seconds"]) == 3 and log["micro_batch"] == 8
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert checkpoint["steps"] == 3 and checkpoint["epoch"] == 1
    trained_under = json.loads(checkpoint["config"])
    assert trained_under["max_steps"] == 3 and trained_under["micro_batch"] == 8
    saved = record["frame_scores"]
    assert len(saved["history"]) == 1 and saved["history"]["val_loss"].notna().all()
