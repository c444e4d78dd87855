"""The prefix caches by name, and the one place an engine builds its cache (checked).

`LLM(prefix_cache=...)` takes a name of PREFIX_CACHES, None, or a class of the learner's that
implements minirt.kv.prefix_cache.PrefixCache; a missing method is named at start-up.
"""

from __future__ import annotations

from collections.abc import Callable

from minirt.checks import named_part
from minirt.kv.block_manager import BlockManager
from minirt.kv.prefix_cache import PrefixCache
from minirt.kv.radix_cache import RadixCache

# The caches by name (EngineConfig.prefix_cache); None is a BlockManager that never matches.
PREFIX_CACHES: dict[str, Callable[[int, int], PrefixCache]] = {
    "hash": BlockManager,
    "radix": RadixCache,
}


def make_prefix_cache(kind, num_blocks: int, block_size: int) -> PrefixCache:
    """The prefix cache for `kind`: a name of PREFIX_CACHES, None (no caching), or a class (or
    any callable) taking (num_blocks, block_size). Checked here, at start-up: an error names
    every method the object lacks."""
    if kind is None:
        return BlockManager(num_blocks, block_size, enable_prefix_caching=False)
    otherwise = ", None, or a class implementing minirt.kv.PrefixCache"
    kind = named_part("prefix_cache", kind, PREFIX_CACHES, otherwise, "a name, None or a class")
    cache = kind(num_blocks, block_size)
    # every attribute and method PrefixCache names: what the engine calls
    wanted = [*PrefixCache.__annotations__, *(n for n in vars(PrefixCache) if n[0] != "_")]
    missing = [name for name in wanted if not hasattr(cache, name)]
    if missing:
        name = getattr(kind, "__name__", repr(kind))
        raise ValueError(
            f"prefix_cache {name} lacks {', '.join(missing)}: a prefix cache implements every "
            "method of minirt.kv.PrefixCache (subclass PrefixCacheHooks for the hooks' defaults)"
        )
    return cache
