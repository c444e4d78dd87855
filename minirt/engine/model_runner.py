"""ModelRunner: turn a scheduler Batch into tensors, run the model, sample.

It builds the flat input of a ragged batch — token ids, positions, each new token's pool slot
(`slot_mapping`), block tables, context lengths — and samples the rows that need a next token.
On CUDA a pure-decode step replays a captured graph. Notebook 00 prints these tensors.
"""

from __future__ import annotations

import itertools
import time
from contextlib import contextmanager

import torch

from minirt.engine.cuda_graph import DecodeGraphs, PieceGraphs
from minirt.kernels import placeholders
from minirt.kv import BlockManager, as_bytes
from minirt.kv.swap import SwapSpace
from minirt.model.attention import AttentionMetadata
from minirt.model.decoder import CausalLM
from minirt.sampler import sample, sample_on_device
from minirt.sched import Batch, Row, Sequence


class ModelRunner:
    def __init__(
        self,
        model: CausalLM,
        kv_pool: torch.Tensor,
        block_manager: BlockManager,
        seed: int,
        swap: SwapSpace | None = None,
        sampler=None,
    ):
        self.model = model
        self.sampler = sampler or sample  # or the learner's (a named part: LLM(sampler=fn))
        self.graphs: DecodeGraphs | None = None  # CUDA: captured by the engine
        self.piece_graphs: PieceGraphs | None = None  # CUDA: the other steps, cut at attention
        self.swap = swap  # preemption_mode="swap": where swapped-out KV waits (minirt.kv.swap)
        self.swapped_host: dict[int, list[int]] = {}  # seq_id -> its host blocks
        self.kv_pool = kv_pool  # [2, layers, num_blocks, block_size, kv_heads, head_dim]
        self.bm = block_manager
        self.device = kv_pool.device
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.seq_generators: dict[int, torch.Generator] = {}
        self.prepare_s = 0.0  # host time of the last step's input building (the trace's split)
        # overlap on CUDA: pinned inputs queue behind the step in flight (pageable copies block)
        self.pin_inputs = False
        model.bind_kv_cache(kv_pool)

    def host_inputs(self, rows: list[Row]) -> dict[str, list]:
        """The forward's inputs as Python lists, built on the CPU from the block tables."""
        bs = self.bm.block_size
        ids, positions, slots, q_starts, ctx_lens, tables = [], [], [], [0], [], []
        for row in rows:
            start, end, n = row.start, row.start + row.n, row.n
            table = self.bm.block_table(row.seq_id)  # shared blocks were un-shared by schedule()
            ids += row.token_ids[start:end]
            positions += range(start, end)
            slots += [table[p // bs] * bs + p % bs for p in range(start, end)]
            q_starts.append(q_starts[-1] + n)
            ctx_lens.append(end)
            tables.append(table)
        return {"input_ids": ids, "positions": positions, "slot_mapping": slots,
                "query_start_loc": q_starts, "context_lens": ctx_lens,
                "block_tables": tables}  # fmt: skip

    def prepare(self, rows: list[Row]) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata]:
        """Device tensors for an eager forward. Each host-to-device copy costs ~20 µs of CPU
        time, so the integer inputs travel packed in one tensor and are split on the device."""
        t0 = time.perf_counter()
        h = self.host_inputs(rows)
        n, s = len(h["input_ids"]), len(rows)
        columns = [h[k] for k in ("input_ids", "positions", "slot_mapping", "query_start_loc",
                                  "context_lens")]  # fmt: skip
        width, flat = placeholders.pack(columns, h["block_tables"])
        packed = self.to_device(flat)
        ids, pos, slots, starts, ctx, tab = packed.split([n, n, n, s + 1, s, s * width])
        meta = AttentionMetadata(
            slot_mapping=slots,
            query_start_loc=starts,
            context_lens=ctx,
            block_tables=tab.view(s, width),
            max_query_len=max(r.n for r in rows),
            max_context_len=max(h["context_lens"]),
        )
        self.prepare_s += time.perf_counter() - t0
        return ids, pos, meta

    @torch.inference_mode()
    def forward(
        self, rows: list[Row], wanted: list[int] | None = None, prev: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The one forward path: logits [len(wanted), vocab] in the weights' dtype at tokens
        `wanted` (None: all), and their argmax where the step took it already (a decode graph
        whose LM head's kernel takes it), else None. From a captured graph for a decode-shaped
        batch, from piecewise graphs (all but attention) for any other, or eagerly. `prev`: the
        last step's tokens, for the placeholders among the input ids (the overlapped loop)."""
        decode = max(r.n for r in rows) == 1
        if decode and self.graphs is not None and len(rows) <= self.graphs.sizes[-1]:
            logits, argmax = self.graphs.run(self.host_inputs(rows), prev, self.pin_inputs)
            argmax = self.take_rows(argmax, wanted) if argmax is not None else None
            return self.take_rows(logits, wanted), argmax
        input_ids, positions, meta = self.prepare(rows)
        if prev is not None:
            input_ids = placeholders.resolve(input_ids, prev)
        if self.piece_graphs is not None and self.piece_graphs.fits(len(input_ids)):
            hidden = self.piece_graphs.forward(input_ids, positions, meta)
        else:
            hidden = self.model(input_ids, positions, meta)  # [num_tokens, hidden]
        return self.model.compute_logits(self.take_rows(hidden, wanted), fp32=False), None

    def logits(
        self, rows: list[Row], wanted: list[int] | None = None, fp32: bool = True
    ) -> torch.Tensor:
        """`forward`'s logits, fp32 (fp32=False: in the weights' dtype)."""
        logits = self.forward(rows, wanted)[0]
        return logits.float() if fp32 else logits

    @contextmanager
    def without_graphs(self):
        """Every step launched from Python for a while (a benchmark's eager baseline)."""
        saved = self.graphs, self.piece_graphs
        self.graphs = self.piece_graphs = None
        try:
            yield
        finally:
            self.graphs, self.piece_graphs = saved

    def take_rows(self, t: torch.Tensor, rows: list[int] | None) -> torch.Tensor:
        """t[rows] (all of t for None or every row), indexed by a device tensor: a Python list
        is copied from pageable memory, waiting for the device (the step in flight too)."""
        if rows is None or rows == list(range(len(t))):
            return t
        return t[self.to_device(rows)]

    def move_kv(self, batch: Batch) -> None:
        """The batch's KV copies, before its forward: swaps out first (a swap-in or this step's
        new tokens may reuse their blocks), then in, then the block copies."""
        for seq_id, blocks in batch.swap_out:
            self.swapped_host[seq_id], done = self.swap.swap_out(blocks)
            self.swap.wait(done)
        for seq_id, blocks in batch.swap_in:
            self.swap.wait(self.swap.swap_in(self.swapped_host.pop(seq_id), blocks))
        self.copy_blocks(batch.kv_copies)

    @torch.inference_mode()
    def launch(self, batch: Batch, prev_tokens: torch.Tensor | None) -> torch.Tensor | None:
        """Enqueue the forward and the sampling: the tokens [sampling rows] on the device, not
        waited for (None when no row samples; from a decode graph, its own buffer until the
        next replay of that size). An input id -(i + 1) is a placeholder for row i of
        `prev_tokens`, the last step's tokens (the overlapped loop has not read them yet)."""
        self.move_kv(batch)
        rows = [i for i, s in enumerate(batch.samples) if s]
        ends = list(itertools.accumulate(batch.num_new_tokens))
        wanted = [ends[i] - 1 for i in rows]
        logits, argmax = self.forward(batch.rows(), wanted, prev_tokens)
        return self.sample_rows(logits, [batch.seqs[i] for i in rows], argmax) if rows else None

    def sample_rows(
        self, logits: torch.Tensor, seqs: list[Sequence], argmax: torch.Tensor | None = None
    ) -> torch.Tensor:
        """A token for each sequence from its row of `logits`: [len(seqs)] int64 on the device
        (`argmax`: the rows' argmax where the forward took it already)."""
        params = [s.sampling_params for s in seqs]
        gens = [self._generator(s) for s in seqs]
        if self.sampler is not sample:  # a host-side sampler: the step waits for its logits
            return self.to_device(self.sampler(logits.float(), params, gens))
        return sample_on_device(logits, params, gens, argmax)

    def to_device(self, values: list[int] | torch.Tensor) -> torch.Tensor:
        """int64 [len(values)] on the device, through pinned memory when `pin_inputs`."""
        host = torch.as_tensor(values, dtype=torch.int64)
        host = host.pin_memory() if self.pin_inputs else host
        return host.to(self.device, non_blocking=True)

    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        """Copy whole blocks src -> dst in this pool (Batch.kv_copies); the slots past the copied
        tokens are overwritten later."""
        if pairs:
            src, dst = (self.to_device(list(x)) for x in zip(*pairs, strict=True))
            pool = as_bytes(self.kv_pool)  # an FP8 pool copies as bytes
            pool[:, :, dst] = pool[:, :, src]

    def run(self, batch: Batch) -> dict[int, list[int]]:
        """One forward over the batch, waited for: {seq_id: [next token]} for those that
        sample. The same path as the overlapped loop's `launch`, read back at once."""
        tokens = self.launch(batch, None)
        if tokens is None:
            return {}
        seqs = [s for s, smp in zip(batch.seqs, batch.samples, strict=True) if smp]
        return {s.seq_id: [t] for s, t in zip(seqs, tokens.tolist(), strict=True)}

    def _generator(self, seq: Sequence) -> torch.Generator:
        seed = seq.sampling_params.seed
        if seed is None:
            return self.generator
        if seq.seq_id not in self.seq_generators:
            self.seq_generators[seq.seq_id] = torch.Generator(self.device).manual_seed(seed)
        return self.seq_generators[seq.seq_id]

    def release(self, seq_id: int) -> None:
        self.seq_generators.pop(seq_id, None)
        if seq_id in self.swapped_host:  # aborted while swapped out: its host blocks return
            self.swap.release(self.swapped_host.pop(seq_id))
