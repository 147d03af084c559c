"""Model configurations: one tree per model, grouped by role, typed by the paper's profile, overridable by key.

A configuration is a :class:`Config`: groups of settings, read as ``config.train.lr`` (or
``config["train"]["lr"]``). Every model uses the same roles where they apply:

* ``input``: what the network sees (face crop, optical flow, clip geometry, sizes, the frame rate read at);
* ``model``: the network's sizes (layers, widths, dropout, pretrained weights);
* ``pretrain``: a pre-training stage with its own checkpoints (MESNet's backbone);
* ``train``: losses, sampling and optimiser: with the groups above, everything that decides trained weights;
* ``test``: thresholds and post-processing, applied to a trained network (a change only re-predicts);
* ``trial``: ``max_steps``, a bounded trial of the configuration (``plan``, ``loso --max-steps``);
* ``run``: how many runs (``repeats``): decides nothing inside a run.

A model writes its ``paper`` profile first, each paper value as ``cite(value, "Sec. IV-A")`` where the paper
gives it; the other profiles are small visible deltas, ``paper.set({"train.epochs": 10, ...})``. Types come
from the paper profile: :meth:`Config.set` refuses an unknown key (naming the valid ones) or a value of
another type (an ``int`` is a valid ``float``; a ``None`` paper value takes a number, a string or ``None``,
or the type given to :func:`cite`). Keys follow from the groups: :meth:`Config.keyed` drops the groups that
do not decide a stage's output (``test`` and ``run`` for training).

Python, not YAML files: the values are checked by the same code that reads them, a profile is an expression
one can print, diff and test, and ``cite`` keeps each value next to its source in one line.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

TRAINING_EXCLUDES = ("test", "run")  # groups that never change trained weights


class ConfigError(ValueError):
    """An unknown key or a value of the wrong type; the message names it and the valid choices."""


@dataclass(frozen=True)
class cite:  # noqa: N801 - reads as a function in the profiles
    """A paper value with its source (section, table or equation), in a paper profile."""

    value: Any
    source: str
    type: type | None = None


def _leaf_type(value):
    return type(value) if value is not None else None


class Config(Mapping):
    """An immutable tree of settings (see the module docstring); JSON-serialisable with :meth:`to_dict`."""

    __slots__ = ("_tree", "_sources", "_types", "_path")

    def __init__(self, tree: Mapping, *, _sources=None, _types=None, _path: str = ""):
        sources, types, built = ({} if _sources is None else _sources), ({} if _types is None else _types), {}
        for name, value in tree.items():
            key = f"{_path}{name}"
            if isinstance(value, cite):
                sources[key] = value.source
                if value.type is not None:
                    types[key] = value.type
                value = value.value
            if isinstance(value, Config):
                value = value.to_dict()
            if isinstance(value, Mapping):
                value = Config(value, _sources=sources, _types=types, _path=f"{key}.")
            else:
                types.setdefault(key, _leaf_type(value))
            built[name] = list(value) if isinstance(value, tuple) else value
        object.__setattr__(self, "_tree", built)
        object.__setattr__(self, "_sources", sources)
        object.__setattr__(self, "_types", types)
        object.__setattr__(self, "_path", _path)

    # -------------------------------------------------------------------------------------------- reading
    def __getitem__(self, name: str):
        return self._tree[name]

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._tree[name]
        except KeyError:
            raise AttributeError(f"configuration {self._path.rstrip('.') or '(root)'} has no {name!r}; "
                                 f"it has {', '.join(self._tree)}") from None

    def __setattr__(self, name, value):
        raise AttributeError("a Config is immutable: use .set({'group.key': value})")

    def __iter__(self) -> Iterator[str]:
        return iter(self._tree)

    def __len__(self) -> int:
        return len(self._tree)

    def __eq__(self, other) -> bool:
        return isinstance(other, Mapping) and self.to_dict() == (other.to_dict() if isinstance(other, Config)
                                                                 else dict(other))

    __hash__ = None

    def __reduce__(self):  # pickling (Dask workers) and deep copies rebuild through __init__
        return _restore, (self.to_dict(), dict(self._sources), dict(self._types), self._path)

    def __repr__(self) -> str:
        return f"Config({json.dumps(self.to_dict(), sort_keys=False)})"

    def __str__(self) -> str:
        """One line per entry, indented by group, the paper's source after ``#`` where the value is the paper's."""
        lines = []
        for name, value in self._tree.items():
            if isinstance(value, Config):
                lines.append(f"{name}:")
                lines.extend("  " + line for line in str(value).splitlines())
            else:
                source = self._sources.get(self._path + name)
                lines.append(f"{name}: {json.dumps(value)}" + (f"  # {source}" if source else ""))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """The tree as plain nested dicts (what run keys hash and ``config.json`` shows)."""
        return {k: v.to_dict() if isinstance(v, Config) else v for k, v in self._tree.items()}

    def flat(self) -> dict[str, Any]:
        """``{"group.key": value}`` for every leaf."""
        out = {}
        for name, value in self._tree.items():
            if isinstance(value, Config):
                out.update({f"{name}.{k}": v for k, v in value.flat().items()})
            else:
                out[name] = value
        return out

    def get_path(self, key: str, default=None):
        """The value at a dotted key (``"input.crop.size"``), or ``default``."""
        node = self
        for part in key.split("."):
            if not isinstance(node, Config) or part not in node._tree:
                return default
            node = node._tree[part]
        return node

    def source(self, key: str) -> str | None:
        """The paper's section/table of a dotted key's value, when the value is the paper's."""
        return self._sources.get(self._path + key)

    def keyed(self, exclude=TRAINING_EXCLUDES) -> dict:
        """The tree without the groups ``exclude``: what keys a stage's checkpoints (default: training)."""
        return {k: v for k, v in self.to_dict().items() if k not in exclude}

    # -------------------------------------------------------------------------------------------- changing
    def set(self, changes: Mapping[str, Any] | None = None, **dotted) -> Config:
        """A copy with ``{"group.key": value}`` changed, each checked against the paper profile's types; a value given
        as ``cite(value, source)`` (a paper's per-dataset setting) keeps its source."""
        changes = {**(changes or {}), **dotted}
        tree, cited = self.to_dict(), {}
        for key, value in changes.items():
            if isinstance(value, cite):  # a per-dataset paper value, with its source
                cited[self._path + key], value = value.source, value.value
            self._check(key, value)
            node, parts = tree, key.split(".")
            for part in parts[:-1]:
                node = node[part]
            node[parts[-1]] = value.to_dict() if isinstance(value, Config) else value
        sources = {k: v for k, v in self._sources.items() if k[len(self._path):] not in changes}
        return Config(tree, _sources={**sources, **cited}, _types=dict(self._types), _path=self._path)

    def _check(self, key: str, value) -> None:
        node, parts = self, key.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, Config) or part not in node._tree:
                where = ".".join(parts[:depth]) or "the configuration"
                choices = ", ".join(_dotted(node, ".".join(parts[:depth]))) if isinstance(node, Config) else ""
                raise ConfigError(f"unknown configuration key {key!r}: {where} has no {part!r}"
                                  + (f"; valid keys: {choices}" if choices else ""))
            node = node._tree[part]
        if isinstance(node, Config):
            if not isinstance(value, Mapping):
                raise ConfigError(f"configuration key {key!r} is a group ({', '.join(_dotted(node, key))}); "
                                  f"set its keys one by one")
            return
        expected = self._types.get(self._path + key)
        if not _fits(value, expected):
            raise ConfigError(f"configuration key {key!r} takes {_type_name(expected)}, got {value!r} "
                              f"({type(value).__name__})")


def _restore(tree, sources, types, path) -> Config:
    return Config(tree, _sources=sources, _types=types, _path=path)


def _dotted(node: Config, prefix: str) -> list[str]:
    return [f"{prefix}.{k}" if prefix else k for k in node]


def _type_name(expected) -> str:
    if expected is None:
        return "a number, a string or None"
    return {float: "a number", int: "an integer", bool: "true or false", str: "a string",
            list: "a list"}.get(expected, expected.__name__)


def _fits(value, expected) -> bool:
    if expected is None:
        return value is None or isinstance(value, (int, float, str, list)) and not isinstance(value, bool)
    if value is None:
        return True  # an optional setting switched off (a paper value may be replaced by None: "not used")
    if expected is bool:
        return isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def parse_overrides(items) -> dict[str, Any]:
    """``["train.lr=3e-4", "test.t_nms=0.4"]`` (``--set`` arguments) -> ``{"train.lr": 0.0003, ...}``: values
    read as JSON (numbers, true/false, null, lists), Python's True/False/None too, else as strings."""
    out = {}
    for item in items or ():
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: write group.key=value, e.g. train.lr=3e-4")
        text = text.strip()
        literal = {"True": True, "False": False, "None": None}
        if text in literal:
            value = literal[text]
        else:
            try:
                value = json.loads(text)
            except ValueError:
                value = text
        out[key.strip()] = value
    return out
