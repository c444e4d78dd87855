"""`python -m minirt.bench <topic>` on a machine without what the topic needs."""

import pytest
import torch

from minirt.bench.__main__ import NEEDS, main, missing


# ids "topic-gpu", not "gpu": a bare "gpu" id would read as the gpu marker and be skipped here
@pytest.mark.parametrize("topic", sorted(NEEDS), ids=lambda t: f"topic-{t}")
def test_a_gpu_topic_without_a_gpu_exits_2_saying_what_is_missing(topic, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main([topic]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: the {topic} benchmark needs a CUDA GPU")
    needs, instead = NEEDS[topic]
    assert instead in err
    assert all(what in err for what in missing(needs))  # everything it lacks is named
