"""The HTTP process's CPU time per streamed token: what caps a one-process front end.

Starts `python -m minirt serve` on the CPU (embedded model, one engine thread), sends N streamed
completions of 16 prompt + T output tokens at once, three times, and reads the server process's
and the engine process's CPU time (psutil) around each burst. The server process does intake,
the pipe from the engine, detokenizing, JSON and one socket write per chunk; 1 / (its CPU time
per token) is the token rate at which it would be busy all the time.
Run: python docs/measurements/http_cost_probe.py [N] [T]
"""

import asyncio
import json
import math
import platform
import subprocess
import sys
import time

import httpx
import psutil

from minirt.bench.serve import LoadConfig, run_rate, served_model
from minirt.ports import free_port
from minirt.workload import WorkloadSpec, make_requests


def main(n: int = 100, out_len: int = 64) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "minirt", "serve", "--port", str(port), "--device", "cpu",
           "--threads", "1", "--max-num-seqs", "256", "--max-waiting", "100000"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        server = psutil.Process(proc.pid)
        (engine,) = [c for c in server.children() if "spawn_main" in " ".join(c.cmdline())]
        spec = WorkloadSpec(distribution="fixed", prompt_len=16, output_len=out_len)
        cfg = LoadConfig(url=url, rates=[math.inf], num_prompts=n, workload=spec)
        model = served_model(url)
        for rep in range(3):
            s0, e0 = server.cpu_times(), engine.cpu_times()
            work = make_requests(spec, n, rep)
            done, errors, wall, _, _ = asyncio.run(run_rate(cfg, model, work, math.inf))
            s1, e1 = server.cpu_times(), engine.cpu_times()
            tokens = sum(d.output_tokens for d in done)
            server_s = s1.user + s1.system - s0.user - s0.system
            engine_s = e1.user + e1.system - e0.user - e0.system
            row = {"wall_s": wall, "tokens": tokens, "errors": len(errors),
                   "server_cpu_s": server_s, "server_us_per_token": server_s / tokens * 1e6,
                   "engine_cpu_s": engine_s}  # fmt: skip
            rows.append(row)
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
    finally:
        proc.terminate()
        proc.wait()
    from importlib.util import find_spec  # uvicorn's "auto" takes these when installed

    picked = {name: find_spec(name) is not None for name in ("uvloop", "httptools")}
    out = {"what": __doc__.split("\n")[0], "requests": n, "output_len": out_len,
           "machine": platform.processor() or platform.machine(), "cores": psutil.cpu_count(),
           "uvicorn_auto_has": picked, "date": time.strftime("%Y-%m-%d"), "rows": rows}  # fmt: skip
    path = f"docs/measurements/http-cost-cpu-{time.strftime('%Y%m%d')}.json"
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
