"""What `generate()` accepts, turned into plain lists before any request is queued.

A prompt is text or token ids (ints in a list/tuple, a 1-D integer numpy array or torch tensor);
sampling parameters are one `SamplingParams` for all or one per prompt. Anything else is refused
up front, naming the prompt or the field: a bad request never aborts the others half-way.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch

from minirt.checks import as_int
from minirt.sampling_params import SamplingParams

_KINDS = "a string, a list of token ids, a 1-D integer numpy array or torch tensor"


def prompt_list(prompts: Any) -> list:
    """`prompts` as a list of prompts: one prompt (text or ids) becomes a list of one."""
    if isinstance(prompts, str):
        return [prompts]
    if isinstance(prompts, torch.Tensor | np.ndarray):
        return [prompts] if prompts.ndim == 1 else list(prompts)  # 2-D: a row per prompt
    if not isinstance(prompts, list | tuple):
        raise ValueError(f"prompts must be {_KINDS}, or a list of those; got {_kind(prompts)}")
    if not prompts:
        raise ValueError("generate() got an empty prompt list; pass at least one prompt")
    if _is_number(prompts[0]):  # [1, 2, 3]: one prompt of token ids
        return [prompts]
    return list(prompts)


def param_list(sampling_params: Any, num_prompts: int) -> list[SamplingParams]:
    """One checked SamplingParams per prompt (a single one is shared by all)."""
    if sampling_params is None or isinstance(sampling_params, SamplingParams):
        shared = sampling_params or SamplingParams()
        shared.validate()
        return [shared] * num_prompts
    if not isinstance(sampling_params, list | tuple):
        raise ValueError(
            "sampling_params must be a SamplingParams, a list with one per prompt, or None; "
            f"got {_kind(sampling_params)}"
        )
    if len(sampling_params) != num_prompts:
        raise ValueError(
            f"{num_prompts} prompts but {len(sampling_params)} SamplingParams; pass one "
            "SamplingParams for all prompts or a list with one per prompt"
        )
    for i, p in enumerate(sampling_params):
        if not isinstance(p, SamplingParams):
            raise ValueError(f"sampling_params[{i}] is {_kind(p)}, not a SamplingParams")
        try:
            p.validate()
        except ValueError as e:
            raise ValueError(f"sampling_params[{i}]: {e}") from None
    return list(sampling_params)


def token_ids(i: int, prompt: Any, vocab_size: int) -> list[int] | None:
    """Prompt `i`'s token ids as Python ints in [0, vocab_size), or None for text."""
    if isinstance(prompt, str):
        return None
    if isinstance(prompt, torch.Tensor | np.ndarray):
        ids = _array_ids(i, prompt)
    elif isinstance(prompt, list | tuple):
        ids = list(prompt)
        if not all(type(t) is int for t in ids):  # the common case skips the per-token check
            ids = [as_int(f"prompt {i} token {pos}", t) for pos, t in enumerate(prompt)]
    else:
        raise ValueError(f"prompt {i} is {_kind(prompt)}; pass {_KINDS}")
    for pos, t in enumerate(ids):
        if not 0 <= t < vocab_size:
            raise ValueError(
                f"prompt {i} has token id {t} at position {pos}, outside [0, {vocab_size}); "
                "check the tokenizer"
            )
    return ids


def _array_ids(i: int, array: torch.Tensor | np.ndarray) -> list[int]:
    if array.ndim != 1:
        raise ValueError(f"prompt {i} is a {array.ndim}-D array; token ids are 1-D, one per token")
    if isinstance(array, torch.Tensor):
        dtype = array.dtype
        integer = not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)
    else:
        integer = array.dtype.kind in "iu"
    if not integer:
        raise ValueError(
            f"prompt {i} has dtype {array.dtype}; token ids need an integer dtype "
            "(torch.long, np.int64)"
        )
    return [int(t) for t in array.tolist()]


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Number | np.generic) or (
        isinstance(value, torch.Tensor) and value.ndim == 0
    )


def _kind(value: Any) -> str:
    return f"a {type(value).__name__} ({value!r:.40})"
