"""Measured latency as a search constraint: per-layer LiteRT latency tables.

  python -m aps_tf.latency build --config=FILE --out=TABLE.json [--format=int8]
  python -m aps_tf.latency validate --config=FILE --table=TABLE.json --n=30

Modules: `units` (what is timed), `measure` (conversion, timing, device
fingerprint), `table` (file format, checks, in-graph lookup), `build`
(measuring or importing a table), `benchmark_output` (LiteRT benchmark_model
output), `validate` (table vs whole-model measurements).
"""
