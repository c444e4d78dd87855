"""Decode steps replayed from CUDA graphs: one graph per batch size, a batch padded up to the next.

A small model's decode step is hundreds of tiny kernels; launched from Python the GPU waits on the
CPU (~5-20 µs a launch). A graph records the launches once and replays them in one call, at the
price of fixed addresses and shapes: static input buffers, padding rows with slot -1 (store
nothing) and context 0 (attend to nothing), attention captured with `max_model_len` as its bound.
A step: one copy in, one launch to unpack it, one replay (with the greedy argmax at one or two
rows), sampling. Notebook 05 (profiling) measures the gain.
"""

from __future__ import annotations

import bisect

import torch

from minirt.kernels import placeholders
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
        # One copy in a step: ids, positions, slots, context lengths (the first 4 * bs entries:
        # every size's inputs start at the same address), then the step's short table rows,
        # which `placeholders.unpack` spreads into the graphs' long rows.
        top, i64 = self.sizes[-1], {"dtype": torch.int64, "device": device}
        self.staged = torch.zeros(4 * top + top * max_blocks_per_seq, **i64)
        self.inputs = {bs: self.staged[: 4 * bs].view(4, bs) for bs in self.sizes}
        self.block_tables = torch.full((top, max_blocks_per_seq), -1, **i64)
        self.metas = {bs: self._meta(bs) for bs in self.sizes}  # alive as long as the graphs
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        # by replay: [bs, vocab] logits (weights' dtype), and their argmax [bs] where the LM
        # head's kernel takes it (`CausalLM.logits_and_argmax`), else None
        self.outputs: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}

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

    def _forward(self, bs: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.inputs[bs]
        hidden = self.model(x[0], x[1], self.metas[bs])
        if self.model.argmax_in_head(bs):
            return self.model.logits_and_argmax(hidden)
        return self.model.compute_logits(hidden, fp32=False), None

    @torch.inference_mode()
    def capture(self) -> None:
        """Record one graph per size, largest first, all sharing one memory pool."""
        pool = None
        for prev in (None, self.staged[:1]):  # both variants compiled now, not at a request
            placeholders.unpack(self.staged, prev, self.block_tables, 1, 1, 1)
        for bs in reversed(self.sizes):
            x = self.inputs[bs]
            x.zero_()
            x[2].fill_(-1)  # the warm-up stores nothing
            self._forward(bs)  # warm up: Triton compiles, cuBLAS picks its kernels
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.outputs[bs] = self._forward(bs)
            pool = graph.pool()
            self.graphs[bs] = graph
        torch.cuda.synchronize()

    def run(self, host: dict[str, list], prev: torch.Tensor | None = None, pin: bool = False):
        """One decode step from `ModelRunner.host_inputs`: (logits [n, vocab] in the weights'
        dtype, their argmax [n] or None). `prev` and `pin` as in ModelRunner (overlap_schedule:
        the last step's tokens for the placeholders, pinned inputs). The outputs are the graph's
        own buffers: the next replay of this size writes over them."""
        n = len(host["input_ids"])
        bs = self.sizes[bisect.bisect_left(self.sizes, n)]  # the smallest captured size >= n
        # padding rows store nothing (slot -1) and attend to nothing (context 0)
        columns = [host[k] for k in ("input_ids", "positions", "slot_mapping", "context_lens")]
        width, packed = placeholders.pack(columns, host["block_tables"], bs, fills=[0, 0, -1, 0])
        packed = packed.pin_memory() if pin else packed
        self.staged[: len(packed)].copy_(packed, non_blocking=True)
        # ids resolved in place, table rows spread: one launch. Stale entries past a row's
        # context are never read: its context length bounds every read.
        placeholders.unpack(self.staged, prev, self.block_tables, n, width, bs)
        if bs in self.graphs:
            self.graphs[bs].replay()
            logits, argmax = self.outputs[bs]
        else:  # not captured (a CPU run of the same path, for tests)
            logits, argmax = self._forward(bs)
        return logits[:n], (argmax[:n] if argmax is not None else None)


def default_piece_sizes(max_num_batched_tokens: int) -> list[int]:
    """Token counts for the piecewise graphs, up to the step's token budget: powers of two to
    256 (below ~300 tokens the GEMMs are bound by reading the weights: padding is nearly free),
    then steps of a half (at most a third of a step is padding)."""
    ladder = [16, 32, 64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096]
    ladder += [4096 + 2048 * i for i in range(1, 30)]
    sizes = [s for s in ladder if s < max_num_batched_tokens]
    return [*sizes, max_num_batched_tokens]


class PieceGraphs:
    """Every other step (prompts, chunks, mixes, verifies) from graphs of all but attention.

    Outside attention a layer works row by row: for n new tokens the same launches run whatever
    sequences they belong to. Only attention reads the block tables and context lengths, which
    change every step. So, as vLLM's piecewise graphs do, a step of the model is cut at attention:
    per token count T, L + 1 graphs, each from one layer's attention output to the next layer's
    queries (the first starts at the embedding, the last ends at the final norm), and each
    layer's attention runs eagerly between them on this step's metadata. A step of n tokens pads
    to the smallest T >= n; padding rows store nothing (slot -1) and no sequence reads them.
    An eager prompt step on the H100 was ~170 Triton and ~110 cuBLAS launches from Python; here
    it is L + 1 replays and L attention launches.
    """

    def __init__(self, model: CausalLM, sizes: list[int], device: torch.device):
        self.model, self.device = model, device
        self.sizes = sorted(set(sizes))
        self.layers = model.model.layers
        i64 = {"dtype": torch.int64, "device": device}
        # Per size: rows of ids, positions, slots (-1: store nothing; also during warm-up)
        self.inputs = {t: torch.zeros(3, t, **i64) for t in self.sizes}
        for x in self.inputs.values():
            x[2].fill_(-1)
        self.metas = {t: self._meta(t) for t in self.sizes}  # project() reads only the slots
        # What crosses from one piece to the next, at fixed addresses: the queries and the
        # residual stream (copied there at a piece's end; every layer reuses them), the
        # attention output (copied there eagerly), the final hidden states. One buffer each,
        # sized for the largest step; a step of T tokens uses the first T rows (steps never
        # overlap). Made by the first (eager) run, shaped like what they hold.
        self.buffers: dict[str, torch.Tensor] = {}
        self.graphs: dict[int, list[torch.cuda.CUDAGraph]] = {}

    def _meta(self, t: int) -> AttentionMetadata:
        slots = self.inputs[t][2]
        zeros = torch.zeros(1, dtype=torch.int64, device=self.device)
        return AttentionMetadata(slot_mapping=slots, query_start_loc=zeros, context_lens=zeros,
                                 block_tables=zeros.view(1, 1), max_query_len=t,
                                 max_context_len=0)  # fmt: skip

    def _piece(self, t: int, i: int) -> None:
        """Piece i of a T-token step: layer i-1's attention output to layer i's queries and
        residual stream (piece 0 starts at the embedding; piece L ends at the final norm)."""
        ids, positions = self.inputs[t][0], self.inputs[t][1]
        if i == 0:
            x, residual = self.model.model.embed_tokens(ids), None
        else:
            attn_out, residual = self.buffers["attn_out"][:t], self.buffers["residual"][:t]
            x, residual = self.layers[i - 1].after_attention(attn_out, residual)
        if i == len(self.layers):
            self._keep("hidden", t, self.model.model.norm(x, residual)[0])
            return
        q, residual = self.layers[i].before_attention(positions, x, residual, self.metas[t])
        self._keep("q", t, q)
        self._keep("residual", t, residual)

    def _keep(self, name: str, t: int, value: torch.Tensor) -> None:
        """Copy `value` into the first T rows of buffer `name` (made at the first call)."""
        if name not in self.buffers:
            rows = self.sizes[-1]
            self.buffers[name] = value.new_zeros(rows, *value.shape[1:])
            if name == "q":  # the attention output, [T, heads * head_dim] in the queries' dtype
                self.buffers["attn_out"] = value.new_zeros(rows, value.shape[1] * value.shape[2])
        self.buffers[name][:t].copy_(value)

    @torch.inference_mode()
    def capture(self) -> None:
        """Warm each size up (Triton compiles, cuBLAS picks), then record its L + 1 pieces in
        order, largest size first, all in one memory pool. What a piece leaves for the next is
        in `buffers`, so a capture may reuse an earlier piece's scratch memory: replays run in
        the order they were captured, one size at a time."""
        pool = None
        pieces = range(len(self.layers) + 1)
        for t in reversed(self.sizes):
            for i in pieces:
                self._piece(t, i)
            torch.cuda.synchronize()
            self.graphs[t] = []
            for i in pieces:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    self._piece(t, i)
                pool = graph.pool()
                self.graphs[t].append(graph)
        torch.cuda.synchronize()

    def fits(self, num_tokens: int) -> bool:
        return num_tokens <= self.sizes[-1]

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """The model's forward (hidden [n, hidden]) over the flat batch ModelRunner.prepare
        built: one copy in, then per layer a replay and the eager attention."""
        n = input_ids.shape[0]
        t = self.sizes[bisect.bisect_left(self.sizes, n)]
        x = self.inputs[t]
        x[:, :n].copy_(torch.stack([input_ids, positions, meta.slot_mapping]))
        x[2, n:].fill_(-1)  # the last step's slots past n would overwrite live blocks
        graphs = self.graphs.get(t)  # None: the same pieces eagerly (a CPU run, for tests)
        for i in range(len(self.layers) + 1):
            if graphs:
                graphs[i].replay()
            else:
                self._piece(t, i)
            if i < len(self.layers):
                o = self.layers[i].self_attn.attend(self.buffers["q"][:n], meta)
                self.buffers["attn_out"][:n].copy_(o)
        return self.buffers["hidden"][:n]
