"""Expert parallelism: each of N processes holds E / N experts; tokens travel to their experts
and back with two all-to-alls (`torch.distributed`: gloo on CPU, NCCL on GPUs).

dispatch: every rank sends each (token, expert) row to the rank holding the expert;
compute:  each rank runs its experts over the rows it received (grouped GEMM);
combine:  the outputs travel back the same way and each token sums its k weighted rows.
Invariant: dispatch -> experts -> combine equals `MoEBlock` in one process (tests/moe). With
`micro_batches=2` one half's transfers overlap the other half's experts; `fp8_dispatch` sends
1-byte rows plus a scale per 128 values, as DeepEP does. Notebook 12 times the phases; lab 9
writes the dispatch and combine (`Exchange`) and runs this block on them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.distributed as dist

from minirt.moe.block import MoEBlock
from minirt.moe.experts import sort_by_expert
from minirt.moe.router import route

FP8_MAX = 448.0  # largest finite float8_e4m3fn value


def fp8_pack(x: torch.Tensor, block: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """x [n, H] -> (bytes [n, H] uint8, scales [n, H / block] fp32): E4M3 with one scale per
    block of `block` values (per row if H is not a multiple); uint8 so any backend can send it."""
    n, h = x.shape
    block = block if h % block == 0 else h
    xb = x.float().reshape(n, h // block, block)
    scales = (xb.abs().amax(-1) / FP8_MAX).clamp(min=1e-12)  # [n, H / block]
    q = (xb / scales[..., None]).to(torch.float8_e4m3fn).reshape(n, h)
    return q.view(torch.uint8), scales


def fp8_unpack(q: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    n, h = q.shape
    blocks = scales.shape[1]
    x = q.view(torch.float8_e4m3fn).float().reshape(n, blocks, h // blocks) * scales[..., None]
    return x.reshape(n, h).to(dtype)


@dataclass
class EPStats:
    """One rank's view of one forward: rows and bytes sent/received, and where time went."""

    rank: int
    world_size: int
    num_tokens: int
    send_rows: list[int]  # rows this rank sent to each rank (itself included)
    recv_rows: list[int]  # rows each rank sent to this one: this rank's expert load
    dispatch_bytes: int = 0  # payload this rank sent to other ranks in the dispatch
    combine_bytes: int = 0
    phases: list[dict] = field(default_factory=list)  # {"phase", "micro_batch", "start_ms", ...}

    def ms(self, phase: str) -> float:
        return sum(p["end_ms"] - p["start_ms"] for p in self.phases if p["phase"] == phase)

    def to_dict(self) -> dict:
        return asdict(self)


def _split_all_to_all(out, inp, out_splits, in_splits, group, async_op):
    return dist.all_to_all_single(out, inp, out_splits, in_splits, group=group, async_op=async_op)


# -- the exchange as three plain functions (synchronous): what `Exchange` names -------------------
def dispatch_plan(
    experts: torch.Tensor, num_experts: int, world_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """experts [tokens, k] -> (order [tokens * k], counts [W, E / W]).

    Row i of the flattened routing is token i // k's (i % k)-th choice. `order` lists the rows by
    expert, rows of one expert in token order (a stable sort); experts sit contiguously on the
    ranks, so that also groups them by destination. counts[r, j]: rows for rank r's j-th expert.
    """
    order, offsets = sort_by_expert(experts.reshape(-1), num_experts)
    counts = (offsets[1:] - offsets[:-1]).reshape(world_size, num_experts // world_size)
    return order, counts


def all_to_all_dispatch(x, order, top_k, counts, group=None) -> tuple[torch.Tensor, torch.Tensor]:
    """x [tokens, H] -> (recv_x [rows received, H], recv_counts [W, E / W]): swap the counts, then
    send each row to its expert's rank. recv_counts[s, j]: rows rank s sent for my j-th expert;
    recv_x holds rank 0's rows, then rank 1's..., each rank's in the order it sent them."""
    recv_counts = torch.empty_like(counts)
    dist.all_to_all_single(recv_counts, counts, group=group)  # even splits: E / W per rank
    rows = x[order // top_k]  # [tokens * k, H], grouped by destination rank
    recv_x = rows.new_empty(int(recv_counts.sum()), x.shape[1])
    send, recv = counts.sum(1).tolist(), recv_counts.sum(1).tolist()
    dist.all_to_all_single(recv_x, rows, recv, send, group=group)  # uneven splits
    return recv_x, recv_counts


def weighted_sum(back: torch.Tensor, order: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Rows back in `order` [tokens * k, H] -> y [tokens, H]: each token's k rows, weighted."""
    k = weights.shape[1]
    back = back * weights.reshape(-1)[order, None].to(back.dtype)
    return back.new_zeros(weights.shape[0], back.shape[1]).index_add_(0, order // k, back)


def all_to_all_combine(out, counts, recv_counts, order, weights, group=None) -> torch.Tensor:
    """Expert outputs [rows received, H], in arrival order -> y [tokens, H]: each row goes back
    to the rank it came from (the dispatch's splits, swapped), then `weighted_sum`."""
    back = out.new_empty(int(counts.sum()), out.shape[1])  # [tokens * k, H], in `order`
    send, recv = counts.sum(1).tolist(), recv_counts.sum(1).tolist()
    dist.all_to_all_single(back, out, send, recv, group=group)
    return weighted_sum(back, order, weights)


@dataclass(frozen=True)
class Exchange:
    """The dispatch and combine of `ExpertParallelMoE` as three functions, to run the block on
    someone else's (lab 9). minirt's are `dispatch_plan`, `all_to_all_dispatch` and
    `all_to_all_combine`; without an Exchange the block runs its own in stages, so that
    micro-batches can overlap. The signatures (group: the `torch.distributed` group, None for
    the default one):

    plan(experts [T, k], num_experts, world_size) -> (order [T * k], counts [W, E / W])
    dispatch(x [T, H], order, top_k, counts, group) -> (recv_x [R, H], recv_counts [W, E / W])
    combine(out [R, H], counts, recv_counts, order, weights [T, k], group) -> y [T, H]
    """

    plan: Callable
    dispatch: Callable
    combine: Callable


class ExpertParallelMoE:
    """The expert-parallel form of a `MoEBlock` on this rank of `group` (router and shared expert
    replicated, experts sharded contiguously). Every rank must call `forward` together.
    `exchange`: another dispatch and combine (synchronous; micro-batches then take turns)."""

    def __init__(
        self,
        block: MoEBlock,
        group=None,
        fp8_dispatch: bool = False,
        exchange: Exchange | None = None,
    ):
        if block.capacity_factor is not None:
            raise ValueError(
                "ExpertParallelMoE does not drop tokens (a capacity would need a global count "
                "per expert); build the block with capacity_factor=None"
            )
        if exchange is not None and fp8_dispatch:
            raise ValueError("fp8_dispatch is minirt's own dispatch; an Exchange sends rows as is")
        self.group, self.exchange = group, exchange
        self.rank, self.world_size = dist.get_rank(group), dist.get_world_size(group)
        self.block, self.fp8_dispatch = block, fp8_dispatch
        self.experts = block.experts.shard(self.rank, self.world_size)
        self.per_rank = block.num_experts // self.world_size

    def _prepare(self, x: torch.Tensor):
        """Route and sort one micro-batch; swap per-(rank, expert) counts with the peers."""
        weights, experts = route(self.block.gate(x), self.block.top_k, self.block.norm_topk_prob)
        plan = self.exchange.plan if self.exchange else dispatch_plan
        order, counts = plan(experts, self.block.num_experts, self.world_size)  # counts [W, E/W]
        mb = dict(x=x, weights=weights, order=order, k=experts.shape[1], counts=counts)
        if self.exchange is None:  # swap the counts now, so that the rows can travel async
            recv_counts = torch.empty_like(counts)  # [W, E/W]: rows from rank s for my expert j
            dist.all_to_all_single(recv_counts, counts, group=self.group)  # tiny, synchronous
            send, recv = counts.sum(1).tolist(), recv_counts.sum(1).tolist()
            mb.update(recv_counts=recv_counts, send=send, recv=recv)
        return mb

    def _dispatch(self, mb: dict, async_op: bool):
        if self.exchange is not None:  # counts and rows in one synchronous call
            mb["recv_x"], mb["recv_counts"] = self.exchange.dispatch(
                mb["x"], mb["order"], mb["k"], mb["counts"], self.group
            )
            mb["send"], mb["recv"] = mb["counts"].sum(1).tolist(), mb["recv_counts"].sum(1).tolist()
            return []
        rows = mb["x"][mb["order"] // mb["k"]]  # [tokens * k, H], grouped by destination rank
        h, n_recv = rows.shape[1], sum(mb["recv"])
        if self.fp8_dispatch:
            q, s = fp8_pack(rows)
            mb["recv_q"] = q.new_empty(n_recv, h)
            mb["recv_s"] = s.new_empty(n_recv, s.shape[1])
            return [_split_all_to_all(mb["recv_q"], q, mb["recv"], mb["send"], self.group,
                                      async_op),
                    _split_all_to_all(mb["recv_s"], s, mb["recv"], mb["send"], self.group,
                                      async_op)]  # fmt: skip
        mb["recv_x"] = rows.new_empty(n_recv, h)
        return [_split_all_to_all(mb["recv_x"], rows, mb["recv"], mb["send"], self.group,
                                  async_op)]  # fmt: skip

    def _compute(self, mb: dict, gemm: str) -> torch.Tensor:
        if self.fp8_dispatch:
            mb["recv_x"] = fp8_unpack(mb["recv_q"], mb["recv_s"], mb["x"].dtype)
        # received rows come grouped by source rank, each source's rows sorted by my experts
        local = torch.arange(self.per_rank, device=mb["x"].device).repeat(self.world_size)
        ids = torch.repeat_interleave(local, mb["recv_counts"].reshape(-1))  # [rows received]
        order, offsets = sort_by_expert(ids, self.per_rank)
        out = torch.empty_like(mb["recv_x"])
        out[order] = self.experts(mb["recv_x"][order], offsets, gemm)  # back in arrival order
        return out

    def _combine(self, mb: dict, out: torch.Tensor, async_op: bool):
        if self.exchange is not None:  # rows back and the weighted sum in one synchronous call
            args = (mb["counts"], mb["recv_counts"], mb["order"], mb["weights"], self.group)
            mb["y"] = self.exchange.combine(out, *args)
            return None
        mb["back"] = out.new_empty(sum(mb["send"]), out.shape[1])  # [tokens * k, H]
        return _split_all_to_all(mb["back"], out, mb["send"], mb["recv"], self.group, async_op)

    def _finish(self, mb: dict) -> torch.Tensor:
        x = mb["x"]
        y = mb["y"] if "y" in mb else weighted_sum(mb["back"], mb["order"], mb["weights"])
        if self.block.shared_expert is not None:
            y = y + self.block.shared_expert(x)
        return y

    @torch.no_grad()
    def forward(self, x: torch.Tensor, gemm: str = "ref", micro_batches: int = 1,
                phase_times: bool = True):  # fmt: skip
        """x [tokens, H] (this rank's tokens) -> (y [tokens, H], EPStats).

        On a GPU, `phase_times` waits for the device after every phase to time it, which also
        waits for the other micro-batch's transfers: overlap can only be seen with it off (one
        "total" phase, timed once at the end)."""
        t0 = time.perf_counter()
        phases: list[dict] = []

        def mark(phase: str, i: int, start: float) -> None:
            if x.is_cuda and not phase_times:
                return
            if x.is_cuda:  # the GPU runs behind the host: wait for it, or the phases lie
                torch.cuda.synchronize(x.device)
            end = time.perf_counter()
            phases.append({"phase": phase, "micro_batch": i, "start_ms": (start - t0) * 1e3,
                           "end_ms": (end - t0) * 1e3})  # fmt: skip

        # Exactly `micro_batches` pieces on every rank, empty ones included: each piece is one
        # round of collectives, and every rank must join as many rounds as its peers.
        chunks = torch.tensor_split(x, micro_batches)
        mbs, pending = [], []
        for i, chunk in enumerate(chunks):  # route every micro-batch, start its dispatch
            s = time.perf_counter()
            mbs.append(self._prepare(chunk))
            mark("route", i, s)
            s = time.perf_counter()
            pending.append((s, self._dispatch(mbs[-1], async_op=len(chunks) > 1)))
        combines = []
        for i, (mb, (s, works)) in enumerate(zip(mbs, pending, strict=True)):
            for w in works if len(chunks) > 1 else ():
                w.wait()  # micro-batch i's rows have arrived; i + 1's may still be in flight
            mark("dispatch", i, s)
            s = time.perf_counter()
            out = self._compute(mb, gemm)
            mark("experts", i, s)
            combines.append((time.perf_counter(), self._combine(mb, out, len(chunks) > 1)))
        for i, (s, work) in enumerate(combines):
            if work is not None:
                work.wait()
            mark("combine", i, s)
        y = torch.cat([self._finish(mb) for mb in mbs]) if mbs else x.clone()
        if x.is_cuda and not phase_times:
            torch.cuda.synchronize(x.device)
            phases.append({"phase": "total", "micro_batch": -1, "start_ms": 0.0,
                           "end_ms": (time.perf_counter() - t0) * 1e3})  # fmt: skip
        h = x.shape[1]
        # FP8: one byte a value plus an fp32 scale per block of 128 (per row if H isn't a multiple)
        fp8_row = h + 4 * (h // 128 if h % 128 == 0 else 1)
        row_bytes = fp8_row if self.fp8_dispatch else h * x.element_size()
        send = [sum(mb["send"][r] for mb in mbs) for r in range(self.world_size)]
        recv = [sum(mb["recv"][r] for mb in mbs) for r in range(self.world_size)]
        remote = sum(send) - send[self.rank]
        stats = EPStats(self.rank, self.world_size, x.shape[0], send, recv,
                        remote * row_bytes, remote * h * x.element_size(),
                        phases)  # fmt: skip
        return y, stats
