"""The versioned latency table file, its checks, and its in-graph lookup.

A table holds, for every unit of one search space (`units.py`) and every
(input, output) width pair the unit can take, its latency in milliseconds as
measured on one device, plus a constant for what no decision changes:

    latency(widths) = const_ms + sum_units entry[unit][(c_in, c_out)].

File layout (JSON)::

    {"format": "aps-tf-latency-table", "version": 1,
     "fingerprint": {"device", "cpu", "cores", "threads", "runtime", "format", "date"},
     "model": {"name", "input_shape", "num_classes", "search_space"},
     "runs": R, "warmup": W,
     "measurements": {spec_key: {"spec": {...}, "ms": float}},   # raw timings
     "const_ms": float, "const_fit": {...},
     "layers": [{"name", "op", "in", "out", "entries": [[c_in, c_out, ms], ...]}]}

`measurements` is what a build writes as it goes (so it resumes); `layers`
and `const_ms` are derived from it at the end. `load` checks every field and
names the file and field at fault. `LatencyModel` turns a table into the same
pairwise lookup the FLOPs constraint uses (`aps_tf.cost.TableCost`).
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from aps_tf import cost as cost_lib
from aps_tf import errors
from aps_tf import fileio
from aps_tf.latency import units as units_lib
from aps_tf.models import topology as topo

FORMAT = "aps-tf-latency-table"
VERSION = 1
FINGERPRINT_FIELDS = ("device", "cpu", "cores", "threads", "runtime", "format", "date")
# Fields two measurements must share to go into one table (not the date).
IDENTITY_FIELDS = ("device", "cpu", "cores", "threads", "runtime", "format")


class TableError(errors.UserError, ValueError):
  """A latency table that cannot be used; the message names file and field."""


def model_record(t: topo.Topology) -> dict:
  """What a table records of the network it was measured for."""
  space = {"candidates": [list(d.candidates) for d in t.space.decisions],
           "fixed": {t.slot_names[s]: w for s, w in sorted(t.space.fixed.items())}}
  return {"name": t.model, "input_shape": list(t.input_shape), "num_classes": t.num_classes,
          "slot_names": list(t.slot_names), "search_space": space}


def new(t: topo.Topology, fingerprint: dict, runs: int, warmup: int) -> dict:
  return {"format": FORMAT, "version": VERSION, "fingerprint": dict(fingerprint),
          "model": model_record(t), "runs": int(runs), "warmup": int(warmup),
          "measurements": {}}


def check_fingerprint(table: dict, fingerprint: dict, source: str) -> None:
  """Refuses to mix measurements of two devices/runtimes/formats/thread counts."""
  old = table.get("fingerprint") or {}
  diff = [f for f in IDENTITY_FIELDS if old.get(f) != fingerprint.get(f)]
  if diff:
    details = "; ".join(f"{f}: table={old.get(f)!r} now={fingerprint.get(f)!r}" for f in diff)
    raise TableError(f"{source}: field 'fingerprint': measured under a different setup "
                     f"({details}); measurements of different setups cannot be mixed. Use "
                     "another --out (or the same --format/--threads on the same device).")


def check_model(table: dict, t: topo.Topology, source: str) -> None:
  got, want = table.get("model"), model_record(t)
  if not isinstance(got, dict):
    raise TableError(f"{source}: field 'model': expected an object, got {got!r}")
  for k in ("name", "input_shape", "num_classes", "slot_names", "search_space"):
    if got.get(k) != want[k]:
      raise TableError(
          f"{source}: field 'model.{k}': the table was measured for {got.get(k)!r} but the "
          f"config's network has {want[k]!r}; build a table for this config "
          "(python -m aps_tf.latency build --config=...)")


def derive_layers(t: topo.Topology, table: dict) -> list[dict]:
  """Per-unit entries from the raw measurements (unit minus its pool-only tail)."""
  meas = table["measurements"]
  layers = []
  for u in units_lib.units(t):
    entries = []
    for c_in, c_out in units_lib.width_pairs(t, u):
      s = units_lib.entry_spec(t, u, c_in, c_out)
      ms = 0.0
      if s is not None:
        tail = units_lib.tail_spec(s)
        ms = meas[s.key]["ms"] - (meas[tail.key]["ms"] if tail is not None else 0.0)
        ms = max(ms, 0.0)  # a unit cheaper than timer noise
      entries.append([int(c_in), int(c_out), float(ms)])
    layers.append({"name": u.name, "op": u.op,
                   "in": None if u.in_slot is None else t.slot_names[u.in_slot],
                   "out": None if u.out_slot is None else t.slot_names[u.out_slot],
                   "entries": entries})
  return layers


def required_specs(t: topo.Topology) -> dict[str, units_lib.Spec]:
  """Every distinct spec (and its tail) a table for `t` needs, in forward order."""
  out: dict[str, units_lib.Spec] = {}
  for u in units_lib.units(t):
    for c_in, c_out in units_lib.width_pairs(t, u):
      s = units_lib.entry_spec(t, u, c_in, c_out)
      if s is None:
        continue
      out.setdefault(s.key, s)
      tail = units_lib.tail_spec(s)
      if tail is not None:
        out.setdefault(tail.key, tail)
  return out


def validate(obj: Any, source: str, t: topo.Topology | None = None) -> dict:
  """Checks a complete table; with `t`, also that it is `t`'s table."""
  def fail(field, msg):
    raise TableError(f"{source}: field '{field}': {msg}")

  if not isinstance(obj, dict):
    raise TableError(f"{source}: expected a JSON object, got {type(obj).__name__}")
  if obj.get("format") != FORMAT:
    fail("format", f"expected {FORMAT!r}, got {obj.get('format')!r}")
  if obj.get("version") != VERSION:
    fail("version", f"this aps-tf reads version {VERSION}, got {obj.get('version')!r}")
  fp = obj.get("fingerprint")
  if not isinstance(fp, dict) or any(f not in fp for f in FINGERPRINT_FIELDS):
    fail("fingerprint", f"expected an object with {list(FINGERPRINT_FIELDS)}, got {fp!r}")
  if t is not None:
    check_model(obj, t, source)
  const = obj.get("const_ms")
  if not isinstance(const, (int, float)) or isinstance(const, bool) or not np.isfinite(const):
    fail("const_ms", f"expected a number (is the build finished?), got {const!r}")
  layers = obj.get("layers")
  if not isinstance(layers, list):
    fail("layers", f"expected a list (is the build finished?), got {layers!r}")
  by_name = {}
  for k, layer in enumerate(layers):
    if not isinstance(layer, dict) or not isinstance(layer.get("entries"), list):
      fail(f"layers[{k}]", f"expected an object with 'entries', got {layer!r}")
    table = {}
    for e in layer["entries"]:
      if (not isinstance(e, list) or len(e) != 3 or
          not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in e) or
          not np.isfinite(e[2]) or e[2] < 0):
        fail(f"layers[{k}].entries", f"expected [c_in, c_out, ms >= 0] triples, got {e!r}")
      table[(int(e[0]), int(e[1]))] = float(e[2])
    by_name[layer.get("name")] = table
  if t is not None:
    for u in units_lib.units(t):
      if u.name not in by_name:
        fail("layers", f"no entries for layer {u.name!r} (the table is incomplete or of "
             "another network)")
      missing = [p for p in units_lib.width_pairs(t, u) if p not in by_name[u.name]]
      if missing:
        fail("layers", f"layer {u.name!r} has no entry for (c_in, c_out) = {missing[0]} "
             f"({len(missing)} missing)")
  return obj


def read(path: str) -> dict:
  """The JSON object of a table file (no checks beyond JSON)."""
  try:
    text = fileio.read_text(path)
  except OSError as e:
    raise TableError(f"{path}: cannot read latency table: {e.strerror}") from e
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise TableError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}): "
                     f"{e.msg}") from e


def load(path: str, t: topo.Topology | None = None) -> dict:
  """Reads and validates a complete table (for `t`'s network when given)."""
  return validate(read(path), path, t)


def save(table: dict, path: str) -> None:
  fileio.write_json(path, table, indent=1)


def entries(table: dict) -> dict[str, dict[tuple[int, int], float]]:
  return {l["name"]: {(int(a), int(b)): float(ms) for a, b, ms in l["entries"]}
          for l in table["layers"]}


def predict(t: topo.Topology, table: dict, widths: Sequence[int]) -> float:
  """Host-side predicted latency (ms) of the dense child at per-conv `widths`."""
  e = entries(table)
  total = float(table["const_ms"])
  for u in units_lib.units(t):
    c_in = u.in_channels if u.in_slot is None else int(widths[u.in_slot])
    c_out = u.in_channels if u.out_slot is None else int(widths[u.out_slot])
    total += e[u.name][(c_in, c_out)]
  return total


def unit_sum(t: topo.Topology, table: dict, widths: Sequence[int]) -> float:
  """`predict` without the constant (what the constant is fitted against)."""
  return predict(t, dict(table, const_ms=0.0), widths)


class LatencyModel(cost_lib.TableCost):
  """Predicted latency (ms) of decision vectors from a table, in-graph.

  Groups the units by the decisions their widths come from, like the FLOPs
  cost model, so the search looks latency up with the same two gathers and
  never retraces. `cost(arch)` equals `predict(t, table, widths(arch))`.
  """

  kind = "latency"

  def __init__(self, topology: topo.Topology, table: dict):
    self.topology, self.table = topology, table
    self.convention = table["fingerprint"]["format"]
    space = topology.space
    counts = space.num_candidates
    e = entries(table)
    const = float(table["const_ms"])
    groups: dict[tuple[int, int], list[units_lib.Unit]] = {}
    for u in units_lib.units(topology):
      ds = sorted({space.slot_decision(s) for s in (u.in_slot, u.out_slot) if s is not None}
                  - {None})
      if not ds:
        const += e[u.name][(u.in_channels if u.in_slot is None else space.fixed[u.in_slot],
                            u.in_channels if u.out_slot is None else space.fixed[u.out_slot])]
        continue
      groups.setdefault((ds[0], ds[-1]), []).append(u)
    a_max = max(counts)
    tables = np.zeros((len(groups), a_max, a_max), np.float64)
    pairs = np.zeros((len(groups), 2), np.int32)
    for g, ((d1, d2), group) in enumerate(sorted(groups.items())):
      pairs[g] = (d1, d2)
      for a1 in range(counts[d1]):
        for a2 in range(counts[d2]):
          if d1 == d2 and a1 != a2:
            continue
          index = {d1: a1, d2: a2}

          def width(slot, u):
            if slot is None:
              return u.in_channels
            d = space.slot_decision(slot)
            return space.fixed[slot] if d is None else space.decisions[d].candidates[index[d]]

          tables[g, a1, a2] = sum(e[u.name][(width(u.in_slot, u), width(u.out_slot, u))]
                                  for u in group)
    self._set_tables(const, tables, pairs)

  def predict_widths(self, widths: Sequence[int]) -> float:
    return predict(self.topology, self.table, widths)
