"""Speculative decoding: the draft guesses k tokens, the target verifies them in one forward, the
KV rolls back past the first rejection — and the cost model of when that pays.

Data: a live run of the embedded target with the embedded draft (and the same run without it),
or an uploaded trace with 'spec' step fields; the cost model `minirt.tools.spec` over measured
GPU cost curves (`bench/results/<device>/spec-<date>.json`, `python -m minirt.bench spec`) when
one is committed, else over the roofline model of two `PRESETS` shapes. Notebook 07
(speculative decoding) and its appendix 07a (the measured runs, engine end to end).
"""

import json
from pathlib import Path

import streamlit as st

from minirt.config import PRESETS
from minirt.model.loader import resolve_model_path
from minirt.model.tokenizer import VOCAB_SIZE, load_tokenizer
from minirt.tools.spec import expected_tokens, speedup
from minirt.trace import Trace, TraceError, load_trace
from vizlib import spec_cost as sc
from vizlib import spec_page as sp
from vizlib.registry import FAVICON, page_for
from vizlib.runs import run_engine
from vizlib.source import engine_setting, parse_trace

PAGE = page_for(__file__)
st.set_page_config(page_title=f"{PAGE.title} · minirt", page_icon=FAVICON, layout="wide")
st.title(PAGE.title)
st.caption(
    "Each step a small **draft** model guesses *k* tokens; the **target** runs once over the "
    "last token and the *k* guesses and keeps them while they agree with what it would have "
    "produced itself (for sampling: rejection sampling keeps its distribution exactly), then "
    "adds one token of its own. The KV it wrote for rejected guesses is **rolled back**: "
    "lookahead blocks that hold only rejected slots go back to the free list."
)

LIVE, COST, UPLOAD = "Live run", "Cost model", "Upload a trace"
MEASURED, ROOFLINE = "Measured on a GPU", "Roofline model"


@st.cache_resource
def tokenizer_at(folder: str):
    return load_tokenizer(folder) if (Path(folder) / "tokenizer.json").is_file() else None


def tokenizer_for(meta: dict):
    """The traced model's tokenizer; the embedded one for a byte-level trace; else None (ids)."""
    tok = tokenizer_at(str(meta.get("model", "")))
    if tok is None and (meta.get("model_config") or {}).get("vocab_size") == VOCAB_SIZE:
        tok = tokenizer_at(str(resolve_model_path(None)))
    return tok


@st.cache_data(max_entries=4, show_spinner=False)
def load_spec(path: str) -> sc.LoadedSpec:
    (found,) = [s for s in sc.discover() if str(s.path) == path]
    return sc.load_spec(found)


def show_trace(trace: Trace, where: str, plain_steps: int | None = None) -> None:
    """Metrics, accepted vs rejected per step, and one rollback picked apart."""
    steps = trace.steps()
    if not sp.has_spec(steps):
        st.info(
            f"{where} has no speculative decoding in it (no step event with a `spec` field): "
            "record one with `LLM(..., speculative_model='draft', num_speculative_tokens=4, "
            "trace=True)`, or look at it on the Block tables or Scheduler page."
        )
        st.stop()
    t = sp.totals(steps)
    k = engine_setting(trace, "num_speculative_tokens") or t["k"]
    alpha = t["acceptance_rate"]
    c = st.columns(5)
    c[0].metric(
        "Acceptance rate α",
        f"{alpha:.1%}",
        help=f"{t['accepted_tokens']} of {t['draft_tokens']} draft tokens accepted",
    )
    c[1].metric(
        "Tokens per step",
        f"{t['tokens_per_step']:.2f}",
        help=f"per speculating sequence; the cost model expects 1 + α + … + α^k = "
        f"{expected_tokens(alpha, k):.2f} for α = {alpha:.2f}, k = {k}",
    )
    prefills = t["steps"] - t["spec_steps"]
    c[2].metric(
        "Steps with the draft",
        t["steps"],
        help=f"{prefills} prefill step{'s' * (prefills != 1)} (no guesses) and "
        f"{t['spec_steps']} that speculated: the steps of the chart below",
    )
    c[3].metric(
        "Steps without",
        "—" if plain_steps is None else plain_steps,
        help="the same prompts on the plain engine (no draft), prefill steps included"
        if plain_steps is not None
        else "a trace holds one run: the live run compares with the plain engine",
    )
    c[4].metric("Blocks freed by rollbacks", t["freed_blocks"])

    st.subheader("Draft tokens per step")
    st.altair_chart(sp.accept_chart(sp.step_frame(steps)), width="stretch")
    st.caption(
        f"Green: guesses the target accepted; red: guesses it rejected — the first rejection "
        f"and every guess after it (k = {k} per speculating sequence, fewer near max_tokens). "
        "A step without a bar is a prefill: no guesses."
    )

    st.subheader("One rollback")
    block_size = trace.meta.get("block_size", engine_setting(trace, "block_size"))
    block_size = block_size if isinstance(block_size, int) else None
    found = sp.rollbacks(steps, block_size)
    i = st.selectbox(
        "Step and sequence",
        range(len(found)),
        index=sp.default_rollback(found),
        format_func=lambda j: found[j].label,
        key=f"spec_rollback_{len(found)}",
    )
    rb = found[i]
    tok = tokenizer_for(trace.meta)
    a, guesses = rb.num_accepted, sp.token_texts(tok, rb.proposed)
    emitted = sp.token_texts(tok, rb.emitted)
    st.markdown(
        f"The draft proposed `{''.join(guesses)}`; the target accepted **{a}** of "
        f"{len(guesses)} (`{''.join(guesses[:a])}`) and emitted `{''.join(emitted)}` "
        f"({len(emitted)} token{'s' * (len(emitted) != 1)})."
    )
    st.dataframe(sp.verdict_frame(rb, tok), hide_index=True, key="spec_verdicts")

    frame = sp.table_frame(rb, block_size)
    left, right = st.columns(2)
    left.markdown("**Block table before the rollback** (with the lookahead slots)")
    left.altair_chart(sp.table_chart(frame, "before", len(rb.table_before)), width="stretch")
    right.markdown("**After the rollback** (the step's `block_tables`)")
    if rb.table_after:
        after = sp.table_chart(frame, "after", len(rb.table_before), legend=False)
        right.altair_chart(after, width="stretch")
    else:
        right.info(f"seq {rb.seq_id} finished in this step: all its blocks were released.")
    freed = ", ".join(str(b) for b in rb.freed_blocks)
    st.caption(
        "Cell: the physical block id at logical block i. "
        + (
            f"Freed by the rollback: block {freed} (only rejected guesses in it; back on the "
            "free list, first in line for reuse). "
            if freed
            else "The rollback freed no block: every block past x₀'s holds an accepted slot. "
        )
        + "Nothing is copied: a rollback only moves the sequence's end back."
    )
    if block_size is not None and rb.x0 is not None:
        slots = sp.slot_frame(rb, block_size, guesses)
        st.altair_chart(sp.slot_chart(slots), width="content")
        st.caption(
            f"The blocks this step wrote into, slot by slot ({block_size} a block, headed "
            "logical · physical): the verify wrote KV for x₀ (the last token before the "
            "guesses) and every guess (top); after the rollback (bottom) a rejected slot in a "
            "kept block is dead — the next token's KV overwrites it."
        )


sb = st.sidebar
source = sb.radio("View", [LIVE, COST, UPLOAD], key="spec_source")

# ---------------------------------------------------------------- live run
if source == LIVE:
    k = sb.slider("Draft tokens per step (k)", 1, 8, 6, key="spec_k")
    num_prompts = sb.slider("Prompts", 1, len(sp.SPEC_PROMPTS), 3, key="spec_prompts")
    max_tokens = sb.slider("New tokens per prompt", 4, 64, 16, key="spec_max_tokens")
    temperature = sb.slider(
        "Temperature (0 = greedy)",
        0.0,
        1.5,
        0.0,
        0.1,
        key="spec_temperature",
        help="greedy: a guess is kept while it is the target's argmax; sampled: rejection "
        "sampling (seeded, so a rerun gives the same tokens)",
    )
    sb.caption(
        f"The embedded target and draft on CPU, blocks of {sp.BLOCK_SIZE} tokens (small, so "
        "a rollback often frees one)."
    )
    try:
        run = run_engine(sp.live_settings(k, num_prompts, max_tokens, temperature))
        plain = run_engine(sp.live_settings(0, num_prompts, max_tokens, temperature))
    except ValueError as e:  # the engine's own words
        st.error(f"The engine refused these settings: {e}")
        st.stop()
    sb.download_button(
        "Download this run's trace",
        data=json.dumps(run["trace"]),
        file_name="minirt-spec-trace.json",
        mime="application/json",
        key="spec_download",
    )
    s = run["stats"]
    st.markdown(
        f"**{num_prompts} prompt{'s' * (num_prompts > 1)}**, {max_tokens} tokens each, k = "
        f"**{k}**, {'greedy' if temperature == 0 else f'temperature {temperature:g}'}: "
        f"{s['num_generated_tokens']} tokens in {s['num_steps']} steps with the draft, "
        f"{plain['stats']['num_steps']} without."
    )
    show_trace(load_trace(run["trace"]), "This run", plain["stats"]["num_steps"])
    with st.expander("What the model wrote"):
        for o in run["outputs"]:
            st.code(o["prompt"] + o["text"], language="python")

# ---------------------------------------------------------------- cost model
elif source == COST:
    sets = sc.discover()
    curves = sb.radio(
        "Cost curves", [MEASURED, ROOFLINE] if sets else [ROOFLINE], key="spec_curves"
    )
    alpha = sb.slider(
        "Acceptance rate α",
        0.0,
        1.0,
        0.9,
        0.01,
        key="spec_alpha",
        help="the chance that one guess is accepted, given the ones before it were",
    )
    k = sb.slider("Draft tokens per step (k)", 1, 8, 4, key="spec_cost_k")
    all_k = sb.toggle("Draw every k = 1..8", False, key="spec_all_k")
    points, host = None, 0.0
    if curves == MEASURED:
        by_path = {str(s.path): s for s in sets}
        chosen = sb.selectbox(
            "Run",
            list(by_path),
            index=sc.default_run(sets),
            format_func=lambda p: by_path[p].label,
            key="spec_set",
        )
        name = f"bench/results/{by_path[chosen].device}/{by_path[chosen].path.name}"
        try:
            loaded = load_spec(chosen)
            source = sc.curve_run(sets, by_path[chosen])  # a decode-only run has no curves
            if source is None:
                raise sc.SpecError(f"no {by_path[chosen].device} run has cost_curve rows")
            curves_from = load_spec(str(source.path)) if source.path != Path(chosen) else loaded
            models = curves_from.models()
            first_target, first_draft = sc.default_models(models)
            target_name = sb.selectbox("Target", models, first_target, key="spec_target_model")
            draft_name = sb.selectbox("Draft", models, first_draft, key="spec_draft_model")
            context = sb.selectbox(
                "Context length (tokens)", curves_from.contexts(), key="spec_ctx"
            )
            times = curves_from.times()
            time = sb.selectbox(
                "Forward time",
                times,
                # the engine's own way: CUDA graphs, the verify as k + 1 one-token rows
                index=times.index(sc.ENGINE_TIME) if sc.ENGINE_TIME in times else 0,
                format_func=sc.TIMES.get,
                key="spec_time",
                help="which measured time prices a forward: the eager engine's, or a CUDA "
                "graph's (the engine verifies k + 1 tokens as one-token rows and replays "
                "graphs for both models)",
            )
            target = curves_from.curve(target_name, context, time)
            draft = curves_from.curve(draft_name, context, time)
        except sc.SpecError as e:
            st.error(f"Can't use {name}: {e}. Pick another run, or the roofline model.")
            st.stop()
        pair, mode = sc.pair_of(target_name, draft_name), sc.MODES[time]
        if pair is not None:  # every workload of the engine mode: closed, steady, decode
            points = sc.measured_speedups(loaded.end_to_end)
            points = points[(points["pair"] == pair) & points["mode"].str.startswith(mode)]
            if not all_k:
                points = points[points["k"] == k]
        fitted = None
        if time != "ms":  # eager wall times already hold the host's time
            runs = loaded.end_to_end + (curves_from.end_to_end if curves_from is not loaded else [])
            fitted = sc.host_model(runs, pair, target)
        if fitted is not None and sb.toggle(
            "Add the host's time per forward",
            True,
            key="spec_host",
            help="a GPU time leaves out what the host spends on each forward (building its "
            "rows, the launch, reading tokens back): fitted on this pair's runs without a "
            "draft, by the rows a forward carries (minirt.tools.spec.host_overhead)",
        ):
            host = fitted
        gpu = (loaded.record.get("config") or {}).get("gpu", loaded.record.get("device", "?"))
        st.markdown(
            f"Measured on **{gpu}**: **{name}** (`{loaded.record.get('command', '?')}`) — "
            f"target **{target_name}**, draft **{draft_name}**, context {context} tokens, "
            f"{sc.TIMES[time]}."
        )
        if curves_from is not loaded:
            st.caption(
                f"This run has end-to-end rows only; the cost curves are "
                f"bench/results/{source.device}/{source.path.name}'s (same GPU, same shapes)."
            )
        st.caption(
            "The measured runs, read table by table (the host's time per forward, a steady "
            "queue, the full-batch decode steps against the cost model): "
            "`notebooks/07a_speculative_decoding_appendix.ipynb`, the appendix of chapter 07."
        )
    else:
        names = list(PRESETS)
        target_name = sb.selectbox(
            "Target (PRESETS)", names, names.index(sc.DEFAULT_TARGET), key="spec_target"
        )
        draft_name = sb.selectbox(
            "Draft (PRESETS)", names, names.index(sc.DEFAULT_DRAFT), key="spec_draft"
        )
        overhead = sb.slider(
            "Fixed cost per forward (ms)",
            0.0,
            2.0,
            0.0,
            0.05,
            key="spec_overhead",
            help="launches, Python, sampling: what a measured curve has and the roofline lacks",
        )
        target, draft = sc.roofline_pair(target_name, draft_name, overhead)
        model = (
            f"the **roofline model** of an H100 SXM (`CostCurve.roofline`: max(weight bytes / "
            f"bandwidth, FLOPs / peak) per forward, short context): target {target_name}, draft "
            f"{draft_name}, bf16 weights."
        )
        if sets:
            st.caption(f"The curves are {model}")
        else:
            st.caption(
                f"No `bench/results/*/spec-*.json` is committed yet, so the curves are {model} "
                "Once `python -m minirt.bench spec` writes one (on a GPU) and it is committed, "
                "its measured curves and end-to-end speedups appear here."
            )

    ks = sc.usable_ks(target)
    if not ks:
        st.error(f"The target curve stops at {target.tokens[-1]} tokens: no k can be priced.")
        st.stop()
    if k not in ks:
        st.warning(f"The target curve prices k ≤ {ks[-1]} only: showing k = {ks[-1]}.")
        k = ks[-1]
    batches = sc.plot_batches(target, draft)
    lo, hi = batches[0], batches[-1]
    grid = sorted({lo, hi} | {b for b in target.batches if lo <= b <= hi})
    lines = sc.speedup_frame(alpha, target, draft, ks if all_k else [k], batches, host)
    best = sc.best_frame(alpha, target, draft, grid, ks, host)
    even = sc.break_even(alpha, k, target, draft, host)
    seen = sc.measured_summary(points, k) if points is not None else None
    c = iter(st.columns(5 if seen else 4))
    next(c).metric(
        f"Speedup at batch {lo}",
        f"{speedup(alpha, k, lo, target, draft, host):.2f}×",
        help=f"the model: k = {k}, α = {alpha:.2f}",
    )
    if seen:
        next(c).metric(
            f"Measured at batch {seen['first_batch']}",
            f"{seen['first_speedup']:.2f}×",
            help=f"k = {k}, {seen['mode']}: tokens/s with the draft over tokens/s without",
        )
    next(c).metric(f"Best k at batch {lo}", int(best["best k"].iloc[0]))
    next(c).metric(
        "Break-even batch",
        "—" if even is None else even,
        help=f"the model: the smallest batch at which k = {k} guesses are slower than none"
        + (f"; none up to {hi}" if even is None else "")
        + (f". Measured: {sc.measured_break_even_text(seen)}" if seen else ""),
    )
    next(c).metric(
        f"Verify cost at batch {lo}",
        f"{sc.verify_cost(target, lo, k):.2f}×",
        help=f"one forward of {k + 1} tokens per sequence over a 1-token decode (GPU time)",
    )
    st.altair_chart(sc.speedup_chart(lines, best, k, even, points), width="stretch")
    st.caption(sc.why_it_pays(alpha, k, target, draft, lo, hi, even, host))
    if seen:
        st.caption(sc.measured_text(seen, k, alpha, host_fitted=callable(host)))
    elif curves == MEASURED:
        pairs = ", ".join(f"{p}-target + {p}-draft" for p in loaded.pairs()) or "none"
        st.caption(
            f"Measured end-to-end points are drawn when target and draft are a pair the "
            f"benchmark ran end to end ({pairs}), in the mode of the chosen forward time."
        )
    st.dataframe(
        best,
        hide_index=True,
        key="spec_best",
        column_config={
            "tokens / step": st.column_config.NumberColumn(format="%.2f"),
            "step (ms)": st.column_config.NumberColumn(format="%.3f"),
            "speedup": st.column_config.NumberColumn(format="%.2f×"),
        },
    )
    sweep = sc.alpha_sweep(sets) if curves == MEASURED else None  # measured data only
    if sweep is not None:
        st.subheader("At a realistic α: the measured sweep at batch 1")
        st.altair_chart(sc.alpha_sweep_chart(sweep), width="stretch")
        st.caption(
            f"bench/results/{sweep.result.device}/{sweep.result.path.name}: one pair, batch 1, "
            "greedy and sampled (exact rejection sampling keeps the target's distribution, but "
            "the guesses agree less often as the temperature rises). Points: the engine, "
            "tokens/s with k guesses over without; lines: the cost model on the run's own "
            "curves at each α. Chapter 07 tells what the sampled path costs on the host."
        )
        st.dataframe(sweep.points, hide_index=True, key="spec_sweep")

# ---------------------------------------------------------------- upload
else:
    uploaded = sb.file_uploader("A minirt trace (.json)", type=["json"], key="spec_upload")
    sb.caption("The live run's download button writes one; so does any traced run with a draft.")
    if uploaded is None:
        st.info("Upload a trace in the sidebar, or switch to **Live run**.")
        st.stop()
    try:
        trace = parse_trace(uploaded.getvalue(), uploaded.name)
    except TraceError as e:
        st.error(f"Can't read {uploaded.name}: {e}")
        st.stop()
    st.markdown(f"**{uploaded.name}** — {len(trace.steps())} steps")
    show_trace(trace, uploaded.name)
