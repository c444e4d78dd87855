"""The accuracy table: the same held-out text at full precision and under each method, the
model restored between rows; and what static FP8 calibrated on the wrong text costs.

Rounding activations makes these scores chaotic: on another CPU's vector kernels (or with the
input nudged by a part in a million) the 8-bit rows move by up to about 1.3 % of full precision
on 1,000 bytes. So the claims here compare numbers at least 2 % apart; closer ones are ties.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minirt.quant.accuracy import (
    DEFAULT_METHODS,
    FULL_PRECISION,
    accuracy_table,
    calibration_text,
    held_out_text,
    nats_per_byte,
    nudged,
    quantized,
    range_overshoot,
)
from minirt.quant.linear import QuantLinear, target_linears
from minirt.quant.outliers import activation_outliers, planted_outlier_channels

# 1,000 bytes of codecs.py (held out), calibrated on textwrap.py (training split). Measured
# nats/byte: full 0.656; ratios w4a16-g128 1.060, g32 1.026 on every CPU (weights-only rounding
# is done once, on fixed weights). The 8-bit rows, over ATEN_CPU_CAPABILITY=avx512/avx2/default
# and ten 1-ppm nudges: fp8-dynamic 1.0003-1.012, fp8-static 1.002-1.010, int8 0.9996-1.0035,
# int8-smooth 0.9995-1.0025: ties, all within 1.3 % of full precision.
HELD_OUT = held_out_text(1000)
TIE = 0.02  # 8-bit rows within this of full precision (and of each other): a tie on this model
# Off-distribution calibration (the model saw Python source only). Measured fp8-static ratios on
# HELD_OUT, with the worst layer's range overshoot (held-out max |x| / calibration max |x|):
# textwrap.py 1.002-1.010 (1.16x), English prose 1.004-1.013 (2.0x), Chinese 1.016 (4.1x),
# random printable ASCII 1.009-1.21 (1.9-8.6x, by seed), 600 spaces 1.195-1.198 (7.0x), 600 "x"
# 1.116-1.117 (12x). So off-distribution text is not worse as such: what costs is a calibration
# set too quiet to cover the real range, which then clips.
PROSE = (
    "The quick brown fox jumps over the lazy dog. It was the best of times, it was the worst of "
    "times, it was the age of wisdom, it was the age of foolishness. "
) * 4
DEGENERATE = "x" * 600  # one letter, over and over (600 spaces do the same: 1.196)
METHODS = ("w4a16-g128", "fp8-dynamic")  # one weights-only method, one that rounds activations


# tests/quant/conftest.py; cpu_isa: ./workbench test re-runs this module on other CPU kernels
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.cpu_isa]


@pytest.fixture(scope="module")
def table(llm):
    return {row.method: row for row in accuracy_table(llm, HELD_OUT)}


def test_table_starts_at_full_precision_and_lists_every_method(table):
    assert list(table) == [FULL_PRECISION, *DEFAULT_METHODS]
    full = table[FULL_PRECISION]
    assert full.ratio == 1.0 and full.delta_ppl == 0.0
    assert full.perplexity == pytest.approx(torch.tensor(full.nats_per_byte).exp().item())


def test_quantized_rows_cost_little_and_int4_costs_most(table):
    ratios = {m: row.ratio for m, row in table.items() if m != FULL_PRECISION}
    int4 = {m: r for m, r in ratios.items() if m.startswith("w4a16")}
    eight_bit = {m: r for m, r in ratios.items() if m not in int4}
    # The 8-bit rows tie with full precision: one may even land a hair below it.
    assert all(abs(r - 1) < TIE for r in eight_bit.values()), eight_bit
    assert all(1.0 < r < 1.10 for r in int4.values()), int4
    # Smaller groups track the weights more closely (2.6 % vs 6.0 %, the same on every CPU);
    # 4 bits cost more than 8 by more than the 8-bit rows move.
    assert int4["w4a16-g32"] < int4["w4a16-g128"]
    assert min(int4.values()) > max(eight_bit.values()) + 0.01


def test_rounding_activations_makes_a_score_move_with_its_last_bits(llm):
    """What the CPU's vector kernels do, done on purpose: the input nudged by 1 ppm barely moves
    full precision or weights-only int4, but moves an 8-bit row by a sizeable share of its cost."""

    def score(method, k):
        with nudged(llm, k):
            if method == FULL_PRECISION:
                return nats_per_byte(llm, HELD_OUT)
            with quantized(llm, method):
                return nats_per_byte(llm, HELD_OUT)

    embed, ids = llm.model.model.embed_tokens, torch.arange(8)
    with nudged(llm, 1):
        assert not torch.equal(embed(ids), embed.weight[ids])  # the nudge is there...
    full = [score(FULL_PRECISION, k) for k in (0, 1)]
    assert abs(full[1] / full[0] - 1) < 1e-5  # ...and full precision hardly sees it (or not)
    int4 = [score("w4a16-g128", k) for k in (0, 1)]
    assert abs(int4[1] / int4[0] - 1) < 1e-5
    # Over ten nudges the row spanned 1.2 % of full precision; three span more than 0.01 %.
    fp8 = [score("fp8-dynamic", k) for k in (0, 1, 2)]
    assert (max(fp8) - min(fp8)) / full[0] > 1e-4


def test_accuracy_table_draws_score_again_only_what_rounds_activations(llm):
    rows = {r.method: r for r in accuracy_table(llm, HELD_OUT[:300], methods=METHODS, draws=2)}
    assert [rows[m].draws for m in (FULL_PRECISION, *METHODS)] == [2, 1, 2]
    assert rows[FULL_PRECISION].ratio == 1.0 and rows[FULL_PRECISION].ratio_spread == 0.0
    assert rows["w4a16-g128"].ratio_spread == 0.0 < rows["fp8-dynamic"].ratio_spread
    with pytest.raises(ValueError, match="draws is 0"):
        accuracy_table(llm, HELD_OUT, methods=METHODS, draws=0)


def test_quantized_restores_the_full_precision_layers_even_after_an_error(llm):
    before = target_linears(llm.model)
    with pytest.raises(RuntimeError, match="boom"), quantized(llm, "int8") as model:
        assert any(isinstance(m, QuantLinear) for _, m in model.named_modules())
        raise RuntimeError("boom")
    assert target_linears(llm.model) == before


def test_nats_per_byte_scores_long_text_in_windows(llm):
    toks = llm.tokenizer.encode(HELD_OUT)[:300]
    whole = nats_per_byte(llm, toks)
    logits = llm.score(toks)
    assert whole == pytest.approx(F.cross_entropy(logits[:-1], torch.tensor(toks[1:])).item())
    windows = nats_per_byte(llm, toks, window=100)  # 3 fresh prompts of 100 tokens
    by_hand = sum(nats_per_byte(llm, toks[i : i + 100]) * 99 for i in (0, 100, 200)) / 297
    assert windows == pytest.approx(by_hand) and windows > whole  # less context, more surprise


def test_an_unknown_method_fails_before_any_scoring(llm):
    with pytest.raises(ValueError, match="unknown quantization method 'fp4'"):
        accuracy_table(llm, HELD_OUT, methods=["int8", "fp4"])


def test_static_fp8_calibrated_on_text_that_covers_too_little_range_clips_and_costs(llm):
    def calibrated_on(text):
        with quantized(llm, "fp8-static", [text]):
            return nats_per_byte(llm, HELD_OUT)

    def worst_overshoot(text):
        return max(range_overshoot(llm, [text], HELD_OUT).values())

    full = nats_per_byte(llm, HELD_OUT)
    on = calibrated_on(calibration_text(1000))
    assert worst_overshoot(calibration_text(1000)) < 1.5
    # Prose is off-distribution but its ranges are close: it ties with on-distribution text
    # (both 0.2-1.3 % over full precision, by CPU), the 2 % tie margin apart at most.
    assert worst_overshoot(PROSE) < 3
    assert abs(calibrated_on(PROSE) - on) < TIE * full
    # Degenerate text leaves most of the real range uncovered: real inputs clip, it costs 11-12 %.
    assert worst_overshoot(DEGENERATE) > 5
    assert calibrated_on(DEGENERATE) > on + 0.05 * full
    # Dynamic per-token scales need no calibration; on this model they tie with well-calibrated
    # static ones (which is ahead varies with the CPU) and beat the clipping ones by far.
    with quantized(llm, "fp8-dynamic"):
        dynamic = nats_per_byte(llm, HELD_OUT)
    assert abs(dynamic - on) < TIE * full
    assert dynamic < calibrated_on(DEGENERATE) - 0.05 * full


def test_smoothquant_wins_once_the_model_has_outlier_channels(llm):
    """The embedded model has no fixed outlier channels, so int8 and int8-smooth tie on it. Plant
    four, 50x, without changing what the model computes, and per-token INT8 spends its range on
    them (+6-9 %) while SmoothQuant moves that range into the weights (+0.2 %, still a tie)."""
    before = {n: t.clone() for n, t in llm.model.state_dict().items()}
    full = nats_per_byte(llm, HELD_OUT)
    with planted_outlier_channels(llm, [3, 77, 150, 201], 50.0):
        assert nats_per_byte(llm, HELD_OUT) == pytest.approx(full, rel=1e-5)  # the same model
        qkv = activation_outliers(llm, [HELD_OUT[:300]])[0]
        assert qkv.short_name == "L0 qkv_proj" and qkv.activation.channel_ratio > 20
        with quantized(llm, "int8"):
            int8 = nats_per_byte(llm, HELD_OUT)
        with quantized(llm, "int8-smooth", [calibration_text(1000)]):
            smooth = nats_per_byte(llm, HELD_OUT)
    assert int8 > 1.03 * full and abs(smooth / full - 1) < TIE
    assert all(torch.equal(t, before[n]) for n, t in llm.model.state_dict().items())
    with quantized(llm, "int8"), pytest.raises(ValueError, match="already quantized"):
        with planted_outlier_channels(llm, [3], 50.0):
            pass
