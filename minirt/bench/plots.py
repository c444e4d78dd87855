"""Plots of a `gpu` benchmark record, drawn from its JSON only (never by hand).

`python -m minirt.bench plot FILE.json` writes FILE.png beside it: decode tokens/s per system
and batch size, the decode step against its roofline floor, and the attention kernels against
their references (copy bandwidth, SDPA flash).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402


def _rows(record: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [r for r in record["results"] if r["name"] == name and "error" not in r]


def plot_gpu(record: dict[str, Any]):
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(16, 4.2))
    decode = _rows(record, "decode")
    for system in dict.fromkeys(r["system"] for r in decode):
        pts = sorted((r["batch"], r["tokens_per_s"]) for r in decode if r["system"] == system)
        a.plot(*zip(*pts, strict=True), marker="o", label=system)
    a.set(xscale="log", yscale="log", xlabel="batch size", ylabel="decode tokens/s",
          title="Decode throughput")  # fmt: skip
    a.legend()
    roof = sorted(_rows(record, "roofline"), key=lambda r: r["batch"])
    batches = [r["batch"] for r in roof]
    b.plot(batches, [r["step_ms"] for r in roof], marker="o", label="minirt-graphs, measured")
    b.plot(batches, [r["floor_ms"] for r in roof], ls="--", label="(weights + KV) / copy GB/s")
    b.set(xscale="log", xlabel="batch size", ylabel="ms per decode step", title="Roofline")
    b.legend()
    labels, fractions = [], []
    for r in _rows(record, "decode_attention_kernel"):
        labels.append(f"decode {r['batch']}x{r['context']} / copy")
        fractions.append(r["fraction_of_copy"])
    for r in _rows(record, "prefill_attention_kernel"):
        labels.append(f"prefill {r['seq_len']} / SDPA flash")
        fractions.append(r["ratio"])
    c.barh(range(len(labels)), fractions)
    c.axvline(0.7, color="grey", ls=":", label="target 70 %")
    c.set_yticks(range(len(labels)), labels, fontsize=8)
    c.invert_yaxis()
    c.set(xlabel="fraction of the reference", title="Attention kernels")
    c.legend()
    gpu = (record.get("config") or {}).get("gpu", record.get("device", "?"))
    fig.suptitle(f"minirt on {gpu}, {record.get('date', '?')}")
    fig.tight_layout()
    return fig


def write_plot(path: str | Path) -> Path:
    from minirt.results import load_results

    path = Path(path)
    record = load_results(path)
    if record.get("topic") != "gpu":
        raise ValueError(f"{path.name} is a {record.get('topic')!r} record; plot draws gpu ones")
    out = path.with_suffix(".png")
    fig = plot_gpu(record)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def add_parser(topics) -> None:
    p = topics.add_parser("plot", help="draw a gpu result JSON as a PNG beside it")
    p.add_argument("file", help="a bench/results/<device>/gpu-*.json file")


def main(args, command: str) -> Path:
    return write_plot(args.file)
