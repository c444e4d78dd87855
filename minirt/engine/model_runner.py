"""ModelRunner: turn a scheduler Batch into tensors, run the model, sample.

It builds the flat input of a ragged batch — token ids, positions, the slot of each new token in
the pool (`slot_mapping`), block tables and context lengths — then keeps only the rows whose
sequence needs a next token. Notebook 00 (tour) prints these tensors for one step.
"""

from __future__ import annotations

import itertools

import torch

from minirt.engine.sampler import sample
from minirt.kv import BlockManager
from minirt.model.attention import AttentionMetadata
from minirt.model.qwen3 import CausalLM
from minirt.sched import Batch


class ModelRunner:
    def __init__(
        self, model: CausalLM, kv_pool: torch.Tensor, block_manager: BlockManager, seed: int
    ):
        self.model = model
        self.kv_pool = kv_pool  # [2, layers, num_blocks, block_size, kv_heads, head_dim]
        self.bm = block_manager
        self.device = kv_pool.device
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.seq_generators: dict[int, torch.Generator] = {}
        model.bind_kv_cache(kv_pool)

    def prepare(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata]:
        bs = self.bm.block_size
        input_ids, positions, slots, q_starts, ctx_lens, tables = [], [], [], [0], [], []
        for seq, n in zip(batch.seqs, batch.num_new_tokens, strict=True):
            start, end = seq.num_computed_tokens, seq.num_computed_tokens + n
            table = self.bm.block_table(seq.seq_id)
            for src, dst in self.bm.prepare_write(seq.seq_id, start):
                self.kv_pool[:, :, dst] = self.kv_pool[:, :, src]  # copy-on-write
            input_ids += seq.token_ids[start:end]
            positions += range(start, end)
            slots += [table[p // bs] * bs + p % bs for p in range(start, end)]
            q_starts.append(q_starts[-1] + n)
            ctx_lens.append(end)
            tables.append(table)
        width = max(len(t) for t in tables)
        tables = [t + [-1] * (width - len(t)) for t in tables]

        def as_tensor(x, dtype=torch.int64):
            return torch.tensor(x, dtype=dtype, device=self.device)

        meta = AttentionMetadata(
            slot_mapping=as_tensor(slots),
            query_start_loc=as_tensor(q_starts),
            context_lens=as_tensor(ctx_lens),
            block_tables=as_tensor(tables, torch.int32),
            max_query_len=max(batch.num_new_tokens),
            max_context_len=max(ctx_lens),
        )
        return as_tensor(input_ids), as_tensor(positions), meta

    @torch.inference_mode()
    def run(self, batch: Batch) -> dict[int, int]:
        """One forward over the batch; returns {seq_id: next token} for sequences that sample."""
        input_ids, positions, meta = self.prepare(batch)
        hidden = self.model(input_ids, positions, meta)  # [num_tokens, hidden]
        rows = [i for i, s in enumerate(batch.samples) if s]
        if not rows:
            return {}
        ends = itertools.accumulate(batch.num_new_tokens)
        last = [end - 1 for i, end in enumerate(ends) if batch.samples[i]]  # each one's last token
        logits = self.model.compute_logits(hidden[last])  # [len(rows), vocab]
        seqs = [batch.seqs[i] for i in rows]
        gens = [self._generator(s) for s in seqs]
        tokens = sample(logits, [s.sampling_params for s in seqs], gens)
        return {s.seq_id: t for s, t in zip(seqs, tokens, strict=True)}

    def _generator(self, seq) -> torch.Generator:
        seed = seq.sampling_params.seed
        if seed is None:
            return self.generator
        if seq.seq_id not in self.seq_generators:
            self.seq_generators[seq.seq_id] = torch.Generator(self.device).manual_seed(seed)
        return self.seq_generators[seq.seq_id]

    def release(self, seq_id: int) -> None:
        self.seq_generators.pop(seq_id, None)
