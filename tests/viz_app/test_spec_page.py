"""The Speculative decoding page: a live run of the embedded pair, uploaded traces, the cost model
(over the roofline model, and over measured curves from a spec-*.json); and vizlib/spec_page.py
and vizlib/spec_cost.py.

Reference numbers come from minirt itself: an `LLM` with the embedded draft run here (its
`last_stats` and its trace), and `minirt.tools.spec` on the same curves. The measured path uses
a synthetic spec-*.json in tmp_path, so the tests pass with or without a committed one.
"""

import io
import json
import math
from functools import cache

import pandas as pd
import pyarrow as pa
import pytest

from minirt import LLM, SamplingParams
from minirt.results import write_results
from minirt.tools.spec import CostCurve, break_even_batch, host_overhead, predict, speedup
from minirt.trace import TraceError, load_trace
from vizlib import spec_cost as sc
from vizlib import spec_page as sp
from vizlib.runs import torch_threads

PAGE = "pages/06_Speculative_decoding.py"
GREEDY = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)


@cache
def reference(k: int, num_prompts: int) -> tuple[dict, dict]:
    """(last_stats, trace) of the embedded target with the embedded draft guessing k tokens
    (k = 0: no draft), greedy, 16 tokens per prompt, blocks of 4: built here, not through
    vizlib (the page's pool is another size; greedy tokens and step counts don't depend on it
    while nothing is preempted)."""
    draft = {"speculative_model": "draft", "num_speculative_tokens": k} if k else {}
    with torch_threads(1):  # as the page runs: extra threads only spin on a busy machine
        llm = LLM(device="cpu", dtype="float32", trace=True, block_size=4, **draft)
        llm.generate(list(sp.SPEC_PROMPTS[:num_prompts]), GREEDY, use_tqdm=False)
    return llm.last_stats.to_dict(), llm.recorder.to_dict()


def ok(at):
    assert not at.exception, [e.value for e in at.exception]
    return at


def frames(at) -> list[pd.DataFrame]:
    """The data of every chart on the page, one frame per dataset (as the browser gets them)."""
    return [
        pa.ipc.open_stream(d.data.data).read_pandas()
        for chart in at.get("vega_lite_chart")
        for d in chart.proto.datasets
    ]


def frame_with(at, column: str, value=None) -> pd.DataFrame:
    """The one chart dataset with `column` (and, if given, `value` in it)."""
    (found,) = [
        f for f in frames(at) if column in f and (value is None or (f[column] == value).any())
    ]
    return found


def upload(open_page, name: str, data: bytes):
    at = open_page(PAGE)
    at.radio(key="spec_source").set_value("Upload a trace").run()
    at.file_uploader(key="spec_upload").set_value((name, data, "application/json")).run()
    return ok(at)


def cost_model(open_page):
    at = open_page(PAGE)
    at.radio(key="spec_source").set_value("Cost model").run()
    curves = at.radio(key="spec_curves")
    if curves.value != "Roofline model":  # a committed spec-*.json makes "measured" the default
        curves.set_value("Roofline model").run()
    return ok(at)


def as_batch(value: str) -> float:
    return math.inf if value == "—" else int(value)


# --- the page: live run ---------------------------------------------------------------------


def test_live_run_shows_the_engines_own_counts_with_and_without_the_draft(open_page, metric):
    at = ok(open_page(PAGE))
    at.slider(key="spec_k").set_value(6)  # the page's defaults (a small run): set, in case
    at.slider(key="spec_prompts").set_value(3)  # they change
    at.slider(key="spec_max_tokens").set_value(16).run()
    ok(at)
    stats, trace = reference(6, 3)
    plain, _ = reference(0, 3)
    assert metric(at, "Acceptance rate α") == f"{stats['acceptance_rate']:.1%}"
    assert metric(at, "Steps with the draft") == str(stats["num_steps"])
    assert metric(at, "Steps without") == str(plain["num_steps"])
    assert stats["num_steps"] < plain["num_steps"]  # the point of it
    entries = [s for e in trace["events"] if e["type"] == "step" for s in e.get("spec", [])]
    per_step = sum(len(s["emitted"]) for s in entries) / len(entries)
    assert metric(at, "Tokens per step") == f"{per_step:.2f}"
    bars = frame_with(at, "verdict")  # accepted vs rejected draft tokens per step
    accepted = bars[bars["verdict"] == "accepted"]["tokens"].sum()
    rejected = bars[bars["verdict"] == "rejected"]["tokens"].sum()
    assert (accepted, accepted + rejected) == (
        stats["num_accepted_tokens"],
        stats["num_draft_tokens"],
    )


# --- the page: uploads ----------------------------------------------------------------------


def test_a_chosen_rollback_shows_the_trace_events_tables_before_and_after(open_page):
    _, trace = reference(6, 3)  # blocks of 4: some rollbacks free a block
    steps = load_trace(trace).steps()
    found = sp.rollbacks(steps, 4)
    i = next(j for j, r in enumerate(found) if r.freed_blocks)
    rb = found[i]
    (event,) = [e for e in steps if e["step"] == rb.step]
    (entry,) = [s for s in event["spec"] if s["seq_id"] == rb.seq_id]
    at = upload(open_page, "spec.json", json.dumps(trace).encode())
    picker = at.selectbox(key=f"spec_rollback_{len(found)}")
    picker.set_value((i + 1) % len(found)).run()  # somewhere else first, then the one
    picker.set_value(i).run()
    ok(at)
    before = frame_with(at, "table", "before").sort_values("logical")
    after = frame_with(at, "table", "after").sort_values("logical")
    assert before["physical"].tolist() == entry["table_before"]
    assert after["physical"].tolist() == event["block_tables"][rb.seq_id]
    freed = before[before["state"] == "freed by the rollback"]["physical"].tolist()
    assert freed == entry["freed_blocks"] and freed
    assert not set(freed) & set(after["physical"])
    (verdicts,) = [d.value for d in at.dataframe]
    assert (verdicts["verdict"] == "accepted").sum() == entry["num_accepted"]
    slots = frame_with(at, "row")
    guessed = slots[(slots["row"] == "before") & slots["state"].str.endswith("guess")]
    assert len(guessed) == len(entry["proposed"])


BAD_FILES = {
    "not JSON": b'{"format": "minirt-trace", "events": [',
    "a spec entry without its tables": json.dumps(
        {
            "format": "minirt-trace",
            "version": 1,
            "meta": {},
            "events": [
                {
                    "type": "step",
                    "step": 0,
                    "time_s": 0.0,
                    "scheduled": [],
                    "num_prefill_tokens": 0,
                    "num_decode_tokens": 0,
                    "num_running": 0,
                    "num_waiting": 0,
                    "preempted": [],
                    "finished": [],
                    "block_tables": {},
                    "num_free_blocks": 4,
                    "num_cached_blocks": 0,
                    "prefix_hit_tokens": 0,
                    "schedule_ms": 0.0,
                    "forward_ms": 0.0,
                    "spec": [{"seq_id": 0, "proposed": [1, 2], "num_accepted": 1}],
                }
            ],
        }
    ).encode(),  # fmt: skip
}


@pytest.mark.parametrize("what", BAD_FILES)
def test_a_malformed_trace_shows_trace_errors_message_not_an_exception(open_page, what):
    data = BAD_FILES[what]
    with pytest.raises(TraceError) as raised:
        load_trace(io.BytesIO(data))
    at = upload(open_page, "bad.json", data)
    (shown,) = [e.value for e in at.error]
    assert "bad.json" in shown
    assert str(raised.value).replace("<file>", "bad.json") in shown
    assert not at.metric


def test_a_trace_without_speculation_says_so(open_page):
    _, plain = reference(0, 3)  # a real engine trace, no draft: step events with spec = []
    for name, doc in [
        ("plain.json", plain),
        (
            "old.json",
            {
                **plain,
                "events": [{k: v for k, v in e.items() if k != "spec"} for e in plain["events"]],
            },
        ),  # fmt: skip
    ]:
        at = upload(open_page, name, json.dumps(doc).encode())
        assert not at.error
        assert any("no speculative decoding" in i.value for i in at.info), name
        assert not at.metric and not at.get("vega_lite_chart")


# --- the page: cost model -------------------------------------------------------------------


def test_cost_model_metrics_are_minirt_tools_spec_on_the_roofline_curves(open_page, metric):
    at = cost_model(open_page)
    at.slider(key="spec_alpha").set_value(0.7)
    at.slider(key="spec_cost_k").set_value(3).run()
    ok(at)
    target, draft = sc.roofline_pair(sc.DEFAULT_TARGET, sc.DEFAULT_DRAFT)
    assert metric(at, "Speedup at batch 1") == f"{speedup(0.7, 3, 1, target, draft):.2f}×"
    (best1, *_) = predict(0.7, target, draft, [1], range(0, 9))
    assert metric(at, "Best k at batch 1") == str(best1.k)
    even = break_even_batch(0.7, 3, target, draft, range(1, 1025))
    assert as_batch(metric(at, "Break-even batch")) == (math.inf if even is None else even)
    (table,) = [d.value for d in at.dataframe]
    assert table["batch"].tolist() == list(sc.ROOFLINE_BATCHES)
    assert table["best k"].tolist() == [p.k for p in predict(0.7, target, draft, ks=range(9))]
    assert any("memory-bound" in c.value and "compute-bound" in c.value for c in at.caption)
    assert any("roofline model" in c.value for c in at.caption)


def test_lowering_alpha_never_raises_the_break_even_batch(open_page, metric):
    at = cost_model(open_page)
    seen = []
    for alpha in (0.95, 0.8, 0.6, 0.4, 0.2):
        at.slider(key="spec_alpha").set_value(alpha).run()
        seen.append(as_batch(metric(ok(at), "Break-even batch")))
    assert seen == sorted(seen, reverse=True)
    assert seen[0] > seen[-1]  # and it does move


def test_cost_model_draws_measured_curves_and_points_from_a_spec_json(
    open_page, metric, monkeypatch, tmp_path
):
    write_synthetic_spec(tmp_path)
    monkeypatch.setattr(sc, "results_root", lambda: tmp_path)
    at = open_page(PAGE)
    at.radio(key="spec_source").set_value("Cost model").run()
    assert ok(at).radio(key="spec_curves").value == "Measured on a GPU"
    at.toggle(key="spec_all_k").set_value(True)
    at.slider(key="spec_alpha").set_value(0.75).run()
    loaded = sc.load_spec(sc.discover(tmp_path)[0])
    k = at.slider(key="spec_cost_k").value
    for time, mode, measured in [("ms", "eager", [2.0, 2.5]), ("gpu_ms", "CUDA graphs", [1.5])]:
        at.selectbox(key="spec_time").set_value(time).run()
        target = loaded.curve(sc.EMBEDDED_TARGET, 128, time)
        draft = loaded.curve(sc.EMBEDDED_DRAFT, 128, time)
        # a GPU time gets the host's: the plain CUDA-graph run's 1 s over 10 steps, less the GPU
        host = 0.0 if time == "ms" else host_overhead(target, {1: 100.0})
        shown = metric(ok(at), "Speedup at batch 1")
        assert shown == f"{speedup(0.75, k, 1, target, draft, host):.2f}×", time
        points = frame_with(at, "mode")  # the end-to-end runs of the same engine mode only
        assert set(points["mode"]) == {mode} and sorted(points["speedup"]) == measured
        assert frame_with(at, "k", 1)["batch"].max() == 64  # the measured grid, not roofline's
    at.toggle(key="spec_host").set_value(False).run()  # the GPU alone
    assert metric(ok(at), "Speedup at batch 1") == f"{speedup(0.75, k, 1, target, draft):.2f}×"
    at.selectbox(key="spec_draft_model").set_value("qwen3-0.6b").run()
    assert not [f for f in frames(ok(at)) if "mode" in f]  # not a pair: no measured points
    assert any("embedded-target + embedded-draft" in c.value for c in at.caption)


def test_every_committed_spec_run_gives_curves_and_draws(open_page, metric):
    sets = sc.discover()
    if not sets:
        pytest.skip("no bench/results/*/spec-*.json is committed")
    for s in sets:
        loaded = sc.load_spec(s)
        for model in loaded.models():
            for time in loaded.times():
                for context in loaded.contexts():
                    assert loaded.curve(model, context, time).tokens[0] == 1
    at = open_page(PAGE)
    at.radio(key="spec_source").set_value("Cost model").run()
    assert ok(at).radio(key="spec_curves").value == "Measured on a GPU" and not at.error
    assert at.selectbox(key="spec_set").options == [s.label for s in sets]
    for time in sc.load_spec(sets[0]).times():
        at.selectbox(key="spec_time").set_value(time).run()
        assert not ok(at).error and metric(at, "Break-even batch")


def test_the_default_cost_view_shows_where_speculation_stops_paying_measured_and_modelled(
    open_page, metric
):
    sets = sc.discover()
    if not sets:
        pytest.skip("no bench/results/*/spec-*.json is committed")
    at = open_page(PAGE)
    at.radio(key="spec_source").set_value("Cost model").run()
    ok(at)
    assert at.selectbox(key="spec_time").value == sc.ENGINE_TIME  # as the engine runs
    assert at.toggle(key="spec_host").value and not at.warning and not at.error
    shown = sets[sc.default_run(sets)]  # the newest run with end-to-end rows
    newest = sc.load_spec(shown)
    curves = sc.load_spec(sc.curve_run(sets, shown))
    target = curves.curve("gpu-target", 256, sc.ENGINE_TIME)
    draft = curves.curve("gpu-draft", 256, sc.ENGINE_TIME)
    # the full-batch decode steps in CUDA graphs: the plain ones fit the host's time
    decode = [r for r in newest.end_to_end if r["cuda_graphs"] and r["workload"] == "decode"]
    plain = {r["batch"]: r for r in decode if r["k"] == 0}
    host = host_overhead(
        target, {b: 1e3 * r["elapsed_s"] / r["num_steps"] for b, r in plain.items()}
    )
    even = break_even_batch(0.9, 4, target, draft, range(1, 513), host)
    assert even is not None and metric(at, "Break-even batch") == str(even)
    gain = {
        r["batch"]: r["tokens_per_s"] / plain[r["batch"]]["tokens_per_s"]
        for r in decode
        if r["k"] == 4
    }
    assert metric(at, "Measured at batch 1") == f"{gain[1]:.2f}×"
    slower = min(b for b, g in gain.items() if g < 1)
    captions = " ".join(c.value for c in at.caption)
    assert "memory-bound" in captions and "compute-bound" in captions
    assert f"stops paying from batch {even}" in captions
    assert f"slower than none from batch {slower}" in captions


# --- vizlib.spec_page -----------------------------------------------------------------------


def spec_step(step, seq, proposed, accepted, before, after, freed, computed, finished=()):
    """A step event as the engine writes it (num_computed_tokens: before the step, x_0's place)."""
    return {
        "type": "step", "step": step, "finished": list(finished),
        "scheduled": [{"seq_id": seq, "num_new_tokens": 1, "num_computed_tokens": computed,
                       "is_prefill": False}],
        "block_tables": {seq: after} if after else {},
        "spec": [{"seq_id": seq, "proposed": proposed, "num_accepted": accepted,
                  "emitted": proposed[:accepted] + [99], "table_before": before,
                  "freed_blocks": freed}],
    }  # fmt: skip


# x_0 at position 9, k = 4 guesses in slots 10..13, blocks of 4: x_0 in block 2, the guesses
# fill blocks 2 and 3. One accepted: valid up to slot 10, so block 3 (id 7) is freed.
ROLLED = spec_step(5, 0, [10, 11, 12, 13], 1, [4, 5, 6, 7], [4, 5, 6], [7], computed=9)
KEPT = spec_step(6, 0, [20, 21, 22, 23], 4, [4, 5, 6, 8], [4, 5, 6, 8], [], computed=11)


def test_totals_and_step_frame_count_what_the_spec_entries_say():
    steps = [{"step": 0, "spec": []}, ROLLED, KEPT, {"step": 7}]  # a prefill, an old event
    t = sp.totals(steps)
    assert (t["steps"], t["spec_steps"], t["draft_tokens"], t["accepted_tokens"]) == (4, 2, 8, 5)
    assert t["acceptance_rate"] == 5 / 8 and t["k"] == 4 and t["freed_blocks"] == 1
    assert t["tokens_per_step"] == (2 + 5) / 2  # emitted: accepted + the target's own
    frame = sp.step_frame(steps)
    assert frame.set_index(["step", "verdict"])["tokens"].to_dict() == {
        (0, "accepted"): 0, (0, "rejected"): 0,  # a prefill: on the axis, no bar
        (5, "accepted"): 1, (5, "rejected"): 3, (6, "accepted"): 4, (6, "rejected"): 0,
        (7, "accepted"): 0, (7, "rejected"): 0,
    }  # fmt: skip
    assert sp.has_spec(steps) and not sp.has_spec([{"step": 0}, {"step": 1, "spec": []}])
    assert sp.step_frame([{"step": 0}]).empty


def test_rollbacks_recover_x0_and_mark_the_freed_lookahead_block():
    rolled, kept = sp.rollbacks([ROLLED, KEPT], block_size=4)
    assert rolled.x0 == 9 and kept.x0 == 11  # the computed count recorded before the step
    assert (rolled.table_after, rolled.freed_blocks, rolled.finished) == ([4, 5, 6], [7], False)
    frame = sp.table_frame(rolled, 4)
    before = frame[frame["table"] == "before"].set_index("physical")["state"].to_dict()
    assert before == {4: "kept", 5: "kept", 6: "kept", 7: "freed by the rollback"}
    assert frame[frame["table"] == "after"]["physical"].tolist() == [4, 5, 6]
    cells = sp.table_chart(frame, "before", 5).to_dict()["layer"][0]["encoding"]
    assert cells["x"]["scale"]["domain"] == [0, 1, 2, 3, 4]  # both tables on one width
    assert cells["color"]["scale"]["domain"] == sp.BLOCK_STATES
    # a table whose length disagrees with x_0 + 1 + k slots: no guess at x_0
    (odd,) = sp.rollbacks([spec_step(1, 0, [1, 2], 0, [0, 1, 2], [0], [1, 2], computed=3)], 4)
    assert odd.x0 is None and sp.slot_frame(odd, 4).empty
    assert sp.rollbacks([ROLLED])[0].x0 is None  # no block size known: no position either
    assert sp.default_rollback([kept, rolled]) == 1  # the one that freed a block


def test_slot_frame_shows_accepted_rejected_dead_and_freed_slots():
    rolled = sp.rollbacks([ROLLED], block_size=4)[0]
    frame = sp.slot_frame(rolled, 4, ["a", "b", "c", "d"])
    assert list(frame["block"].unique()) == ["L2 · #6", "L3 · #7"]  # x_0's block onwards
    before = frame[frame["row"] == "before"].set_index("position")
    after = frame[frame["row"] == "after"].set_index("position")
    assert before.loc[9, "state"] == "x₀ (last token)" and before.loc[8, "state"] == "earlier KV"
    assert before.loc[10, ["state", "label"]].tolist() == ["accepted guess", "a"]
    assert before.loc[[11, 12, 13], "state"].tolist() == ["rejected guess"] * 3
    assert after.loc[11, "state"] == "dead slot (overwritten next)"  # block 6 is kept
    assert after.loc[[12, 13, 14, 15], "state"].tolist() == ["freed block"] * 4  # block 7
    assert after.loc[12, "label"] == ""
    spec = sp.slot_chart(frame).to_dict()
    assert spec["facet"]["column"]["sort"] == ["L2 · #6", "L3 · #7"]


def test_finished_sequences_release_everything_and_verdicts_read_as_a_table():
    done = spec_step(3, 1, [5, 6], 2, [0, 1], [], [], computed=4, finished=[1])
    (rb,) = sp.rollbacks([done], block_size=4)
    assert rb.finished and rb.table_after == [] and rb.x0 == 4
    states = sp.table_frame(rb, 4)["state"].tolist()
    assert states == ["released (finished)"] * 2
    table = sp.verdict_frame(rb)  # no tokenizer: ids
    assert table["verdict"].tolist() == ["accepted", "accepted", "bonus: the target's token"]
    assert table["draft"].tolist() == ["⟨5⟩", "⟨6⟩", "—"]
    rolled = sp.rollbacks([ROLLED], 4)[0]
    assert sp.verdict_frame(rolled)["verdict"].tolist() == [
        "accepted", "rejected: the target's token", "not examined", "not examined",
    ]  # fmt: skip


def test_token_texts_decode_each_id_with_visible_whitespace():
    class Bytes:  # the embedded tokenizer is byte-level: id b is byte b
        def decode(self, ids):
            return bytes(ids).decode(errors="replace") if all(i < 256 for i in ids) else ""

    assert sp.token_texts(Bytes(), [ord("d"), ord(" "), ord("\n"), 256]) == ["d", "·", "⏎", "⟨256⟩"]
    assert sp.token_texts(None, [7]) == ["⟨7⟩"]


def test_live_settings_give_both_runs_the_same_pool():
    spec, plain = sp.live_settings(3, 2, 8, 0.5), sp.live_settings(0, 2, 8, 0.5)
    assert spec.prompts == plain.prompts == sp.SPEC_PROMPTS[:2]
    assert spec.engine_kwargs()["num_speculative_tokens"] == 3
    assert "speculative_model" not in plain.engine_kwargs()
    assert spec.sampling_params().temperature == 0.5
    with torch_threads(1):
        for s in (spec, plain):
            assert LLM(**s.engine_kwargs()).num_blocks == sp.NUM_BLOCKS


# --- vizlib.spec_page: the cost model -------------------------------------------------------


def synthetic_rows() -> list[dict]:
    """A small measured-looking grid: flat while memory-bound, then linear in batch x tokens."""
    rows = []
    for model, base, per_token in (
        (sc.EMBEDDED_TARGET, 2.0, 0.02),
        (sc.EMBEDDED_DRAFT, 0.8, 0.004),
        ("qwen3-0.6b", 5.0, 0.05),
    ):
        for b in (1, 2, 4, 8, 16, 32, 64):
            for t in range(1, 10):
                ms = max(base, per_token * b * t)
                rows.append({"experiment": "cost_curve", "model": model, "batch": b,
                             "tokens": t, "context_len": 128, "ms": ms,
                             "gpu_ms": ms / 4})  # fmt: skip
    rows.append({**rows[0], "ms": 1000.0})  # a repeat (an outlier): the median ignores it
    rows.append({**rows[0], "ms": rows[0]["ms"]})
    for batch, k, graphs, tps, alpha in [
        (1, 0, False, 100.0, None), (1, 0, True, 200.0, None), (1, 4, False, 250.0, 0.8),
        (1, 4, True, 300.0, 0.8), (8, 0, False, 700.0, None), (8, 4, False, 1400.0, 0.8),
        (8, 6, True, 999.0, 0.7),  # no k = 0 run with graphs at batch 8: no ratio
    ]:  # fmt: skip
        rows.append({"experiment": "end_to_end", "pair": "embedded", "batch": batch, "k": k,
                     "cuda_graphs": graphs, "tokens_per_s": tps, "acceptance_rate": alpha,
                     "tokens_per_step": 3.0, "num_steps": 10, "elapsed_s": 1.0})  # fmt: skip
    return rows


def write_synthetic_spec(root) -> None:
    write_results("spec", "h100", synthetic_rows(), out_dir=root,
                  command="python -m minirt.bench spec", machine={}, config={})  # fmt: skip


def test_discover_finds_spec_runs_newest_first(tmp_path):
    for name in [
        "h100/spec-20260101-000000.json",
        "h100/spec-20260201-000000-1.json",
        "h100/spec-20260201-000000.json",
        "h100/transfers-20260301-000000.json",
        "cpu/spec-notes.json",
    ]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    assert [s.label for s in sc.discover(tmp_path)] == [
        "h100 / 2026-02-01 00:00:00 (#2)",
        "h100 / 2026-02-01 00:00:00",
        "h100 / 2026-01-01 00:00:00",
    ]
    assert sc.discover(tmp_path / "missing") == []


def test_load_spec_builds_median_curves_and_refuses_what_it_cant_use(tmp_path):
    write_synthetic_spec(tmp_path)
    loaded = sc.load_spec(sc.discover(tmp_path)[0])
    assert loaded.models() == sorted([sc.EMBEDDED_DRAFT, sc.EMBEDDED_TARGET, "qwen3-0.6b"])
    assert loaded.contexts() == [128]
    target = loaded.curve(sc.EMBEDDED_TARGET, 128)
    assert target.ms(1, 1) == 2.0  # median of 2.0, 2.0, 1000.0
    assert target.ms(64, 9) == pytest.approx(0.02 * 64 * 9)
    assert loaded.curve(sc.EMBEDDED_TARGET, 128, "gpu_ms").ms(64, 9) == target.ms(64, 9) / 4
    assert loaded.times() == ["ms", "gpu_ms"] and loaded.pairs() == ["embedded"]
    with pytest.raises(sc.SpecError, match="no rows"):
        loaded.curve(sc.EMBEDDED_TARGET, 128, "gpu_ms_expanded")  # not measured in this run
    with pytest.raises(sc.SpecError, match="no rows"):
        loaded.curve(sc.EMBEDDED_TARGET, 4096)
    path = sc.discover(tmp_path)[0].path
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "topic": "transfers"}))
    with pytest.raises(sc.SpecError, match="not a spec run"):
        sc.load_spec(sc.discover(tmp_path)[0])
    record["results"].append({"experiment": "cost_curve", "model": "x", "batch": 1})
    path.write_text(json.dumps(record))
    with pytest.raises(sc.SpecError, match="malformed row"):
        sc.load_spec(sc.discover(tmp_path)[0])
    path.write_text("{}")
    with pytest.raises(sc.SpecError, match="unreadable"):
        sc.load_spec(sc.discover(tmp_path)[0])


def write_decode_only_spec(root) -> None:
    """A newer run like `bench spec --pair --decode-only`: end-to-end rows only, no curves."""
    rows = [{"experiment": "end_to_end", "pair": "embedded", "workload": "decode", "batch": 1,
             "k": k, "cuda_graphs": True, "tokens_per_s": tps, "acceptance_rate": alpha,
             "tokens_per_step": 1.0 + 2.0 * k / 4, "num_steps": 10, "elapsed_s": 1.0}
            for k, tps, alpha in ((0, 100.0, None), (4, 250.0, 0.5))]  # fmt: skip
    path = write_results("spec", "h100", rows, out_dir=root, command="python -m minirt.bench "
                         "spec --pair t d --decode-only", machine={}, config={})  # fmt: skip
    path.rename(path.with_name("spec-29991231-000000.json"))  # newer than the full run


def test_a_run_without_cost_curves_borrows_those_of_the_newest_run_of_its_gpu(tmp_path):
    write_synthetic_spec(tmp_path)
    write_decode_only_spec(tmp_path)
    decode_only, full = sc.discover(tmp_path)
    assert not sc.load_spec(decode_only).cost_rows
    assert sc.curve_run(sc.discover(tmp_path), decode_only) == full
    assert sc.curve_run(sc.discover(tmp_path), full) == full
    assert sc.curve_run([decode_only], decode_only) is None
    models = sc.load_spec(full).models()
    assert [models[i] for i in sc.default_models(models)] == [sc.EMBEDDED_TARGET, sc.EMBEDDED_DRAFT]
    assert sc.default_models(["gpu-draft", "gpu-target", "x"]) == (1, 0)
    assert sc.default_models(["a", "b"]) == (0, 0)


def test_the_newest_run_decode_only_draws_borrowed_curves_and_its_decode_points(
    open_page, monkeypatch, tmp_path
):
    write_synthetic_spec(tmp_path)
    write_decode_only_spec(tmp_path)
    monkeypatch.setattr(sc, "results_root", lambda: tmp_path)
    at = open_page(PAGE)
    at.radio(key="spec_source").set_value("Cost model").run()
    assert ok(at).selectbox(key="spec_set").index == 0  # the decode-only run, the newest
    assert any("cost curves are" in c.value for c in at.caption)
    at.selectbox(key="spec_time").set_value("gpu_ms").run()
    points = frame_with(ok(at), "mode")
    assert set(points["mode"]) == {"CUDA graphs, decode"} and points["speedup"].tolist() == [2.5]


def test_measured_speedups_divide_by_the_plain_run_of_the_same_batch_and_mode():
    e2e = [r for r in synthetic_rows() if r["experiment"] == "end_to_end"]
    got = sc.measured_speedups(e2e).sort_values(["batch", "mode"]).reset_index(drop=True)
    assert got[["pair", "batch", "k", "mode"]].values.tolist() == [
        ["embedded", 1, 4, "CUDA graphs"], ["embedded", 1, 4, "eager"], ["embedded", 8, 4, "eager"],
    ]  # fmt: skip
    assert got["speedup"].tolist() == [1.5, 2.5, 2.0]
    assert sc.measured_speedups([]).empty
    assert sc.pair_of("embedded-target", "embedded-draft") == "embedded"
    assert sc.pair_of("gpu-target", "gpu-draft") == "gpu"
    assert sc.pair_of("embedded-target", "qwen3-0.6b") is None
    assert sc.pair_of("qwen3-0.6b", "qwen3-0.6b-draft") is None


def test_cost_model_helpers_agree_with_minirt_tools_spec():
    target, draft = sc.roofline_pair("qwen3-8b", "qwen3-0.6b", overhead_ms=0.1)
    direct = CostCurve.roofline(sc.PRESETS["qwen3-8b"], batches=sc.ROOFLINE_BATCHES,
                                overhead_ms=0.1)  # fmt: skip
    assert target.ms_grid == direct.ms_grid
    batches = sc.plot_batches(target, draft)
    assert batches[0] == 1 and batches[-1] == 1024 and set(sc.ROOFLINE_BATCHES) <= set(batches)
    lines = sc.speedup_frame(0.8, target, draft, [2, 5], batches)
    row = lines[(lines["k"] == 5) & (lines["batch"] == 64)].iloc[0]
    assert row["speedup"] == speedup(0.8, 5, 64, target, draft)
    assert sc.break_even(0.8, 5, target, draft) == break_even_batch(
        0.8, 5, target, draft, range(1, 1025)
    )
    assert sc.verify_cost(target, 1, 4) == pytest.approx(1.0, abs=0.01)  # memory-bound
    assert sc.verify_cost(target, 1024, 4) == pytest.approx(5.0, rel=0.05)  # compute-bound
    assert sc.usable_ks(target) == list(sc.KS)
    assert sc.usable_ks(CostCurve.flat(1.0, tokens=(1, 2, 3))) == [1, 2]


def test_speedup_chart_has_a_log2_batch_axis_and_every_layer():
    target, draft = sc.roofline_pair()
    batches = sc.plot_batches(target, draft)
    lines = sc.speedup_frame(0.8, target, draft, list(sc.KS), batches)
    best = sc.best_frame(0.8, target, draft, list(sc.ROOFLINE_BATCHES), list(sc.KS))
    points = sc.measured_speedups([r for r in synthetic_rows() if r["experiment"] == "end_to_end"])
    spec = sc.speedup_chart(lines, best, 4, 170, points).to_dict()
    curves, envelope, one, even, dots = spec["layer"]
    assert curves["encoding"]["x"]["scale"] == {"type": "log", "base": 2, "nice": False}
    assert curves["encoding"]["x"]["axis"]["values"] == list(sc.ROOFLINE_BATCHES)
    assert envelope["mark"]["strokeDash"] == [5, 4]
    assert dots["encoding"]["shape"]["field"] == "mode"
    assert len(sc.speedup_chart(lines, best, 4, None).to_dict()["layer"]) == 3
    assert best["best k"].iloc[-1] == 0  # at batch 1024 not speculating is best


def test_the_host_is_fitted_on_plain_graph_steps_decode_first_and_none_without_them():
    def run(workload, elapsed_s, k=0, graphs=True):
        return {
            "pair": "gpu",
            "batch": 8,
            "k": k,
            "cuda_graphs": graphs,
            "workload": workload,
            "elapsed_s": elapsed_s,
            "num_steps": 10,
            "tokens_per_s": 1.0,
        }

    runs = [
        run("closed", 2.0),
        run("decode", 1.0),
        run("decode", 9.0, k=4),
        run("decode", 5, 0, False),
    ]
    assert sc.plain_step_ms(runs, "gpu") == {8: 100.0}  # 1 s over 10 steps
    assert sc.plain_step_ms(runs[:1], "gpu") == {8: 200.0}  # closed batches when no decode run
    target = CostCurve.flat(1.0)
    assert sc.host_model(runs, "gpu", target)(8) == pytest.approx(99.0)  # the step less the GPU
    assert (
        sc.host_model(runs, "other", target) is None and sc.host_model(runs, None, target) is None
    )


def test_the_cost_view_draws_the_newest_alpha_sweep_with_the_models_lines(open_page):
    sweep = sc.alpha_sweep(sc.discover())
    if sweep is None:
        pytest.skip("no committed spec run has an alpha sweep")
    at = open_page(PAGE)
    at.radio(key="spec_source").set_value("Cost model").run()
    ok(at)
    rows = [r for r in json.loads(sweep.result.path.read_text())["results"]
            if r.get("experiment") == "alpha_sweep"]  # fmt: skip
    assert "At a realistic α: the measured sweep at batch 1" in [h.value for h in at.subheader]
    shown = at.dataframe[-1].value  # the sweep's table comes last
    assert sorted(shown["speedup"]) == sorted(r["speedup"] for r in rows)
    drawn = frame_with(at, "temperature")  # the measured points on the chart
    assert sorted(drawn["α"]) == sorted(r["alpha"] for r in rows)
    lines = frame_with(at, "α", 0.5)  # the model's lines start at α = 0.5, one per k
    assert set(lines["k"]) == {r["k"] for r in rows}


def test_the_sweeps_lines_are_the_cost_model_on_the_runs_own_curves(tmp_path):
    curve = [{"experiment": "cost_curve", "model": f"p-{role}", "batch": 1, "tokens": t,
              "context_len": 256, "ms": 9.0, "gpu_ms": 1.0, "gpu_ms_expanded": ms * t ** 0.1}
             for role, ms in (("target", 1.2), ("draft", 0.1)) for t in range(1, 10)]  # fmt: skip
    sweep = [{"experiment": "alpha_sweep", "pair": "p", "batch": 1, "k": 4, "temperature": t,
              "alpha": a, "speedup": x, "predicted_speedup": x, "plain_tokens_per_s": 800.0,
              "tokens_per_s": 800.0 * x}
             for t, a, x in ((0.0, 0.9, 2.2), (1.0, 0.8, 1.8))]  # fmt: skip
    write_results("spec", "h100", curve + sweep, tmp_path, "test")
    got = sc.alpha_sweep(sc.discover(tmp_path))
    target = CostCurve.from_rows([{**r, "ms": r["gpu_ms_expanded"]} for r in curve[:9]], "t")
    draft = CostCurve.from_rows([{**r, "ms": r["gpu_ms_expanded"]} for r in curve[9:]], "d")
    host = host_overhead(target, {1: 1e3 / 800.0})
    at = got.lines[(got.lines["k"] == 4) & ((got.lines["α"] - 0.8).abs() < 1e-9)]
    assert at["speedup"].item() == pytest.approx(speedup(0.8, 4, 1, target, draft, host_ms=host))
    assert list(got.points["temperature"]) == [0.0, 1.0]
