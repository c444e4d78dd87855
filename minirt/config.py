"""Configuration as plain dataclasses: what the model is, and how the engine runs it.

`ModelConfig` is read from a Hugging Face `config.json` (Qwen3, Qwen2 and Llama families) or
built in code from a preset; `EngineConfig` holds the serving knobs (block size, KV budget, token
budget, chunked prefill, prefix caching). Notebook 00 tours both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from minirt.checks import MAX_SEED, as_float, as_int
from minirt.hf_config import model_config_fields

# minirt.kernels.backend.BACKENDS' names (config sits below the kernels: a test keeps them equal)
KERNEL_BACKENDS = ("auto", "torch", "triton", "cpu")


@dataclass
class ModelConfig:
    """The shapes and constants of a Llama-style decoder (the fields minirt needs)."""

    model_type: str = "qwen3"
    vocab_size: int = 264
    hidden_size: int = 256
    intermediate_size: int = 768
    num_hidden_layers: int = 8
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 64
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_position_embeddings: int = 1024
    tie_word_embeddings: bool = True
    qk_norm: bool = True
    attention_bias: bool = False
    eos_token_id: list[int] = field(default_factory=list)
    dtype: str = "float32"
    num_experts: int = 0  # > 0: a mixture of experts, intermediate_size is one expert's

    def num_parameters(self) -> int:
        """Weights of the decoder (what has to sit beside the KV cache in device memory)."""
        h, q, kv = self.hidden_size, self.num_attention_heads, self.num_key_value_heads
        attn = h * q * self.head_dim * 2 + h * kv * self.head_dim * 2
        mlp = 3 * h * self.intermediate_size * max(1, self.num_experts)
        router = h * self.num_experts
        per_layer = attn + mlp + router + 2 * h + (2 * self.head_dim if self.qk_norm else 0)
        embed = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return self.num_hidden_layers * per_layer + embed + h

    @classmethod
    def from_dict(cls, hf: dict) -> ModelConfig:
        """Map a Hugging Face config dict onto ModelConfig, refusing what minirt can't run."""
        return cls(**model_config_fields(hf))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> ModelConfig:
        path = Path(folder) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{folder} has no config.json; pass a Hugging Face checkpoint folder "
                "(config.json + *.safetensors + tokenizer.json)"
            )
        try:
            hf = json.loads(path.read_text())
        except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeError are too
            raise ValueError(
                f"{path} is not valid JSON ({e}); copy config.json from the checkpoint again"
            ) from None
        try:
            return cls.from_dict(hf)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def to_dict(self) -> dict:
        return asdict(self)


def _preset(model_type: str, *shape: float, tied: bool = False, experts: int = 0) -> ModelConfig:
    """vocab, hidden, intermediate, layers, heads, kv heads, rope theta, context: a published
    model's shape, with head_dim 128 and bf16 weights."""
    *sizes, theta, context = shape
    return ModelConfig(
        model_type,
        *sizes,
        head_dim=128,
        rms_norm_eps=1e-5 if model_type == "llama" else 1e-6,
        rope_theta=theta,
        max_position_embeddings=context,
        tie_word_embeddings=tied,
        qk_norm=model_type == "qwen3",
        dtype="bfloat16",
        num_experts=experts,
    )


# Published shapes the notebooks use (from their config.json; for the MoE one expert's MLP).
PRESETS: dict[str, ModelConfig] = {
    "qwen3-0.6b": _preset("qwen3", 151936, 1024, 3072, 28, 16, 8, 1e6, 40960, tied=True),
    "qwen3-8b": _preset("qwen3", 151936, 4096, 12288, 36, 32, 8, 1e6, 40960),
    "qwen3-30b-a3b": _preset("qwen3", 151936, 2048, 768, 48, 32, 4, 1e6, 40960, experts=128),
    "llama-3-8b": _preset("llama", 128256, 4096, 14336, 32, 32, 8, 5e5, 8192),
    "llama-3-70b": _preset("llama", 128256, 8192, 28672, 80, 64, 8, 5e5, 8192),
}


MAX_SPECULATIVE_TOKENS = 16  # beyond this a verify is a prefill: speculation cannot pay
DTYPES = ("auto", "float32", "float16", "bfloat16")  # "auto": float32 on CPU, bfloat16 on CUDA
KV_CACHE_DTYPES = {"auto": None, "fp8": "float8_e4m3fn"}  # None: the model's dtype
_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


@dataclass
class EngineConfig:
    """How the engine serves: the knobs the scheduler and the KV pool obey."""

    block_size: int = 16  # tokens per KV block (vLLM's default)
    kv_cache_bytes: int | None = None  # explicit KV budget; default 256 MiB on CPU
    num_kv_blocks: int | None = None  # or the pool's size in blocks (overrides the budget)
    gpu_memory_utilization: float = 0.9  # CUDA: share of total memory the process may fill
    max_num_seqs: int = 256  # running sequences at once
    max_num_batched_tokens: int = 2048  # token budget of one step (prefill chunks + decodes)
    max_model_len: int | None = None  # default: the model's max_position_embeddings
    enable_chunked_prefill: bool = True
    # "hash" (vLLM's hash-chained full blocks), "radix" (SGLang's token radix tree), None (off),
    # or a class implementing minirt.kv.prefix_cache.PrefixCache. Notebook 11 compares them.
    prefix_cache: str | Callable | None = "hash"
    # a name of minirt.sched.policy.POLICIES, or a function (waiting, cache) -> admission order
    schedule_policy: str | Callable = "fcfs"
    batch_priority: str = "decode-first"  # or "prefill-first": a step of prefills when any fit
    # None: minirt's Scheduler; or a class of minirt.sched.SchedulerBase with its schedule()
    scheduler: type | None = None
    # schedule step n+1 while step n runs (tokens resolved late); None: in generate() on a CUDA
    # device, where the host's work hides behind the GPU's, unless speculating; not on the CPU
    overlap_schedule: bool | None = None
    preemption_mode: str = "recompute"  # or "swap": KV to pinned host memory and back
    swap_space_bytes: int = 256 * 2**20  # host memory for swapped-out KV (preemption_mode="swap")
    device: str = "auto"  # "auto" -> cuda when available, else cpu
    dtype: str = "auto"  # "auto" -> float32 on CPU, bfloat16 on CUDA
    # the KV pool's dtype: "auto" is the model's; "fp8" stores E4M3 (1 byte a value: twice the
    # tokens in the same bytes, half the bytes a decode step reads), saturating at +-448
    kv_cache_dtype: str = "auto"
    seed: int = 0  # for requests without their own seed
    # CPU: torch's intra-op threads (process-wide); None: minirt.threads chooses from the size
    cpu_threads: int | None = None
    trace: bool = False  # record every step (minirt.trace)
    # "auto" -> triton on CUDA, torch on CPU, or a KernelBackend (minirt.kernels.backend)
    kernel_backend: str | object = "auto"
    enforce_eager: bool = False  # CUDA: True launches every kernel from Python (no CUDA graphs)
    cuda_graph_sizes: list[int] | None = None  # batch sizes to capture; default: vLLM's ladder
    # Token counts for the piecewise graphs of every other step (all but attention captured;
    # minirt.engine.cuda_graph.PieceGraphs); None: a ladder up to max_num_batched_tokens, []: off
    piecewise_graph_sizes: list[int] | None = None
    # Speculative decoding: a draft ("draft": the embedded one, or a folder) guesses k a step.
    speculative_model: str | None = None
    num_speculative_tokens: int = 0  # k; 0 = off
    # Named parts a learner may replace (None: minirt's own), with the signatures of
    # minirt.sampler.sample and minirt.spec.rejection.verify.
    sampler: Callable | None = None
    spec_verifier: Callable | None = None
    # Weight quantization at load (minirt.quant): "w4a16-g128", "fp8-dynamic", "int8", ...
    # or a method of your own, minirt.quant.int4_method(...) (lab 4)
    quantization: str | object | None = None

    def __post_init__(self) -> None:
        self._check_numbers()
        self._check_scheduling()
        backend = self.kernel_backend
        if isinstance(backend, str) and backend not in KERNEL_BACKENDS:
            choices = ", ".join(repr(b) for b in KERNEL_BACKENDS) + " or a KernelBackend"
            raise ValueError(f"kernel_backend must be {choices}, got {backend!r}")
        if self.preemption_mode not in ("recompute", "swap"):
            raise ValueError(
                f"preemption_mode must be 'recompute' or 'swap', got {self.preemption_mode!r}"
            )
        k = self.num_speculative_tokens
        if not 0 <= k <= MAX_SPECULATIVE_TOKENS:
            raise ValueError(
                f"num_speculative_tokens must be in [0, {MAX_SPECULATIVE_TOKENS}] (0 = off), "
                f"got {k}"
            )
        if (k > 0) != (self.speculative_model is not None):
            raise ValueError(
                "speculative decoding needs both a draft model and k: set speculative_model "
                "('draft' for the embedded draft, or a model folder) and num_speculative_tokens "
                f">= 1 (got speculative_model={self.speculative_model!r}, "
                f"num_speculative_tokens={k})"
            )

    def _check_numbers(self) -> None:
        """Sizes are ints (numpy ints too), byte budgets finite numbers, names known strings."""
        for name in ("block_size", "max_num_seqs", "max_num_batched_tokens"):
            setattr(self, name, as_int(name, getattr(self, name), 1))
        if self.max_model_len is not None:
            hint = "; None means the model's max_position_embeddings"
            self.max_model_len = as_int("max_model_len", self.max_model_len, 1, hint=hint)
        if self.cpu_threads is not None:
            self.cpu_threads = as_int("cpu_threads", self.cpu_threads, 1, hint="; None chooses")
        if self.num_kv_blocks is not None:
            hint = "; None sizes the pool from kv_cache_bytes"
            self.num_kv_blocks = as_int("num_kv_blocks", self.num_kv_blocks, 1, hint=hint)
        if self.kv_cache_bytes is not None:
            self.kv_cache_bytes = int(as_float("kv_cache_bytes", self.kv_cache_bytes, 1))
        self.swap_space_bytes = int(as_float("swap_space_bytes", self.swap_space_bytes, 0))
        share = as_float("gpu_memory_utilization", self.gpu_memory_utilization)
        if not 0.0 < share <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {share}")
        self.gpu_memory_utilization = share
        self.num_speculative_tokens = as_int("num_speculative_tokens", self.num_speculative_tokens)
        self.seed = as_int("seed", self.seed, 0, MAX_SEED)
        if self.cuda_graph_sizes is not None:
            sizes = self.cuda_graph_sizes
            if not isinstance(sizes, list | tuple) or not sizes:
                hint = "a list of batch sizes (at least one) or None"
                raise ValueError(f"cuda_graph_sizes must be {hint}, got {sizes!r}")
            self.cuda_graph_sizes = [as_int("cuda_graph_sizes", n, 1) for n in sizes]
        if self.piecewise_graph_sizes is not None:
            sizes = self.piecewise_graph_sizes
            if not isinstance(sizes, list | tuple):
                hint = "a list of token counts ([] for none) or None"
                raise ValueError(f"piecewise_graph_sizes must be {hint}, got {sizes!r}")
            self.piecewise_graph_sizes = [as_int("piecewise_graph_sizes", n, 1) for n in sizes]
        self.dtype = str(self.dtype).removeprefix("torch.")  # torch.float16 -> "float16"
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.kv_cache_dtype not in KV_CACHE_DTYPES:
            choices = sorted(KV_CACHE_DTYPES)
            raise ValueError(
                f"kv_cache_dtype must be one of {choices}, got {self.kv_cache_dtype!r}"
            )
        if not isinstance(self.device, str) or not _DEVICE.fullmatch(self.device):
            raise ValueError(
                f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"
            )

    def _check_scheduling(self) -> None:
        cache = self.prefix_cache  # a name is looked up when the engine builds the cache
        if not (cache is None or isinstance(cache, str) or callable(cache)):
            raise ValueError(f"prefix_cache must be a name, None or a class, got {cache!r}")
        if self.scheduler is not None and not isinstance(self.scheduler, type):
            raise ValueError(
                f"scheduler must be a class (with schedule()) or None, got {self.scheduler!r}"
            )
        for name in ("sampler", "spec_verifier"):
            part = getattr(self, name)
            if part is not None and not callable(part):
                raise ValueError(f"{name} must be a function or None (minirt's), got {part!r}")
        valid = ("decode-first", "prefill-first")
        if self.batch_priority not in valid:
            raise ValueError(f"batch_priority must be one of {valid}, got {self.batch_priority!r}")
        # (the name itself is looked up in minirt.sched.policy.POLICIES by the scheduler)
        policy = self.schedule_policy
        if isinstance(policy, str) and policy != "fcfs" and self.prefix_cache is None:
            raise ValueError(
                f"schedule_policy={policy!r} orders requests by their cached prefix; turn a "
                "prefix_cache on or use 'fcfs'"
            )
        if self.overlap_schedule and self.num_speculative_tokens:
            raise ValueError("overlap_schedule does not combine with speculative decoding yet; "
                             "turn one of them off")  # fmt: skip

    @classmethod
    def preset(cls, name: str | None, **overrides) -> EngineConfig:
        """A serving system's defaults (SCHEDULING_PRESETS; None: minirt's), then `overrides`."""
        if name is not None and name not in SCHEDULING_PRESETS:
            raise ValueError(f"unknown preset {name!r}; pick one of {sorted(SCHEDULING_PRESETS)}")
        return cls.from_kwargs(**{**SCHEDULING_PRESETS.get(name, {}), **overrides})

    @classmethod
    def from_kwargs(cls, **kwargs) -> EngineConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown engine argument(s) {unknown}; valid ones: {sorted(known)}")
        return cls(**kwargs)

    def to_dict(self) -> dict:
        out = asdict(self)
        for name in ("schedule_policy", "prefix_cache", "sampler", "spec_verifier", "scheduler"):
            if callable(getattr(self, name)):
                out[name] = getattr(getattr(self, name), "__name__", "custom")
        if not isinstance(self.kernel_backend, str):
            out["kernel_backend"] = getattr(self.kernel_backend, "name", "custom")
        if self.quantization is not None and not isinstance(self.quantization, str):
            out["quantization"] = getattr(self.quantization, "name", "custom")
        return out


# How vLLM and SGLang schedule by default (notebook 11 compares them).
SCHEDULING_PRESETS: dict[str, dict] = {
    "vllm": {"prefix_cache": "hash", "schedule_policy": "fcfs", "batch_priority": "decode-first",
             "enable_chunked_prefill": True, "overlap_schedule": False},
    "sglang": {"prefix_cache": "radix", "schedule_policy": "lpm",
               "batch_priority": "prefill-first", "enable_chunked_prefill": True,
               "overlap_schedule": True},
}  # fmt: skip
