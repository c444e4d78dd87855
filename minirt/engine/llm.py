"""LLM: the public API. Load weights, preallocate the KV pool, then loop schedule -> run -> update.

`LLM(model=None, **engine_kwargs).generate(prompts, SamplingParams)` as in vLLM. Every prompt is
checked before any is queued and a failure mid-run frees every block: bad input leaves the engine
usable. `trace=True` records each step (minirt.trace). Notebook 00 (tour).
"""

from __future__ import annotations

import itertools
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from minirt.config import KV_CACHE_DTYPES, EngineConfig
from minirt.engine.cuda_graph import (
    DecodeGraphs,
    PieceGraphs,
    default_graph_sizes,
    default_piece_sizes,
)
from minirt.engine.inputs import param_list, prompt_list, token_ids
from minirt.engine.model_runner import ModelRunner
from minirt.engine.overlap import OverlapLoop
from minirt.kernels.backend import get_backend
from minirt.kernels.cpu import gemv_layout
from minirt.kv import allocate_kv_pool, kv_cache_bytes_per_token, num_kv_blocks
from minirt.kv.caches import make_prefix_cache
from minirt.kv.pool import kv_budget_bytes
from minirt.kv.swap import SwapSpace
from minirt.model.loader import load_model, resolve_model_path
from minirt.model.tokenizer import Tokenizer, load_tokenizer
from minirt.quant.linear import check_engine_method, quantize_model
from minirt.sampling_params import SamplingParams
from minirt.sched import Batch, Row, Scheduler, Sequence
from minirt.sched.stop import StopRule
from minirt.spec.decoder import SpecRunner
from minirt.spec.rejection import verify
from minirt.threads import pin_cpu_threads
from minirt.trace import Recorder, RequestEvent, ScheduledSeq, StepEvent


@dataclass
class RequestOutput:
    request_id: int  # the sequence id the engine and its trace use
    prompt: str | list[int]
    text: str
    token_ids: list[int]  # generated tokens only
    finish_reason: str  # "stop" (EOS or a stop string) | "length"
    num_cached_tokens: int = 0  # prompt tokens found in the prefix cache


@dataclass
class GenerateStats:
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0
    num_generated_tokens: int = 0
    elapsed_s: float = 0.0
    num_steps: int = 0
    num_preemptions: int = 0
    num_draft_tokens: int = 0  # speculative decoding: guesses proposed ...
    num_accepted_tokens: int = 0  # ... and accepted by the target

    @property
    def prefix_cache_hit_rate(self) -> float:
        return self.num_cached_tokens / max(1, self.num_prompt_tokens)

    @property
    def acceptance_rate(self) -> float:
        """alpha, estimated: the share of draft tokens the target accepted (0 without any)."""
        return self.num_accepted_tokens / max(1, self.num_draft_tokens)

    def to_dict(self) -> dict:
        return {**asdict(self), "prefix_cache_hit_rate": self.prefix_cache_hit_rate,
                "acceptance_rate": self.acceptance_rate}  # fmt: skip


def _pick_device(name: str) -> torch.device:
    """EngineConfig checked the spelling; here: is that device on this machine?"""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            fix = "use device='cpu' or 'auto'"
            raise ValueError(f"device={name!r} but this machine has no usable CUDA GPU; {fix}")
        if device.index is not None and device.index >= count:
            have = f"{count} CUDA GPU(s), cuda:0..cuda:{count - 1}"
            raise ValueError(f"device={name!r} but this machine has {have}; pick one of them")
    return device


class LLM:
    def __init__(self, model: str | Path | None = None, preset: str | None = None, **engine_kwargs):
        # preset="vllm" | "sglang": that system's scheduling defaults (config.SCHEDULING_PRESETS)
        self.config = EngineConfig.preset(preset, **engine_kwargs)
        self._load_model(model)
        self._build_engine()
        self.last_stats = GenerateStats()
        self._seq_ids = itertools.count()

    def _load_model(self, model: str | Path | None) -> None:
        """Weights (quantized if asked), kernels, tokenizer and the context length."""
        if self.config.quantization is not None:  # before any weight is read
            check_engine_method(self.config.quantization)
        self.model_path = resolve_model_path(model)
        self.device = _pick_device(self.config.device)
        auto = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.dtype = auto if self.config.dtype == "auto" else getattr(torch, self.config.dtype)
        kv = KV_CACHE_DTYPES[self.config.kv_cache_dtype]  # the pool's: the model's, or FP8
        self.kv_dtype = self.dtype if kv is None else getattr(torch, kv)
        self.model, self.model_config = load_model(self.model_path, self.dtype, self.device)
        if self.device.type == "cpu":  # few threads: a tiny model's waiting threads only spin
            pin_cpu_threads(self.model_config, self.config.cpu_threads)
        self.kernels = get_backend(self.config.kernel_backend, self.device, self.dtype)
        self.model.use_kernels(self.kernels)
        if self.config.quantization:  # before the pool is sized and the graphs captured
            quantize_model(self.model, self.config.quantization)
        if self.device.type == "cpu" and self.dtype == torch.float32:
            gemv_layout(self.model)  # MKL's one-row products are faster on column-major weights
        self.tokenizer: Tokenizer = load_tokenizer(self.model_path)
        context = self.model_config.max_position_embeddings
        self.max_model_len = min(self.config.max_model_len or context, context)
        budget = self.config.max_num_batched_tokens
        if not self.config.enable_chunked_prefill and budget < self.max_model_len:
            raise ValueError(
                f"without chunked prefill a whole prompt must fit one step: "
                f"max_num_batched_tokens ({budget}) < max_model_len "
                f"({self.max_model_len}); raise it, lower max_model_len, or enable chunked prefill"
            )

    def _build_engine(self) -> None:
        """The KV pool, the prefix cache, the scheduler, the runner(s) and the loop."""
        mc, cfg, bs = self.model_config, self.config, self.config.block_size
        # The pool is allocated once, now: a budget too small fails at start-up, not mid-request.
        self.draft_model, self.draft_config = self._load_draft()
        self.num_blocks = cfg.num_kv_blocks or self._blocks_in_budget()
        self.kv_pool = allocate_kv_pool(mc, self.num_blocks, bs, self.kv_dtype, self.device)
        # the block books: hash blocks, radix tree, none, or the learner's (minirt.kv.caches)
        bm = self.block_manager = make_prefix_cache(cfg.prefix_cache, self.num_blocks, bs)
        host_blocks = 0  # preemption_mode="swap": host blocks of the same shape as the pool's
        if cfg.preemption_mode == "swap":
            host_blocks = cfg.swap_space_bytes // (bs * kv_cache_bytes_per_token(mc, self.kv_dtype))
        swap = SwapSpace(self.kv_pool, host_blocks) if host_blocks else None
        self.eos_ids = set(mc.eos_token_id) | ({self.tokenizer.eos_token_id} - {None})
        stop = StopRule(self.max_model_len, bm.num_blocks * bs, self.eos_ids, self.tokenizer.decode)
        # minirt's Scheduler, or the learner's (lab 7): the same constructor, its own schedule()
        make = cfg.scheduler or Scheduler
        self.scheduler = make(cfg, bm, host_blocks, self.max_model_len, stop)
        self.runner = ModelRunner(self.model, self.kv_pool, bm, cfg.seed, swap, cfg.sampler)
        self.spec: SpecRunner | None = None
        if self.draft_model is not None:  # its own pool, the target's block tables
            pool = allocate_kv_pool(self.draft_config, self.num_blocks, bs, self.kv_dtype,
                                    self.device)  # fmt: skip
            draft = ModelRunner(self.draft_model, pool, bm, cfg.seed)
            self.spec = SpecRunner(self.runner, draft, cfg.spec_verifier or verify)
        self.capture_graphs()
        self.recorder: Recorder | None = None
        self.trace_cache = False  # with trace: snapshot the prefix cache every step (dashboard)
        self.overlap = None
        overlap = cfg.overlap_schedule
        # None: generate() overlaps on a CUDA device (it drains the last step itself); step()
        # overlaps only where its caller drains too (`overlap_steps`: the server sets it)
        self.overlap_steps = overlap is True
        self._generating = False
        if overlap is None:
            overlap = self.device.type == "cuda" and not cfg.num_speculative_tokens
        if overlap:
            self.overlap = OverlapLoop(self.scheduler, self.runner, self._on_step)
            self.runner.pin_inputs = self.device.type == "cuda"

    # -- public API ------------------------------------------------------------------------
    @property
    def pool_capacity_tokens(self) -> int:
        return self.num_blocks * self.config.block_size

    def capture_graphs(self) -> None:
        """(Re)capture the CUDA graphs of the target (and the draft): decode steps whole, other
        steps in pieces cut at attention. A graph replays the
        kernels and weights it recorded: after swapping layers (quantize_model) capture again."""
        # Graphs need launch shapes independent of the data: Triton's kernels, not the references.
        if self.device.type == "cuda" and self.kernels.capturable and not self.config.enforce_eager:
            # With speculation a verify (and a draft pass) is k + 1 one-token rows per sequence.
            rows = self.config.max_num_seqs * (1 + self.config.num_speculative_tokens)
            sizes = self.config.cuda_graph_sizes or default_graph_sizes(rows)
            blocks = -(-self.max_model_len // self.config.block_size)
            tokens = self.config.piecewise_graph_sizes
            if tokens is None:
                tokens = default_piece_sizes(self.config.max_num_batched_tokens)
            for runner in (self.runner, self.spec.draft) if self.spec else (self.runner,):
                runner.graphs = runner.piece_graphs = None  # free the old graphs' memory first
                graphs = DecodeGraphs(runner.model, sizes, blocks, self.max_model_len, self.device)
                graphs.capture()
                runner.graphs = graphs
                if tokens:  # every other step: graphs of all but attention
                    pieces = PieceGraphs(runner.model, tokens, self.device)
                    pieces.capture()
                    runner.piece_graphs = pieces

    def generate(
        self,
        prompts: str | list[str] | list[list[int]],
        sampling_params: SamplingParams | list[SamplingParams] | None = None,
        use_tqdm: bool = True,
    ) -> list[RequestOutput]:
        # Every prompt and every SamplingParams is checked before any request is queued.
        prompts = prompt_list(prompts)
        params = param_list(sampling_params, len(prompts))
        token_lists = [self._encode_and_check(i, p) for i, p in enumerate(prompts)]

        t0 = time.perf_counter()
        if self.config.trace:
            self.recorder = Recorder(meta=self._trace_meta())
        seqs = [
            Sequence(next(self._seq_ids), t, p) for t, p in zip(token_lists, params, strict=True)
        ]
        before = (self.scheduler.num_steps, self.scheduler.num_preemptions, *self._spec_counts())
        # in a log (stderr not a terminal) a refresh every 30 s, not hundreds of \r updates
        interval = 0.1 if sys.stderr.isatty() else 30.0
        bar = tqdm(
            total=len(seqs), desc="generate", disable=not use_tqdm, unit="req", mininterval=interval
        )
        try:
            for seq in seqs:
                self.scheduler.add(seq)
            self._generating = True
            while self.scheduler.has_unfinished():
                bar.update(len(self.step(t0)))
            if self.overlap is not None:  # the last step's tokens (all dropped: every sequence
                self.overlap.drain(t0)  # stopped before it was read)
        finally:
            bar.close()
            self._generating = False
            if self.overlap is not None:
                self.overlap.inflight = None
            for seq in self.scheduler.abort_all():  # only after an error: nothing is leaked
                self.runner.release(seq.seq_id)
        self.last_stats = self._stats(seqs, time.perf_counter() - t0, before)
        if self.recorder is not None:
            self._record_requests(seqs)
        return [self._output(p, s) for p, s in zip(prompts, seqs, strict=True)]

    @property
    def _overlapping(self) -> bool:
        return self.overlap is not None and (self._generating or self.overlap_steps)

    def drain(self, t0: float | None = None) -> list[Sequence]:
        """The overlapped step still in flight: wait for it, resolve its tokens; who finished
        (nothing when no step is in flight). A step-wise caller of the overlapped `step()` calls
        this once its sequences are all done: that step's tokens were never anyone's."""
        if self.overlap is None:
            return []
        return self.overlap.drain(time.perf_counter() if t0 is None else t0)

    def step(self, t0: float | None = None) -> list[Sequence]:
        """One engine step: schedule, run the model, update; returns sequences that finished."""
        t0 = time.perf_counter() if t0 is None else t0
        if self._overlapping:
            return self.overlap.step(t0)
        t_sched = time.perf_counter()
        batch = self.scheduler.schedule()
        if not batch.seqs:
            raise RuntimeError(
                "the scheduler found nothing to run although requests are waiting; this is a bug "
                f"(free blocks: {self.block_manager.num_free_blocks}/{self.num_blocks})"
            )
        t_fwd = time.perf_counter()
        computed = [s.num_computed_tokens for s in batch.seqs]  # before this step (the trace)
        self.runner.prepare_s = 0.0
        sampled = (self.spec or self.runner).run(batch)
        t_done = time.perf_counter()
        finished = self.scheduler.postprocess(batch, sampled, t_done - t0)
        for seq in finished:
            self.runner.release(seq.seq_id)
        device = t_done - t_fwd - self.runner.prepare_s
        cpu = time.perf_counter() - t_sched - device
        self._on_step(batch, computed, finished, t_done - t0, t_fwd - t_sched, t_done - t_fwd,
                      cpu_s=cpu, device_s=device)  # fmt: skip
        return finished

    @torch.inference_mode()
    def score(self, prompt: str | list[int]) -> torch.Tensor:
        """Logits after every prefix of `prompt`: [num_tokens, vocab] fp32, on the CPU. The
        tokens go through the paged pool in chunks of max_num_batched_tokens, in fresh blocks (no
        prefix-cache reads or writes) freed afterwards. Perplexity and the transformers checks."""
        if self.scheduler.has_unfinished():
            raise RuntimeError("score() needs an idle engine; call it outside generate()")
        toks = self._encode_and_check(0, prompt)
        seq_id, chunk, chunks = next(self._seq_ids), self.config.max_num_batched_tokens, []
        self.block_manager.allocate(seq_id, [], len(toks))  # no tokens given: no cache hits
        try:
            for start in range(0, len(toks), chunk):
                rows = [Row(seq_id, toks, start, min(chunk, len(toks) - start))]
                chunks.append(self.runner.logits(rows).cpu())
        finally:
            self.block_manager.free(seq_id)
        return torch.cat(chunks)

    # -- helpers ---------------------------------------------------------------------------
    def _encode_and_check(self, i: int, prompt) -> list[int]:
        vocab = self.model_config.vocab_size
        toks = token_ids(i, prompt, vocab)  # None for text
        if toks is None:
            toks = self.tokenizer.encode(prompt)
            if toks and max(toks) >= vocab:
                raise ValueError(
                    f"prompt {i} encodes to token id {max(toks)}, outside the model's "
                    f"[0, {vocab}); the tokenizer.json does not belong to this model"
                )
        if not toks:
            raise ValueError(f"prompt {i} is empty; give it at least one token")
        if len(toks) >= self.max_model_len:
            raise ValueError(
                f"prompt {i} has {len(toks):,} tokens but max_model_len is {self.max_model_len:,} "
                "(room for at least one new token is needed); shorten the prompt or raise "
                "max_model_len"
            )
        if len(toks) >= self.pool_capacity_tokens:
            raise ValueError(
                f"prompt {i} has {len(toks):,} tokens but the whole KV pool holds "
                f"{self.pool_capacity_tokens:,} ({self.num_blocks} blocks of "
                f"{self.config.block_size}); raise kv_cache_bytes or shorten the prompt"
            )
        return toks

    def _stats(self, seqs: list[Sequence], elapsed: float, before: tuple) -> GenerateStats:
        """What one generate() call did; `before`: steps, preemptions, drafted, accepted then."""
        steps0, preempt0, drafted0, accepted0 = before
        return GenerateStats(
            num_prompt_tokens=sum(s.num_prompt_tokens for s in seqs),
            num_cached_tokens=sum(min(s.num_cached_tokens, s.num_prompt_tokens) for s in seqs),
            num_generated_tokens=sum(len(s.output_token_ids) for s in seqs),
            elapsed_s=elapsed,
            num_steps=self.scheduler.num_steps - steps0,
            num_preemptions=self.scheduler.num_preemptions - preempt0,
            num_draft_tokens=self._spec_counts()[0] - drafted0,
            num_accepted_tokens=self._spec_counts()[1] - accepted0,
        )

    def _record_requests(self, seqs: list[Sequence]) -> None:
        for s in seqs:
            self.recorder.record(
                RequestEvent(
                    seq_id=s.seq_id,
                    prompt_len=s.num_prompt_tokens,
                    arrival_s=s.arrival_s,
                    first_token_s=s.first_token_s,
                    finish_s=s.finish_s,
                    num_output_tokens=len(s.output_token_ids),
                    finish_reason=s.finish_reason or "abort",
                )
            )

    def _spec_counts(self) -> tuple[int, int]:
        return (self.spec.num_proposed, self.spec.num_accepted) if self.spec else (0, 0)

    def _blocks_in_budget(self) -> int:
        """Blocks that fit the KV budget (kv_cache_bytes, or free GPU memory x utilisation);
        with a draft, both pools get the same number of blocks out of the one budget."""
        mc, cfg = self.model_config, self.config
        budget = kv_budget_bytes(self.device, cfg.kv_cache_bytes, cfg.gpu_memory_utilization)
        if self.draft_config is not None:
            per_token = kv_cache_bytes_per_token(mc, self.kv_dtype)
            both = per_token + kv_cache_bytes_per_token(self.draft_config, self.kv_dtype)
            budget = budget * per_token // both
        return num_kv_blocks(mc, cfg.block_size, self.kv_dtype, budget)

    def _load_draft(self):
        """The speculative decoding draft (EngineConfig.speculative_model), or (None, None)."""
        if self.config.speculative_model is None:
            return None, None
        path = resolve_model_path(self.config.speculative_model)
        draft, config = load_model(path, self.dtype, self.device)
        if config.vocab_size != self.model_config.vocab_size:
            raise ValueError(
                f"the draft {path} has a vocabulary of {config.vocab_size} tokens but the target "
                f"has {self.model_config.vocab_size}: a draft must share the target's tokenizer "
                "(for the embedded target, speculative_model='draft')"
            )
        draft.use_kernels(self.kernels)
        return draft, config

    def _output(self, prompt, seq: Sequence) -> RequestOutput:
        prompt = prompt if isinstance(prompt, str) else seq.prompt_token_ids  # ids as a list
        ids = seq.output_token_ids
        p = seq.sampling_params
        if ids and ids[-1] in self.eos_ids and not p.ignore_eos:
            ids = ids[:-1]  # the EOS token is not part of the text
        text = self.tokenizer.decode(ids)
        for s in p.stop:
            text = text.split(s)[0]  # the text before the first stop string
        cached = min(seq.num_cached_tokens, seq.num_prompt_tokens)
        reason = seq.finish_reason or "abort"
        return RequestOutput(seq.seq_id, prompt, text, seq.output_token_ids, reason, cached)

    def _trace_meta(self) -> dict:
        return {
            "model": str(self.model_path),
            "model_config": self.model_config.to_dict(),
            "engine_config": self.config.to_dict(),
            "num_blocks": self.num_blocks,
            "block_size": self.config.block_size,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
        }

    def _on_step(self, batch: Batch, computed, finished, now_s, schedule_s, forward_s,
                 cpu_s=0.0, device_s=0.0):  # fmt: skip
        """After each step, the plain loop's or the overlapped one's: the trace, when recording."""
        if self.recorder is None:
            return
        bm = self.block_manager
        rows = zip(batch.seqs, batch.num_new_tokens, computed, batch.is_prefill, strict=True)
        self.recorder.record(
            StepEvent(
                step=batch.step,
                time_s=now_s,
                scheduled=[ScheduledSeq(s.seq_id, n, c, p) for s, n, c, p in rows],
                num_prefill_tokens=batch.num_prefill_tokens,
                num_decode_tokens=batch.num_decode_tokens,
                num_running=len(self.scheduler.running),
                num_waiting=len(self.scheduler.waiting),
                preempted=[s.seq_id for s in batch.preempted],
                finished=[s.seq_id for s in finished],
                block_tables={k: list(v) for k, v in bm.tables.items()},
                num_free_blocks=bm.num_free_blocks,
                num_cached_blocks=bm.num_cached_blocks,
                prefix_hit_tokens=batch.prefix_hit_tokens,
                schedule_ms=schedule_s * 1e3,
                forward_ms=forward_s * 1e3,
                swapped_out=[seq_id for seq_id, _ in batch.swap_out],
                swapped_in=[seq_id for seq_id, _ in batch.swap_in],
                num_swapped=len(self.scheduler.swapped),
                swap_blocks=sum(len(b) for _, b in batch.swap_out + batch.swap_in),
                spec=[s.to_dict() for s in self.spec.last_steps] if self.spec else [],
                cpu_ms=cpu_s * 1e3,
                device_ms=device_s * 1e3,
                overlap=self._overlapping,
                cache=bm.to_dict() if self.trace_cache else {},
            )
        )
