import json
import sys
import time

from minirt import LLM, SamplingParams

p = SamplingParams(temperature=0, max_tokens=128, ignore_eos=True)
out = {}
for be in sys.argv[1:]:
    from minirt.kernels.backend import BACKENDS

    llm = LLM(device="cpu", kernel_backend=BACKENDS[be])
    llm.generate([[5] * 16], p, use_tqdm=False)
    ts = []
    for _ in range(5):
        t = time.perf_counter()
        llm.generate([[7] * 16], p, use_tqdm=False)
        ts.append(time.perf_counter() - t)
    out[be] = {
        "backend": llm.kernels.name,
        "tok_s_best": 128 / min(ts),
        "tok_s_median": 128 / sorted(ts)[2],
    }
print(json.dumps(out))
