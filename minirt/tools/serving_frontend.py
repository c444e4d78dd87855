"""What the HTTP front end adds to a first token: a run's requests lined up with its steps.

The server's step log says when each step ran and how many prompt tokens it computed; the load
generator says when each request was sent and how long its prompt is. Requests enter first come
first served, so walking the steps in order and handing each one's prompt tokens to the requests
in arrival order finds the step that admitted each request and the step that gave its first
token. The engine's view of a TTFT follows (first-token step end - arrival, on the engine's clock);
the client's minus the engine's is what HTTP, the pipe to the engine process and the client's
own parsing add. A diagnostic: it says where a first token's time went, on the engine's side or
before and after it (the simulator's `CostModel.frontend_ms` is fitted otherwise, as what its
own simulation lacks at the lowest rate). Notebook 03.
"""

from __future__ import annotations

from minirt.tools.slo import percentile


def admissions(prompt_lens: list[int], steps: list[list]) -> list[tuple[int, int]] | None:
    """(step that admitted it, step that gave its first token) per request, by handing each
    step's prompt tokens first to the prompts already started (their next chunk), then to new
    requests in arrival order. None when the log does not line up (prefix-cache hits or
    recomputed prompts change the token counts)."""
    left, placed, started = list(prompt_lens), [], []
    first: dict[int, int] = {}
    for j, step in enumerate(steps):
        tokens = step[2]  # prefill_tokens (STEP_FIELDS)
        while tokens > 0:
            if not started or started[-1] in first:  # nothing unfinished: the next request
                if len(placed) == len(left):
                    return None
                placed.append(j)
                started.append(len(placed) - 1)
            i = next(k for k in started if k not in first)
            chunk = min(tokens, left[i])
            left[i], tokens = left[i] - chunk, tokens - chunk
            if left[i] == 0:
                first[i] = j
    if len(first) != len(prompt_lens):
        return None
    return [(placed[i], first[i]) for i in range(len(prompt_lens))]


def engine_ttfts_ms(
    prompt_lens, send_s: list[float], steps: list[list], clock_offset_s: float | None = None
) -> list[float] | None:
    """Each request's TTFT as the engine saw it: from its send to the end of its first-token
    step. `clock_offset_s` (the engine's zero minus the client's, `bench serve`'s
    server_clock_offset_s on one machine) lines the clocks up; without it they are lined up by
    the request that waited least for its admitting step."""
    placed = admissions(prompt_lens, steps)
    if placed is None:
        return None
    end = [s[0] for s in steps]
    start = [s[0] - s[1] / 1e3 for s in steps]
    if clock_offset_s is not None:
        offset = -clock_offset_s
    else:
        offset = min(start[a] - t for (a, _), t in zip(placed, send_s, strict=True))
    return [(end[f] - t - offset) * 1e3 for (_, f), t in zip(placed, send_s, strict=True)]


def frontend_ms(
    client_ttft_p50_ms: float, prompt_lens, send_s, steps, clock_offset_s: float | None = None
) -> float | None:
    """What the front end adds at the median: the client's TTFT p50 minus the engine's (None
    when the log does not line up with the requests)."""
    engine = engine_ttfts_ms(prompt_lens, send_s, steps, clock_offset_s)
    if engine is None:
        return None
    return max(0.0, client_ttft_p50_ms - percentile(engine, 50))
