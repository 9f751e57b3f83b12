"""Reads a built Keras 3 model into a layer graph (`aps_tf.models.graph`).

`from_keras(model)` walks a Sequential or functional model (also one loaded
from `.keras`) from its output back to its input, maps every layer to a graph
op, derives the slots and their ties and returns a `Topology` (family 'graph')
whose decisions are the searchable tied slot groups. Anything it cannot
interpret exactly (custom layers, grouped convs, recurrent or attention
layers, `Lambda`, subclassed models) ends with one `UnsupportedModelError`
naming the layer, its class and what is supported.

Keras 3 has no public API for a functional model's call graph: the walk reads
each tensor's `_keras_history` and each operation's `_inbound_nodes`, the
connectivity Keras itself walks to build a functional model
(`keras/src/ops/function.py`). These are the module's only private reads of
another library.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import keras

from aps_tf import errors
from aps_tf.models import graph as graph_lib
from aps_tf.models import topology as topo

# Keras layer class name -> graph op. Only these exact classes (not subclasses:
# a subclass may compute anything) are interpreted.
LAYER_OPS = {
    "InputLayer": "input",
    "Conv2D": "conv", "DepthwiseConv2D": "depthwise", "Dense": "dense",
    "BatchNormalization": "bn",
    "Activation": "act", "ReLU": "act", "LeakyReLU": "act", "ELU": "act", "Softmax": "act",
    "Add": "add", "Multiply": "multiply",
    "Subtract": "merge", "Average": "merge", "Maximum": "merge", "Minimum": "merge",
    "Concatenate": "concat",
    "MaxPooling2D": "pool", "AveragePooling2D": "pool",
    "GlobalAveragePooling2D": "global_pool", "GlobalMaxPooling2D": "global_pool",
    "ZeroPadding2D": "pad", "Cropping2D": "pad",
    "Dropout": "dropout", "SpatialDropout2D": "dropout", "GaussianDropout": "dropout",
    "GaussianNoise": "dropout", "AlphaDropout": "dropout", "Identity": "dropout",
    "ActivityRegularization": "dropout",
    "Flatten": "flatten", "Reshape": "reshape",
    "Rescaling": "rescale", "Normalization": "normalize",
}
# Keras functional operations (`x + 3.0`, `x * y`) -> keras.ops function.
OPERATION_FNS = {"Add": "add", "Subtract": "subtract", "Multiply": "multiply",
                 "Divide": "divide", "TrueDivide": "true_divide"}


def supported() -> str:
  """The supported layers, for error messages and docs."""
  return (", ".join(sorted(LAYER_OPS)) + "; functional operations " +
          ", ".join(f"keras.ops.{f}" for f in OPERATION_FNS.values()))


class UnsupportedModelError(errors.UserError, ValueError):
  """A model the importer cannot interpret exactly; the message names the layer."""


def _fail(layer, why: str):
  raise UnsupportedModelError(
      f"layer {layer.name!r} ({type(layer).__module__}.{type(layer).__name__}): {why}; "
      f"supported: {supported()}")


def _shape(t) -> tuple[int, ...]:
  return tuple(None if d is None else int(d) for d in t.shape[1:])


def _serialize(layer) -> dict:
  ser = keras.saving.serialize_keras_object(layer)
  ser.pop("build_config", None)
  ser.pop("compile_config", None)
  return ser


def _is_softmax(act) -> bool:
  return act == "softmax" or getattr(act, "__name__", None) == "softmax"


def from_keras(model, *, width_fractions: Sequence[float] = graph_lib.DEFAULT_WIDTH_FRACTIONS,
               pinned: Sequence[str] = (), meta_width: Any = None) -> topo.Topology:
  """Reads a built Keras 3 Sequential or functional model into a `Topology`.

  Args:
    model: a built `keras.Sequential` or functional `keras.Model` (e.g. from
      `keras.saving.load_model`) with one image input and one output.
    width_fractions: every searchable group's candidate widths, as fractions of
      its original width (rounded, at least 1, deduplicated).
    pinned: names of layers whose output width is not searched (with every
      width tied to it).
    meta_width: the meta width rule (`graph.topology`): None (original width),
      a multiple of it, or 'sum'.

  Returns:
    A `Topology` of family 'graph' whose widest architecture is `model`.

  Raises:
    UnsupportedModelError: a layer or model the importer cannot interpret.
  """
  g = to_graph(model, pinned=pinned)
  try:
    return graph_lib.topology(g, width_fractions, meta_width)
  except ValueError as e:
    raise errors.ConfigError(str(e)) from e


def load_keras_file(path: str):
  """Loads a `.keras` file (uncompiled), or raises a UserError naming the file."""
  try:
    return keras.saving.load_model(path, compile=False)
  except (OSError, ValueError, TypeError) as e:
    raise errors.ConfigError(f"model.keras_file: cannot load Keras model {path!r}: "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e


def from_config(model_cfg, input_shape=None, num_classes=None) -> topo.Topology:
  """The topology of a config's `model` section with `keras_file` set.

  Keys read: `keras_file` (path of a `.keras` model), `width_fractions`
  (default 0.25, 0.5, 0.75, 1.0), `pinned` (layer names), `meta_width`
  (None, a multiple of each width, or 'sum').

  Raises:
    ConfigError: the file cannot be loaded, or its input or classes disagree
      with the data's `input_shape` / `num_classes` (when given).
    UnsupportedModelError: see `from_keras`.
  """
  model = load_keras_file(model_cfg.keras_file)
  fractions = model_cfg.get("width_fractions") or graph_lib.DEFAULT_WIDTH_FRACTIONS
  t = from_keras(model, width_fractions=tuple(fractions),
                 pinned=tuple(model_cfg.get("pinned") or ()),
                 meta_width=model_cfg.get("meta_width"))
  if input_shape is not None and tuple(int(d) for d in input_shape) != tuple(t.input_shape):
    raise errors.ConfigError(
        f"model.keras_file: {model_cfg.keras_file} takes input {list(t.input_shape)}, the "
        f"data gives {list(input_shape)}")
  if num_classes is not None and int(num_classes) != t.num_classes:
    raise errors.ConfigError(
        f"model.keras_file: {model_cfg.keras_file} has {t.num_classes} outputs, the data "
        f"has {num_classes} classes")
  return t


def to_graph(model, pinned: Sequence[str] = ()) -> graph_lib.Graph:
  """The layer graph of `model` (see `from_keras`)."""
  if not isinstance(model, keras.Model):
    raise UnsupportedModelError(f"expected a keras.Model, got {type(model).__name__}")
  outputs = getattr(model, "outputs", None) if (
      isinstance(model, keras.Sequential) or _is_functional(model)) else None
  if not outputs:
    raise UnsupportedModelError(
        f"model {model.name!r} ({type(model).__name__}) is not a built Sequential or "
        "functional model (a subclassed model's call() cannot be read as a graph); "
        "build it with keras.Input, or call a Sequential on data first")
  if len(outputs) != 1 or len(model.inputs) != 1:
    raise UnsupportedModelError(
        f"model {model.name!r} has {len(model.inputs)} inputs and {len(outputs)} outputs; "
        "one image input and one output are supported")
  return _Builder(model, pinned).run(outputs[0])


def _is_functional(model) -> bool:
  return any(c.__name__ == "Functional" for c in type(model).__mro__)


class _Builder:
  """Walks the Keras graph once, in topological order."""

  def __init__(self, model, pinned):
    self.model = model
    self.pinned = set(pinned)
    self.nodes: list[graph_lib.Node] = []
    self.by_tensor: dict[int, str] = {}
    self.visited: dict[str, graph_lib.Node] = {}
    self.slot_names: list[str] = []
    self.slot_widths: list[int] = []
    self.uf = graph_lib.UnionFind()
    self.fixed: set[int] = set()
    self.seen_layers: set[int] = set()

  def new_slot(self, name: str, width: int, fixed: bool = False) -> int:
    s = self.uf.add()
    self.slot_names.append(name)
    self.slot_widths.append(int(width))
    if fixed:
      self.fixed.add(s)
    return s

  def run(self, output) -> graph_lib.Graph:
    order = self._topological(output)
    for op, node_index in order:
      self._visit(op, node_index)
    out_name = self._producer_name(output)
    out = self.visited[out_name]
    self.fixed.update(out.parts)  # the classifier's units
    names = {n.name for n in self.nodes}
    unknown = sorted(self.pinned - names)
    if unknown:
      raise errors.ConfigError(f"pinned layers {unknown} are not layers of model "
                               f"{self.model.name!r}")
    for name in self.pinned:
      self.fixed.update(self.visited[name].parts)
    inputs = tuple(n.name for n in self.nodes if n.op == "input")
    for name in inputs:
      if len(self.visited[name].shape) != 3:
        raise UnsupportedModelError(
            f"input {name!r} has shape {self.visited[name].shape}; an image input "
            "[H, W, C] is supported")
    return graph_lib.Graph(
        name=self.model.name, nodes=tuple(self.nodes), inputs=inputs, output=out_name,
        slot_names=tuple(self.slot_names), slot_widths=tuple(self.slot_widths),
        groups=self.uf.roots(), fixed=frozenset(self.fixed),
        softmax=self._softmax(out))

  # -- traversal --------------------------------------------------------------
  def _topological(self, output):
    order, state = [], {}

    def visit(tensor):
      op, node_index, tensor_index = tensor._keras_history  # pylint: disable=protected-access
      if tensor_index != 0:
        _fail(op, "operations with several outputs are not supported")
      key = id(op)
      if state.get(key) == "done":
        return
      if state.get(key) == "open":
        _fail(op, "cycle in the model graph")
      state[key] = "open"
      node = op._inbound_nodes[node_index]  # pylint: disable=protected-access
      for t in node.input_tensors:
        visit(t)
      state[key] = "done"
      order.append((op, node_index))

    visit(output)
    return order

  def _producer_name(self, tensor) -> str:
    return tensor._keras_history[0].name  # pylint: disable=protected-access

  # -- one op ---------------------------------------------------------------
  def _visit(self, op, node_index):
    if id(op) in self.seen_layers:
      _fail(op, "the layer is called more than once (shared weights)")
    self.seen_layers.add(id(op))
    if op.name in self.visited:
      _fail(op, "two operations share this name")
    knode = op._inbound_nodes[node_index]  # pylint: disable=protected-access
    ins = [self.visited[self._producer_name(t)] for t in knode.input_tensors]
    out_t = knode.output_tensors[0]
    shape = _shape(out_t)
    if isinstance(op, keras.Model):
      _fail(op, "nested models are not supported (build the model flat)")
    if isinstance(op, keras.layers.Layer):
      node = self._layer(op, ins, shape, knode)
    else:
      node = self._operation(op, ins, shape, knode)
    if any(d is None for d in node.shape):
      _fail(op, f"output shape {shape} is not fully known (give the model a fixed "
            "input size)")
    self.visited[node.name] = node
    self.nodes.append(node)

  def _layer(self, layer, ins, shape, knode) -> graph_lib.Node:
    cls = type(layer).__name__
    op = LAYER_OPS.get(cls)
    if op is None or type(layer) is not getattr(keras.layers, cls, None):
      kind = "custom layers are not supported" if op is None else (
          "subclasses of Keras layers are not supported")
      _fail(layer, kind)
    cfg = layer.get_config()
    if cfg.get("data_format", "channels_last") != "channels_last":
      _fail(layer, "only channels_last is supported")
    make = lambda parts, spatial=1: graph_lib.Node(  # noqa: E731
        layer.name, op, tuple(n.name for n in ins), _serialize(layer), tuple(parts), shape,
        spatial)
    if op == "input":  # its rank is checked after the walk: a bad layer is named first
      return graph_lib.Node(layer.name, "input", (), None,
                            (self.new_slot(layer.name, shape[-1], fixed=True),), shape)
    src = ins[0] if ins else None
    if op == "conv":
      if int(cfg["groups"]) != 1:
        _fail(layer, f"grouped convolutions (groups={cfg['groups']}) are not supported; "
              "depthwise convolutions are, as DepthwiseConv2D")
      self._need_map(layer, src)
      return make([self.new_slot(layer.name, cfg["filters"])])
    if op == "depthwise":
      if int(cfg["depth_multiplier"]) != 1:
        _fail(layer, f"depth_multiplier={cfg['depth_multiplier']} is not supported (1 is)")
      self._need_map(layer, src)
      return make(src.parts)
    if op == "dense":
      if len(src.shape) != 1:
        _fail(layer, f"Dense on a rank-{len(src.shape) + 1} tensor is not supported "
              "(flatten or pool first)")
      return make([self.new_slot(layer.name, cfg["units"])])
    if op == "bn":
      axis = cfg["axis"]
      axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
      if axis not in (-1, len(src.shape)):
        _fail(layer, f"BatchNormalization over axis {cfg['axis']} is not supported "
              "(the channel axis, -1, is)")
      if src.spatial != 1:
        _fail(layer, "BatchNormalization of a flattened map is not supported")
      return make(src.parts)
    if op in ("act", "dropout", "pool", "pad"):
      if op == "act" and cls == "Softmax" and cfg.get("axis", -1) not in (-1, len(src.shape)):
        _fail(layer, "Softmax over a non-channel axis is not supported")
      if op == "pool":
        self._need_map(layer, src)
      return make(src.parts, src.spatial)
    if op == "global_pool":
      self._need_map(layer, src)
      return make(src.parts)
    if op == "flatten":
      spatial = math.prod(src.shape[:-1]) * src.spatial if src.shape else 1
      return make(src.parts, spatial)
    if op == "reshape":
      if (shape[-1] != src.shape[-1] or math.prod(shape[:-1]) != 1 or
          math.prod(src.shape[:-1]) != 1 or src.spatial != 1):
        _fail(layer, f"Reshape {src.shape} -> {shape} is not supported (only a reshape "
              "that keeps the channel axis over a 1x1 map, as in squeeze-excite)")
      return make(src.parts)
    if op in ("rescale", "normalize"):
      per_channel = op == "normalize" or any(
          isinstance(cfg.get(k), (list, tuple)) and len(cfg.get(k)) > 1
          for k in ("scale", "offset"))
      if per_channel:  # per-channel constants: the channels cannot change
        self.fixed.update(src.parts)
      return make(src.parts, src.spatial)
    if op == "concat":
      if cfg["axis"] not in (-1, len(shape)):
        _fail(layer, f"Concatenate over axis {cfg['axis']} is not supported (the channel "
              "axis, -1, is)")
      if any(n.spatial != 1 for n in ins):
        _fail(layer, "Concatenate of flattened maps is not supported")
      return make([p for n in ins for p in n.parts])
    # add / multiply / merge: tie the inputs' channels.
    self._tie(layer, ins, shape)
    full = [n for n in ins if n.shape[-1] == shape[-1]]
    return make(full[0].parts, full[0].spatial)

  def _operation(self, op, ins, shape, knode) -> graph_lib.Node:
    fn = OPERATION_FNS.get(type(op).__name__)
    if fn is None or not type(op).__module__.startswith("keras."):
      _fail(op, "this functional operation is not supported")
    args = list(knode.arguments.args)
    if knode.arguments.kwargs or len(args) != 2:
      _fail(op, "only binary elementwise operations are supported")
    tensors = [a for a in args if isinstance(a, keras.KerasTensor)]
    if len(tensors) == 2:
      self._tie(op, ins, shape)
      full = [n for n in ins if n.shape[-1] == shape[-1]]
      kind = "add" if fn in ("add", "subtract") else "multiply"
      return graph_lib.Node(op.name, kind, tuple(n.name for n in ins), None,
                            full[0].parts, shape, full[0].spatial, fn=fn)
    const = [a for a in args if not isinstance(a, keras.KerasTensor)][0]
    try:
      scalar = float(const)
    except (TypeError, ValueError):
      _fail(op, f"the constant operand {const!r} is not a scalar")
    src = ins[0]
    return graph_lib.Node(op.name, "scalar", (src.name,), None, src.parts, shape,
                          src.spatial, fn=fn, scalar=scalar,
                          scalar_first=not isinstance(args[0], keras.KerasTensor))

  def _need_map(self, layer, src):
    if src is None or len(src.shape) != 3:
      _fail(layer, f"expected an image-shaped input [H, W, C], got "
            f"{None if src is None else src.shape}")

  def _tie(self, layer, ins, shape):
    """Equal channel counts for an elementwise op's inputs (broadcast ones excepted)."""
    full = [n for n in ins if n.shape[-1] == shape[-1]]
    if not full:
      _fail(layer, f"cannot match the inputs' channels {[n.shape for n in ins]}")
    for n in ins:
      if n.shape[-1] != shape[-1]:
        if n.shape[-1] == 1:  # broadcast over channels: no tie
          continue
        _fail(layer, f"inputs of shapes {[n.shape for n in ins]} do not broadcast on "
              "the channel axis")
      if n.spatial != full[0].spatial:
        _fail(layer, "elementwise op over differently flattened tensors")
    ref = full[0]
    for n in full[1:]:
      if len(n.parts) == len(ref.parts) and all(
          self.slot_widths[a] == self.slot_widths[b] for a, b in zip(n.parts, ref.parts)):
        for a, b in zip(n.parts, ref.parts):
          self.uf.union(a, b)
      else:  # e.g. a concatenation added to one conv: the widths stay as they are
        self.fixed.update(n.parts)
        self.fixed.update(ref.parts)

  def _softmax(self, out: graph_lib.Node) -> str | None:
    """The output node's softmax, which the supernet and the logits child leave out."""
    node = out
    while True:
      act = node.config.get("activation")
      cls = (node.layer or {}).get("class_name")
      if (cls == "Softmax") or (node.op in ("act", "conv", "dense") and _is_softmax(act)):
        return node.name
      if node.op in ("dropout", "flatten", "reshape") and node.inputs:
        node = self.visited[node.inputs[0]]
        continue
      return None
