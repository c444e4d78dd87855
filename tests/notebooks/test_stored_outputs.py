"""The notebooks are stored executed, open with their seed questions, and keep the house rules.

nbval re-runs them and compares outputs; this test catches what nbval cannot: a notebook saved
without outputs, one that does not open with the seed question it answers (in the original
Chinese), or one missing "what to remember" and exercises.
"""

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

# The seed questions (verbatim from the interview notes) that each notebook opens with.
SEED_QUESTIONS = {
    "00_tour.ipynb": ["SGLang 和 VLLM 的哪些地方有差别"],
    "01_kv_cache.ipynb": [
        "llm推理为什么需要 kvcache，怎么计算kvcache大小，如何管理kvcache？",
        "为什么 kv cache 预先分配？",
        "为什么用 `(2, hf_config.num_hidden_layers, config.num_kvcache_blocks, self.block_size, "
        "num_kv_heads, head_dim)` 这种方式来进行分配？",
    ],
    "02_scheduling.ipynb": ["SGLang 和 VLLM 的调度哪个比较好"],
    "03_latency_vs_throughput.ipynb": ["怎么理解延迟与吞吐，在具体业务场景下怎么选择"],
    "04_flash_attention_and_hopper.ipynb": ["flash attention 的理解，hopper 架构新特性？"],
    "05_profiling.ipynb": ["怎么定位性能热点，对于cuda kernel有哪些优化手段"],
    "06_pinned_memory_and_streams.ipynb": [
        "Pytorch Pin Memory 原理",
        "pytorch 的 Pin Memory 和 异步传输？",
    ],
    "07_speculative_decoding.ipynb": [
        "Speculative Decoding 引入了一个 Draft Model (小模型) 和 Target Model (大模型)。请分析在 "
        "Batch Size = 1 和 Batch Size = 128 两种极端情况下，投机采样的收益有何不同？为什么？",
        "假设 Draft Model 预测了 5 个 Token，经过大模型验证后，第 3 个 Token 被拒绝了（Rejected）。"
        "此时 KV Cache 应该如何回滚（Rollback）？这在底层内存管理上有什么开销？",
    ],
    "08_quantization.ipynb": [
        "Weight only int4量化和fp8量化，你觉得二者有什么应用上的区别",
        "为什么只量化weight，不量化activation",
        "动态量化和静态量化的区别？",
    ],
    "09_bank_conflicts_and_smem_gemm.ipynb": [
        "什么是bank conflict，为什么会产生 bank conflict，有哪些解决方法？cutlass 中如何做的？",
        "为什么 gemm 解决 bank conflict 使用转置存储？不使用有什么影响？",
        "为什么 shared memory 可以优化 gemm，什么情况下需要使用__syncthreads进行同步?",
    ],
    "10_cpp_templates.ipynb": ["对c++ template的理解"],
    "11_vllm_vs_sglang.ipynb": [
        "SGLang 和 VLLM 的哪些地方有差别",
        "SGLang 和 VLLM 的调度哪个比较好",
    ],
    "12_moe_communication.ipynb": ["主流的moe模型推理时通讯过程存在的问题以及解决办法?"],
}


# The appendices (`07a_<topic>.ipynb`): a chapter's longer measurement story, moved out so that
# the chapter reads top to bottom. They answer no seed question of their own, so they are held
# to the rules of stored outputs and short cells, and to being linked from their chapter.
APPENDICES = sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]a_*.ipynb"))


def _load(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def test_every_chapter_notebook_is_listed_here():
    assert sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")) == sorted(SEED_QUESTIONS)


@pytest.mark.parametrize("name", APPENDICES)
def test_every_appendix_opens_with_a_link_to_its_chapter_which_links_back(name):
    (chapter,) = [c for c in SEED_QUESTIONS if c[:2] == name[:2]]
    first = _load(name).cells[0]
    assert first.cell_type == "markdown" and f"]({chapter})" in first.source, (
        f"{name} does not open with a link to {chapter}"
    )
    text = "\n".join(c.source for c in _load(chapter).cells if c.cell_type == "markdown")
    assert f"]({name})" in text, f"{chapter} never links its appendix {name}"


@pytest.mark.parametrize("name", sorted(SEED_QUESTIONS) + APPENDICES)
def test_every_code_cell_was_executed_and_stored_its_outputs(name):
    nb = _load(name)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        where = f"{name} cell {i} ({cell.source.splitlines()[0][:50]!r})"
        assert cell.execution_count is not None, f"{where} was never executed"
        assert cell.outputs, f"{where} has no stored output; run python -m minirt.notebooks execute"
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, f"{where} stored an error: {errors[0].get('ename')}"


@pytest.mark.parametrize("name", sorted(SEED_QUESTIONS))
def test_notebook_opens_with_its_seed_questions_in_chinese_and_english(name):
    first = _load(name).cells[0]
    assert first.cell_type == "markdown"
    for question in SEED_QUESTIONS[name]:
        assert question in first.source, f"{name} does not open with {question!r}"
    assert first.source.count("*") >= 2 * len(SEED_QUESTIONS[name]), "English rendering missing"


@pytest.mark.parametrize("name", sorted(SEED_QUESTIONS))
def test_notebook_ends_with_what_to_remember_and_exercises(name):
    text = "\n".join(c.source for c in _load(name).cells if c.cell_type == "markdown")
    assert "## What to remember" in text and "## Exercises" in text


@pytest.mark.parametrize("name", sorted(SEED_QUESTIONS) + APPENDICES)
def test_code_cells_are_short(name):
    for cell in _load(name).cells:
        if cell.cell_type == "code":
            assert len(cell.source.splitlines()) <= 15, cell.source[:80]
