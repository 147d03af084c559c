"""Checks of the notebooks' papermill parameters, run in the cell after the ``parameters`` cell, so that a wrong
name or value stops the chapter at once with one line naming it, before any data is loaded or model trained.

Each keyword of :func:`check_parameters` is a parameter name with its rule (:data:`RULES`); ``choices`` adds a
notebook's own allowed values for a list parameter (its ablations, say).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable


class ParameterError(ValueError):
    """A notebook parameter with a wrong value; the message names it, its value and what is allowed."""


def _dataset_names() -> tuple[str, ...]:
    from mecore.data import DATASET_NAMES

    return DATASET_NAMES


def _models() -> list[str]:
    from mecore.models import available_models

    return available_models()


def _one_of(choices: Callable[[], Iterable[str]] | Iterable[str]) -> Callable[[Any], str | None]:
    def rule(value):
        allowed = list(choices() if callable(choices) else choices)
        return None if value in allowed else f"choose one of {', '.join(map(str, allowed))}"
    return rule


def _each(rule: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    def check(values):
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            return "must be a list"
        for value in values:
            problem = rule(value)
            if problem:
                return f"{value!r}: {problem}"
        return None
    return check


def _keys(rule: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    def check(mapping):
        if not isinstance(mapping, dict):
            return "must be a dict"
        return _each(rule)(list(mapping))
    return check


def _integer(low: int) -> Callable[[Any], str | None]:
    return lambda v: None if isinstance(v, int) and not isinstance(v, bool) and v >= low else f"must be an integer >= {low}"


def _optional(rule: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    return lambda v: None if v is None else rule(v)


def _fraction(value) -> str | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1
    return None if ok else "must be a number in (0, 1]"


def _folder(value) -> str | None:
    return None if Path(value).expanduser().is_dir() else "no such folder"


def _scheduler(value) -> str | None:
    if value is None or value in ("sync", "local") or (isinstance(value, str) and "://" in value):
        return None
    return "use None or 'local' (a LocalCluster), 'sync' (this process) or a scheduler address tcp://host:port"


def _conventions(value) -> str | None:
    from mecore.metrics import SPOTTING_CONVENTIONS

    return _one_of(SPOTTING_CONVENTIONS)(value)


def _profile(value) -> str | None:
    from mecore.paths import PROFILES

    return _one_of(PROFILES)(value)


_dataset = _one_of(_dataset_names)
_model = _one_of(_models)
RULES: dict[str, Callable[[Any], str | None]] = {
    "profile": _profile, "dataset": _dataset, "dataset_name": _dataset, "datasets": _each(_dataset),
    "acceptance_sets": _each(_dataset), "ablation_datasets": _each(_dataset), "other_datasets": _keys(_dataset),
    "roots": _keys(_dataset),
    "root": _optional(_folder), "models": _each(_model), "baselines": _each(_model),
    "methods": _each(_one_of(("lbp_chi2", "mdmd"))), "modes": _each(_one_of(("runs", "peaks"))),
    "t_eval": _fraction, "t_eval_grid": _each(_fraction), "p_grid": _each(_fraction),
    "seed": _integer(0), "scheduler": _scheduler, "repeats": _optional(_integer(1)),
    "benchmark_repeats": _integer(1), "ablation_folds": _optional(_integer(1)), "workers": _optional(_integer(1)), "flow_workers": _optional(_integer(1)),
    "crop_size": _integer(16), "detect_every": _integer(1), "convention": lambda v: _conventions(v),
}


def check_parameters(choices: dict[str, Iterable] | None = None, **parameters) -> None:
    """Raise :class:`ParameterError` for the first parameter whose value breaks its rule (or is not in
    ``choices[name]``, for each element of a list parameter; None there means the notebook's default); a name
    with no rule is a programming error."""
    choices = choices or {}
    for name, value in parameters.items():
        if name in choices:
            if value is None:  # the notebook's own default
                continue
            rule = _each(_one_of(list(choices[name]))) if isinstance(value, (list, tuple)) else _one_of(list(choices[name]))
        elif name in RULES:
            rule = RULES[name]
        else:
            raise TypeError(f"check_parameters has no rule for {name!r}; pass its allowed values in choices")
        problem = rule(value)
        if problem:
            raise ParameterError(f"parameter {name} = {value!r}: {problem}")


def check_overrides(overrides, models: Iterable[str]) -> dict:
    """A chapter's ``overrides`` parameter (``{"group.key": value}``, as ``loso --set``) checked against the
    configuration of each of ``models``; returns it as a dict. Raises :class:`ParameterError` naming the key and
    the valid choices."""
    from mecore.config import ConfigError
    from mecore.models import get_model

    if overrides is None:
        return {}
    if not isinstance(overrides, dict):
        raise ParameterError(f"parameter overrides = {overrides!r}: must be a dict of 'group.key': value")
    for model in models:
        spec = get_model(model)
        try:
            spec.config("paper").set(overrides)
        except ConfigError as error:
            raise ParameterError(f"parameter overrides, model {model}: {error}") from None
    return dict(overrides)
