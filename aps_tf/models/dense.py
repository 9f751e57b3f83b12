"""The dense child: a plain Keras Functional model of one architecture.

Only stock layers (Conv2D, DepthwiseConv2D, BatchNormalization, ReLU, Add,
GlobalAveragePooling2D, Dense), so it trains, saves as `.keras`, exports to
SavedModel and converts to TFLite like any Keras model. Layer names follow the
topology (and the supernet), so supernet weights can be copied in by name.
"""

from __future__ import annotations

from typing import Sequence

import keras

from aps_tf import errors
from aps_tf import models
from aps_tf.models import topology as topo


def build(t: topo.Topology, widths: Sequence[int], weight_decay: float = 0.0,
          name: str | None = None, api=keras) -> keras.Model:
  """Builds the dense child of `t` at per-conv `widths`.

  Args:
    t: the topology (model family, input shape, classes).
    widths: per-conv widths in architecture-file order.
    weight_decay: L2 on conv/dense kernels (not on BN or biases).
    name: model name; defaults to the topology's model name.
    api: the Keras namespace to build with: `keras` (Keras 3), or `tf_keras`
      for quantisation-aware training (tfmot works on tf_keras models only);
      both get the same layers and layer names.
  """
  if t.family == "graph":
    if api is not keras:
      raise errors.ConfigError(
          f"{t.model}: an imported Keras model's child is built with Keras 3 only (no "
          "tf_keras build, so no quantisation-aware training)")
    from aps_tf.models import graph_dense  # pylint: disable=g-import-not-at-top
    return graph_dense.build(t, widths, weight_decay, name)
  widths = [int(w) for w in widths]
  if len(widths) != t.num_slots:
    raise ValueError(f"{t.model}: expected {t.num_slots} widths, got {len(widths)}")
  reg = api.regularizers.L2(weight_decay) if weight_decay else None
  max_value = 6.0 if t.activation == "relu6" else None

  def conv_bn(x, name, kernel, stride, filters, act=True, depthwise=False, bn=True):
    if depthwise:
      x = api.layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False,
                                     depthwise_regularizer=reg, name=name)(x)
    else:
      x = api.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False,
                            kernel_initializer="he_normal", kernel_regularizer=reg,
                            name=name)(x)
    if bn:
      x = api.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name + "_bn")(x)
    if act:
      x = api.layers.ReLU(max_value=max_value, name=name + "_act")(x)
    return x

  inputs = api.Input(shape=t.input_shape, name="images")
  x = inputs
  for block in t.blocks:
    if isinstance(block, topo.Stem):
      c = block.conv
      x = conv_bn(x, c.name, c.kernel, c.stride, widths[c.slot])
      if block.max_pool:
        x = api.layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)
    elif isinstance(block, topo.BasicBlock):
      c1, c2 = block.conv1, block.conv2
      y = conv_bn(x, c1.name, 3, c1.stride, widths[c1.slot])
      y = conv_bn(y, c2.name, 3, 1, widths[c2.slot], act=False)
      kind = topo.shortcut_kind(t, block, widths)
      if kind == "avgpool_conv":
        x = api.layers.AveragePooling2D(c1.stride, c1.stride, padding="same",
                                        name=block.name + "_shortcut_pool")(x)
        x = conv_bn(x, block.name + "_shortcut", 1, 1, widths[c2.slot], act=False, bn=False)
      elif kind == "conv_bn":
        x = conv_bn(x, block.name + "_shortcut", 1, c1.stride, widths[c2.slot], act=False)
      x = api.layers.Add(name=block.name + "_add")([x, y])
      x = api.layers.ReLU(name=block.name + "_out")(x)
    elif isinstance(block, topo.InvertedResidual):
      topo.check_residual_widths(block, widths)
      y = x
      if block.expand is not None:
        y = conv_bn(y, block.expand.name, 1, 1, widths[block.expand.slot])
      y = conv_bn(y, block.name + "_depthwise", 3, block.depthwise_stride, None,
                  depthwise=True)
      y = conv_bn(y, block.project.name, 1, 1, widths[block.project.slot], act=False)
      x = api.layers.Add(name=block.name + "_add")([x, y]) if block.residual else y
    elif isinstance(block, topo.Head):
      if block.conv is not None:
        x = conv_bn(x, block.conv.name, 1, 1, widths[block.conv.slot])
      x = api.layers.GlobalAveragePooling2D(name="pool")(x)
      x = api.layers.Dense(block.num_classes, kernel_regularizer=reg,
                           name="classifier")(x)
  return api.Model(inputs, x, name=name or t.model)


def build_from_arch(arch: dict, weight_decay: float = 0.0) -> keras.Model:
  """Builds the dense child from an architecture file's contents alone.

  Args:
    arch: a validated architecture file (`aps_tf.archfile.load`).
    weight_decay: L2 on conv/dense kernels.

  Returns:
    The uncompiled Keras model.
  """
  return build(models.topology_from_arch(arch), arch["widths"], weight_decay)


def load_child_weights(model: keras.Model, weights: dict) -> list[str]:
  """Copies weights by layer name (e.g. `Supernet.child_weights`).

  Args:
    model: the dense child.
    weights: {layer name: weights in Keras order}.

  Returns:
    The names of the layers set.
  """
  done = []
  for layer in model.layers:
    if layer.name in weights:
      layer.set_weights(weights[layer.name])
      done.append(layer.name)
  return done
