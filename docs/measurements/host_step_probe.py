# ruff: noqa  (the probe as it ran, kept as the record of the measurement)
"""Host time of the engine's steps with the model stubbed out (CPU): what the overlapped loop must
hide under the GPU's step. 256 requests, prompts and outputs U[lo, hi] as bench gpu's offline run."""

import sys, time, torch, cProfile, pstats
from minirt import LLM
from minirt.engine.cuda_graph import DecodeGraphs
from minirt.engine.model_runner import ModelRunner
from minirt.workload import uniform

torch.set_num_threads(1)
lo, hi = int(sys.argv[1]), int(sys.argv[2])
llm = LLM(
    device="cpu",
    num_kv_blocks=256 * (2 * hi // 16 + 2),
    max_model_len=2 * hi + 32,
    max_num_batched_tokens=8192,
    overlap_schedule=True,
)
m = llm.model
vocab, hidden = m.config.vocab_size, m.config.hidden_size


def fwd(self, input_ids, positions, meta):
    return torch.zeros(input_ids.shape[0], hidden)


type(m).forward = fwd
logits0 = torch.zeros(256, vocab)
type(m).compute_logits = lambda self, h, fp32=True: logits0[: h.shape[0]]
sizes = [1, 2, 4, 8, 16, 32, 64, 128, 256]
llm.runner.graphs = DecodeGraphs(
    m, sizes, (2 * hi + 32) // 16 + 1, 2 * hi + 32, torch.device("cpu")
)
llm.runner.piece_graphs = None
work = uniform(num_requests=256, lo=lo, hi=hi, seed=0)
steps = []
orig = ModelRunner.launch


def launch(self, batch, prev):
    t = time.perf_counter()
    out = orig(self, batch, prev)
    steps.append((len(batch.seqs), batch.num_prefill_tokens, time.perf_counter() - t))
    return out


ModelRunner.launch = launch
pr = cProfile.Profile() if len(sys.argv) > 3 else None
t0 = time.perf_counter()
if pr:
    pr.enable()
llm.generate(work.prompts, work.params, use_tqdm=False)
if pr:
    pr.disable()
wall = time.perf_counter() - t0
dec = [s for s in steps if s[1] == 0]
big = [s for s in dec if s[0] > 192]
print(
    f"wall {wall:.2f} s, {len(steps)} steps ({len(dec)} decode-only), host per step {wall / len(steps) * 1e3:.2f} ms; "
    f"launch() at >192 rows {sum(s[2] for s in big) / max(1, len(big)) * 1e3:.2f} ms"
)
for lo_, hi_ in ((1, 8), (9, 32), (33, 64), (65, 128), (129, 192), (193, 256)):
    g = [s[2] for s in dec if lo_ <= s[0] <= hi_]
    if g:
        print(f"  {lo_}-{hi_} rows: {len(g)} steps, launch() {sum(g) / len(g) * 1e3:.2f} ms")
if pr:
    pstats.Stats(pr).sort_stats("tottime").print_stats(25)
