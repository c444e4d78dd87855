"""What-ifs on a committed `bench serve` run: its fitted cost model, its requests, other clusters.

The run's `cost_model` row prices one engine's steps as the server really paid them; the same
requests at the same arrival times then go through `minirt.tools.serving.simulate` with more
replicas, another token budget, or prefill and decode on separate engines, the KV moved between
them at a measured copy bandwidth (`bench transfers`). Notebook 03, section 7.
"""

from __future__ import annotations

from dataclasses import replace

from minirt.config import PRESETS
from minirt.kv import kv_cache_bytes_per_token
from minirt.tools.serving import ClusterModel, CostModel, SchedulerModel, predict_curve
from minirt.tools.slo import Slo
from minirt.workload import WorkloadSpec, arrival_times, make_requests

# The committed H100 run serves the Qwen3-0.6B shape: 2 x 28 layers x 8 KV heads x 128 x 2 bytes.
QWEN3_KV_BYTES_PER_TOKEN = kv_cache_bytes_per_token(PRESETS["qwen3-0.6b"], "bfloat16")


def fitted_model(record: dict, load_generator: bool = False) -> tuple[CostModel, SchedulerModel]:
    """The cost model and the scheduler a serve run's simulated rows were made with; the load
    generator's own cost only with `load_generator` (to compare with that run): a what-if
    predicts the server, whose clients are many, not the one loop that measured it."""
    rows = [r for r in record["results"] if r["name"] == "cost_model"]
    if not rows:
        raise ValueError(
            f"{record.get('command', 'this run')} has no cost_model row: only a run made with "
            "--launch (or resimulated with --resimulate) has one"
        )
    row = rows[0]
    numbers = ("base_ms", "prefill_ms", "decode_ms", "context_ms", "eager_ms", "frontend_ms",
               "frontend_us_per_step", "frontend_us_per_chunk")  # fmt: skip
    cost = CostModel(
        **{k: row.get(k, 0.0) for k in numbers},
        client_us_per_chunk=row.get("client_us_per_chunk", 0.0) if load_generator else 0.0,
        eager_spread=tuple(row.get("eager_spread", ())),  # JSON gave lists
        graph_spread=tuple(row.get("graph_spread", ())),
    )
    return cost, SchedulerModel(**row.get("scheduler", {}))


def staged_copy_gbps(transfers: dict) -> float:
    """A prompt's KV moving between two GPUs through pinned host memory, priced by minirt's own
    KV swap (whole blocks, copy stream): out to the host, then in on the other GPU, one after the
    other, so 1 / (1/out + 1/in). A peer link (NVLink) would be faster; this run did not
    measure one."""
    swap = {r["direction"]: r["gbps"] for r in transfers["results"] if r["experiment"] == "swap"}
    if set(swap) != {"out", "in"}:
        raise ValueError("the transfers run has no swap rows (out and in); run bench transfers")
    return 1 / (1 / swap["out"] + 1 / swap["in"])


def requests_of(record: dict, num_prompts: int | None = None) -> list[tuple[int, int]]:
    """The run's (prompt, output) lengths, or `num_prompts` drawn from its distribution."""
    c = record["config"]
    work = make_requests(WorkloadSpec(**c["workload"]), num_prompts or c["num_prompts"])
    return list(zip(work.prompt_lens, work.output_lens, strict=True))


def what_if(
    record: dict,
    cluster: ClusterModel,
    rates: list[float],
    slo: Slo,
    token_budget: int | None = None,
    num_prompts: int | None = None,
    load_generator: bool = False,
) -> list[dict]:
    """Simulated rows (one per rate, as `bench serve` writes them) for the run's requests and
    arrivals on `cluster`, each with its `setup` and GPU count (`load_generator`: as
    `fitted_model`)."""
    cost, sched = fitted_model(record, load_generator)
    if token_budget is not None:
        sched = replace(sched, max_num_batched_tokens=token_budget)
    lengths = requests_of(record, num_prompts)
    c = record["config"]
    seed, burst = c["workload"]["seed"], c["burstiness"]
    times = {r: arrival_times(len(lengths), r, burst, seed) for r in rates}
    rows = predict_curve(lengths, times, cost, sched, slo, cluster)
    extra = {
        "setup": describe(cluster),
        "gpus": cluster.gpus,
        "token_budget": sched.max_num_batched_tokens,
    }
    return [row | extra for row in rows]


def describe(cluster: ClusterModel) -> str:
    if cluster.disaggregated:
        return f"{cluster.prefill}P+{cluster.decode}D"
    if cluster.replicas == 1:
        return "1 replica"
    return f"{cluster.replicas} replicas ({cluster.router.replace('_', '-')})"


def max_rate_attained(rows: list[dict], attainment: float = 0.9) -> float | None:
    """DistServe's measure: the highest offered rate at which at least `attainment` of the
    requests meet the SLO (None: no rate does). Divide by the GPUs for goodput per GPU."""
    ok = [
        float(r["rate"]) for r in rows if r["rate"] != "inf" and r["slo_attainment"] >= attainment
    ]
    return max(ok) if ok else None


def plot_what_if(setups: dict[str, list[dict]], slo: Slo, title: str = ""):
    """Goodput (requests/s within `slo`) and TPOT p99 against the offered rate, one line per
    setup (`what_if` rows by setup name); the offered rate itself as a dotted diagonal."""
    import matplotlib

    if not matplotlib.get_backend().lower().startswith(("module://", "inline")):
        matplotlib.use("Agg")  # files only, unless a notebook draws inline
    import matplotlib.pyplot as plt

    fig, (good, tpot) = plt.subplots(1, 2, figsize=(11, 4))
    for name, rows in setups.items():
        rows = [r for r in rows if r["rate"] != "inf" and r["completed"]]
        rates = [float(r["rate"]) for r in rows]
        good.plot(rates, [r["goodput"] for r in rows], "o-", label=name)
        tpot.plot(rates, [r["tpot_p99_ms"] for r in rows], "o-", label=name)
    top = max(float(r["rate"]) for rows in setups.values() for r in rows if r["rate"] != "inf")
    good.plot([0, top], [0, top], ":", color="gray", label="offered rate")
    tpot.axhline(slo.tpot_ms, color="gray", ls=":", label=f"SLO {slo.tpot_ms:g} ms")
    good.set(xlabel="offered rate (requests/s)", ylabel="goodput (requests/s)")
    good.set_title(f"goodput: TTFT ≤ {slo.ttft_ms:g} ms and TPOT ≤ {slo.tpot_ms:g} ms")
    tpot.set(xlabel="offered rate (requests/s)", ylabel="TPOT p99 (ms)", yscale="log")
    tpot.set_title("TPOT p99")
    good.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
