"""The dense child of a layer graph: the user's Keras model with other widths.

Every layer is rebuilt from its own Keras config (`layer.__class__.from_config`
through `keras.saving.deserialize_keras_object`) with only the width fields
changed (`filters`, `units`, a squeeze-excite `Reshape`'s channel count), so
names, activations, paddings, strides, regularizers, initializers and dtypes
are the user's and `model.get_layer(name)` finds the same layers.
"""

from __future__ import annotations

import copy
from typing import Sequence

import keras

from aps_tf.models import graph as graph_lib


def _layer(node: graph_lib.Node, widths, g: graph_lib.Graph, weight_decay: float,
           strip_softmax: bool):
  ser = copy.deepcopy(node.layer)
  cfg = ser["config"]
  if node.op == "conv":
    cfg["filters"] = g.width(node, widths)
  elif node.op == "dense":
    cfg["units"] = g.width(node, widths)
  elif node.op == "reshape":
    cfg["target_shape"] = list(cfg["target_shape"])[:-1] + [g.width(node, widths)]
  if weight_decay and node.op in graph_lib.WEIGHTED:
    key = "depthwise_regularizer" if node.op == "depthwise" else "kernel_regularizer"
    if cfg.get(key) is None:
      cfg[key] = keras.saving.serialize_keras_object(keras.regularizers.L2(weight_decay))
  if strip_softmax:
    if ser["class_name"] == "Softmax":
      ser = keras.saving.serialize_keras_object(
          keras.layers.Activation("linear", name=cfg["name"], dtype=cfg.get("dtype")))
    else:
      cfg["activation"] = "linear"
  return keras.saving.deserialize_keras_object(ser)


def apply_operation(node: graph_lib.Node, xs):
  """A functional operation node (`x + 3.0`, `x * y`) on tensors `xs`."""
  fn = getattr(keras.ops, node.fn)
  if node.op == "scalar":
    return fn(node.scalar, xs[0]) if node.scalar_first else fn(xs[0], node.scalar)
  return fn(xs[0], xs[1])


def build(t, widths: Sequence[int], weight_decay: float = 0.0, name: str | None = None,
          logits: bool = True) -> keras.Model:
  """Builds the Keras child of a graph topology at per-slot `widths`.

  Args:
    t: a `Topology` of family 'graph' (or a `graph.Graph`).
    widths: per-slot widths (the architecture file's `widths`).
    weight_decay: L2 on conv/dense kernels that have no regularizer of the user's.
    name: model name (default: the user's).
    logits: leave out the model's final softmax (same layer name, linear), as
      training and the search expect; False gives the user's outputs.

  Returns:
    The functional Keras model.
  """
  g = getattr(t, "graph", None) or t
  widths = [int(w) for w in widths]
  if len(widths) != g.num_slots:
    raise ValueError(f"{g.name}: expected {g.num_slots} widths, got {len(widths)}")
  values = {}
  inputs = []
  for node in g.nodes:
    if node.op == "input":
      x = keras.Input(shape=node.shape, name=node.name)
      inputs.append(x)
      values[node.name] = x
      continue
    xs = [values[i] for i in node.inputs]
    if node.layer is None:
      values[node.name] = apply_operation(node, xs)
      continue
    layer = _layer(node, widths, g, weight_decay, logits and node.name == g.softmax)
    values[node.name] = layer(xs if node.op in ("add", "multiply", "merge", "concat")
                              else xs[0])
  return keras.Model(inputs[0] if len(inputs) == 1 else inputs, values[g.output],
                     name=name or g.name)
