"""The LLM loop: `LLM` (public API), `ModelRunner` (batch -> tensors -> tokens), the sampler."""

from minirt.engine.llm import LLM, GenerateStats, RequestOutput

__all__ = ["LLM", "GenerateStats", "RequestOutput"]
