"""The channel-number search (docs/method.md, docs/internals.md).

  reward.py    in-graph cost tables (FLOPs/params) and the soft-constraint reward
  task.py      SearchTask: supernet, policy, traced train/reward/Phi steps
  settings.py  the checked config, batching, learning rate and parts of a search
  sampling.py  the architecture draws of a step (graph code)
  inputs.py    the one builder of the search's distributed input
  probes.py    analysis probes: gradient cosine, coupled updates, policy
  run.py       SearchRun: workdir, resume, checkpoints, logging, picking
  beam.py      beam search over the policy, picking closest to the target
  analysis.py  metrics.jsonl, TensorBoard scalars, PNG plots
  __main__.py  the binary: python -m aps_tf.search --config=... --workdir=...
"""
