"""Speculative decoding in the engine: the draft guesses, the target verifies, the KV rolls back.

One step of `SpecRunner.run(batch)`, for a batch the scheduler built with lookahead slots
(`Batch.lookahead[i] = k_i` for a decode that speculates, 0 otherwise):

1. **Draft, catch-up + first guess** (one forward): every token whose KV the draft lacks (the
   target's prompt chunks of this step, a decode's last token, and after a step that accepted
   every guess the token before it too); each speculating row gives q_1 and the guess d_1.
2. **Draft, more guesses** (k - 1 one-token forwards): d_2 .. d_k, with q_2 .. q_k.
3. **Target, verify** (one forward): the prompt chunks as usual, and for a decode its last token
   x_0 followed by d_1 .. d_k: k + 1 positions, logits p_1 .. p_k+1 at all of them.
4. **Accept** (`minirt.spec.rejection`): rejection sampling keeps the target's distribution
   exactly (greedy: accept while the draft agrees with the argmax); 1 .. k + 1 tokens result.
5. **Roll back**: of the KV written for x_0, d_1 .. d_k only x_0 .. d_a (a accepted) is valid.
   `BlockManager.truncate` moves the end back (blocks of only rejected slots are freed, dead
   slots are overwritten later, nothing is copied); blocks full of KV valid for both models are
   published for the prefix cache, nothing past the accepted tokens ever is.

The draft has its own pool (same blocks, same block size) and reads the target's block tables,
so a prefix-cache hit is valid for both as long as the draft computes every token the target
does (step 1). `Sequence.num_draft_computed_tokens` counts the draft's progress (one token
behind, or all of them after a swap-in: the draft's KV is recomputed, not swapped). Notebook 07
walks through one step; tests/spec check it token for token against the plain engine.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import torch

from minirt.sampler import draw, filter_logits
from minirt.sched import Batch, Row, Sequence
from minirt.spec.rejection import verify

if TYPE_CHECKING:  # the engine builds the runners and hands them in: no import of it here
    from minirt.engine.model_runner import ModelRunner


@dataclass
class SpecStep:
    """One sequence's speculation in one step (what the trace records)."""

    seq_id: int
    proposed: list[int]  # d_1 .. d_k
    num_accepted: int  # a: d_1 .. d_a were kept
    emitted: list[int]  # d_1 .. d_a and the target's own next token
    table_before: list[int]  # the block table with the k lookahead slots, before the rollback
    freed_blocks: list[int] = field(default_factory=list)  # blocks the rollback freed

    def to_dict(self) -> dict:
        return asdict(self)


class SpecRunner:
    """Runs a batch with speculation: a draft `ModelRunner` on its own pool, and the target's."""

    def __init__(self, target: ModelRunner, draft: ModelRunner, verifier=verify):
        if draft.bm is not target.bm:
            raise ValueError("the draft must read the target's block tables (one BlockManager)")
        self.target, self.draft, self.bm = target, draft, target.bm
        self.verifier = verifier  # minirt.spec.rejection.verify, or the learner's
        self.last_steps: list[SpecStep] = []  # the last batch's speculation, for the trace
        self.num_proposed = self.num_accepted = 0  # draft tokens, over the engine's life

    @torch.inference_mode()
    def run(self, batch: Batch) -> dict[int, list[int]]:
        """One step; returns {seq_id: new tokens} for the sequences that get any."""
        self.target.move_kv(batch)
        self.draft.copy_blocks(batch.kv_copies)  # the cached KV is valid for both models
        self.last_steps = []
        spec = [i for i, k in enumerate(batch.lookahead) if k > 0]
        guesses, q = self._propose(batch, spec)

        # 3. The target: the batch as scheduled, a speculating decode as k + 1 one-token rows
        rows, last = [], []
        for i, s in enumerate(batch.seqs):
            g = guesses.get(i, [])
            n = batch.num_new_tokens[i] + len(g)
            rows += _expand(s.seq_id, s.token_ids + g, s.num_computed_tokens, n, i in guesses)
            last.append(len(rows))
        ends = list(itertools.accumulate(r.n for r in rows))
        plain = [i for i, s in enumerate(batch.samples) if s and i not in guesses]
        wanted = [ends[last[i] - 1] - 1 for i in plain]  # a plain row: its last token's logits
        first = {}  # a speculating row: the logits after x_0 and every guess, from wanted[first]
        for i in spec:
            first[i] = len(wanted)
            wanted += [ends[j] - 1 for j in range(last[i] - len(guesses[i]) - 1, last[i])]
        logits = self.target.logits(rows, wanted)
        for seq, n, k in zip(batch.seqs, batch.num_new_tokens, batch.lookahead, strict=True):
            # The draft computed up to the target's new count, and its guesses but the last.
            seq.num_draft_computed_tokens = seq.num_computed_tokens + n + max(0, k - 1)

        out: dict[int, list[int]] = {}
        if plain:  # 4a. sequences without guesses sample as the plain engine does
            seqs = [batch.seqs[i] for i in plain]
            tokens = self.target.sample_rows(logits[: len(plain)], seqs).tolist()
            out = {s.seq_id: [t] for s, t in zip(seqs, tokens, strict=True)}
        # 4b. Verify: greedy requests with as many guesses together (one device sync), sampled
        # ones each with its own generator.
        groups: dict[object, list[int]] = {}
        for i in spec:
            greedy = batch.seqs[i].sampling_params.greedy
            groups.setdefault(len(guesses[i]) if greedy else ("sampled", i), []).append(i)
        verdicts = {}
        for group in groups.values():
            k = len(guesses[group[0]])
            p_logits = torch.stack([logits[first[i] : first[i] + k + 1] for i in group])
            drafts = torch.tensor([guesses[i] for i in group], device=logits.device)
            seq = batch.seqs[group[0]]
            gen = None if seq.sampling_params.greedy else self.target._generator(seq)
            v = self.verifier(drafts, q.get(group[0]), p_logits, seq.sampling_params, gen)
            verdicts.update(zip(group, zip(v.num_accepted, v.tokens, strict=True), strict=True))
        for i in spec:  # 5. roll the KV back
            seq, (a, tokens) = batch.seqs[i], verdicts[i]
            out[seq.seq_id] = tokens
            self._roll_back(seq, guesses[i], a, tokens)
        return out

    # -- 1 and 2: the draft's guesses ----------------------------------------------------------
    def _propose(self, batch: Batch, spec: list[int]):
        """Catch the draft up on every sequence of the batch, then let it guess k_i tokens for
        each speculating one. Returns {batch index: guesses} and {batch index: [k, vocab] q}."""
        # Pass 1: every token the draft lacks, up to x_0 for a speculating decode (gives d_1).
        rows, wanted, speculating, num_tokens = [], [], set(spec), 0
        for i, seq in enumerate(batch.seqs):
            start = seq.num_draft_computed_tokens
            n = seq.num_computed_tokens + batch.num_new_tokens[i] - start
            rows += _expand(seq.seq_id, seq.token_ids, start, n, i in speculating)
            num_tokens += n  # expanded or not, rows of n tokens in all
            if i in speculating:
                wanted.append(num_tokens - 1)
        logits = self.draft.logits(rows, wanted)
        guesses: dict[int, list[int]] = {i: [] for i in spec}
        q: dict[int, list[torch.Tensor]] = {}  # sampled requests only: greedy needs no q
        live = spec  # the sequences whose rows `logits` holds, in order
        while live:
            tokens, probs = self._draw([batch.seqs[i] for i in live], logits)
            for i, token, prob in zip(live, tokens, probs, strict=True):
                guesses[i].append(token)
                if prob is not None:
                    q.setdefault(i, []).append(prob)
            # Pass 2..k: the newest guess d_m (at position x_0 + m) in, q_{m+1} out.
            live = [i for i in live if len(guesses[i]) < batch.lookahead[i]]
            rows = [
                Row(s.seq_id, s.token_ids + guesses[i], s.num_tokens - 1 + len(guesses[i]), 1)
                for i, s in ((i, batch.seqs[i]) for i in live)
            ]
            if rows:
                logits = self.draft.logits(rows)
        return guesses, {i: torch.stack(v) for i, v in q.items()}  # q: [k, vocab] each

    def _draw(self, seqs: list[Sequence], logits: torch.Tensor):
        """The draft's guesses, one logits row per sequence: the argmax, or for a sampled request
        a draw through the target's own filter, with the distribution q it was drawn from. The
        guesses come back to the host together (one wait for the GPU per draft forward)."""
        tokens, probs = logits.argmax(-1), [None] * len(seqs)
        for j, seq in enumerate(seqs):
            if not seq.sampling_params.greedy:
                probs[j] = filter_logits(logits[j], seq.sampling_params).softmax(-1)
                tokens[j] = draw(probs[j], self.target._generator(seq))
        return tokens.tolist(), probs

    # -- 5: roll back ---------------------------------------------------------------------------
    def _roll_back(self, seq: Sequence, guesses: list[int], a: int, emitted: list[int]) -> None:
        """Keep the KV of x_0 and the a accepted guesses; free what only rejected ones used."""
        table_before = list(self.bm.block_table(seq.seq_id))
        valid = seq.num_computed_tokens + 1 + a  # the target's KV: x_0, d_1 .. d_a
        freed = self.bm.truncate(seq.seq_id, valid)
        # The draft computed x_0 .. d_{k-1}: valid up to d_a, or d_{k-1} if all were accepted.
        seq.num_draft_computed_tokens = min(seq.num_draft_computed_tokens, valid)
        # Publish blocks that are full of valid KV for *both* models (the prefix cache).
        self.bm.commit(seq.seq_id, seq.token_ids + emitted, seq.num_draft_computed_tokens)
        self.num_proposed += len(guesses)
        self.num_accepted += a
        self.last_steps.append(SpecStep(seq.seq_id, guesses, a, emitted, table_before, freed))


def _expand(seq_id: int, token_ids: list[int], start: int, n: int, expand: bool) -> list[Row]:
    """Rows for a forward over tokens start .. start + n - 1 of a sequence: one row of n tokens,
    or (expand) n rows of one token each, row j seeing the context up to its own token. Batch
    expansion (as vLLM's first speculative scorer): the same causal attention, but a
    decode-shaped batch, so it runs on the decode kernel (which splits the context across the
    GPU instead of leaving most of a prefill tile empty) and replays a captured CUDA graph."""
    if not expand:
        return [Row(seq_id, token_ids, start, n)]
    return [Row(seq_id, token_ids, start + j, 1) for j in range(n)]
