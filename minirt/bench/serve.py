"""`python -m minirt.bench serve`: an open-loop load generator for any OpenAI-compatible server.

At each offered rate it sends streamed completions at drawn arrival times, records each
request's TTFT, inter-token gaps and latency, and summarises them with the SLO's goodput
(minirt.tools.slo). It speaks only HTTP, so the same command measures another engine. With
`--launch` it starts `python -m minirt serve` itself and afterwards runs the same requests
through offline `LLM.generate`, to show what HTTP and the engine loop cost. Notebook 03.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import aiohttp
import httpx

from minirt.tools.slo import RequestTiming, Slo, max_rate_meeting, summarize
from minirt.workload import Workload, WorkloadSpec, arrival_times, make_requests

TOPIC = "serve"


@dataclass
class LoadConfig:
    url: str  # the server's root, e.g. http://127.0.0.1:8000
    rates: list[float]  # requests/s; math.inf = all at once
    num_prompts: int = 32  # requests per rate
    burstiness: float = 1.0  # gamma shape of the gaps: 1 = Poisson, < 1 burstier
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    slo: Slo = field(default_factory=lambda: Slo(ttft_ms=500, tpot_ms=50))
    model: str | None = None  # default: the first model /v1/models lists
    timeout_s: float = 600.0
    slos: dict[str, Slo] = field(default_factory=dict)  # more goodputs: row["goodput_<name>"]


async def send(
    session: aiohttp.ClientSession,
    url: str,
    model: str,
    prompt: list[int],
    max_tokens: int,
    t0: float,
    at: float | None = None,
):
    """One streamed completion, scheduled at `at` s after `t0`; a RequestTiming, or the error
    in words. Besides TTFT and the gaps it records how late the send was (this client's own
    event loop, busy with other streams, can be) and when the response's headers came (the
    server accepted, parsed and queued the request by then)."""
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "stream": True}
    # greedy and exactly max_tokens tokens (ignore_eos: vLLM's extension, which minirt has too)
    body |= {"temperature": 0.0, "ignore_eos": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    stamps, tokens = [], None
    try:
        async with session.post(url + "/v1/completions", json=body) as r:
            headers = time.perf_counter()
            if r.status != 200:
                return f"HTTP {r.status}: {(await r.read())[:200]!r}"
            async for line in r.content:  # one server-sent event line at a time
                if not line.startswith(b"data: {"):
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return f"error event: {chunk['error'].get('message')}"
                if chunk.get("choices"):
                    stamps.append(time.perf_counter())
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
    except (TimeoutError, aiohttp.ClientError) as e:
        return f"{type(e).__name__}: {e}"
    if not stamps:
        return "the stream ended without a token"
    itl = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    n = tokens if tokens is not None else len(stamps)
    late = None if at is None else max(0.0, start - t0 - at)
    return RequestTiming(start - t0, stamps[0] - start, stamps[-1] - start, n, itl, late,
                         headers - start)  # fmt: skip


class RateRun(NamedTuple):
    """One rate's requests as the client saw them."""

    done: list[RequestTiming]  # the answered ones, in the order sent
    errors: list[str]  # the others, in words
    duration_s: float
    t0: float  # the send clock's zero on perf_counter(): every time here counts from it
    sends_s: list[float | None]  # when each request went out (None: it failed), request order


async def run_rate(cfg: LoadConfig, model: str, requests: Workload, rate: float) -> RateRun:
    """Send `requests` at `rate` (open loop), with aiohttp as vLLM's benchmark does: httpx's
    connection pool scans every connection when one is released, so with hundreds of streams
    open that client, not the server, set the pace."""
    times = arrival_times(len(requests.prompts), rate, cfg.burstiness, cfg.workload.seed)
    connector = aiohttp.TCPConnector(limit=0)  # no cap on connections: the arrivals decide
    timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t0 = time.perf_counter()

        async def one(prompt: list[int], max_tokens: int, at: float):
            await asyncio.sleep(max(0.0, t0 + at - time.perf_counter()))
            return await send(session, cfg.url, model, prompt, max_tokens, t0, at)

        sends = zip(requests.prompts, requests.output_lens, times, strict=True)
        outs = await asyncio.gather(*(one(p, n, t) for p, n, t in sends))
        duration = time.perf_counter() - t0
    done = [o for o in outs if isinstance(o, RequestTiming)]
    sends = [o.start_s if isinstance(o, RequestTiming) else None for o in outs]
    return RateRun(done, [o for o in outs if isinstance(o, str)], duration, t0, sends)


def served_model(url: str) -> str:
    return _models(url)[0]["id"]


def _models(url: str) -> list[dict]:
    return httpx.get(url + "/v1/models", timeout=30).json()["data"]


def check_fits(url: str, model: str, requests: Workload) -> None:
    """ValueError, before anything is sent, when a request cannot fit the model's context (a
    server that says its max_model_len in /v1/models, as minirt's and vLLM's do)."""
    card = next((m for m in _models(url) if m["id"] == model), {})
    limit = card.get("max_model_len")
    need = max(p + o for p, o in zip(requests.prompt_lens, requests.output_lens, strict=True))
    if limit is not None and need > limit:
        raise ValueError(
            f"the workload's longest request needs {need:,} tokens (prompt + output) but "
            f"{model!r} holds {limit:,}; choose a smaller distribution (e.g. sharegpt-small) "
            "or shorter --input-len/--output-len"
        )


def server_steps(url: str, since: int = 0) -> dict | None:
    """A minirt server's GET /steps after the `since`-th step: {next, steps, t0_s, http_cpu_s,
    http_chunks};
    None from a server without one."""
    r = httpx.get(url + "/steps", params={"since": since}, timeout=60)
    return r.json() if r.status_code == 200 else None


def sweep(cfg: LoadConfig, progress: bool = True) -> list[dict]:
    """One row per offered rate: the same lengths at each, fresh tokens (no prefix-cache hits
    from an earlier rate), after a warm-up of the whole workload at once."""
    model = cfg.model or served_model(cfg.url)
    warm_up = make_requests(cfg.workload, cfg.num_prompts)
    check_fits(cfg.url, model, warm_up)
    _run(run_rate(cfg, model, warm_up, math.inf))
    rows = []
    for i, rate in enumerate(cfg.rates, start=1):
        requests = make_requests(cfg.workload, cfg.num_prompts, variant=i)
        before, client_cpu = server_steps(cfg.url), time.process_time()
        done, errors, duration, t0, sends = _run(run_rate(cfg, model, requests, rate))
        row = {"name": "rate", "rate": "inf" if math.isinf(rate) else rate, "variant": i,
               "client_cpu_s": time.process_time() - client_cpu}  # fmt: skip
        if before is not None:  # a minirt server: its step log for this rate (the simulator's)
            after = server_steps(cfg.url, before["next"])
            row["server_steps"] = after["steps"]
            if after.get("t0_s") is not None and _local(cfg.url):  # steps on the sends' clock
                row["server_clock_offset_s"] = after["t0_s"] - t0
                row["client_sends_s"] = sends  # to the step log's file, beside the steps
            if after.get("http_cpu_s") is not None:  # the HTTP process's CPU for this rate
                row["server_http_cpu_s"] = after["http_cpu_s"] - before["http_cpu_s"]
                row["server_http_chunks"] = after["http_chunks"] - before["http_chunks"]
        row |= summarize(done, len(errors), duration, cfg.slo)
        for name, slo in cfg.slos.items():
            row[f"goodput_{name}"] = summarize(done, len(errors), duration, slo)["goodput"]
        row["errors"] = sorted(set(errors))[:5]
        rows.append(row)
        if progress:
            print(_line(row), flush=True)
    return rows


def _local(url: str) -> bool:
    """A server on this machine (its perf_counter() is this process's clock)."""
    from urllib.parse import urlparse

    return urlparse(url).hostname in ("127.0.0.1", "localhost", "::1")


def _run(coro):
    """asyncio.run, also from a notebook (whose event loop is already running: use a thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _line(r: dict) -> str:
    def ms(key: str) -> str:
        return "-" if r.get(key) is None else f"{r[key]:.0f}"

    return (
        f"rate {r['rate']!s:>6}  {r['request_throughput']:6.2f} req/s  "
        f"{r['output_throughput']:8.1f} tok/s  TTFT p50/p99 {ms('ttft_p50_ms')}/"
        f"{ms('ttft_p99_ms')} ms  TPOT p50/p99 {ms('tpot_p50_ms')}/{ms('tpot_p99_ms')} ms  "
        f"goodput {r['goodput']:.2f}  failed {r['failed']}"
        + (
            f"  headers p50/p99 {ms('headers_p50_ms')}/{ms('headers_p99_ms')} ms  late p99 "
            f"{ms('late_p99_ms')} ms"
            if "headers_p50_ms" in r
            else ""
        )  # fmt: skip
    )


SIM_METRICS = ("ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms")


def simulator_errors(rows: list[dict]) -> list[dict]:
    """Per finite rate below saturation (at most 90 % of the requests/s the server finished at
    rate inf: its capacity), the simulator's relative error on TTFT and TPOT p50/p99 against
    the measured server."""
    sim = {r["rate"]: r for r in rows if r["name"] == "simulated"}
    measured = [r for r in rows if r["name"] == "rate"]
    capacity = max((r["request_throughput"] for r in measured), default=0.0)
    out = []
    for m in (r for r in measured if r["rate"] != "inf"):
        s = sim.get(m["rate"])
        if s is None or float(m["rate"]) > 0.9 * capacity:
            continue
        errors = {k: (s[k] - m[k]) / m[k] for k in SIM_METRICS if m.get(k) and s.get(k) is not None}
        worst = max(errors, key=lambda k: abs(errors[k]))
        out.append(
            {"rate": m["rate"], "errors": errors, "worst": worst, "worst_error": errors[worst]}
        )
    return out


def summary(rows: list[dict], slo: Slo | None = None) -> str:
    measured = [r for r in rows if r["name"] == "rate"]
    simulated = [r for r in rows if r["name"] == "simulated"]
    lines = [_line(r) for r in measured] + ["simulated " + _line(r) for r in simulated]
    for r in rows:
        if r["name"] == "offline":
            lines.append(
                f"offline generate {r['output_throughput']:.1f} tok/s; server at rate inf "
                f"{r['server_output_throughput']:.1f} tok/s = {r['http_efficiency']:.0%}"
            )
    for e in simulator_errors(rows):
        each = "  ".join(f"{k[:-3]} {v:+.0%}" for k, v in e["errors"].items())
        lines.append(f"simulator vs server at rate {e['rate']}: {each}")
    if slo is not None:
        goal = f"p99 TTFT <= {slo.ttft_ms:g} ms and p99 TPOT <= {slo.tpot_ms:g} ms"
        for name, some in (("measured", measured), ("simulated", simulated)):
            if some:
                best = max_rate_meeting(some, slo)
                lines.append(f"max rate with {goal} ({name}): {best}")
    return "\n".join(lines)


def offline_row(llm, cfg: LoadConfig, server_rows: list[dict]) -> dict:
    """The requests of the sweep's rate "inf" (or its last rate) through `LLM.generate` at
    once, after a warm-up on the warm-up's requests: the server's ceiling."""
    at_once = [r for r in server_rows if r["rate"] == "inf"] or server_rows[-1:]
    warm = make_requests(cfg.workload, cfg.num_prompts)
    requests = make_requests(cfg.workload, cfg.num_prompts, variant=at_once[0]["variant"])
    params = requests.params  # greedy, ignore_eos: the lengths the server was asked for
    llm.generate(warm.prompts, params, use_tqdm=False)
    t0 = time.perf_counter()
    outs = llm.generate(requests.prompts, params, use_tqdm=False)
    elapsed = time.perf_counter() - t0
    tok_s = sum(len(o.token_ids) for o in outs) / elapsed
    server = at_once[0]["output_throughput"]
    row = {"name": "offline", "output_throughput": tok_s, "duration_s": elapsed}
    return row | {"server_output_throughput": server, "http_efficiency": server / tok_s}


def plot(record: dict, path: Path) -> Path:
    """The record's latency-throughput figure as a PNG at `path`."""
    import matplotlib.pyplot as plt

    title = f"bench serve on {record['device']}: {record['config'].get('model', '')}"
    fig = plot_rows(record["results"], Slo(**record["config"]["slo"]), title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_rows(results: list[dict], slo: Slo, title: str = ""):
    """Latency against throughput, one point per offered rate, the SLO as dotted lines; the
    simulator's p99 too when the rows have it."""
    import matplotlib

    if not matplotlib.get_backend().lower().startswith(("module://", "inline")):
        matplotlib.use("Agg")  # files only, unless a notebook draws inline
    import matplotlib.pyplot as plt

    rows = [r for r in results if r["name"] == "rate" and r["completed"]]
    sim = [r for r in results if r["name"] == "simulated" and r["completed"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("ttft", "tpot"), strict=True):
        limit = getattr(slo, f"{metric}_ms")
        x = [r["request_throughput"] for r in rows]
        for q, style in (("p50", "o-"), ("p99", "s--")):
            ax.plot(x, [r[f"{metric}_{q}_ms"] for r in rows], style, label=f"{q}")
        for r in rows:
            where = (r["request_throughput"], r[f"{metric}_p99_ms"])
            ax.annotate(
                str(r["rate"]), where, fontsize=7, textcoords="offset points", xytext=(3, 3)
            )
        if sim:
            x_sim = [r["request_throughput"] for r in sim]
            ax.plot(x_sim, [r[f"{metric}_p99_ms"] for r in sim], "^:", label="p99 simulated")
        ax.axhline(limit, color="gray", ls=":", label=f"SLO {limit:g} ms")
        name = metric.upper()
        ax.set(xlabel="throughput (requests/s)", ylabel=f"{name} (ms)", yscale="log")
        ax.set_title(f"{name} vs throughput (labels: offered rate)")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig
