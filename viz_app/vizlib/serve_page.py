"""The Serving page's data: committed `bench serve` runs, their rows as a table, the knee.

A run is `bench/results/<device>/serve-<date>.json` (python -m minirt.bench serve): one row per
offered rate, measured (and, with --launch, simulated and offline). Notebook 03, section 6.
"""

from __future__ import annotations

from pathlib import Path

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
    return [{k: r.get(k) for k in COLUMNS} for r in record["results"] if r["name"] == kind]


def summary(record: dict, slo: Slo) -> dict:
    """The numbers the page's headline shows, for this SLO."""
    measured = [r for r in record["results"] if r["name"] == "rate"]
    offline = [r for r in record["results"] if r["name"] == "offline"]
    return {
        "max_rate": max_rate_meeting(measured, slo),
        "peak_throughput": max((r["request_throughput"] for r in measured), default=0.0),
        "http_efficiency": offline[0]["http_efficiency"] if offline else None,
    }
