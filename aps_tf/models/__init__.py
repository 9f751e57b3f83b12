"""Model families: one topology description, three interpreters.

`topology` (the blocks and search space), `supernet` (APS layers),
`dense` (the plain Keras child); FLOPs live in `aps_tf.flops`.
"""

from aps_tf.models import topology as _topology


def topology_from_config(model_cfg, input_shape, num_classes) -> _topology.Topology:
  """Builds the topology named by a config's `model` section.

  With `model.keras_file` set, the topology is the imported Keras model's
  (`keras_import.from_config`); otherwise the family `model.name`.

  Args:
    model_cfg: the `model` section of a complete config (configs/base.py fields).
    input_shape: (H, W, C) of the preprocessed input.
    num_classes: classifier outputs.

  Returns:
    The topology and its search space.
  """
  if model_cfg.get("keras_file"):
    from aps_tf.models import keras_import  # pylint: disable=g-import-not-at-top
    return keras_import.from_config(model_cfg, input_shape, num_classes)
  return _topology.build_topology(
      model_cfg.name, input_shape, num_classes, candidates=model_cfg.candidates,
      meta_width=model_cfg.meta_width, stage_factors=model_cfg.stage_factors,
      space=model_cfg.space, fix_last_width=model_cfg.fix_last_width,
      downsample_shortcut=model_cfg.downsample_shortcut)


def topology_from_arch(arch: dict) -> _topology.Topology:
  """Builds the topology an architecture file's contents describe.

  Args:
    arch: a validated architecture file (`aps_tf.archfile.load`).

  Returns:
    The topology of its model, input shape, classes and search space.
  """
  space = arch.get("search_space") or {}
  if "graph" in arch:
    from aps_tf.models import graph as graph_lib  # pylint: disable=g-import-not-at-top
    return graph_lib.topology(
        graph_lib.Graph.from_json(arch["graph"]),
        space.get("width_fractions", graph_lib.DEFAULT_WIDTH_FRACTIONS),
        space.get("meta_width"))
  return _topology.build_topology(
      arch["model"], arch["input_shape"], arch["num_classes"],
      candidates=space.get("candidates"), meta_width=space.get("meta_width"),
      stage_factors=space.get("stage_factors"), space=space.get("space", "aps_tf"),
      fix_last_width=space.get("fix_last_width"),
      downsample_shortcut=space.get("downsample_shortcut", "conv_bn"))


def search_space_record(model_cfg) -> dict:
  """The search-space fields an architecture file keeps to rebuild its topology.

  Args:
    model_cfg: the `model` section of a complete config.

  Returns:
    A JSON dict for the architecture file's `search_space`.
  """
  out = {"candidates": list(model_cfg.candidates), "meta_width": model_cfg.meta_width}
  if model_cfg.stage_factors:
    out["stage_factors"] = list(model_cfg.stage_factors)
  out["space"] = model_cfg.space
  if model_cfg.fix_last_width is not None:
    out["fix_last_width"] = bool(model_cfg.fix_last_width)
  out["downsample_shortcut"] = model_cfg.downsample_shortcut
  return out


def from_keras(model, *, width_fractions=(0.25, 0.5, 0.75, 1.0), pinned=(), meta_width=None):
  """Reads a built Keras 3 model into a `Topology` of family 'graph'.

  See `aps_tf.models.keras_import.from_keras` (imported lazily: this package
  stays free of Keras for the topology-only users).
  """
  from aps_tf.models import keras_import  # pylint: disable=g-import-not-at-top
  return keras_import.from_keras(model, width_fractions=width_fractions, pinned=pinned,
                                 meta_width=meta_width)


def build_supernet(topology, **kwargs):
  """The supernet of any topology: `GraphSupernet` for family 'graph', else `Supernet`.

  Keyword arguments are `Supernet`'s (sharing_mode, noise_std, static_shapes,
  bn_momentum, seed; shortcut and meta_init for the shipped families).
  """
  if topology.family == "graph":
    from aps_tf.models import graph_supernet  # pylint: disable=g-import-not-at-top
    return graph_supernet.GraphSupernet(topology, **kwargs)
  from aps_tf.models import supernet  # pylint: disable=g-import-not-at-top
  return supernet.Supernet(topology, **kwargs)


def supernet_from_config(cfg, topology, *, sharing_mode: str | None = None, build: bool = True,
                         init_weights: bool = True):
  """The supernet a config describes: the one constructor of search, supernet init and tools.

  Args:
    cfg: a full config (`model` and `search` sections, `seed`).
    topology: the topology built from `cfg.model` and the dataset
      (`topology_from_config`).
    sharing_mode: overrides `cfg.search.sharing` (the Phi schedule tool's
      'transitional').
    build: run one forward at the largest architecture, so every variable
      exists (needed before checkpoints, optimisers or weight copies).
    init_weights: with `model.init_from='keras'`, copy the user's weights in
      (`graph_supernet.init_from_config`); False where a checkpoint is
      restored over them anyway.

  Returns:
    The `Supernet` (a `GraphSupernet` for an imported Keras model), its
    initial weights a function of `cfg.seed` (and of the Keras seed for the
    unseeded kernel initialisers), or the user's weights.

  Raises:
    ConfigError: a setting the graph supernet does not support
      (`search.static_shapes`, independent sharing without meta width 'sum'),
      or `model.init_from` without an imported model.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from aps_tf import schema  # pylint: disable=g-import-not-at-top
  s = cfg.search
  mode = sharing_mode or s.sharing
  # The release-faithful block options exist on the shipped families' supernet.
  block_options = {} if topology.family == "graph" else dict(
      shortcut=cfg.model.supernet_shortcut, meta_init=cfg.model.meta_init)
  net = build_supernet(topology, sharing_mode=mode,
                       noise_std=s.noise_std if schema.is_transitional(mode) else 0.0,
                       static_shapes=s.static_shapes, bn_momentum=cfg.model.bn_momentum,
                       seed=cfg.seed, **block_options)
  if build or (init_weights and cfg.model.get("init_from")):
    net(tf.zeros((1,) + tuple(topology.input_shape)),
        tf.constant(topology.space.largest(), tf.int32), training=False)
  if init_weights and cfg.model.get("init_from"):
    from aps_tf.models import graph_supernet  # pylint: disable=g-import-not-at-top
    graph_supernet.init_from_config(net, cfg.model)
  return net
