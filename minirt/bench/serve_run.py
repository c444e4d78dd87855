"""One `bench serve` run: start the server if asked, sweep the rates, compare with offline, write.

`--launch MODEL` starts `python -m minirt serve` as its own process (a server and its load
generator in one process would share one GIL and measure each other), waits for /health, and
stops it after the sweep; then the same requests go through offline `LLM.generate` in this
process. MODEL is "embedded", a checkpoint folder, or "qwen3-0.6b-shape" (random bf16 weights,
CUDA). Results land in `<out>/<device>/serve-<date>.json` with a PNG beside it. Notebook 03.
`python -m minirt.bench serve` is this module's `main`.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import httpx

from minirt.bench.cli import add_no_progress, add_out, progress
from minirt.bench.serve import TOPIC, LoadConfig, offline_row, plot, summary, sweep
from minirt.ports import free_port
from minirt.results import DEFAULT_OUT, load_results, write_results
from minirt.serve.engine_loop import STEP_FIELDS
from minirt.workload import WorkloadSpec, arrival_times, make_requests


@contextlib.contextmanager
def launched(model: str | None, device: str, threads: int | None, extra: list[str]):
    """`python -m minirt serve` in a child process; yields its URL, stops it afterwards."""
    port = free_port()
    flags = ["--port", str(port), "--device", device, "--max-waiting", "100000", *extra]
    cmd = [sys.executable, "-m", "minirt", "serve", *([model] if model else []), *flags]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 900  # a large checkpoint and CUDA graphs take a while
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with code {proc.returncode}: {cmd}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server at {url} did not answer /health in 15 min")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _device_label(device: str) -> str:
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        return "cpu"
    from minirt.bench.timing import gpu_device

    return gpu_device()


def run(
    cfg: LoadConfig,
    launch: str | None = None,
    device: str = "auto",
    threads: int | None = None,
    out_dir=DEFAULT_OUT,
    command: str | None = None,
    label: str | None = None,
    progress: bool = True,
    overlap: bool = False,
) -> Path:
    """Sweep `cfg.rates` against cfg.url, or against a server started from `launch` (with
    `overlap`: its engine and the offline one run the overlapped scheduler)."""
    config = {
        "url": cfg.url,
        "rates": [str(r) for r in cfg.rates],
        "num_prompts": cfg.num_prompts,
        "burstiness": cfg.burstiness,
        "workload": cfg.workload.to_dict(),
        "slo": cfg.slo.to_dict(),
        "model": cfg.model or launch or "(the server's)",
    }
    if launch is None:
        rows = sweep(cfg, progress)
        path = write_results(TOPIC, label or "remote", rows, out_dir, command, config=config)
        return _with_plot(path)
    with tempfile.TemporaryDirectory() as folder:
        model = _model_folder(launch, folder)
        extra = ["--max-num-seqs", "256", *(["--overlap"] if overlap else [])]
        with launched(model, device, threads, extra) as url:
            rows = sweep(replace(cfg, url=url), progress)
        rows += _offline(model, device, threads, cfg, rows, overlap)
    steps_path = _without_step_logs(rows)
    config |= {"launch": launch, "device": device, "threads": threads, "overlap": overlap}
    device_label = label or _device_label(device)
    path = write_results(TOPIC, device_label, rows, out_dir, command, config=config)
    _write_step_logs(path, steps_path)
    return _with_plot(path)


def _without_step_logs(rows: list[dict]) -> dict:
    """Take the raw step logs (thousands of steps a rate) and the client's send times out of the
    rows and summarise the steps; both go to a compressed file beside the results."""
    logs, sends = {}, {}
    for r in rows:
        steps = r.pop("server_steps", None)
        if r.get("client_sends_s") is not None:
            sends[str(r["rate"])] = r.pop("client_sends_s")
        if steps:
            ms = sorted(s[1] for s in steps)
            r["server_num_steps"] = len(steps)
            r["server_step_ms_p50"] = statistics.median(ms)
            r["server_step_ms_p99"] = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
            r["server_decodes_mean"] = statistics.fmean(s[3] for s in steps)
            logs[str(r["rate"])] = steps
    return {"by_rate": logs, "sends_by_rate": sends} if logs else {}


def _write_step_logs(path: Path, logs: dict) -> None:
    import gzip
    import json

    if logs:
        with gzip.open(path.with_name(path.stem + "-steps.json.gz"), "wt") as f:
            json.dump({"fields": STEP_FIELDS, **logs}, f, separators=(",", ":"))


def _model_folder(launch: str, folder: str) -> str | None:
    if launch == "embedded":
        return None
    if launch == "qwen3-0.6b-shape":
        import torch

        from minirt.bench.roofline import qwen3_06b_checkpoint

        if not torch.cuda.is_available():
            raise ValueError(
                "--launch qwen3-0.6b-shape builds its random weights on a CUDA GPU and this "
                "machine has none; use --launch embedded (or a checkpoint folder) on a CPU"
            )
        qwen3_06b_checkpoint(folder)  # made on the GPU: free it before the server starts
        torch.cuda.empty_cache()
        return folder
    return launch


def _offline(model, device: str, threads: int | None, cfg: LoadConfig, rows,
             overlap: bool = False) -> list[dict]:  # fmt: skip
    """The offline row, then the simulator's rows for the same rates (fitted to this engine)."""
    import torch

    from minirt import LLM

    if threads:
        torch.set_num_threads(threads)
    llm = LLM(model, device=device, max_num_seqs=256, overlap_schedule=overlap)
    out = [offline_row(llm, cfg, rows)]
    out += simulated_rows(llm, cfg, rows)
    del llm
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def simulated_rows(llm, cfg: LoadConfig, rows: list[dict]) -> list[dict]:
    """minirt.tools.serving's prediction of the sweep, the same lengths and arrivals. Its cost
    model is fitted to the server's own step log, every rate's steps (so it prices what the
    server really pays a step), its front-end latency measured at the lowest rate; the
    latencies at every rate are predictions to check. A server without a step log: this engine's
    traced offline steps (batches of 1, 8 and 64 of the workload)."""
    from minirt.tools.serving import SchedulerModel, fit_cost_model, measured_steps

    logs = {str(r["rate"]): r["server_steps"] for r in rows if r.get("server_steps")}
    c = llm.config
    sched = SchedulerModel(c.max_num_seqs, c.max_num_batched_tokens, llm.pool_capacity_tokens)
    if len(logs) >= 2:
        return predict_rows(cfg, logs, sched, measured=rows)
    work = make_requests(cfg.workload, cfg.num_prompts)
    lengths = list(zip(work.prompt_lens, work.output_lens, strict=True))
    llm.config.trace = True  # record steps from here on (the timed offline run was untraced)
    cost = fit_cost_model(measured_steps(llm, lengths, batch_sizes=(1, 8, 64)))
    llm.config.trace = False
    return predict_rows(cfg, {}, sched, cost)


def predict_rows(
    cfg: LoadConfig, logs: dict[str, list], sched, cost=None, measured: list[dict] = ()
) -> list[dict]:
    """The cost-model row and one simulated row per rate. `logs` maps a rate to its step log
    ([end_s, ms, prefill_tokens, decodes, context_tokens] rows); without `cost` the model is
    fitted to the steps of every rate, with their spread, and the front end's latency is
    measured at the lowest rate of `measured` (the server's rows) against its step log."""
    from dataclasses import asdict

    from minirt.tools.serving import predict_curve

    work = make_requests(cfg.workload, cfg.num_prompts)
    lengths = list(zip(work.prompt_lens, work.output_lens, strict=True))
    times = {
        r: arrival_times(len(lengths), r, cfg.burstiness, cfg.workload.seed) for r in cfg.rates
    }
    fitted_on = {"fitted_on": "offline steps", "calibration_rates": []}
    if cost is None:
        cost, fitted_on = fit_server_steps(logs, lengths, times, measured, sched)
    rows = predict_curve(lengths, times, cost, sched, cfg.slo)
    spreads = {"eager_spread": list(cost.eager_spread), "graph_spread": list(cost.graph_spread)}
    model = {"name": "cost_model", **cost.to_dict(), **spreads, **fitted_on}
    model["scheduler"] = asdict(sched)
    return [model, *rows]


def fit_server_steps(
    logs: dict[str, list], lengths: list[tuple[int, int]], times: dict, measured, sched
) -> tuple:
    """(CostModel, how it was made) from a server's step logs: the line and its spread from every
    rate's steps; the HTTP process's and the load generator's costs from the CPU time they
    reported (`http_costs`, `client_cost`); `frontend_ms` at the lowest rate: the client's TTFT
    p50 minus the simulated one there, the request's way in and its tokens' way out (parse, the
    pipe to the engine process, the network); 0 without a measured row."""
    from dataclasses import replace

    from minirt.tools.serving import fit_cost_model, with_spread

    steps = [dict(zip(STEP_FIELDS, s, strict=True)) for r in logs for s in logs[r]]
    steps = [{**s, "step_ms": s["ms"]} for s in steps]
    cost = with_spread(fit_cost_model(steps), steps)
    cost = replace(cost, **http_costs(measured, logs), client_us_per_chunk=client_cost(measured))
    client = {str(r["rate"]): r for r in measured if r.get("name") == "rate"}
    lowest = min(logs, key=float)
    rate_times = {str(r): t for r, t in times.items()}
    if lowest in client and lowest in rate_times:
        sends = client[lowest].get("client_sends_s")  # when they really went out, if known
        if not sends or None in sends:
            sends = rate_times[lowest]
        front = client[lowest]["ttft_p50_ms"] - _simulated_ttft_p50_ms(cost, lengths, sends, sched)
        cost = replace(cost, frontend_ms=max(0.0, front))
    how = {"fitted_on": "server steps", "calibration_rates": list(logs), "frontend_rate": lowest}
    return cost, how


def _simulated_ttft_p50_ms(cost, lengths, sends: list[float], sched) -> float:
    """The simulated TTFT p50 of requests sent at `sends`, with no front-end latency."""
    from dataclasses import replace

    from minirt.tools.serving import SimRequest, simulate

    timings = simulate(SimRequest.sent(sends, lengths), replace(cost, frontend_ms=0.0), sched)
    return statistics.median(t.ttft_s for t in timings) * 1e3


def client_cost(measured) -> float:
    """The load generator's CPU microseconds per chunk it read, over the rates that recorded
    both (0 for a run that did not)."""
    rows = [r for r in measured if r.get("name") == "rate" and r.get("client_cpu_s")]
    rows = [r for r in rows if r.get("server_http_chunks")]
    if not rows:
        return 0.0
    return sum(r["client_cpu_s"] for r in rows) / sum(r["server_http_chunks"] for r in rows) * 1e6


def http_costs(measured, logs: dict[str, list]) -> dict[str, float]:
    """The HTTP process's CPU microseconds per step it relays and per chunk it streams, from the
    CPU time and chunk count a minirt server with its engine in another process reports for each
    rate: least squares of CPU = per_step x steps + per_chunk x chunks over the rates (what each
    request costs to take in lands in the per-chunk term: every rate sends the same requests, so
    it cannot be told apart). A run that did not count chunks: one per token. A term that comes
    out below zero is dropped and the other fitted alone; zeros (the front end as a pure
    latency) for a run without CPU times."""
    import numpy as np

    zero = {"frontend_us_per_step": 0.0, "frontend_us_per_chunk": 0.0}
    rows = [r for r in measured if r.get("name") == "rate" and r.get("server_http_cpu_s")]
    rows = [r for r in rows if str(r["rate"]) in logs]
    if not rows:
        return zero
    cpu = np.array([r["server_http_cpu_s"] for r in rows])
    steps = np.array([len(logs[str(r["rate"])]) for r in rows], dtype=float)
    chunks = np.array([r.get("server_http_chunks") or r["output_throughput"] * r["duration_s"]
                       for r in rows])  # fmt: skip
    names, columns = list(zero), [steps, chunks]
    if len(rows) < 2:  # one rate: all of it per chunk
        names, columns = names[1:], columns[1:]
    while columns:
        fit, *_ = np.linalg.lstsq(np.c_[tuple(columns)], cpu, rcond=None)
        if min(fit) >= 0:
            return zero | {n: float(v) * 1e6 for n, v in zip(names, fit, strict=True)}
        drop = int(np.argmin(fit))
        del names[drop], columns[drop]
    return zero


def resimulate(path: str | Path) -> Path:
    """Recompute a committed run's simulated rows with this version of the simulator, from the
    step log beside it (no model, no GPU): `python -m minirt.bench serve --resimulate FILE`."""
    import gzip
    import json
    from datetime import UTC, datetime

    from minirt.tools.serving import SchedulerModel
    from minirt.tools.slo import Slo

    path = Path(path)
    record = load_results(path)
    log_path = path.with_name(path.stem + "-steps.json.gz")
    if not log_path.is_file():
        raise FileNotFoundError(
            f"{log_path} not found: only a run with a step log can be resimulated"
        )
    saved = json.loads(gzip.open(log_path, "rt").read())
    logs, sends = saved["by_rate"], saved.get("sends_by_rate", {})
    c = record["config"]
    cfg = LoadConfig(
        url="",
        rates=[float(r) for r in c["rates"]],
        num_prompts=c["num_prompts"],
        burstiness=c["burstiness"],
        workload=WorkloadSpec(**c["workload"]),
        slo=Slo(**c["slo"]),
    )
    old = next((r for r in record["results"] if r["name"] == "cost_model"), {})
    sched = SchedulerModel(**old.get("scheduler", {"max_num_seqs": 256}))
    keep = [r for r in record["results"] if r["name"] not in ("cost_model", "simulated")]
    with_sends = [r | ({"client_sends_s": sends[str(r["rate"])]} if str(r.get("rate")) in sends
                       else {}) for r in keep]  # fmt: skip
    record["results"] = keep + predict_rows(cfg, logs, sched, measured=with_sends)
    record["config"]["resimulated"] = datetime.now(UTC).isoformat(timespec="seconds")
    path.write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")
    return _with_plot(path)


def _with_plot(path: Path) -> Path:
    plot(load_results(path), path.with_suffix(".png"))
    return path


def print_summary(path: Path) -> None:
    from minirt.tools.slo import Slo

    record = load_results(path)
    print(summary(record["results"], Slo(**record["config"]["slo"])))


def _rates(text: str) -> list[float]:
    try:
        rates = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected rates like 1,2,4,inf, got {text!r}") from None
    if not rates or min(rates) <= 0:
        raise argparse.ArgumentTypeError(f"rates must be > 0 requests/s, got {text!r}")
    return rates


def add_parser(topics) -> None:
    p = topics.add_parser(
        "serve",
        help="open-loop load on an OpenAI-compatible server: TTFT/TPOT/ITL, goodput per rate",
        description="Streamed completions at Poisson or gamma arrivals for each offered rate; "
        "TTFT, TPOT, ITL and latency p50/p90/p99, throughput and goodput under the SLO. Against "
        "--url (any OpenAI-compatible server) or a minirt server --launch starts (then offline "
        "LLM.generate on the same requests too). Writes OUT/<device>/serve-<date>.json and .png.",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000")
    where.add_argument(
        "--resimulate",
        metavar="FILE",
        help="recompute FILE's simulated rows from its step log (no server, no model)",
    )
    where.add_argument(
        "--launch",
        metavar="MODEL",
        help="start minirt serve: embedded, qwen3-0.6b-shape or a folder",
    )
    p.add_argument(
        "--rates",
        type=_rates,
        default=[2.0, 4.0, 8.0, 16.0, float("inf")],
        help="requests/s, comma-separated; inf = all at once",
    )
    p.add_argument("--num-prompts", type=int, default=32, help="requests per rate")
    p.add_argument("--burstiness", type=float, default=1.0, help="gamma shape; 1 = Poisson")
    p.add_argument(
        "--distribution",
        default="sharegpt-small",
        help="sharegpt, sharegpt-small or fixed (--input-len, --output-len)",
    )
    p.add_argument("--input-len", type=int, default=64)
    p.add_argument("--output-len", type=int, default=32)
    p.add_argument("--workload", help="JSONL of {prompt_len, output_len} per request")
    p.add_argument("--shared-prefix", type=int, default=0, help="tokens shared by prompts")
    p.add_argument("--num-prefixes", type=int, default=1)
    p.add_argument("--slo-ttft-ms", type=float, default=500.0)
    p.add_argument("--slo-tpot-ms", type=float, default=50.0)
    p.add_argument("--model", help="model name to send (default: the server's first)")
    p.add_argument("--device", default="auto", help="with --launch: cpu, cuda or auto")
    p.add_argument("--threads", type=int, default=None, help="with --launch: torch threads")
    p.add_argument(
        "--overlap", action="store_true", help="with --launch: the overlapped scheduler, both sides"
    )
    p.add_argument("--label", help="results folder name (default: cpu/h100/..., or remote)")
    p.add_argument("--seed", type=int, default=0)
    add_out(p)
    add_no_progress(p, help="hide the per-rate lines")


def main(args, command: str) -> Path:
    from minirt.tools.slo import Slo

    if args.resimulate:
        path = resimulate(args.resimulate)
        print_summary(path)
        return path
    workload = WorkloadSpec(
        distribution=args.distribution,
        prompt_len=args.input_len,
        output_len=args.output_len,
        file=args.workload,
        shared_prefix_len=args.shared_prefix,
        num_prefixes=args.num_prefixes,
        seed=args.seed,
    )
    cfg = LoadConfig(
        url=args.url or "",
        rates=args.rates,
        num_prompts=args.num_prompts,
        burstiness=args.burstiness,
        workload=workload,
        model=args.model,
        slo=Slo(args.slo_ttft_ms, args.slo_tpot_ms),
    )
    path = run(cfg, args.launch, args.device, args.threads, args.out, command, args.label,
               progress(args), overlap=args.overlap)  # fmt: skip
    print_summary(path)
    return path
