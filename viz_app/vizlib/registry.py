"""The dashboard's table of contents: every page, what it shows, and the notebook it goes with.

Home draws its list from `PAGES`, and tests/viz_app/test_registry.py checks that `PAGES` and the
files in `viz_app/pages/` agree. To add a page: write `pages/NN_<Topic>.py` and add one `Page`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent.parent  # viz_app/
# The browser tab's icon: a PNG shipped here. Streamlit draws a :material: or emoji page icon
# from a font or emoji CDN, which a machine offline cannot reach.
FAVICON = str(APP_DIR / "assets" / "favicon.png")


@dataclass(frozen=True)
class Page:
    file: str  # relative to viz_app/, e.g. "pages/01_Block_tables.py"
    title: str
    icon: str  # a Material Symbols name: bundled with Streamlit, so it renders offline
    shows: str  # one or two sentences for Home
    notebooks: tuple[str, ...]  # notebooks/<name>.ipynb that teach what the page shows
    data: str  # where the numbers come from

    @property
    def url_path(self) -> str:
        """The path Streamlit serves the page at: the file stem without its NN_ prefix."""
        return Path(self.file).stem.split("_", 1)[1]


NOTEBOOK_DIR = APP_DIR.parent / "notebooks"
NOTEBOOK_GLOBS = ("[0-9][0-9]_*.ipynb", "[0-9][0-9]a_*.ipynb")  # chapters, then appendices


def notebook_title(path: Path) -> str:
    """A chapter's title: the first "# " heading of the notebook, without its "NN · " prefix."""
    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        for line in "".join(cell["source"]).splitlines():
            if line.startswith("# "):
                return line[2:].strip().split(" · ", 1)[-1]
    return path.stem


def notebook_titles(folder: Path = NOTEBOOK_DIR) -> dict[str, str]:
    """The course's chapters in reading order, read from notebooks/NN_<topic>.ipynb, each
    followed by its appendix NNa_<topic>.ipynb if it has one:
    {"00_tour": "A tour of the engine", ...}. A new notebook appears on Home by itself."""
    found = [p for glob in NOTEBOOK_GLOBS for p in folder.glob(glob)]
    return {p.stem: notebook_title(p) for p in sorted(found)}


NOTEBOOKS: dict[str, str] = notebook_titles()

GLOSSARY = NOTEBOOK_DIR / "GLOSSARY.md"


def glossary_sections(path: Path = GLOSSARY) -> list[tuple[str, str]]:
    """The glossary's "## " sections as (heading, markdown body), in the file's order: Home shows
    each in an expander. The text before the first section (its title and intro) is left out."""
    parts = path.read_text(encoding="utf-8").split("\n## ")[1:]
    return [(part.split("\n", 1)[0].strip(), part.split("\n", 1)[1].strip()) for part in parts]


PAGES: tuple[Page, ...] = (
    Page(
        file="pages/01_Block_tables.py",
        title="Block tables",
        icon=":material/grid_view:",
        shows="Step through a real engine run: the physical KV blocks coloured by sequence, "
        "shared prefix blocks with their reference count, the free list, and each sequence's "
        "logical → physical block table.",
        notebooks=("01_kv_cache",),
        data="a live run of the embedded model on your prompts, or an uploaded trace",
    ),
    Page(
        file="pages/02_Scheduler.py",
        title="Scheduler",
        icon=":material/view_timeline:",
        shows="What continuous batching decided at every step: prefill and decode tokens "
        "against the token budget, running / waiting / preempted sequences. Turn the knobs "
        "(block size, KV budget, token budget, chunked prefill) and the engine runs again.",
        notebooks=("02_scheduling", "03_latency_vs_throughput"),
        data="a live run of the embedded model, or an uploaded trace",
    ),
    Page(
        file="pages/03_KV_calculator.py",
        title="KV calculator",
        icon=":material/calculate:",
        shows="How many bytes of KV cache a model needs per token, per sequence and per batch, "
        "and how many sequences fit beside the weights on a GPU.",
        notebooks=("01_kv_cache", "03_latency_vs_throughput"),
        data="minirt.kv sizing functions and minirt.config.PRESETS (no engine run)",
    ),
    Page(
        file="pages/04_Roofline_and_batching.py",
        title="Roofline & batching",
        icon=":material/speed:",
        shows="Measured decode step time against batch size beside the roofline model "
        "(bytes / bandwidth vs FLOPs / peak) and its memory- to compute-bound crossover, and "
        "the latency–throughput curve, for each committed benchmark run and system.",
        notebooks=("03_latency_vs_throughput",),
        data="committed results in bench/results/ (or an uploaded one) and minirt.tools.roofline",
    ),
    Page(
        file="pages/05_Streams.py",
        title="Streams",
        icon=":material/timeline:",
        shows="Copies, kernels and the host thread on a timeline, one row per CUDA stream and "
        "one for the CPU: a committed H100 run beside the simulator's prediction of the same "
        "program, or the simulator live — pinned or pageable, non_blocking, one stream or two, "
        "with or without an event — and the data races it finds.",
        notebooks=("06_pinned_memory_and_streams",),
        data="committed bench/results/*/transfers-*.json and their traces (or an uploaded "
        "trace) and minirt.tools.streams",
    ),
    Page(
        file="pages/06_Speculative_decoding.py",
        title="Speculative decoding",
        icon=":material/fast_forward:",
        shows="A draft guesses k tokens, the target verifies them in one forward, the KV rolls "
        "back past the first rejection: accepted and rejected guesses per step, and any "
        "step's block table before and after its rollback. Beside it the cost model: speedup "
        "against batch size for each k, the best k and the batch where speculation stops "
        "paying.",
        notebooks=("07_speculative_decoding", "07a_speculative_decoding_appendix"),
        data="a live run of the embedded target with the embedded draft (or an uploaded trace), "
        "and minirt.tools.spec over committed bench/results/*/spec-*.json or the roofline model",
    ),
    Page(
        file="pages/07_Bank_conflicts.py",
        title="Bank conflicts",
        icon=":material/view_module:",
        shows="Which of the 32 shared-memory banks each thread of a warp hits, and what it "
        "costs in wavefronts: a row, column, transposed or broadcast access of a tile, with "
        "padding or a CuTe swizzle, beside Nsight Compute's count for the measured patterns; "
        "and the SGEMM series from naive to register-blocked against cuBLAS.",
        notebooks=("09_bank_conflicts_and_smem_gemm",),
        data="minirt.tools.bank.simulate, committed bench/results/*/bank-*.json (Nsight "
        "Compute) and smem-gemm-*.json",
    ),
    Page(
        file="pages/08_Quantization.py",
        title="Quantization",
        icon=":material/compress:",
        shows="A layer of the embedded model on its quantization grid (bits, group size, zero "
        "point), error against bits and group size, how much wider activations spread than "
        "weights layer by layer, and the measured speedup of W4A16, FP8 and INT8 over bf16 "
        "against the number of tokens.",
        notebooks=("08_quantization",),
        data="the embedded target's weights and activations (minirt.quant.grid, "
        "minirt.quant.outliers) and committed bench/results/*/quant-*.json",
    ),
    Page(
        file="pages/09_Prefix_cache.py",
        title="Prefix cache",
        icon=":material/account_tree:",
        shows="SGLang's radix tree of cached tokens evolving step by step, hits and new entries "
        "highlighted, beside vLLM's hash cache of full blocks on the same prompts and pool.",
        notebooks=("11_vllm_vs_sglang", "11a_vllm_vs_sglang_appendix"),
        data="two live runs of the embedded model (prefix_cache='radix' and 'hash') with the "
        "cache's state recorded at every step",
    ),
    Page(
        file="pages/10_MoE.py",
        title="MoE",
        icon=":material/hub:",
        shows="Tokens flowing to their experts and the load each expert and each GPU gets (live "
        "router, capacity factor and dropped tokens), and one MoE layer's dispatch / experts / "
        "combine on a compute and a communication stream, with and without two-micro-batch "
        "overlap, for DeepSeek-V3- and Qwen3-30B-A3B-sized deployments.",
        notebooks=("12_moe_communication",),
        data="a live minirt.moe routing decision, minirt.tools.moe, and committed "
        "bench/results/cpu/moe-*.json",
    ),
    Page(
        file="pages/11_Serving.py",
        title="Serving",
        icon=":material/dns:",
        shows="An OpenAI-compatible minirt server under open-loop load: TTFT and TPOT against "
        "throughput per offered rate, the knee, goodput under an SLO you set, the simulator's "
        "prediction, and the server against offline generate.",
        notebooks=("03_latency_vs_throughput",),
        data="committed bench/results/<device>/serve-*.json (python -m minirt.bench serve)",
    ),
    Page(
        file="pages/12_Your_run_vs_minirt.py",
        title="Your run vs minirt",
        icon=":material/compare_arrows:",
        shows="The engine with your part (a scheduling policy, a prefix cache, a sampler…) "
        "beside the engine with minirt's own on the same requests: hit rates, steps and "
        "preemptions of each, the first step where they decided differently, and both runs' "
        "block tables at any step.",
        notebooks=("02_scheduling", "11_vllm_vs_sglang"),
        data="a pair saved by minirt.trace.compare.record_pair in runs/, two uploaded traces, "
        "or a demo pair run live",
    ),
)


def page_files() -> list[str]:
    """The page scripts present on disk, relative to viz_app/ (what Streamlit will serve)."""
    return sorted(f"pages/{p.name}" for p in (APP_DIR / "pages").glob("*.py"))


def page_for(script: str) -> Page:
    """The registry entry of a page script (pages call `page_for(__file__)` for title and icon)."""
    file = f"pages/{Path(script).name}"
    for page in PAGES:
        if page.file == file:
            return page
    raise KeyError(f"{file} is not in vizlib.registry.PAGES; add a Page entry for it")
