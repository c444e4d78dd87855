"""Decode steps replayed from CUDA graphs: one graph per batch size, a batch padded up to the next.

A small model's decode step is hundreds of tiny kernels; launched from Python the GPU waits on the
CPU (~5-20 µs a launch). A graph records the launches once and replays them in one call, at the
price of fixed addresses and shapes: static input buffers, padding rows with slot -1 (store
nothing) and context 0 (attend to nothing), attention captured with `max_model_len` as its bound.
A step: one copy in, one replay, sampling. Notebook 05 (profiling) measures the gain.
"""

from __future__ import annotations

import bisect

import torch

from minirt.model.attention import AttentionMetadata
from minirt.model.decoder import CausalLM


def default_graph_sizes(max_num_seqs: int) -> list[int]:
    """vLLM's ladder: 1, 2, 4, 8, then every 16 (every 32 past 128), up to max_num_seqs."""
    ladder = [1, 2, 4, 8, *range(16, 129, 16), *range(160, 1025, 32)]
    sizes = [s for s in ladder if s < max_num_seqs]
    return [*sizes, max_num_seqs]


class DecodeGraphs:
    def __init__(
        self,
        model: CausalLM,
        sizes: list[int],
        max_blocks_per_seq: int,
        max_model_len: int,
        device: torch.device,
    ):
        self.model, self.max_model_len, self.device = model, max_model_len, device
        self.sizes = sorted(set(sizes))
        # Per size, rows ids, positions, slots, context lengths (one copy in); tables shared.
        i64 = {"dtype": torch.int64, "device": device}
        self.inputs = {bs: torch.zeros(4, bs, **i64) for bs in self.sizes}
        self.block_tables = torch.full((self.sizes[-1], max_blocks_per_seq), -1, **i64)
        self.metas = {bs: self._meta(bs) for bs in self.sizes}  # alive as long as the graphs
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}  # [bs, vocab] logits, written by replay

    def _meta(self, bs: int) -> AttentionMetadata:
        x = self.inputs[bs]
        return AttentionMetadata(
            slot_mapping=x[2],
            query_start_loc=torch.arange(bs + 1, device=self.device),
            context_lens=x[3],
            block_tables=self.block_tables[:bs],
            max_query_len=1,
            max_context_len=self.max_model_len,
        )

    def _forward(self, bs: int) -> torch.Tensor:
        x = self.inputs[bs]
        return self.model.compute_logits(self.model(x[0], x[1], self.metas[bs]))

    @torch.inference_mode()
    def capture(self) -> None:
        """Record one graph per size, largest first, all sharing one memory pool."""
        pool = None
        for bs in reversed(self.sizes):
            self._forward(bs)  # warm up: Triton compiles, cuBLAS picks its kernels
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.outputs[bs] = self._forward(bs)
            pool = graph.pool()
            self.graphs[bs] = graph
        torch.cuda.synchronize()

    def run(self, host: dict[str, list], resolve=None, pin: bool = False) -> torch.Tensor:
        """One decode step from `ModelRunner.host_inputs`: logits [n, vocab] fp32. `resolve` and
        `pin` as in ModelRunner (overlap_schedule: placeholders, pinned inputs)."""
        n = len(host["input_ids"])
        bs = self.sizes[bisect.bisect_left(self.sizes, n)]  # the smallest captured size >= n
        pad = bs - n  # padding rows store nothing (slot -1) and attend to nothing (context 0)
        packed = torch.tensor(
            [host["input_ids"] + [0] * pad, host["positions"] + [0] * pad,
             host["slot_mapping"] + [-1] * pad, host["context_lens"] + [0] * pad],
            dtype=torch.int64,
        )  # fmt: skip
        packed = packed.pin_memory() if pin else packed
        self.inputs[bs].copy_(packed, non_blocking=True)
        if resolve is not None:
            self.inputs[bs][0].copy_(resolve(self.inputs[bs][0]))
        tables = host["block_tables"]
        width = max(len(t) for t in tables)
        rows = torch.tensor([t + [-1] * (width - len(t)) for t in tables], dtype=torch.int64)
        rows = rows.pin_memory() if pin else rows
        self.block_tables[:n, :width].copy_(rows, non_blocking=True)  # stale entries past a
        # row's context are never read: its context length bounds every read
        if bs in self.graphs:
            self.graphs[bs].replay()
            return self.outputs[bs][:n]
        return self._forward(bs)[:n]  # not captured (a CPU run of the same path, for tests)
