"""The Serving page's data: committed `bench serve` runs, their rows as a table, the knee.

A run is `bench/results/<device>/serve-<date>.json` (python -m minirt.bench serve): one row per
offered rate, measured (and, with --launch, simulated and offline). Notebook 03, section 6.
"""

from __future__ import annotations

import math
from pathlib import Path

import streamlit as st

from minirt.tools.serving import ClusterModel
from minirt.tools.slo import Slo, max_rate_meeting

ROOT = Path(__file__).resolve().parents[2] / "bench" / "results"
LATENCIES = ("ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "itl_p99_ms", "e2e_p99_ms")
COLUMNS = ("rate", "request_throughput", "output_throughput", *LATENCIES, "goodput", "failed")


def discover(root: Path = ROOT) -> list[Path]:
    """Every committed serve run, newest first."""
    return sorted(root.glob("*/serve-*.json"), key=lambda p: p.name, reverse=True)


def label(path: Path) -> str:
    return f"{path.parent.name} · {path.stem.removeprefix('serve-')}"


def table(record: dict, kind: str = "rate") -> list[dict]:
    """The rows of one kind ("rate" measured, "simulated") with the columns worth reading."""
    rows = [{k: r.get(k) for k in COLUMNS} for r in record["results"] if r["name"] == kind]
    return [r | {"rate": str(r["rate"])} for r in rows]  # "inf" beside numbers: one text column


def error_table(errors: list[dict]) -> list[dict]:
    """minirt.bench.serve.simulator_errors as rows of percentages, one per rate."""
    rows = []
    for e in errors:
        cells = {k.removesuffix("_ms"): f"{v:+.0%}" for k, v in e["errors"].items()}
        rows.append({"rate": str(e["rate"])} | cells)
    return rows


def summary(record: dict, slo: Slo) -> dict:
    """The numbers the page's headline shows, for this SLO."""
    measured = [r for r in record["results"] if r["name"] == "rate"]
    offline = [r for r in record["results"] if r["name"] == "offline"]
    return {
        "max_rate": max_rate_meeting(measured, slo),
        "peak_throughput": max((r["request_throughput"] for r in measured), default=0.0),
        "http_efficiency": offline[0]["http_efficiency"] if offline else None,
    }


# ---- one rate of the committed run -------------------------------------------------------------

RATE_METRICS = (
    ("TTFT p50", "ttft_p50_ms"),
    ("TTFT p99", "ttft_p99_ms"),
    ("TPOT p50", "tpot_p50_ms"),
    ("TPOT p99", "tpot_p99_ms"),
    ("ITL p99", "itl_p99_ms"),
    ("E2E p99", "e2e_p99_ms"),
)


def rates(record: dict) -> list[str]:
    """The measured rates as the slider offers them ("inf": everything at once)."""
    return [str(r["rate"]) for r in record["results"] if r["name"] == "rate"]


def at_rate(record: dict, rate: str) -> dict:
    """The measured row of one rate, as the slider names it."""
    return next(r for r in record["results"] if r["name"] == "rate" and str(r["rate"]) == rate)


def ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f} ms" if value >= 100 else f"{value:.1f} ms"


# ---- what if: the run's cost model on other clusters -------------------------------------------


def transfer_gbps(root: Path = ROOT) -> float | None:
    """The staged KV copy bandwidth of the newest committed `bench transfers` run (H100 first)."""
    from minirt.results import load_results
    from minirt.tools.serving_whatif import staged_copy_gbps

    for device in ("h100", "h200", "cpu"):
        runs = sorted((root / device).glob("transfers-2*.json"))
        if runs:
            return staged_copy_gbps(load_results(runs[-1]))
    return None


def kv_bytes_per_token(record: dict) -> int:
    """KV bytes per token of the run's model: the Qwen3-0.6B shape, or the embedded target."""
    from minirt.config import ModelConfig
    from minirt.kv import kv_cache_bytes_per_token
    from minirt.model.loader import EMBEDDED
    from minirt.tools.serving_whatif import QWEN3_KV_BYTES_PER_TOKEN

    if "qwen3" in str(record["config"].get("model", "")):
        return QWEN3_KV_BYTES_PER_TOKEN
    return kv_cache_bytes_per_token(ModelConfig.from_pretrained(EMBEDDED["target"]), "float32")


WHAT_IF_REQUESTS = 1000  # per rate


def what_if_rates(record: dict) -> list[float]:
    """The run's finite rates, then up to four times the highest (room for more GPUs)."""
    finite = [float(r) for r in record["config"]["rates"] if not math.isinf(float(r))]
    top = max(finite)
    return finite + [1.5 * top, 2 * top, 3 * top, 4 * top]


def has_cost_model(record: dict) -> bool:
    return any(r["name"] == "cost_model" for r in record["results"])


@st.cache_data(show_spinner="simulating …")
def compare(
    path: str, cluster: ClusterModel, token_budget: int, slo: Slo, num_prompts: int
) -> list[dict]:
    """Simulated rows of `num_prompts` requests drawn as the run drew its own: one replica as the
    run measured it, then `cluster` with `token_budget` (named by both when the budget is not the
    run's). More requests than the run's few hundred keep a fast cluster from looking better
    than it is: a short burst fits its batch slots before any queue forms."""
    from minirt.results import load_results
    from minirt.tools.serving_whatif import what_if

    record = load_results(path)
    rates = what_if_rates(record)
    base = what_if(record, ClusterModel(), rates, slo, num_prompts=num_prompts)
    other = what_if(record, cluster, rates, slo, token_budget, num_prompts)
    if token_budget != base[0]["token_budget"]:
        other = [r | {"setup": f"{r['setup']}, budget {token_budget}"} for r in other]
    if other[0]["setup"] == base[0]["setup"]:
        return base
    return base + other


def setup_names(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["setup"] for r in rows))


def what_if_table(rows: list[dict]) -> list[dict]:
    keep = ("setup", "rate", "goodput", "slo_attainment", "ttft_p50_ms", "ttft_p99_ms")
    keep += ("tpot_p50_ms", "tpot_p99_ms", "request_throughput")
    return [{k: r.get(k) for k in keep} for r in rows]


# ---- live: the load generator against a local server --------------------------------------------


def server_answers(url: str, timeout_s: float = 2.0) -> str | None:
    """None when `url` answers GET /health with 200; else what went wrong, in words."""
    import httpx

    try:
        r = httpx.get(url.rstrip("/") + "/health", timeout=timeout_s)
    except (httpx.HTTPError, ValueError) as e:
        return f"no server answers at {url} ({type(e).__name__})"
    if r.status_code != 200:
        return f"{url}/health answered HTTP {r.status_code}"
    return None


def live_run(url: str, rate: float, count: int, slo: Slo) -> list[dict]:
    """`bench serve`'s sweep at one rate against `url` (small ShareGPT-like lengths)."""
    from minirt.bench.serve import LoadConfig, sweep

    return sweep(LoadConfig(url=url.rstrip("/"), rates=[rate], num_prompts=count, slo=slo), False)
