"""The docs cannot drift: figures come from records, config values from configs.

What counts as a figure is defined by `tools/render_docs.figures` (decimals,
scientific notation, thousands-separated integers and numbers with a unit, in
prose: code, generated blocks, comments and links excluded). Each must equal,
at its printed precision, a number in a results record (docs/results/*.json), a
numeric value of a shipped config, or an entry of ALLOWED_FIGURES. A config
field quoted with a value (`search.phi_lr` (1e-3), `search.top_n = 10`) must
quote configs/base.py's default. docs/results.md and the generated config
tables must equal what tools/render_docs.py renders now.
"""

import glob
import importlib.util
import os
import re

from absl.testing import absltest
from absl.testing import parameterized
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_renderer():
  spec = importlib.util.spec_from_file_location(
      "render_docs", os.path.join(ROOT, "tools", "render_docs.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


render = _load_renderer()

# Figures that are neither measured nor config values: text -> why.
ALLOWED_FIGURES = {
    "50%": "the paper's budget names (50% / 100% of the base FLOPs)",
    "100%": "the paper's budget names (50% / 100% of the base FLOPs)",
    "0.5": "the paper's reward split and budget fraction, exact by definition",
    "1.25": "MobileNetV2's hidden and last-conv candidate multipliers {0.5, 0.75, 1, 1.25} "
            "(aps_tf/models/topology.py)",
}

# A config field quoted with a value: `a.b` (V), `a.b` = V, `a.b = V`.
_QUOTE = re.compile(r"`([a-z_]+(?:\.[a-z_0-9]+)+)`\s*(?:=|\()\s*(-?\d[\d.]*(?:e[-+]?\d+)?)"
                    r"|`([a-z_]+(?:\.[a-z_0-9]+)+) = (-?\d[\d.]*(?:e[-+]?\d+)?)`")


def _docs():
  paths = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
  return [p for p in paths if os.path.basename(p) != "results.md"]


def _read(path):
  with open(path) as f:
    return f.read()


def _untraced(text, records, config_values):
  """Figures of TEXT that no record (nor config value, nor the allow-list) gives.

  A paragraph that links records (`results.md#NAME`) is held to those records.
  """
  every = render.record_numbers(records)
  bad = []
  for figs, linked in render.paragraph_figures(text):
    known = config_values + (render.record_numbers({n: records[n] for n in linked
                                                    if n in records}) if linked else every)
    for fig in figs:
      if f"{fig.text}{fig.unit}" in ALLOWED_FIGURES:
        continue
      if not any(fig.matches(x) for x in known):
        bad.append(fig)
  return bad


def _leaf(config, dotted):
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node.keys():
      return None, False
    node = node[part]
  return node, True


def _bad_quotes(text, base):
  bad = []
  for m in _QUOTE.finditer(text):
    field = m.group(1) or m.group(3)
    quoted = float(m.group(2) or m.group(4))
    value, found = _leaf(base, field)
    if not found or isinstance(value, bool) or not isinstance(value, (int, float)):
      continue
    if abs(float(value) - quoted) > 1e-12 * max(1.0, abs(float(value))):
      line = text.count("\n", 0, m.start()) + 1
      bad.append(f"line {line}: `{field}` quoted as {m.group(2) or m.group(4)}, "
                 f"configs/base.py has {value}")
  return bad


class FigureDefinitionTest(parameterized.TestCase):

  @parameterized.parameters(
      ("accuracy 0.9944 on the test split", ["0.9944"]),
      ("a target of 1.9e9 FLOPs", ["1.9e9"]),
      ("40,813,194 multiply-accumulates", ["40,813,194"]),
      ("it takes 3 min and 0.58 s per step", ["3 min", "0.58 s"]),
      ("a 33x speed-up, 7% of the step", ["33x", "7%"]),
      ("at 24,000 images/s", ["24,000 images/s"]),
  )
  def test_figures(self, text, want):
    got = [f"{f.text}{(' ' if f.unit not in ('%', 'x') else '') + f.unit if f.unit else ''}"
           for f in render.figures(text)]
    self.assertEqual(got, want)

  @parameterized.parameters(
      "19 convs on 2 cores, 13 decisions",
      "a 3x3 conv on 32x32x3 images, 1x1 shortcuts",
      "Python 3.11 and TensorFlow 2.21, keras 3.15.1",
      "Eq. 5, Theorem 3.1, §5.2, Table 1",
      "`search.phi_lr=0.06` and `0.9944` in code",
      "```sh\naps-search --config.search.epochs=1.5\n```",
      "[the paper](https://arxiv.org/abs/2010.1234) and [docs](docs/a.md#x-1.5)",
      "<!-- 0.9944 in a comment -->",
  )
  def test_not_figures(self, text):
    self.assertEqual(render.figures(text), [])

  def test_precision(self):
    (fig,) = render.figures("accuracy 0.9944")
    self.assertTrue(fig.matches(0.99444))
    self.assertFalse(fig.matches(0.9950))
    (fig,) = render.figures("target 1.9e9")
    self.assertTrue(fig.matches(1.9e9))
    self.assertFalse(fig.matches(1.05e9))
    (fig,) = render.figures("keeps 99.4%")
    self.assertTrue(fig.matches(0.9944))


@pytest.mark.slow
class DocsTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.records = render.load_records()
    cls.configs = render.shipped_configs()
    cls.config_values = render.config_numbers(cls.configs)

  def test_records_have_the_format(self):
    self.assertNotEmpty(self.records)
    for name, r in self.records.items():
      for key in ("python", "tensorflow", "keras"):
        self.assertIn(key, r["versions"], name)

  def test_generated_docs_are_current(self):
    self.assertEqual(render.stale(), [], "run `python tools/render_docs.py`")

  def test_every_figure_comes_from_a_record_or_config(self):
    bad = {}
    for path in _docs():
      untraced = _untraced(_read(path), self.records, self.config_values)
      if untraced:
        bad[os.path.relpath(path, ROOT)] = untraced
    self.assertEqual(bad, {}, "figures in no docs/results/*.json record and no config "
                     "(add a record, or generate the value)")

  def test_record_links_resolve(self):
    bad = []
    for path in _docs():
      for name in render._RECORD_LINK.findall(_read(path)):  # pylint: disable=protected-access
        if name not in self.records:
          bad.append(f"{os.path.relpath(path, ROOT)}: results.md#{name}")
    self.assertEqual(bad, [], "links to records that docs/results/ does not have")

  def test_config_quotes_match_the_config(self):
    from aps_tf.configs import base as base_config  # pylint: disable=g-import-not-at-top
    defaults = base_config.get_config()
    bad = {}
    for path in _docs():
      found = _bad_quotes(_read(path), defaults)
      if found:
        bad[os.path.relpath(path, ROOT)] = found
    self.assertEqual(bad, {})

  # The checks fail when a doc is edited by hand: a changed figure, a changed
  # quoted config value, a changed generated table.

  def test_a_changed_figure_fails(self):
    text = "The demo keeps 0.9944 test accuracy ([demo](results.md#demo))."
    self.assertEqual(_untraced(text, self.records, self.config_values), [])
    # 0.995 is in another record (the export's accuracy), not in the linked one.
    for changed in ("0.9951", "0.995"):
      (bad,) = _untraced(text.replace("0.9944", changed), self.records, self.config_values)
      self.assertEqual(bad.text, changed)
    self.assertEqual(_untraced("keeps 0.995 accuracy", self.records, self.config_values), [])

  def test_a_link_to_a_missing_record_fails(self):
    text = "Phi ends at 0.991 ([anneal](results.md#no_such_record))."
    self.assertLen(_untraced(text, self.records, self.config_values), 1)

  def test_a_changed_config_quote_fails(self):
    from aps_tf.configs import base as base_config  # pylint: disable=g-import-not-at-top
    defaults = base_config.get_config()
    self.assertEqual(_bad_quotes("`search.rescore_batches` (16) batches", defaults), [])
    self.assertLen(_bad_quotes("`search.rescore_batches` (4) batches", defaults), 1)
    self.assertLen(_bad_quotes("`search.epochs = 120`", defaults), 1)

  def test_a_changed_generated_table_is_stale(self):
    path = os.path.join(ROOT, "docs", "experiments.md")
    text = _read(path)
    self.assertIn("<!-- BEGIN GENERATED: search-recipes -->", text)
    self.assertEqual(render.regenerate(text, self.configs), text)
    edited = text.replace("| `imagenet_resnet18` | 160 (80)", "| `imagenet_resnet18` | 120 (40)")
    self.assertNotEqual(edited, text)
    self.assertEqual(render.regenerate(edited, self.configs), text)


if __name__ == "__main__":
  absltest.main()
