"""KV swap: a preempted sequence's blocks go to pinned host memory on a copy stream, and back.

The host pool is block-major, `(num_host_blocks, 2, layers, block_size, kv_heads, head_dim)`: a
block of every layer is one contiguous DMA. On CUDA the copies run on their own stream after the
compute that wrote the KV, each returning an event the compute stream waits for before reading
swapped-in blocks; on a CPU they copy at once. A block comes back bitwise identical. Notebook 06.
"""

from __future__ import annotations

import torch

from minirt.kv.pool import as_bytes, poison_requested


class SwapSpace:
    def __init__(self, kv_pool: torch.Tensor, num_host_blocks: int):
        # kv_pool: [2, layers, num_blocks, block_size, kv_heads, head_dim] on the device
        if num_host_blocks < 1:
            raise ValueError(f"num_host_blocks must be >= 1, got {num_host_blocks}")
        self.pool = as_bytes(kv_pool)  # an FP8 pool moves as bytes (no index_copy_ for FP8)
        self.cuda = kv_pool.is_cuda
        two, layers, _, *block = kv_pool.shape
        # Pinned (page-locked) memory: the GPU's copy engine can DMA it directly, asynchronously.
        self.host = torch.empty((num_host_blocks, two, layers, *block), dtype=kv_pool.dtype,
                                pin_memory=self.cuda)  # fmt: skip
        if poison_requested():  # debug: a host block read before it is written shows as NaN
            self.host.fill_(float("nan"))
        self.host = as_bytes(self.host)
        self.free = list(range(num_host_blocks))
        self.stream = torch.cuda.Stream(kv_pool.device) if self.cuda else None

    def _index(self, blocks: list[int]) -> torch.Tensor:
        """Block ids on the device without stalling: a copy from pageable memory may wait for
        the whole GPU (every stream), a pinned non_blocking one does not."""
        index = torch.tensor(blocks, dtype=torch.int64)
        if not self.cuda:
            return index
        index = index.pin_memory().to(self.pool.device, non_blocking=True)
        # Made on the compute stream, read on the copy stream: without this, the allocator may
        # give its memory to the compute stream's next tensor while the copy stream still waits
        # to read it (found on the H100: blocks restored into the wrong places).
        index.record_stream(self.stream)
        return index

    @property
    def num_free_blocks(self) -> int:
        return len(self.free)

    def swap_out(self, blocks: list[int]) -> tuple[list[int], torch.cuda.Event | None]:
        """Copy device `blocks` to free host blocks; returns (host blocks, event when done)."""
        if len(blocks) > len(self.free):
            raise RuntimeError(
                f"swap space full: {len(blocks)} blocks to swap out, {len(self.free)} free host "
                "blocks; raise swap_space (host memory) or use preemption_mode='recompute'"
            )
        host, self.free = self.free[: len(blocks)], self.free[len(blocks) :]
        index = self._index(blocks)
        if not self.cuda:
            self.host[host] = self.pool.movedim(2, 0).index_select(0, index)
            return host, None
        self.stream.wait_stream(torch.cuda.current_stream())  # the KV was written by compute
        with torch.cuda.stream(self.stream):
            # Gather the blocks into one block-major buffer (one pass over HBM), then DMA.
            staged = self.pool.movedim(2, 0).index_select(0, index)
            for i, h, n in _runs(host):  # one DMA per run of consecutive host blocks
                self.host[h : h + n].copy_(staged[i : i + n], non_blocking=True)
            event = self.stream.record_event()
        return host, event

    def swap_in(self, host: list[int], blocks: list[int]) -> torch.cuda.Event | None:
        """Copy host blocks back into device `blocks` and free them; returns the done event."""
        if len(host) != len(blocks):
            raise ValueError(f"{len(host)} host blocks for {len(blocks)} device blocks")
        index = self._index(blocks)
        if not self.cuda:
            self.pool.movedim(2, 0).index_copy_(0, index, self.host[host])
            self.release(host)
            return None
        self.stream.wait_stream(torch.cuda.current_stream())  # the target blocks are free now
        with torch.cuda.stream(self.stream):
            staged = torch.empty((len(host), *self.host.shape[1:]), dtype=self.pool.dtype,
                                 device=self.pool.device)  # fmt: skip
            for i, h, n in _runs(host):
                staged[i : i + n].copy_(self.host[h : h + n], non_blocking=True)
            self.pool.movedim(2, 0).index_copy_(0, index, staged)  # scatter: one pass
            event = self.stream.record_event()
        # Later swap-outs into these host blocks run on the same stream, after this copy: safe.
        self.release(host)
        return event

    def release(self, host: list[int]) -> None:
        """Give host blocks back (swapped in, or their sequence was aborted while out)."""
        self.free = sorted(self.free + host)  # sorted: later swap-outs get long runs

    @staticmethod
    def wait(event: torch.cuda.Event | None) -> None:
        """Make the compute stream wait for a swap (no CPU stall); a no-op on the CPU."""
        if event is not None:
            torch.cuda.current_stream().wait_event(event)


def _runs(host: list[int]) -> list[tuple[int, int, int]]:
    """(position, first host block, length) of each run of consecutive host blocks: a big DMA
    reaches the link's bandwidth, a 2 MB one pays its fixed cost (notebook 06 measures both)."""
    runs: list[tuple[int, int, int]] = []
    for i, h in enumerate(host):
        if runs and runs[-1][1] + runs[-1][2] == h:
            runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((i, h, 1))
    return runs
