"""The committed runs of `python -m minirt.bench sched` against issue 10's targets, per device:
radix + longest-prefix-match as the sglang preset runs it (with and without overlap) >= 1.5x the
throughput of FCFS without a prefix cache on every shared-prefix workload; its hit rate (and that
of radix-lpm with decode-first batches) within 5 points of the offline optimum, recomputed here
from the regenerated workloads; the overlapped scheduler hiding CPU time on CUDA."""

from pathlib import Path

import pytest

from minirt import workload
from minirt.bench import sched
from minirt.results import load_results
from minirt.tools.prefix import optimal_hit_rate

ROOT = Path(__file__).resolve().parents[2] / "bench" / "results"
# The SGLang-like preset is radix + LPM (prefill-first); "radix-lpm" alone keeps vLLM's
# decode-first batches. The throughput target is checked on the preset; hit rates on all three.
SGLANG = ("sglang", "sglang-no-overlap")
RADIX_LPM = ("radix-lpm", *SGLANG)


def newest(device: str) -> dict:
    paths = sorted((ROOT / device).glob("sched-*.json"), key=lambda p: p.name)
    if not paths:
        pytest.skip(f"no committed sched run for {device} (python -m minirt.bench sched)")
    return load_results(paths[-1])


def _workloads(record: dict) -> dict[str, workload.Workload]:
    """The run's workloads rebuilt from their recorded generator arguments."""
    vocab = 256 if record["device"] == "cpu" else 151936
    shot = record["config"]["workloads"][0]
    scale, length = shot["num_requests"] // 32, shot["system_len"] // 200
    return {w.name: w for w in workload.standard(scale=scale, vocab=vocab, length=length)}


# On the H100 this held only after three fixes of session 8 (sched-20261127-173204 / 173500:
# sglang 3.5-3.8x / 2.0-2.4x / 2.1-2.5x, no overlap 2.8-3.5x / 1.7-2.0x / 1.7-2.3x): scheduler
# host time cut 2-3x, the overlapped loop no longer waiting on list-indexed tensors, and the bench
# freezing the start-up heap out of the garbage collector (its full collections in 0.3 s runs).
@pytest.mark.parametrize("device", ["cpu", "h100", "h200"])
def test_radix_with_lpm_is_at_least_1_5x_fcfs_without_a_cache_on_shared_prefixes(device):
    rows = newest(device)["results"]
    base = {r["workload"]: r["output_tokens_per_s"] for r in rows if r["config"] == "baseline"}
    for r in rows:
        if r["config"] in SGLANG and r["workload"] in sched.SHARED:
            ratio = r["output_tokens_per_s"] / base[r["workload"]]
            assert ratio >= 1.5, f"{r['config']} on {r['workload']}: {ratio:.2f}x"


@pytest.mark.parametrize("device", ["cpu", "h100", "h200"])
def test_radix_hit_rate_is_within_5_points_of_the_offline_optimum(device):
    record = newest(device)
    works = _workloads(record)
    for r in record["results"]:
        if r["config"] in RADIX_LPM:
            best = optimal_hit_rate(works[r["workload"]].prompts)
            if not r["num_preemptions"]:  # a readmitted sequence may hit its own prompt
                assert r["hit_rate"] <= best + 1e-9  # nothing beats the optimum
            gap = best - r["hit_rate"]
            assert gap <= 0.05, f"{r['config']} on {r['workload']}: {gap:.1%} below the optimum"


@pytest.mark.parametrize("device", ["h100", "h200"])
def test_the_overlapped_scheduler_hides_cpu_time_on_the_gpu(device):
    rows = newest(device)["results"]
    hidden = {(r["workload"], r["config"]): r["cpu_hidden"] for r in rows}
    for work in {r["workload"] for r in rows}:
        assert hidden[work, "sglang"] > hidden[work, "sglang-no-overlap"]


def test_the_bench_rows_agree_with_the_engine_stats_on_a_tiny_workload():
    work = workload.few_shot(4, num_groups=1, system_len=40, question_len=6, max_tokens=3)
    engine = {"device": "cpu", "kv_cache_bytes": 64 * 16 * 8192, "max_num_batched_tokens": 64}
    configs = {k: sched.CONFIGS[k] for k in ("baseline", "sglang")}
    rows = sched.run_all(None, engine, [work], configs, progress=False, warmup=False)
    by = {r["config"]: r for r in rows}
    assert by["baseline"]["hit_rate"] == 0 and by["baseline"]["speedup_vs_baseline"] == 1
    assert 0 < by["sglang"]["hit_rate"] <= by["sglang"]["optimal_hit_rate"]
    for r in rows:
        assert r["num_steps"] > 0 and r["ttft_ms_p50"] <= r["ttft_ms_p99"]
        assert r["cpu_ms"] > 0 and r["device_ms"] > 0
