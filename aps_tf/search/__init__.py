"""The channel-number search (docs/method.md, docs/internals.md).

  reward.py    in-graph cost tables (FLOPs/params) and the soft-constraint reward
  task.py      SearchTask: supernet, policy, traced train/reward/Phi steps
  settings.py  the checked config, batching, learning rate and parts of a search
  sampling.py  the architecture draws of a step (graph code)
  inputs.py    the one builder of the search's distributed input
  probes.py    analysis probes: gradient cosine, coupled updates, policy
  run.py       SearchRun: workdir, resume, checkpoints, logging, picking
  beam.py      beam search over the policy and the pick rules
  analysis.py  metrics.jsonl, TensorBoard scalars, PNG plots
  __main__.py  the binary: python -m aps_tf.search --config=... --workdir=...
"""

import sys as _sys
import types as _types


class _SearchModule(_types.ModuleType):
  """This package is also the Python API's entry: `aps_tf.search(model, data, ...)`
  calls `aps_tf.api.search` (the subpackage and the function share the name
  `aps_tf.search`, so either import order gives the callable)."""

  def __call__(self, *args, **kwargs):
    from aps_tf import api  # pylint: disable=g-import-not-at-top
    return api.search(*args, **kwargs)


_sys.modules[__name__].__class__ = _SearchModule
