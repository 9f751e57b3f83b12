"""The versioned architecture file: the hand-off from search to retraining.

Everything the dense child needs is in the file (model family, input shape,
classes, per-conv widths), so `dense.build_from_arch` needs nothing else. The
search decisions, FLOPs, params and provenance ride along for people and
tools. `load` validates every field and names the file and field at fault.

Per-conv width order: ResNets: stem, then every conv in forward order
(shortcut convs implied); MobileNetV2: first conv, block-1 projection, then per
block expansion and projection, then the last 1x1 conv.

Versions: 2 adds `search_space.space`, `.fix_last_width` and
`.downsample_shortcut` (the topology options; `make` always writes them).
Version-1 files are still read: they lack these keys, whose defaults ('aps_tf',
not fixed, 'conv_bn') are exactly what version 1 meant.

Version 3 (written only for an imported Keras model, family 'graph') adds
`graph`, the layer graph (`aps_tf.models.graph.Graph.to_json`), and
`search_space.width_fractions` / `.meta_width`; `model` is then the Keras
model's name, not a family name.
"""

from __future__ import annotations

import datetime
import json
from typing import Any, Sequence

from aps_tf import errors
from aps_tf import fileio
from aps_tf import flops as flops_lib
from aps_tf import models
from aps_tf.models import topology as topo

FORMAT = "aps-tf-architecture"
VERSION = 2
GRAPH_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
MAX_WIDTH = 1 << 16


class ArchFileError(errors.UserError, ValueError):
  """An architecture file that cannot be used; the message names file and field."""


def make(t: topo.Topology, widths: Sequence[int], decisions: Sequence[int] | None = None,
         search_space: dict | None = None, provenance: dict | None = None,
         latency: dict | None = None) -> dict:
  """Builds a validated architecture dict for `widths` on topology `t`.

  Args:
    t: the topology.
    widths: per-slot widths.
    decisions: the decision indices that gave them, if searched.
    search_space: the space's record (`models.search_space_record`).
    provenance: where the architecture comes from (config, step, rule).
    latency: a latency budget {"format", "target_ms", "predicted_ms"}.

  Returns:
    The architecture file's contents, with FLOPs and parameters counted.

  Raises:
    ArchFileError: a field is invalid.
  """
  widths = [int(w) for w in widths]
  space = dict(search_space or {})
  if t.family == "graph":
    space.update(t.graph_options or {})
  else:
    space.update(space=t.space_kind, fix_last_width=t.fix_last_width,
                 downsample_shortcut=t.downsample_shortcut)
  arch: dict[str, Any] = {
      "format": FORMAT,
      "version": GRAPH_VERSION if t.family == "graph" else VERSION,
      "model": t.model,
      "input_shape": list(t.input_shape),
      "num_classes": t.num_classes,
      "search_space": space,
      "slot_names": list(t.slot_names),
      "widths": widths,
  }
  if decisions is not None:
    arch["decisions"] = [
        {"name": d.name, "candidates": list(d.candidates), "index": int(a),
         "width": d.candidates[int(a)]}
        for d, a in zip(t.space.decisions, decisions)]
  if latency is not None:
    arch["latency"] = dict(latency)
  if t.family == "graph":
    arch["graph"] = t.graph.to_json()
  validate(arch, "<new architecture>")
  arch["flops"] = {c: flops_lib.count(t, widths, c)["flops"] for c in flops_lib.CONVENTIONS}
  arch["params"] = flops_lib.count(t, widths)["params"]
  prov = {"tool": "aps-tf", "created": datetime.datetime.now(
      datetime.timezone.utc).isoformat(timespec="seconds")}
  prov.update(provenance or {})
  arch["provenance"] = prov
  return validate(arch, "<new architecture>")


def save(arch: dict, path: str) -> None:
  """Writes an architecture file atomically: a reader never sees a half-written file.

  Args:
    arch: the validated contents (`make`).
    path: where to write (any filesystem).
  """
  validate(arch, path)
  fileio.write_json(path, arch)


def load(path: str) -> dict:
  """Reads and validates an architecture file.

  Args:
    path: the file (any filesystem).

  Returns:
    Its contents.

  Raises:
    ArchFileError: unreadable, not JSON, or a field is invalid (named).
  """
  try:
    text = fileio.read_text(path)
  except OSError as e:
    raise ArchFileError(f"{path}: cannot read architecture file: {e.strerror}") from e
  except UnicodeDecodeError as e:
    raise ArchFileError(f"{path}: not valid JSON (not UTF-8 text at byte {e.start})") from e
  try:
    obj = json.loads(text)
  except json.JSONDecodeError as e:
    raise ArchFileError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}): "
                        f"{e.msg}") from e
  return validate(obj, path)


topology_of = models.topology_from_arch


def validate(obj: Any, source: str) -> dict:
  """Checks every field of an architecture file's contents.

  Args:
    obj: the decoded JSON.
    source: where it came from, for messages.

  Returns:
    `obj`, checked.

  Raises:
    ArchFileError: naming `source` and the field.
  """
  def fail(field, msg):
    raise ArchFileError(f"{source}: field '{field}': {msg}")

  if not isinstance(obj, dict):
    raise ArchFileError(f"{source}: expected a JSON object, got {type(obj).__name__}")
  if obj.get("format") != FORMAT:
    fail("format", f"expected {FORMAT!r}, got {obj.get('format')!r}")
  version = obj.get("version")
  if isinstance(version, bool) or version not in READABLE_VERSIONS:
    fail("version", f"this aps-tf reads versions {', '.join(map(str, READABLE_VERSIONS))}, "
         f"got {version!r}")
  model = obj.get("model")
  if "graph" in obj and version != GRAPH_VERSION:
    fail("graph", f"a layer graph needs version {GRAPH_VERSION}, the file says {version!r}")
  if version == GRAPH_VERSION and "graph" not in obj:
    fail("graph", f"version {GRAPH_VERSION} needs the layer graph of the model")
  if "graph" in obj:
    if not isinstance(model, str) or not model:
      fail("model", f"expected the model's name, got {model!r}")
  else:
    try:
      topo.family_of(model)
    except ValueError as e:
      fail("model", str(e))
  shape = obj.get("input_shape")
  if (not isinstance(shape, list) or len(shape) != 3 or
      not all(isinstance(d, int) and d > 0 for d in shape)):
    fail("input_shape", f"expected [H, W, C] positive integers, got {shape!r}")
  classes = obj.get("num_classes")
  if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
    fail("num_classes", f"expected a positive integer, got {classes!r}")
  space = obj.get("search_space", {})
  if not isinstance(space, dict):
    fail("search_space", f"expected an object, got {space!r}")
  new_keys = sorted({"space", "fix_last_width", "downsample_shortcut"} & set(space))
  if version == 1 and new_keys:
    fail("search_space", f"{new_keys} need version 2, the file says version 1")
  if space.get("fix_last_width") is not None and not isinstance(space["fix_last_width"], bool):
    fail("search_space", f"fix_last_width: expected true, false or null, got "
         f"{space['fix_last_width']!r}")
  try:
    t = topology_of(obj)
  except (ValueError, KeyError, TypeError) as e:
    if "graph" in obj:
      fail("graph", f"not a valid layer graph: {e}")
    fail("search_space", str(e))
  if "graph" in obj and (list(t.input_shape) != shape or t.num_classes != classes):
    fail("graph", f"the graph's input {list(t.input_shape)} and {t.num_classes} classes "
         f"disagree with input_shape {shape} and num_classes {classes}")
  widths = obj.get("widths")
  if not isinstance(widths, list) or not all(
      isinstance(w, int) and not isinstance(w, bool) for w in widths):
    fail("widths", f"expected a list of integers, got {widths!r}")
  if len(widths) != t.num_slots:
    fail("widths", f"{model} has {t.num_slots} per-conv widths, got {len(widths)}")
  for name, w in zip(t.slot_names, widths):
    if not 1 <= w <= MAX_WIDTH:
      fail("widths", f"width of {name} is {w}, out of range [1, {MAX_WIDTH}]")
  if "decisions" in obj:
    decs = obj["decisions"]
    if not isinstance(decs, list) or len(decs) != t.space.num_decisions:
      n = len(decs) if isinstance(decs, list) else decs
      fail("decisions", f"{model} has {t.space.num_decisions} decisions, got {n}")
    indices = []
    for k, (d, spec) in enumerate(zip(decs, t.space.decisions)):
      idx = d.get("index") if isinstance(d, dict) else None
      if not isinstance(idx, int) or not 0 <= idx < len(spec.candidates):
        fail("decisions", f"decision {k} ({spec.name}): index {idx!r} out of range "
             f"[0, {len(spec.candidates)})")
      indices.append(idx)
    expected = t.space.widths(indices)
    if expected != widths:
      bad = next(i for i, (a, b) in enumerate(zip(expected, widths)) if a != b)
      fail("widths", f"width of {t.slot_names[bad]} is {widths[bad]} but the decisions "
           f"give {expected[bad]}")
  try:
    counts = {c: flops_lib.count(t, widths, c) for c in flops_lib.CONVENTIONS}
  except ValueError as e:
    fail("widths", str(e))
  if "flops" in obj:
    recorded = obj["flops"]
    if not isinstance(recorded, dict):
      fail("flops", f"expected an object {{convention: int}}, got {recorded!r}")
    for conv, value in recorded.items():
      if conv not in counts:
        fail("flops", f"unknown convention {conv!r}; expected one of {flops_lib.CONVENTIONS}")
      if value != counts[conv]["flops"]:
        fail("flops", f"{conv} FLOPs recorded as {value} but the widths give "
             f"{counts[conv]['flops']}")
  if "latency" in obj:
    _validate_latency(obj["latency"], fail)
  if "params" in obj and obj["params"] != counts["full"]["params"]:
    fail("params", f"recorded as {obj['params']} but the widths give "
         f"{counts['full']['params']}")
  return obj


LATENCY_FIELDS = {"format": str, "target_ms": (int, float), "predicted_ms": (int, float)}


def _validate_latency(lat: Any, fail) -> None:
  """Optional 'latency': the searched format, target and table prediction (ms)."""
  if not isinstance(lat, dict):
    fail("latency", f"expected an object {{format, target_ms, predicted_ms}}, got {lat!r}")
  for key, kind in LATENCY_FIELDS.items():
    value = lat.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
      fail(f"latency.{key}", f"expected {'a string' if kind is str else 'a number'}, "
           f"got {value!r}")
    if kind is not str and not value > 0:
      fail(f"latency.{key}", f"expected a positive number of milliseconds, got {value!r}")
