"""Continuous batching: every step, decide which sequences run and how many tokens each brings.

One `schedule()` call returns one `Batch` under a token budget: running sequences first (a decode
is 1 token, an unfinished prefill its next chunk), preempting the newest when blocks run out (by
recompute: its KV is rebuilt later, or by swapping its KV to host memory and back), then swapped
sequences, then waiting ones in the policy's order (minirt.sched.policy). `SchedulerBase` keeps
the queues and what follows a forward; a scheduler is a class of it with its own `schedule()`
(`LLM(scheduler=...)`, lab 7). Notebooks 02 and 11.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from minirt.config import EngineConfig
from minirt.kv import BlockManager, RadixCache
from minirt.sched.policy import InBatchPrefixes, fcfs, resolve_policy
from minirt.sched.sequence import Sequence, SequenceStatus
from minirt.sched.stop import StopRule


@dataclass(frozen=True)
class Row:
    """What one forward computes for one sequence: `token_ids[start : start + n]` at positions
    start .. start + n - 1, through its block table. A scheduled sequence is one row; speculative
    decoding builds its own (the draft's own `start`; one row per guess appended to token_ids)."""

    seq_id: int
    token_ids: list[int]
    start: int
    n: int


@dataclass
class Batch:
    """One step's decision: sequences, how many new tokens each computes, and why."""

    step: int
    seqs: list[Sequence] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)
    is_prefill: list[bool] = field(default_factory=list)  # prompt/recompute tokens, not a decode
    samples: list[bool] = field(default_factory=list)  # reaches its last token: gets a new one
    # speculative decoding: slots past a decode for the draft's guesses (vLLM's lookahead slots)
    lookahead: list[int] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    # (seq_id, device blocks) whose KV the runner copies out, then (seq_id, fresh blocks) back in
    swap_out: list[tuple[int, list[int]]] = field(default_factory=list)
    swap_in: list[tuple[int, list[int]]] = field(default_factory=list)
    prefix_hit_tokens: int = 0  # tokens found in the prefix cache by this step's admissions
    # (src, dst) blocks to copy after the swaps, in every pool: copy-on-write of a shared partial
    # block (BlockManager.prepare_write), a radix match ending inside a block (its private copy)
    kv_copies: list[tuple[int, int]] = field(default_factory=list)

    def add(self, seq: Sequence, n: int, lookahead: int = 0) -> None:
        self.seqs.append(seq)
        self.num_new_tokens.append(n)
        self.is_prefill.append(not is_decode(seq, n))
        self.samples.append(seq.num_computed_tokens + n == seq.num_tokens)
        self.lookahead.append(lookahead)

    @property
    def num_prefill_tokens(self) -> int:
        return sum(n for n, p in zip(self.num_new_tokens, self.is_prefill, strict=True) if p)

    @property
    def num_decode_tokens(self) -> int:
        return sum(n for n, p in zip(self.num_new_tokens, self.is_prefill, strict=True) if not p)

    def rows(self) -> list[Row]:
        """The forward's input: each sequence's new tokens after its computed ones."""
        pairs = zip(self.seqs, self.num_new_tokens, strict=True)
        return [Row(s.seq_id, s.token_ids, s.num_computed_tokens, n) for s, n in pairs]


def is_decode(seq: Sequence, n: int) -> bool:
    """One new token, the last sampled one: a decode (not a prompt or recompute chunk)."""
    # num_tokens > num_prompt_tokens, not bool(output_token_ids): no slice per sequence per step
    last = seq.num_computed_tokens == seq.num_tokens - 1
    return n == 1 and last and seq.num_tokens > seq.num_prompt_tokens


class SchedulerBase:
    """The queues and what follows a forward, which every scheduler shares; a scheduler adds
    `schedule()`, the step that fills a `Batch` (minirt's below; lab 7 writes its own)."""

    def __init__(
        self,
        config: EngineConfig,
        block_manager: BlockManager,
        num_host_blocks: int = 0,
        max_model_len: int | None = None,
        stop: StopRule | None = None,
    ):
        self.config = config
        self.bm = block_manager
        self.policy = resolve_policy(config.schedule_policy, block_manager)  # sched/policy.py
        self.max_model_len = max_model_len or config.max_model_len  # caps speculation's lookahead
        pool_tokens = block_manager.num_blocks * block_manager.block_size
        self.stop = stop or StopRule(self.max_model_len or pool_tokens, pool_tokens)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.swapped: deque[Sequence] = deque()
        self.free_host_blocks = num_host_blocks  # the runner's SwapSpace holds the bytes
        self.num_swap_outs = self.num_steps = self.num_preemptions = 0
        self.last_batch: Batch | None = None

    def add(self, seq: Sequence) -> None:
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running or self.swapped)

    def _done(self, batch: Batch) -> Batch:
        batch.kv_copies += self.bm.take_copies()
        self.num_steps += 1
        self.last_batch = batch  # for those who log steps (the server's step log)
        return batch

    def postprocess(
        self, batch: Batch, sampled: dict[int, list[int]], now_s: float
    ) -> list[Sequence]:
        """After the forward, the one owner of what follows (nano-vllm's postprocess): keep each
        sequence's new tokens up to a stop, append them, finish and free whoever stopped."""
        for seq in batch.seqs:  # several tokens (speculation): keep those up to a stop
            if seq.seq_id in sampled:
                sampled[seq.seq_id] = self.stop.keep(seq, sampled[seq.seq_id])
        self.update(batch, sampled)
        return [s for s in batch.seqs if s.seq_id in sampled and self.check_stop(s, now_s)]

    def check_stop(self, seq: Sequence, now_s: float) -> bool:
        """Stamp the first token's time; finish the sequence if its last token stops it."""
        if seq.first_token_s is None:
            seq.first_token_s = now_s
        reason = self.stop.reason(seq.token_ids, seq.num_prompt_tokens, seq.sampling_params)
        if reason is None:
            return False
        seq.finish_s = now_s
        self.finish(seq, reason)
        return True

    def update(self, batch: Batch, sampled: dict[int, list[int]]) -> None:
        """Advance computed counts and append the new tokens: one, or with speculation the
        accepted guesses (their KV is computed: the verify did it) and one more."""
        rows = zip(batch.seqs, batch.num_new_tokens, batch.is_prefill, strict=True)
        for seq, n, prefill in rows:
            if seq.status is not SequenceStatus.RUNNING:
                continue  # finished while this step ran (overlap_schedule): its token is dropped
            tokens = sampled.get(seq.seq_id, [])
            seq.num_computed_tokens += n + max(0, len(tokens) - 1)
            seq.token_ids += tokens
            if prefill:  # decode tokens enter the radix tree when the sequence finishes
                self._cache_computed(seq)

    def _cache_computed(self, seq: Sequence) -> None:
        """Hand the radix cache the tokens whose KV is in the pool (of both models). As SGLang,
        after a prompt chunk and at the end, not every decode token: each insert re-walks the
        path from the root, which cost more than the forward (bench sched, H200: 2x slower)."""
        valid = seq.num_computed_tokens
        if self.config.num_speculative_tokens > 0:
            valid = min(valid, seq.num_draft_computed_tokens)
        self.bm.cache_computed(seq.seq_id, seq.token_ids, valid)

    def finish(self, seq: Sequence, reason: str) -> None:
        """A sequence stopped; with overlap_schedule it may already be preempted when its last
        token is resolved, so it leaves whichever queue holds it."""
        if seq.status is SequenceStatus.RUNNING:
            self._cache_computed(seq)  # its answer is a later turn's prefix
            self.bm.free(seq.seq_id)
            self.running.remove(seq)
        elif seq.status is SequenceStatus.WAITING:
            self.waiting.remove(seq)
        elif seq.status is SequenceStatus.SWAPPED:  # the runner's release frees its host blocks
            self.free_host_blocks += self.bm.blocks_for(seq.num_computed_tokens)
            self.swapped.remove(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason

    def abort_all(self) -> list[Sequence]:
        """Drop every unfinished sequence and give back its blocks (after an error)."""
        dropped = list(self.running) + list(self.waiting) + list(self.swapped)
        for seq in self.swapped:
            self.free_host_blocks += self.bm.blocks_for(seq.num_computed_tokens)
        for seq in self.running:
            # Blocks published for a step that never ran hold no valid KV: unpublish them.
            self.bm.uncommit(seq.seq_id, seq.num_computed_tokens)
            self.bm.free(seq.seq_id)
        self.running.clear()
        self.waiting.clear()
        self.swapped.clear()  # their host blocks: ModelRunner.release gives them back
        return dropped


class Scheduler(SchedulerBase):
    def schedule(self) -> Batch:
        batch = Batch(step=self.num_steps)
        budget = self.config.max_num_batched_tokens
        if self.config.batch_priority == "prefill-first" and self.waiting and not self.swapped:
            # SGLang: prompt chunks and new requests first; decodes only when no prefill fits
            budget = self._schedule_running(batch, budget, prefills_only=True)
            budget = self._admit(batch, budget)
            if batch.seqs:
                return self._done(batch)
        # 1. Running sequences, oldest first: each needs its next token(s) and the blocks for them.
        budget = self._schedule_running(batch, budget)

        # 2. Swapped-out sequences back, oldest first, into fresh blocks (their KV is copied in)
        while self.swapped and budget > 0 and not batch.preempted:
            seq = self.swapped[0]
            n = min(seq.num_tokens - seq.num_computed_tokens, budget)
            kept = self.bm.blocks_for(seq.num_computed_tokens)  # blocks whose KV was swapped out
            if self.bm.blocks_for(seq.num_computed_tokens + n) > self.bm.num_free_blocks:
                break
            self.bm.allocate(seq.seq_id, [], seq.num_computed_tokens + n)  # fresh: no cache hits
            self.bm.commit(seq.seq_id, seq.token_ids, seq.num_computed_tokens + n)
            batch.swap_in.append((seq.seq_id, self.bm.block_table(seq.seq_id)[:kept]))
            seq.num_draft_computed_tokens = 0  # the draft's KV stayed behind: it recomputes it
            self.free_host_blocks += kept
            self.swapped.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            batch.add(seq, n)
            budget -= n

        # 3. Waiting sequences in the policy's order (not while any is preempted or swapped out)
        self._admit(batch, budget)
        return self._done(batch)

    def _schedule_running(self, batch: Batch, budget: int, prefills_only: bool = False) -> int:
        """Running sequences, oldest first; preempt the newest when blocks run out."""
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            n = seq.num_tokens - seq.num_computed_tokens
            if prefills_only and is_decode(seq, n):
                i += 1
                continue
            if n > budget and not self.config.enable_chunked_prefill:
                break
            n = min(n, budget)
            k = self._lookahead(seq, n, budget)
            while not self.bm.can_append(seq.seq_id, seq.num_computed_tokens + n + k):
                victim = self.running.pop()  # the newest loses its blocks
                self._preempt(victim, batch)
                if victim is seq:
                    break
            if seq.status is not SequenceStatus.RUNNING:
                break
            self.bm.append(seq.seq_id, seq.num_computed_tokens + n + k)
            # Un-share a forked partial block before publishing: its other holder writes into it.
            batch.kv_copies += self.bm.prepare_write(seq.seq_id, seq.num_computed_tokens)
            self.bm.commit(seq.seq_id, seq.token_ids, seq.num_computed_tokens + n)  # known ones
            batch.add(seq, n, k)
            budget -= n + k
            i += 1
        return budget

    def _admit(self, batch: Batch, budget: int) -> int:
        """Admit waiting sequences in policy order while blocks, budget and seats last."""
        if batch.preempted or self.swapped:
            return budget
        # the radix tree inserts after the forward: a prefix computed this step hits next step
        defer = self.policy is not fcfs and isinstance(self.bm, RadixCache)
        if defer:  # prompts being computed: running ones not yet done, this step's admissions
            admitted = InBatchPrefixes(
                s.token_ids for s in self.running if s.num_computed_tokens < s.num_prompt_tokens
            )
        for seq in self.policy(list(self.waiting), self.bm):
            if budget <= 0 or len(self.running) >= self.config.max_num_seqs:
                break
            cached = self.bm.match_len(seq.token_ids)
            if defer and admitted.defers(seq.token_ids, cached):
                continue  # the other request computes this prefix now: hit it next step
            n = seq.num_tokens - cached
            if n > budget and not self.config.enable_chunked_prefill:
                break
            n = min(n, budget)
            if not self.bm.can_allocate(seq.token_ids, cached + n):
                break
            cached = self.bm.allocate(seq.seq_id, seq.token_ids, cached + n)
            # (the cached KV is there for the draft too)
            seq.num_computed_tokens = seq.num_cached_tokens = seq.num_draft_computed_tokens = cached
            self.bm.commit(seq.seq_id, seq.token_ids, seq.num_computed_tokens + n)
            batch.prefix_hit_tokens += seq.num_cached_tokens
            self.waiting.remove(seq)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            if defer:
                admitted.add(seq.token_ids)
            batch.add(seq, n)
            budget -= n
        return budget

    def _preempt(self, seq: Sequence, batch: Batch) -> None:
        """Free the sequence's blocks. Swap mode (if the host has room): its KV is copied out
        first and it keeps its progress; otherwise recompute: its KV is rebuilt when readmitted."""
        seq.num_preemptions += 1
        self.num_preemptions += 1
        batch.preempted.append(seq)
        kept = self.bm.blocks_for(seq.num_computed_tokens)
        if self.config.preemption_mode == "swap" and kept <= self.free_host_blocks:
            batch.swap_out.append((seq.seq_id, self.bm.block_table(seq.seq_id)[:kept]))
            self.free_host_blocks -= kept
            self.num_swap_outs += 1
            seq.status = SequenceStatus.SWAPPED
            self.swapped.append(seq)
        else:
            seq.status = SequenceStatus.WAITING
            seq.num_computed_tokens = seq.num_draft_computed_tokens = 0
            self.waiting.appendleft(seq)
        self.bm.free(seq.seq_id)  # swapped: reusable this step, the forward waits for the copy-out

    def _lookahead(self, seq: Sequence, n: int, budget: int) -> int:
        """Draft tokens to guess for `seq` this step (speculative decoding): k for a decode, fewer
        near its end (max_tokens, max_model_len, the whole pool) or the token budget's, else 0."""
        k = self.config.num_speculative_tokens
        if not k or not is_decode(seq, n):
            return 0
        left = seq.sampling_params.max_tokens - len(seq.output_token_ids)
        if self.max_model_len:
            left = min(left, self.max_model_len - seq.num_tokens)
        pool = self.bm.num_blocks * self.bm.block_size - seq.num_tokens
        return max(0, min(k, left - 1, pool, budget - n))
