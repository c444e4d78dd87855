"""Values as plain data: what the grader's worker sends the parent, and how the parent reads it.

`encode` turns a value into JSON-able data (containers by content, tensors and arrays as
safetensors bytes, minirt's own dataclasses field by field, anything else by its type name only);
`decode` rebuilds it without running any code (no pickle). The worker's record of a learner's
outputs travels this way (minirt.grading.replay).
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any


class Opaque:
    """A returned value that cannot leave the worker (a generator, a lambda): only its type."""

    def __init__(self, type_name: str):
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"<a {self.type_name}>"


def encode(value: Any) -> Any:
    """`value` as it is now (the learner may change the object later), as JSON-able data:
    containers by content, tensors and arrays as safetensors bytes, anything else by type only."""
    import numpy as np
    import torch
    from safetensors.numpy import save as save_array
    from safetensors.torch import save as save_tensor

    if value is None or isinstance(value, bool | str | float):
        return value
    if isinstance(value, int | np.integer | np.floating | np.bool_):
        return value.item() if isinstance(value, np.generic) else int(value)
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, tuple):
        return {"tuple": [encode(v) for v in value]}
    if isinstance(value, dict):
        return {"dict": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, bytes):
        return {"bytes": base64.b64encode(value).decode()}
    if isinstance(value, torch.Tensor):
        data = save_tensor({"t": value.detach().cpu().contiguous()})
        return {"tensor": base64.b64encode(data).decode()}
    if isinstance(value, np.ndarray):
        return {
            "ndarray": base64.b64encode(save_array({"a": np.ascontiguousarray(value)})).decode()
        }
    cls = type(value)
    if dataclasses.is_dataclass(value) and cls.__module__.startswith("minirt."):
        fields = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"dataclass": [f"{cls.__module__}:{cls.__qualname__}", fields]}
    name = value.type_name if isinstance(value, Opaque) else type(value).__name__
    return {"opaque": name}  # a generator, a lambda, an object: only its type travels


def decode(data: Any) -> Any:
    """The value `encode` wrote, rebuilt in the parent (no code runs: no pickle)."""
    from safetensors.numpy import load as load_array
    from safetensors.torch import load as load_tensor

    if isinstance(data, list):
        return [decode(v) for v in data]
    if not isinstance(data, dict):
        return data
    ((kind, body),) = data.items()
    if kind == "tuple":
        return tuple(decode(v) for v in body)
    if kind == "dict":
        return {_hashable(decode(k)): decode(v) for k, v in body}
    if kind == "bytes":
        return base64.b64decode(body)
    if kind == "tensor":
        return load_tensor(base64.b64decode(body))["t"]
    if kind == "ndarray":
        return load_array(base64.b64decode(body))["a"]
    if kind == "dataclass":  # one of minirt's own (a Program, say): rebuilt field by field
        return _rebuilt_dataclass(*body)
    return Opaque(body)


def _rebuilt_dataclass(where: str, fields: dict) -> Any:
    import importlib

    module, _, qualname = where.partition(":")
    if not module.startswith("minirt."):
        return Opaque(qualname)
    cls: Any = importlib.import_module(module)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    value = object.__new__(cls)
    for name, data in fields.items():
        object.__setattr__(value, name, decode(data))
    return value


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key
