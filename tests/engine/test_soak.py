"""The differential soak test (tests/engine/soak.py) as part of the suite.

The default is a short run (8 engines x 3 random calls, every configuration axis covered); set
MINIRT_SOAK_CALLS=40 for the long one (320 calls), or run soak.py directly to choose seeds.
"""

import os

import pytest
import torch

from tests.engine.soak import Reference, soak

CALLS = int(os.environ.get("MINIRT_SOAK_CALLS", "3"))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The embedded model is tiny: one thread is as fast, and steady on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_random_batches_on_every_engine_configuration_match_each_prompt_run_alone():
    report = soak(seed=0, engines=list(range(8)), calls=CALLS, reference=Reference())
    assert not report.failures, "\n".join(map(str, report.failures))
    # the run exercised what it is meant to: preemption, swapping and prefix hits
    assert report.preemptions > 0 and report.swap_outs > 0 and report.cached_tokens > 0
