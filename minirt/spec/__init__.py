"""Speculative decoding: a draft model proposes, the target verifies in one forward.

`rejection` holds the exact acceptance rule; `decoder` runs it in the engine (the draft's pool
on the target's block tables, the verify, the paged-KV rollback). Turn it on with
`LLM(speculative_model="draft", num_speculative_tokens=k)`; the cost model is `minirt.tools.spec`.
"""

from minirt.spec.decoder import SpecRunner, SpecStep
from minirt.spec.rejection import Verdict, greedy_verify, rejection_sample

__all__ = ["SpecRunner", "SpecStep", "Verdict", "greedy_verify", "rejection_sample"]
