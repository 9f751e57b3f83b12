"""The import rules of docs/internals.md#layers, checked on the source.

Every `import` and `from ... import` in aps_tf/, export/ and configs/ (at
module level and inside functions alike) is read with `ast`; an import from a
layer the importer may not use, or any cycle between modules, fails the test
with the file and line.
"""

from __future__ import annotations

import ast
import os
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("aps_tf", "export", "configs")

# Layer of a module: the first prefix that matches (longest prefixes first).
LAYER_OF = {
    # infra: imported by all, importing none of the layers above.
    "aps_tf": "infra",
    "aps_tf.cli": "infra",
    "aps_tf.config_check": "infra",
    "aps_tf.config_names": "infra",
    "aps_tf.console": "infra",
    "aps_tf.distribute": "infra",
    "aps_tf.errors": "infra",
    "aps_tf.fileio": "infra",
    "aps_tf.precision": "infra",
    "aps_tf.runner": "infra",
    "aps_tf.schema": "infra",
    "aps_tf.seeds": "infra",
    "aps_tf.startup": "infra",
    "aps_tf.workdir": "infra",
    "configs": "infra",
    "aps_tf.configs": "infra",
    # maths: the method's numerics.
    "aps_tf.anneal": "maths",
    "aps_tf.cost": "maths",
    "aps_tf.layers": "maths",
    "aps_tf.sharing": "maths",
    "aps_tf.spaces": "maths",
    "aps_tf.transition": "maths",
    "aps_tf.weight_decay": "maths",
    # models: one topology, its interpreters and its file.
    "aps_tf.archfile": "models",
    "aps_tf.flops": "models",
    "aps_tf.models": "models",
    # LiteRT conversion of a Keras model: shared by the latency tables and export.
    "aps_tf.litert": "models",
    "aps_tf.data": "data",
    # lifecycle: one run's checks and files, for search and retraining.
    "aps_tf.lifecycle": "lifecycle",
    "aps_tf.user_model": "lifecycle",  # the user's .keras file fills a run's config
    # latency: measuring and tabulating on-device cost for the search.
    "aps_tf.latency": "latency",
    "aps_tf.search": "search",
    "aps_tf.policy": "search",
    "aps_tf.train": "train",
    "export": "export",
    "aps_tf.export": "export",
    # tools: experiment drivers over whole runs; may import anything.
    "aps_tf.experiments": "tools",
    "aps_tf.api": "tools",  # the Python API: search, retrain, export in one process
}

_BASE = ("infra", "maths", "models", "data")
ALLOWED = {
    "infra": {"infra"},
    "maths": {"infra", "maths"},
    "models": {"infra", "maths", "models"},
    "data": {"infra", "maths", "models", "data"},
    "lifecycle": set(_BASE) | {"lifecycle"},
    "latency": set(_BASE) | {"latency"},
    "search": set(_BASE) | {"lifecycle", "latency", "search"},  # never train, never export
    "train": set(_BASE) | {"lifecycle", "train"},  # never the search: they meet through files
    "export": set(_BASE) | {"train", "export"},  # never the search
    "tools": set(_BASE) | {"lifecycle", "latency", "search", "train", "export", "tools"},
}

# Known violations, each with the change that removes it (none today).
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()

# The one import that goes up by design: `aps_tf.search(model, data, ...)` is
# the Python API's entry, so the search package's module object is callable
# and its __call__ hands over to aps_tf.api (the package and the function
# share the name `aps_tf.search`).
API_ENTRY = {("aps_tf.search", "aps_tf.api"), ("aps_tf", "aps_tf.api")}


def _modules() -> dict[str, str]:
  mods = {}
  for package in PACKAGES:
    for dirpath, _, files in os.walk(os.path.join(ROOT, package)):
      for f in files:
        if f.endswith(".py"):
          rel = os.path.relpath(os.path.join(dirpath, f), ROOT)
          name = rel[:-3].replace(os.sep, ".")
          mods[name[:-len(".__init__")] if name.endswith(".__init__") else name] = rel
  return mods


def layer_of(module: str) -> str | None:
  parts = module.split(".")
  for i in range(len(parts), 0, -1):
    layer = LAYER_OF.get(".".join(parts[:i]))
    if layer:
      return layer
  return None


# configs/ and export/ import as aps_tf.configs and aps_tf.export (the wheel maps
# them there; in a checkout two stand-in packages point at the folders).
ALIASES = {"aps_tf.configs": "configs", "aps_tf.export": "export"}


def _unalias(module: str) -> str:
  for alias, real in ALIASES.items():
    if module == alias or module.startswith(alias + "."):
      return real + module[len(alias):]
  return module


def imports(mods: dict[str, str]) -> list[tuple[str, str, str, int, str]]:
  """(importer, imported, file, line, named) for every import of a module in `mods`.

  An import of a.b.c (`named`) also runs the packages a and a.b, so those are
  imported too (except the importer's own packages, which are already running).
  """
  out = []
  for name, rel in mods.items():
    is_package = rel.endswith("__init__.py")
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
      tree = ast.parse(f.read(), rel)
    for node in ast.walk(tree):
      targets = []
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          parts = name.split(".") if is_package else name.split(".")[:-1]
          parts = parts[:len(parts) - (node.level - 1)]
          base = ".".join(parts + ([base] if base else []))
        base = _unalias(base)
        targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                   for a in node.names]
      for target in map(_unalias, targets):
        while target and target not in mods:
          target = target.rpartition(".")[0]
        chain = target.split(".")
        for i in range(1, len(chain) + 1):
          t = ".".join(chain[:i])
          if t in mods and t != name and not name.startswith(t + "."):
            out.append((name, t, rel, node.lineno, target))
  return out


def cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
  """Strongly connected components of more than one module (Tarjan)."""
  graph: dict[str, set[str]] = {}
  for a, b in edges:
    graph.setdefault(a, set()).add(b)
    graph.setdefault(b, set())
  index, low, stack, on_stack, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def violations(found) -> list[str]:
  bad = []
  for a, b, rel, line, named in found:
    la, lb = layer_of(a), layer_of(b)
    if la is None or lb is None:
      bad.append(f"{rel}:{line}: {a} -> {b}: module without a layer (add it to LAYER_OF)")
    elif (lb not in ALLOWED[la] and (a, named) not in KNOWN_VIOLATIONS
          and (a, named) not in API_ENTRY):
      bad.append(f"{rel}:{line}: {a} ({la}) imports {b} ({lb}); {la} may import "
                 f"{', '.join(sorted(ALLOWED[la]))}")
  return bad


class LayeringTest(unittest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.mods = _modules()
    cls.found = imports(cls.mods)

  def test_every_module_has_a_layer(self):
    self.assertEqual([m for m in self.mods if layer_of(m) is None], [])

  def test_no_import_breaks_the_layers(self):
    self.assertEqual(violations(self.found), [])

  def test_no_import_cycles(self):
    edges = {(a, b) for a, b, _, _, named in self.found
             if (a, named) not in KNOWN_VIOLATIONS | API_ENTRY}
    self.assertEqual(cycles(edges), [])

  def test_known_violations_still_exist(self):
    # A listed violation that no longer occurs is stale: remove it from the list.
    edges = {(a, named) for a, _, _, _, named in self.found}
    self.assertEqual(sorted(KNOWN_VIOLATIONS - edges), [])

  def test_checker_catches_an_upward_import_and_a_cycle(self):
    up = [("aps_tf.config_check", "aps_tf.search.reward", "aps_tf/config_check.py", 1,
           "aps_tf.search.reward")]
    self.assertEqual(len(violations(up)), 1)
    self.assertEqual(cycles({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}),
                     [["a", "b", "c"]])


if __name__ == "__main__":
  unittest.main()
