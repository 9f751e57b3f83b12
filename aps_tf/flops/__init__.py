r"""FLOPs (multiply-accumulates) and parameters of a dense child.

Two conventions (docs/method.md#flops):
  full:   every conv k*k*(c_in/groups)*c_out*H_out*W_out (1x1 shortcuts and
          depthwise included) plus dense d_in*d_out + d_out.
  search: only convs with k > 1, the convention of the authors' lookup tables
          and of the paper's CIFAR "searched" FLOPs.
Parameters: trainable weights of the dense child (conv kernels, BN gamma/beta,
dense kernel/bias); BN moving statistics are not parameters.

The binary is `python -m aps_tf.flops` (see `__main__.py`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from aps_tf import schema
from aps_tf.models import topology as topo

CONVENTIONS = schema.FLOPS_CONVENTIONS


@dataclasses.dataclass(frozen=True)
class LayerCost:
  name: str
  kind: str          # 'conv' | 'depthwise' | 'dense' | 'bn'
  kernel: int
  flops: int
  params: int


def _out(size: int, stride: int) -> int:
  return int(math.ceil(size / stride))  # 'same' padding


def layer_costs(t: topo.Topology, widths: Sequence[int]) -> list[LayerCost]:
  """Walks the topology with concrete widths; one entry per weighted layer."""
  widths = [int(w) for w in widths]
  if len(widths) != t.num_slots:
    raise ValueError(f"{t.model}: expected {t.num_slots} widths, got {len(widths)}")
  if any(w <= 0 for w in widths):
    raise ValueError(f"{t.model}: widths must be positive, got {widths}")
  if t.family == "graph":
    return graph_costs(t.graph, widths)
  h, w_, c = t.input_shape
  costs: list[LayerCost] = []

  def conv(name, k, stride, c_in, c_out, depthwise=False, bn=True):
    nonlocal h, w_
    h, w_ = _out(h, stride), _out(w_, stride)
    per_out = k * k * (1 if depthwise else c_in)
    costs.append(LayerCost(name, "depthwise" if depthwise else "conv", k,
                           per_out * c_out * h * w_, per_out * c_out))
    if bn:
      costs.append(LayerCost(name + "_bn", "bn", 0, 0, 2 * c_out))

  for block in t.blocks:
    if isinstance(block, topo.Stem):
      conv(block.conv.name, block.conv.kernel, block.conv.stride, c, widths[block.conv.slot])
      c = widths[block.conv.slot]
      if block.max_pool:
        h, w_ = _out(h, 2), _out(w_, 2)
    elif isinstance(block, topo.BasicBlock):
      c_in, h0, w0 = widths[block.in_slot], h, w_
      conv(block.conv1.name, 3, block.conv1.stride, c_in, widths[block.conv1.slot])
      conv(block.conv2.name, 3, 1, widths[block.conv1.slot], widths[block.conv2.slot])
      c = widths[block.conv2.slot]
      kind = topo.shortcut_kind(t, block, widths)
      if kind is not None:
        # Same cost either way: the 2x2 average pool (not counted) then a 1x1
        # conv at the output resolution equals a strided 1x1 conv; only the BN
        # parameters differ.
        h1, w1 = h, w_
        h, w_ = h0, w0
        conv(block.name + "_shortcut", 1, block.conv1.stride, c_in, c, bn=kind == "conv_bn")
        h, w_ = h1, w1
    elif isinstance(block, topo.InvertedResidual):
      topo.check_residual_widths(block, widths)
      c_in = widths[block.in_slot]
      if block.expand is not None:
        conv(block.expand.name, 1, 1, c_in, widths[block.expand.slot])
      hidden = widths[topo.depthwise_slot(block)]
      conv(block.name + "_depthwise", 3, block.depthwise_stride, hidden, hidden,
           depthwise=True)
      conv(block.project.name, 1, 1, hidden, widths[block.project.slot])
      c = widths[block.project.slot]
    elif isinstance(block, topo.Head):
      if block.conv is not None:
        conv(block.conv.name, 1, 1, c, widths[block.conv.slot])
        c = widths[block.conv.slot]
      n = block.num_classes
      costs.append(LayerCost("classifier", "dense", 0, c * n + n, c * n + n))
  return costs


def graph_costs(g, widths: Sequence[int]) -> list[LayerCost]:
  """Costs of a layer graph (`aps_tf.models.graph`) at per-slot `widths`.

  The same rule as `count_keras_model` on the built child: a conv is
  prod(kernel shape) * H_out * W_out, a dense d_in*d_out + d_out; parameters
  are the trainable weights (kernels, biases, BN gamma/beta when the user's BN
  has them) of layers the user left trainable.
  """
  costs: list[LayerCost] = []
  for node in g.nodes:
    if node.op not in ("conv", "depthwise", "dense", "bn"):
      continue
    cfg = node.config
    trainable = int(bool(cfg.get("trainable", True)))
    c_in = g.width(node.inputs[0], widths)
    c_out = g.width(node, widths)
    if node.op == "bn":
      n = c_out * (int(cfg.get("scale", True)) + int(cfg.get("center", True)))
      costs.append(LayerCost(node.name, "bn", 0, 0, n * trainable))
      continue
    bias = c_out if cfg.get("use_bias", True) else 0
    if node.op == "dense":
      rows = c_in * g.node(node.inputs[0]).spatial
      costs.append(LayerCost(node.name, "dense", 0, rows * c_out + c_out,
                             (rows * c_out + bias) * trainable))
      continue
    kh, kw = (int(k) for k in cfg["kernel_size"])
    per_out = kh * kw * (1 if node.op == "depthwise" else c_in)
    ho, wo = node.shape[0], node.shape[1]
    costs.append(LayerCost(node.name, "depthwise" if node.op == "depthwise" else "conv", kh,
                           per_out * c_out * ho * wo, (per_out * c_out + bias) * trainable))
  return costs


def count(t: topo.Topology, widths: Sequence[int], convention: str = "full") -> dict:
  """Returns {'flops': int, 'params': int, 'convention': str}."""
  if convention not in CONVENTIONS:
    raise ValueError(f"unknown FLOPs convention {convention!r}; expected one of {CONVENTIONS}")
  costs = layer_costs(t, widths)
  if convention == "full":
    flops = sum(c.flops for c in costs)
  else:
    flops = sum(c.flops for c in costs if c.kind in ("conv", "depthwise") and c.kernel > 1)
  return {"flops": int(flops), "params": int(sum(c.params for c in costs)),
          "convention": convention}


def count_keras_model(model, convention: str = "full") -> dict:
  """Independent count over a built Keras dense model (its layers and shapes)."""
  import keras  # pylint: disable=g-import-not-at-top
  flops = 0
  for layer in model.layers:
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
      k = layer.kernel_size[0]
      if convention == "search" and k <= 1:
        continue
      # Conv2D kernel [k, k, c_in/groups, c_out], depthwise [k, k, c, 1]: one MAC
      # per kernel element per output position.
      _, ho, wo, _ = layer.output.shape
      flops += int(math.prod(layer.kernel.shape)) * int(ho) * int(wo)
    elif isinstance(layer, keras.layers.Dense) and convention == "full":
      flops += int(layer.kernel.shape[0] * layer.kernel.shape[1]) + int(layer.units)
  params = sum(int(math.prod(v.shape)) for v in model.trainable_weights)
  return {"flops": int(flops), "params": int(params), "convention": convention}
