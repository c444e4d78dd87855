"""Helpers of the minirt dashboard: page registry, cached engine runs, and data → chart code.

Pages in `viz_app/pages/` stay thin and import from here; everything here is importable without a
running Streamlit server, so AppTest and plain pytest can exercise it. No runtime logic lives
here: the numbers come from `minirt` (a live `LLM` run, a `minirt.trace` file, `minirt.kv`).
"""
