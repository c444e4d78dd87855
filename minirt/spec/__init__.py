"""Speculative decoding: a draft model proposes, the target verifies in one forward.

`rejection` holds the acceptance rule (exact: the output follows the target's distribution);
`decoder` runs it in the engine — the draft's own KV pool on the target's block tables, the
verify over k + 1 positions, and the paged-KV rollback. Turn it on with
`LLM(speculative_model="draft", num_speculative_tokens=k)`. The cost model is
`minirt.tools.spec`.
"""

from minirt.spec.decoder import SpecRunner, SpecStep
from minirt.spec.rejection import Verdict, greedy_verify, rejection_sample

__all__ = ["SpecRunner", "SpecStep", "Verdict", "greedy_verify", "rejection_sample"]
