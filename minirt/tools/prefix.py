"""The best hit rate a prefix cache could reach on a set of prompts (offline, for notebook 11).

With an infinite cache and the best order (a prefix before the prompts that extend it), every
distinct prefix of the prompts — a node of their token trie — is computed exactly once, and a
prompt's last token is always computed (its logits are needed): a prompt ending where another
already did computes that token again. `optimal_hit_rate` counts this; `block_hit_rate` is the
same bound when only whole blocks can hit (vLLM's hash cache).
"""

from __future__ import annotations

from collections.abc import Sequence


def optimal_hit_tokens(prompts: Sequence[Sequence[int]], block_size: int = 1) -> int:
    """Prompt tokens an infinite cache with the best order finds cached. `block_size` > 1: hits
    come in whole blocks only (a trie over blocks; a block holding the last token never hits)."""
    trie: dict = {}
    hits = 0
    for p in sorted(prompts, key=len):  # shorter first: a prefix is computed by its own prompt
        usable = (len(p) - 1) // block_size * block_size  # the last token is never a hit
        node, i = trie, 0
        while i < usable:
            key = tuple(p[i : i + block_size])
            if key not in node:
                break
            node, i = node[key], i + block_size
        hits += i
        for j in range(i, len(p) - len(p) % block_size, block_size):  # what it computes, cached
            node = node.setdefault(tuple(p[j : j + block_size]), {})
    return hits


def optimal_hit_rate(prompts: Sequence[Sequence[int]], block_size: int = 1) -> float:
    """optimal_hit_tokens over all prompt tokens (GenerateStats.prefix_cache_hit_rate's ratio)."""
    total = sum(len(p) for p in prompts)
    return optimal_hit_tokens(prompts, block_size) / max(1, total)


def block_hit_rate(prompts: Sequence[Sequence[int]], block_size: int) -> float:
    """The same bound for a cache of whole `block_size`-token blocks (the hash cache)."""
    return optimal_hit_rate(prompts, block_size)


def plot_sched(rows: list[dict], title: str = ""):
    """Throughput over the no-cache FCFS baseline (bars) and hit rate against the offline
    optimum (dots, right axis) for each configuration and workload of a `bench sched` run."""
    import matplotlib.pyplot as plt

    works = list(dict.fromkeys(r["workload"] for r in rows))
    configs = list(dict.fromkeys(r["config"] for r in rows))
    by = {(r["workload"], r["config"]): r for r in rows}
    fig, (ax, hit) = plt.subplots(1, 2, figsize=(12, 3.6))
    width = 0.8 / len(configs)
    for j, c in enumerate(configs):
        xs = [i + j * width for i in range(len(works))]
        ax.bar(xs, [by[w, c]["speedup_vs_baseline"] for w in works], width, label=c)
        hit.bar(xs, [by[w, c]["hit_rate"] for w in works], width, label=c)
    hit.scatter([i + 0.4 - width / 2 for i in range(len(works))],
                [by[w, configs[0]]["optimal_hit_rate"] for w in works], marker="_", s=900,
                color="black", label="offline optimum", zorder=3)  # fmt: skip
    for a, label in ((ax, "throughput / baseline"), (hit, "prefix-cache hit rate")):
        a.set_xticks([i + 0.4 - width / 2 for i in range(len(works))], works)
        a.set_ylabel(label)
    ax.axhline(1.5, color="grey", ls="--", lw=1)
    hit.legend(fontsize=7, loc="upper right")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
