r"""Graph ops a search traces, by op type and by the aps_tf line that made them.

A search's first step costs tracing (Python, per op created) and graph
optimisation (per op in the graph) before any arithmetic: on a small model
they are most of a short search's time. This counts every op created while a
search of `--steps` iterations traces its functions (the search loop, the
supernet, reward and Phi steps, the anneal forecast), attributes each to the
innermost `aps_tf` frame, and prints the total, the op types and the lines
that create the most. The count is deterministic (no timing), so it compares
two versions of the code exactly.

  python benchmarks/trace_ops.py [--config=quick] [--config.model.name=resnet8] \
      [--steps=3] [--top=25] [--json]
"""

import collections
import json
import sys
import tempfile

from absl import flags
from tensorflow.python.framework import ops  # the op-creation hook has no public API

from aps_tf import cli
from aps_tf.search import run

_CONFIG = cli.define_config("quick", "Search config (a file or a shipped config name).")
_STEPS = flags.DEFINE_integer("steps", 3, "Search iterations (warm-up 1 epoch of 1 step).")
_TOP = flags.DEFINE_integer("top", 25, "Source lines to list.")
_JSON = flags.DEFINE_bool("json", False, "End with one JSON line.")


def count_ops(cfg):
  """(total, {op type: n}, {aps_tf file:line function: n}) of a search's traces."""
  by_type, by_line = collections.Counter(), collections.Counter()
  create = ops.Graph._create_op_internal  # pylint: disable=protected-access

  def hook(graph, op_type, *args, **kwargs):
    frame, where = sys._getframe(1), "(outside aps_tf)"  # pylint: disable=protected-access
    while frame is not None:
      name = frame.f_code.co_filename
      if "/aps_tf/" in name:
        where = f"{name.split('/aps_tf/')[1]}:{frame.f_lineno} {frame.f_code.co_name}"
        break
      frame = frame.f_back
    by_type[op_type] += 1
    by_line[where] += 1
    return create(graph, op_type, *args, **kwargs)

  ops.Graph._create_op_internal = hook  # pylint: disable=protected-access
  try:
    run.SearchRun(cfg, tempfile.mkdtemp(), progress=False).train()
  finally:
    ops.Graph._create_op_internal = create  # pylint: disable=protected-access
  return sum(by_type.values()), by_type, by_line


def main(argv):
  del argv
  cfg = _CONFIG.value
  s = cfg.search
  s.steps_per_epoch, s.warmup_epochs, s.epochs = 1, 1, 1 + int(_STEPS.value)
  s.lr_decay_epochs, s.analysis_every_steps, s.log_every_steps = (), 0, 1
  total, by_type, by_line = count_ops(cfg)
  print(f"{total} ops traced ({cfg.model.name}, {s.sharing} sharing)")
  print("by type: " + ", ".join(f"{k} {n}" for k, n in by_type.most_common(12)))
  for where, n in by_line.most_common(_TOP.value):
    print(f"{n:6d}  {where}")
  if _JSON.value:
    print(json.dumps({"ops": total, "model": cfg.model.name, "sharing": s.sharing,
                      "by_type": dict(by_type.most_common()),
                      "by_line": dict(by_line.most_common(_TOP.value))}))


if __name__ == "__main__":
  cli.run(main)
