import pytest
import torch

from minirt.config import PRESETS, ModelConfig
from minirt.model.loader import resolve_model_path
from minirt.threads import default_cpu_threads, pin_cpu_threads


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_embedded_models_run_on_one_thread_and_big_ones_on_every_core():
    for name in ("target", "draft"):
        config = ModelConfig.from_pretrained(resolve_model_path(name))
        assert default_cpu_threads(config, cores=64) == 1
    assert default_cpu_threads(PRESETS["qwen3-0.6b"], cores=64) == 9
    assert default_cpu_threads(PRESETS["llama-3-70b"], cores=2) == 2


def test_pinning_takes_an_explicit_count_then_the_users_omp_setting(monkeypatch, restore_threads):
    config = ModelConfig.from_pretrained(resolve_model_path(None))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert pin_cpu_threads(config) == 1 == torch.get_num_threads()
    assert pin_cpu_threads(config, threads=2) == 2 == torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert pin_cpu_threads(config) == torch.get_num_threads()  # left as the user set it
    with pytest.raises(ValueError, match="threads must be >= 1"):
        pin_cpu_threads(config, threads=0)
