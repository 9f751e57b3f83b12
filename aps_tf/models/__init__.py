"""Model families: one topology description, three interpreters.

`topology` (the blocks and search space), `supernet` (APS layers),
`dense` (the plain Keras child); FLOPs live in `aps_tf.flops`.
"""

from aps_tf.models import topology as _topology


def topology_from_config(model_cfg, input_shape, num_classes) -> _topology.Topology:
  """Builds the topology named by a config's `model` section."""
  return _topology.build_topology(
      model_cfg.name, input_shape, num_classes, candidates=model_cfg.candidates,
      meta_width=model_cfg.meta_width, stage_factors=model_cfg.get("stage_factors"))


def search_space_record(model_cfg) -> dict:
  """The search-space fields an architecture file keeps to rebuild its topology."""
  out = {"candidates": list(model_cfg.candidates), "meta_width": model_cfg.meta_width}
  if model_cfg.get("stage_factors"):
    out["stage_factors"] = list(model_cfg.stage_factors)
  return out
