"""minirt: a small, real LLM inference runtime — paged KV cache, continuous batching, and the
measurements that explain them. Start with `LLM().generate(...)` and notebook 00 (tour)."""

from minirt.config import EngineConfig, ModelConfig
from minirt.engine import LLM, GenerateStats, RequestOutput
from minirt.sampling_params import SamplingParams

__version__ = "0.1.0"
__all__ = ["LLM", "EngineConfig", "GenerateStats", "ModelConfig", "RequestOutput", "SamplingParams"]
