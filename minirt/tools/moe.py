"""The cost model of MoE expert parallelism: what the dispatch/combine all-to-alls move, what
they cost on NVLink and on the inter-node network, and what each standard fix buys.

A token's hidden vector travels to the ranks of its k experts and back: bytes = hidden x copies x
bytes per value, copies between 1 and k. Time = latency + bytes / bandwidth on the slowest link,
times the load imbalance (the busiest rank finishes last). Fixes: FP8 dispatch, hierarchical
(node-then-GPU) routing, two-micro-batch overlap (`moe_timeline`), expert replication
(`balance_experts`), shared experts. Checked against DeepEP's published figures; notebook 12.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass, replace

from minirt.tools.moe_timeline import makespan, simulate
from minirt.tools.roofline import H100_SXM, Hardware


@dataclass(frozen=True)
class Link:
    name: str
    bandwidth: float  # bytes/s per GPU, one direction
    latency: float = 0.0  # s per all-to-all: launch, handshake, the receiver's notification

    def time(self, nbytes: float) -> float:
        return self.latency + nbytes / self.bandwidth


# Datasheet and vendor figures (not measurements). NVLink 4: 900 GB/s per H100, both directions
# together; H800's export NVLink ~160 GB/s and ConnectX-7 400 Gb/s = 50 GB/s as DeepEP states.
NVLINK_H100 = Link("NVLink 4 (H100 SXM)", 450e9, 5e-6)
NVLINK_H800 = Link("NVLink (H800)", 160e9, 5e-6)
IB_400G = Link("InfiniBand 400 Gb/s (ConnectX-7)", 50e9, 10e-6)
FP8_BYTES = 1 + 4 / 128  # E4M3 values plus one fp32 scale per 128 (DeepEP's dispatch format)


@dataclass(frozen=True)
class MoEDeployment:
    """The shapes that decide the traffic, and how the experts are spread over GPUs."""

    name: str
    hidden: int
    num_experts: int
    top_k: int
    expert_intermediate: int
    num_moe_layers: int
    shared_experts: int = 0  # always-on experts of the same width (DeepSeek-V3: 1)
    num_ranks: int = 8  # expert-parallel GPUs
    gpus_per_node: int = 8
    max_nodes_per_token: int | None = None  # DeepSeek-V3's node-limited routing: 4
    attention_params: int = 0  # per layer, for the overlap model's attention time
    kv_bytes_per_token: int = 0  # per layer

    @property
    def num_nodes(self) -> int:
        return max(1, self.num_ranks // self.gpus_per_node)

    def to_dict(self) -> dict:
        return asdict(self)


# DeepSeek-V3 (config.json: hidden 7168, 256 routed + 1 shared expert of 2048, top-8, 58 MoE
# layers of 61, MLA: ~187 M attention weights and 576 cached values per token per layer) on
# 8 nodes; Qwen3-30B-A3B (hidden 2048, 128 experts of 768, top-8, 48 layers, GQA 32/4) on one.
DEEPSEEK_V3 = MoEDeployment("DeepSeek-V3, EP64 (8 nodes x 8 GPUs)", 7168, 256, 8, 2048, 58,
                            shared_experts=1, num_ranks=64, max_nodes_per_token=4,
                            attention_params=187_000_000, kv_bytes_per_token=1152)  # fmt: skip
QWEN3_30B_A3B = MoEDeployment("Qwen3-30B-A3B, EP8 (1 node)", 2048, 128, 8, 768, 48, num_ranks=8,
                              attention_params=18_900_000, kv_bytes_per_token=2048)  # fmt: skip
DEPLOYMENTS = {"deepseek-v3": DEEPSEEK_V3, "qwen3-30b-a3b": QWEN3_30B_A3B}


def distinct_units(num_units: int, num_experts: int, top_k: int) -> float:
    """Expected distinct ranks (or nodes) among a token's k experts, experts picked uniformly
    without repeats, E / units per unit: units x (1 - C(E - E/units, k) / C(E, k))."""
    per = num_experts // num_units
    miss = math.comb(num_experts - per, top_k) / math.comb(num_experts, top_k)
    return num_units * (1 - miss)


def copies_per_token(d: MoEDeployment) -> dict[str, float]:
    """Copies of one token's vector each scheme sends (the token's own GPU and node included):
    per expert (no deduplication, DeepEP's low-latency kernels), per rank, per node."""
    nodes = distinct_units(d.num_nodes, d.num_experts, d.top_k)
    if d.max_nodes_per_token is not None:
        nodes = min(nodes, d.max_nodes_per_token)
    return {"expert": float(d.top_k), "rank": distinct_units(d.num_ranks, d.num_experts, d.top_k),
            "node": nodes}  # fmt: skip


def traffic(d: MoEDeployment, tokens_per_rank: int, scheme: str = "flat",
            bytes_per_value: float = 2.0) -> dict[str, float]:  # fmt: skip
    """Bytes one rank sends per all-to-all over NVLink and over the network.

    flat: one copy per destination rank, straight there (other nodes' ranks over the network).
    hierarchical: one copy per destination *node* over the network (to the same-index GPU), which
    forwards it over NVLink to the node's other ranks. low_latency: one copy per expert, like
    flat but without deduplication (DeepEP's decode kernels: no notify round, fixed buffers).
    """
    row = d.hidden * bytes_per_value * tokens_per_rank
    c = copies_per_token(d)
    g, n = d.gpus_per_node, d.num_nodes
    if scheme in ("flat", "low_latency"):
        copies = c["rank"] if scheme == "flat" else c["expert"]
        # destinations are uniform over ranks: (g - 1) / R of them on my node, R - g off it
        return {"nvlink": row * copies * (g - 1) / d.num_ranks,
                "network": row * copies * (d.num_ranks - g) / d.num_ranks}  # fmt: skip
    if scheme == "hierarchical":
        remote_nodes = c["node"] * (n - 1) / n if n > 1 else 0.0
        # NVLink: copies for my own node's other ranks, and forwarding what arrives for my node
        # (by symmetry as much as I send off-node) to the ranks of its experts there
        forward = remote_nodes * c["rank"] / c["node"] * (g - 1) / g
        return {"nvlink": row * (c["rank"] * (g - 1) / d.num_ranks + forward),
                "network": row * remote_nodes}  # fmt: skip
    raise ValueError(f"scheme must be 'flat', 'hierarchical' or 'low_latency', got {scheme!r}")


def all_to_all_time(d: MoEDeployment, tokens_per_rank: int, scheme: str = "flat",
                    bytes_per_value: float = 2.0, nvlink: Link = NVLINK_H100,
                    network: Link = IB_400G, imbalance: float = 1.0) -> float:  # fmt: skip
    """Seconds for one dispatch (or combine): both links run at once, the slower one decides;
    `imbalance` (busiest rank / mean, e.g. RouterStats.rank_imbalance) scales the bytes."""
    t = traffic(d, tokens_per_rank, scheme, bytes_per_value)
    nv = nvlink.time(t["nvlink"] * imbalance) if t["nvlink"] else 0.0
    net = network.time(t["network"] * imbalance) if t["network"] else 0.0
    return max(nv, net)


def expert_time(d: MoEDeployment, tokens_per_rank: int, hw: Hardware = H100_SXM,
                imbalance: float = 1.0, efficiency: float = 0.6,
                weight_bytes: float = 2.0) -> float:  # fmt: skip
    """Roofline of one rank's grouped expert GEMMs: its E / R experts' weights read once, and
    2 x 3 x H x I FLOPs per received row (k rows per token on average, x imbalance at worst)."""
    per_expert = 3 * d.hidden * d.expert_intermediate
    rows = tokens_per_rank * d.top_k * imbalance
    weights = d.num_experts / d.num_ranks * per_expert * weight_bytes
    return max(weights / hw.mem_bandwidth, 2 * per_expert * rows / hw.peak_flops) / efficiency


def shared_time(
    d: MoEDeployment, tokens_per_rank: int, hw: Hardware = H100_SXM, efficiency: float = 0.6
) -> float:
    per = 3 * d.hidden * d.expert_intermediate * d.shared_experts
    return max(per * 2 / hw.mem_bandwidth, 2 * per * tokens_per_rank / hw.peak_flops) / efficiency


def attention_time(d: MoEDeployment, tokens_per_rank: int, context_len: int = 4096,
                   hw: Hardware = H100_SXM, efficiency: float = 0.6) -> float:  # fmt: skip
    """Decode attention of one layer (data-parallel: each rank its own sequences): weights and
    KV read, 2 FLOPs per weight per token."""
    nbytes = d.attention_params * 2 + tokens_per_rank * context_len * d.kv_bytes_per_token
    flops = 2 * d.attention_params * tokens_per_rank
    return max(nbytes / hw.mem_bandwidth, flops / hw.peak_flops) / efficiency


@dataclass(frozen=True)
class Fixes:
    """Which remedies a layer uses (see the module docstring); all off is the baseline."""

    fp8_dispatch: bool = False
    hierarchical: bool = False
    micro_batches: int = 1
    balanced: bool = False  # expert replication brings the imbalance to `balanced_imbalance`
    balanced_imbalance: float = 1.05


def layer_time(d: MoEDeployment, tokens_per_rank: int, fixes: Fixes | None = None,
               imbalance: float = 1.0, context_len: int = 4096, nvlink: Link = NVLINK_H100,
               network: Link = IB_400G, hw: Hardware = H100_SXM) -> dict:  # fmt: skip
    """One MoE layer's operations and its two-stream makespan under `fixes` (seconds)."""
    f = fixes or Fixes()
    imb = min(imbalance, f.balanced_imbalance) if f.balanced else imbalance
    scheme = "hierarchical" if f.hierarchical else "flat"
    ops = {
        "attention": attention_time(d, tokens_per_rank, context_len, hw),
        "dispatch": all_to_all_time(d, tokens_per_rank, scheme,
                                    FP8_BYTES if f.fp8_dispatch else 2.0, nvlink, network, imb),
        "experts": expert_time(d, tokens_per_rank, hw, imb),
        "combine": all_to_all_time(d, tokens_per_rank, scheme, 2.0, nvlink, network, imb),
        "shared": shared_time(d, tokens_per_rank, hw),
    }  # fmt: skip
    intervals = simulate(**ops, micro_batches=f.micro_batches)
    return {**ops, "total": makespan(intervals), "intervals": [iv.to_dict() for iv in intervals]}


def fix_ladder(d: MoEDeployment, tokens_per_rank: int, imbalance: float = 1.3,
               **kw) -> list[dict]:  # fmt: skip
    """The layer time as each fix is added on top of the previous ones."""
    fp8 = Fixes(fp8_dispatch=True)
    hier = replace(fp8, hierarchical=True)
    eplb = replace(hier, balanced=True)
    steps = [("baseline: BF16, flat all-to-all", Fixes()), ("+ FP8 dispatch", fp8),
             ("+ hierarchical (node, then GPU)", hier), ("+ expert replication (EPLB)", eplb),
             ("+ two micro-batches overlap", replace(eplb, micro_batches=2))]  # fmt: skip
    rows = []
    for name, f in steps:
        t = layer_time(d, tokens_per_rank, f, imbalance, **kw)
        rows.append({"fix": name, "dispatch_us": t["dispatch"] * 1e6,
                     "combine_us": t["combine"] * 1e6, "experts_us": t["experts"] * 1e6,
                     "layer_us": t["total"] * 1e6})  # fmt: skip
    for r in rows:
        r["speedup"] = rows[0]["layer_us"] / r["layer_us"]
    return rows


@dataclass
class Balance:
    slots: list[list[tuple[int, float]]]  # per rank: (expert, share of its tokens)
    rank_load: list[float]
    imbalance_before: float  # contiguous placement, no replicas
    imbalance_after: float

    def to_dict(self) -> dict:
        return asdict(self)


def balance_experts(load: list[float], num_ranks: int, redundant: int = 0) -> Balance:
    """DeepSeek's EPLB idea: give the `redundant` spare slots to the hottest experts (each copy
    takes an equal share of its tokens), then place the copies heaviest-first on the least
    loaded rank with a free slot. (E + redundant) must divide by the ranks."""
    e = len(load)
    if (e + redundant) % num_ranks:
        raise ValueError(f"{e} experts + {redundant} replicas do not fill {num_ranks} ranks evenly")
    per = e // num_ranks
    before = [sum(load[r * per : (r + 1) * per]) for r in range(num_ranks)]
    replicas = [1] * e
    for _ in range(redundant):  # the expert whose copies carry the most each gets one more
        hot = max(range(e), key=lambda i: load[i] / replicas[i])
        replicas[hot] += 1
    copies = sorted(((load[i] / replicas[i], i) for i in range(e) for _ in range(replicas[i])),
                    reverse=True)  # fmt: skip
    cap = (e + redundant) // num_ranks
    heap = [(0.0, r) for r in range(num_ranks)]
    slots: list[list[tuple[int, float]]] = [[] for _ in range(num_ranks)]
    full: list[tuple[float, int]] = []
    for share, i in copies:
        total, r = heapq.heappop(heap)
        slots[r].append((i, 1 / replicas[i]))
        (heap if len(slots[r]) < cap else full).append((total + share, r))
        heapq.heapify(heap)
    loads = [sum(load[i] * s for i, s in slot) for slot in slots]
    mean = sum(load) / num_ranks
    return Balance(slots, loads, max(before) / mean, max(loads) / mean)


# DeepEP (V1, docs/legacy.md), H800 + ConnectX-7: low-latency kernels, 128 tokens per rank,
# hidden 7168, top-8, FP8 dispatch, BF16 combine. EP ranks -> (dispatch us, GB/s, combine us, GB/s)
DEEPEP_LOW_LATENCY = {8: (77, 98, 114, 127), 16: (118, 63, 195, 74), 32: (155, 48, 273, 53),
                      64: (173, 43, 314, 46), 128: (192, 39, 369, 39),
                      256: (194, 39, 360, 40)}  # fmt: skip
# Normal kernels, 4096 tokens, top-4 nodes: EP -> (dispatch, combine) bottleneck GB/s.
DEEPEP_NORMAL = {8: (153, 158), 16: (43, 43), 32: (58, 57), 64: (51, 50)}


def deepep_low_latency(num_ranks: int, network: Link = IB_400G,
                       nvlink: Link = NVLINK_H800) -> dict:  # fmt: skip
    """Our model of DeepEP's low-latency benchmark at `num_ranks`: per-expert copies, FP8 out,
    BF16 back, other nodes' ranks over the network and the own node's over NVLink."""
    d = replace(DEEPSEEK_V3, num_ranks=num_ranks, max_nodes_per_token=None)
    out = {}
    for phase, nbytes in (("dispatch", FP8_BYTES), ("combine", 2.0)):
        t = all_to_all_time(d, 128, "low_latency", nbytes, nvlink, network)
        logical = 128 * d.top_k * d.hidden * nbytes  # the bytes DeepEP divides by its latency
        out[phase] = {"us": t * 1e6, "logical_GB_s": logical / t / 1e9}
    return out


def fit_link(sizes: list[float], seconds: list[float], name: str = "fitted") -> Link:
    """Least-squares latency + bytes / bandwidth through measured (bytes, seconds) points."""
    n = len(sizes)
    mx, my = sum(sizes) / n, sum(seconds) / n
    sxx = sum((x - mx) ** 2 for x in sizes)
    slope = sum((x - mx) * (y - my) for x, y in zip(sizes, seconds, strict=True)) / sxx
    return Link(name, 1 / slope, max(0.0, my - slope * mx))


def fit_all_to_all(rows: list[dict], min_bytes: float = 0, name: str = "fitted") -> Link:
    """The latency + bytes / bandwidth line through measured all-to-all rows (`python -m
    minirt.bench moe`: bytes_per_rank, world_size, ms), on the bytes that *leave* each rank,
    (W - 1) / W of what it sends (its own share stays in memory): the bandwidth is then per GPU
    and direction, like `NVLINK_H100`'s datasheet figure. Rows under `min_bytes` are skipped."""
    points = [(r["bytes_per_rank"] * (r["world_size"] - 1) / r["world_size"], r["ms"] / 1e3)
              for r in rows if r["bytes_per_rank"] >= min_bytes]  # fmt: skip
    if len(points) < 2:
        raise ValueError(f"need at least 2 all-to-all rows of >= {min_bytes:,.0f} bytes to fit "
                         f"a line, got {len(points)}; lower min_bytes")  # fmt: skip
    return fit_link([p[0] for p in points], [p[1] for p in points], name)


def phase_ms(phases: list[dict]) -> dict[str, float]:
    """One rank's `ep_block` timeline (its "phases" list) as ms per phase, micro-batches summed.
    Each phase ends at a device synchronisation, so a phase also holds any wait for a peer."""
    out: dict[str, float] = {}
    for p in phases:
        out[p["phase"]] = out.get(p["phase"], 0.0) + p["end_ms"] - p["start_ms"]
    return out
