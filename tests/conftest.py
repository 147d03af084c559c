"""Shared fixtures: the smoke synthetic datasets, generated once per test session."""
import os

import pytest

os.environ.setdefault("MECORE_PROFILE", "smoke")


@pytest.fixture(scope="session")
def smoke_root():
    from mecore.data.synthetic import ensure_synthetic

    return ensure_synthetic("smoke")


@pytest.fixture
def precision_step():
    """``check(model, loss_fn, inputs, targets, loss_rtol, min_cosine)``: one training step in float32 and one
    under CPU bfloat16 autocast from the same weights and batch (:func:`mecore.train.precision_check`); asserts
    finite losses and gradients, the losses within ``loss_rtol`` and the gradients' cosine at least
    ``min_cosine``; returns the measured figures."""
    import torch

    from mecore.train import precision_check

    def check(model, loss_fn, inputs, targets, loss_rtol=0.05, min_cosine=0.95):
        result = precision_check(model, loss_fn, inputs, targets, torch.bfloat16)
        assert result["finite"], result
        assert result["loss_rel_diff"] <= loss_rtol, result
        assert result["grad_cosine"] >= min_cosine, result
        return result

    return check
