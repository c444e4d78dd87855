"""Which client sets the pace at rate inf: httpx (bench serve's client before) or aiohttp (now).

Launches the embedded server on the CPU, then sends N streamed completions at once (16 prompt
tokens, 4 output tokens each: little engine work, so the HTTP side shows) three times with each
client, and records the wall time, the client's own CPU time and where the engine's steps lie
on the same clock (GET /steps' t0_s). Run: python docs/measurements/client_probe.py [N]
"""

import asyncio
import json
import math
import platform
import sys
import time

import httpx

from minirt.bench.serve import LoadConfig, run_rate, served_model
from minirt.bench.serve_run import launched
from minirt.workload import WorkloadSpec, arrival_times, make_requests


async def httpx_rate(cfg, model, requests):
    """The client as it was: one httpx.AsyncClient, unlimited connections, aiter_lines."""
    times = arrival_times(len(requests.prompts), math.inf)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        t0 = time.perf_counter()

        async def one(prompt, n, at):
            body = {"model": model, "prompt": prompt, "max_tokens": n, "stream": True,
                    "temperature": 0.0, "ignore_eos": True}  # fmt: skip
            async with client.stream("POST", cfg.url + "/v1/completions", json=body) as r:
                first = None
                async for line in r.aiter_lines():
                    if line.startswith("data: {") and first is None:
                        first = time.perf_counter() - t0
                return first

        sends = zip(requests.prompts, requests.output_lens, times, strict=True)
        firsts = await asyncio.gather(*(one(p, n, t) for p, n, t in sends))
        return time.perf_counter() - t0, t0, firsts


async def aiohttp_rate(cfg, model, requests):
    done, errors, duration, t0, _ = await run_rate(cfg, model, requests, math.inf)
    assert not errors, errors
    return duration, t0, [d.start_s + d.ttft_s for d in done]


def main(n: int = 300) -> None:
    spec = WorkloadSpec(distribution="fixed", prompt_len=16, output_len=4)
    rows = []
    with launched(None, "cpu", 1, ["--max-num-seqs", "256"]) as url:
        cfg = LoadConfig(url=url, rates=[math.inf], num_prompts=n, workload=spec)
        model = served_model(url)
        variant = 0
        for client, fn in (("httpx", httpx_rate), ("aiohttp", aiohttp_rate)) * 3:
            variant += 1
            first = httpx.get(url + "/steps").json()["next"]
            cpu = time.process_time()
            wall, t0, firsts = asyncio.run(fn(cfg, model, make_requests(spec, n, variant)))
            cpu = time.process_time() - cpu
            body = httpx.get(url + "/steps", params={"since": first}).json()
            steps, offset = body["steps"], body["t0_s"] - t0
            row = {"client": client, "wall_s": wall, "client_cpu_s": cpu,
                   "first_step_start_s": steps[0][0] - steps[0][1] / 1e3 + offset,
                   "last_step_end_s": steps[-1][0] + offset,
                   "last_first_token_s": max(firsts), "steps": len(steps)}  # fmt: skip
            rows.append(row)
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
    out = {"what": __doc__.split("\n")[0], "requests": n, "machine": platform.processor() or
           platform.machine(), "date": time.strftime("%Y-%m-%d"), "rows": rows}  # fmt: skip
    path = f"docs/measurements/client-cpu-{time.strftime('%Y%m%d')}.json"
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
