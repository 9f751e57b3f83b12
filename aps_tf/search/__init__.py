"""The channel-number search (docs/method.md, docs/internals.md).

  reward.py    in-graph cost tables (FLOPs/params) and the soft-constraint reward
  loop.py      Searcher: supernet, controller, traced train/reward/Phi steps
  run.py       SearchRun: workdir, resume, checkpoints, logging, picking
  beam.py      beam search over the controller and the pick rules
  analysis.py  metrics.jsonl, TensorBoard scalars, PNG plots
  strategy.py  tf.distribute strategy from config.strategy
  __main__.py  the binary: python -m aps_tf.search --config=... --workdir=...
"""
