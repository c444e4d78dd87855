# ruff: noqa  (the probe as it ran, kept as the record of the measurement)
"""The offline run's seconds, term by term, from the serving simulator's cost line (CPU, no GPU):
`minirt.tools.serving_cost.cost_from_gpu_record` fits base + per-row + per-KV-token costs to a
`bench gpu` run's decode rows (prefill at its measured matmul rate); the simulator then runs
bench gpu's offline workload (256 requests, U[100, 1024], all at once, 8,192-token budget) on
that clock, and each step's price is split into its terms. Against the same file's measured
offline row. `offline_budget_probe.py [bench/results/h100/gpu-*.json]`."""

import sys
import minirt.tools.serving as S
from minirt.results import load_results
from minirt.tools.serving_cost import cost_from_gpu_record
from minirt.workload import uniform

path = sys.argv[1] if len(sys.argv) > 1 else "bench/results/h100/gpu-20261207-162636.json"
rec = load_results(path)
cost = cost_from_gpu_record(rec)
measured = next(
    r for r in rec["results"] if r["name"] == "offline" and r["system"] == "minirt-graphs"
)
w = uniform(num_requests=256, lo=100, hi=1024, seed=0)
reqs = S.SimRequest.sent([0.0] * 256, [(len(p), o) for p, o in zip(w.prompts, w.output_lens)])
terms = {"base (per step)": 0.0, "prefill tokens": 0.0, "decode rows": 0.0, "KV context read": 0.0}
steps = [0]


def draw(self, pre, dec, ctx, rng):  # the line itself, split into its terms (no spread)
    steps[0] += 1
    for k, v in zip(
        terms, (self.base_ms, self.prefill_ms * pre, self.decode_ms * dec, self.context_ms * ctx)
    ):
        terms[k] += v
    return self.step_ms(pre, dec, ctx)


S.CostModel.draw_ms = draw
S.simulate(reqs, cost, S.SchedulerModel(256, 8192))
total = sum(terms.values()) / 1e3
print(path, cost)
print(
    f"simulated {steps[0]} steps, {total:.2f} s ({sum(w.output_lens) / total:,.0f} output tok/s); "
    f"measured {measured['seconds']:.2f} s ({measured['output_tokens_per_s']:,.0f})"
)
for k, v in terms.items():
    print(f"  {k:18s} {v / 1e3:6.2f} s  {v / 1e3 / total:5.1%}")
