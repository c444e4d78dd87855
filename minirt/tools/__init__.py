"""What-if models and measurement helpers that the notebooks and the dashboard share.

Each module answers one question with plain functions over `minirt` objects or traces:
`kv_size` (how much KV a model needs), `kv_waste` (paged vs contiguous reservation), `kv_alloc`
and `kv_layout` (why the pool is preallocated and laid out as it is), `kv_cost` (decode with and
without a cache), `batching`, `latency`, `roofline`, `flash` (tiling and the online softmax,
HBM traffic), `profiling` (where a decode step's time goes), `streams` (copies, kernels and
events on CUDA streams, simulated), `spec` (what speculative decoding buys, by batch size),
`prefix` (the best hit rate a prefix cache could reach), `results` (committed benchmark JSON),
and the drawing helpers `plots`, `timeline_plot` and `widgets`. The notebooks use them; none
changes the engine.
"""
