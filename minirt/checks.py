"""Checks for values a user hands the engine: one shape of message for every field.

A bad value fails where it is given, naming the field, the value and what is allowed. Integers
accept Python ints and numpy/torch integer scalars (`operator.index`), never bools, floats or nan,
so `max_tokens=2.5` is refused, not truncated. SamplingParams, EngineConfig and the config.json
reader use them; notebook 00 (tour) builds the first two.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any

import numpy as np
import torch

MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes 0..2**64 - 1 (negatives wrap around)


def as_int(
    name: str, value: Any, low: int | None = None, high: int | None = None, hint: str = ""
) -> int:
    """`value` as a Python int in [low, high], or a ValueError that names `name`.

    `hint` is appended to the message as it is, e.g. "; 0 means greedy"."""
    value = _scalar(value)
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {_show(value)}{hint}") from None
    _check_range(name, number, low, high, hint)
    return number


def as_float(
    name: str, value: Any, low: float | None = None, high: float | None = None, hint: str = ""
) -> float:
    """`value` as a finite Python float in [low, high], or a ValueError that names `name`."""
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {_show(value)}{hint}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {number}{hint}")
    _check_range(name, number, low, high, hint)
    return number


def _scalar(value: Any) -> Any:
    """A 0-d numpy or torch value as the Python number it holds (anything else as it is)."""
    if isinstance(value, torch.Tensor | np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def _check_range(name: str, number: float, low, high, hint: str) -> None:
    if (low is None or number >= low) and (high is None or number <= high):
        return
    if high is None:
        allowed = f">= {low}"
    elif low is None:
        allowed = f"<= {high}"
    else:
        allowed = f"in [{low}, {high}]"
    raise ValueError(f"{name} must be {allowed}, got {number}{hint}")


def _show(value: Any) -> str:
    """`value` for a message: its repr, cut short, and its type (the repr of "1" hides it)."""
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def named_part(what: str, value, registry: dict, otherwise: str, kinds: str):
    """A swappable part given by name or as an object: registry[value] for a name (an unknown
    one is refused, listing the names and `otherwise`), `value` itself when callable."""
    if isinstance(value, str):
        if value not in registry:
            raise ValueError(f"unknown {what} {value!r}; use one of {sorted(registry)}{otherwise}")
        return registry[value]
    if not callable(value):
        raise ValueError(f"{what} must be {kinds}, got {value!r}")
    return value
