r"""Generates the parts of the docs that must not drift: results and configs.

  python tools/render_docs.py           # rewrite docs/results.md and every generated block
  python tools/render_docs.py --check   # exit 1 naming what is stale (tests/test_docs.py)

Two sources, nothing typed by hand:

* Results records, `docs/results/<name>.json`: one measurement each, with the
  exact command, date, machine, software versions and its numbers
  (`RECORD_KEYS`). docs/results.md is rendered from all of them: per record its
  provenance and its `results` as a table (a flat dict as name | value, a list
  of row dicts as one row each).
* The shipped configs (`aps_tf.configs`) and the FLOPs counter: the
  configuration tables in README.md and docs/*.md live between
  `<!-- BEGIN GENERATED: NAME -->` and `<!-- END GENERATED: NAME -->` markers
  and are regenerated from `get_config()` of every shipped config.

`figures()` defines what counts as a measured figure in prose; the tests
require each to come from a record (or a config value, or `ALLOWED_FIGURES`).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORDS_DIR = os.path.join(ROOT, "docs", "results")
RESULTS_MD = os.path.join(ROOT, "docs", "results.md")
DOCS = ("README.md", "docs/*.md")

REQUIRED_KEYS = ("title", "command", "date", "machine", "versions", "results")
RECORD_KEYS = REQUIRED_KEYS + ("seeds", "notes")

BEGIN = re.compile(r"<!-- BEGIN GENERATED: ([a-z0-9_-]+) -->\n")
END = "<!-- END GENERATED: {} -->"

# ---------------------------------------------------------------------------
# Records


class RecordError(ValueError):
  """A results record that does not have the documented format."""


def load_records(directory: str = RECORDS_DIR) -> dict[str, dict]:
  """Every record in DIRECTORY by name (file name without .json), validated.

  Raises:
    RecordError: naming the file, and the key that is missing or malformed.
  """
  records = {}
  for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
    name = os.path.basename(path)[:-len(".json")]
    try:
      with open(path) as f:
        record = json.load(f)
    except json.JSONDecodeError as e:
      raise RecordError(f"{path}: not JSON ({e})") from None
    if not isinstance(record, dict):
      raise RecordError(f"{path}: expected an object, got {type(record).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in record]
    unknown = sorted(set(record) - set(RECORD_KEYS))
    if missing or unknown:
      raise RecordError(f"{path}: missing keys {missing}, unknown keys {unknown}; "
                        f"expected {list(RECORD_KEYS)}")
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(record["date"])):
      raise RecordError(f"{path}: date {record['date']!r}, expected YYYY-MM-DD")
    results = record["results"]
    if isinstance(results, list):
      if not results or not all(isinstance(r, dict) for r in results):
        raise RecordError(f"{path}: results is a list, expected a non-empty list of objects")
    elif not isinstance(results, dict) or not results:
      raise RecordError(f"{path}: results must be a non-empty object or list of objects")
    records[name] = record
  return records


def record_numbers(records: dict[str, dict]) -> list[float]:
  """Every number in every record's results (nested lists and dicts too)."""
  out = []

  def walk(x):
    if isinstance(x, bool):
      return
    if isinstance(x, (int, float)):
      out.append(float(x))
    elif isinstance(x, dict):
      for v in x.values():
        walk(v)
    elif isinstance(x, list):
      for v in x:
        walk(v)
    elif isinstance(x, str):  # numbers inside string cells ("0.969 +- 0.008", "0.06-0.27")
      out.extend(float(t.replace(",", "")) for t in re.findall(r"\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?", x))

  for r in records.values():
    walk(r["results"])
  return out


def _cell(x) -> str:
  if x is None:
    return "-"
  if isinstance(x, float):
    return repr(x) if abs(x) < 1e6 or x != int(x) else f"{x:.4g}"
  if isinstance(x, (list, dict)):
    return "`" + json.dumps(x) + "`"
  return str(x).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list]) -> list[str]:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
  return lines


def render_record(name: str, r: dict) -> list[str]:
  """Markdown of one record: anchor, title, provenance, the results table."""
  out = [f'<a id="{name}"></a>', f"## {r['title']}", ""]
  out += ["```sh", r["command"].rstrip(), "```", ""]
  versions = ", ".join(f"{k} {v}" for k, v in r["versions"].items())
  out.append(f"Record `docs/results/{name}.json`; {r['date']}; {r['machine']}; {versions}.")
  if "seeds" in r:
    out[-1] += f" Seeds: {r['seeds']}."
  if r.get("notes"):
    out += ["", r["notes"]]
  out.append("")
  res = r["results"]
  if isinstance(res, dict):
    out += _table(["result", "value"], [[k, v] for k, v in res.items()])
  else:
    keys = []
    for row in res:
      keys += [k for k in row if k not in keys]
    out += _table(keys, [[row.get(k) for k in keys] for row in res])
  return out + [""]


def render_results(records: dict[str, dict]) -> str:
  lines = ["# Measured results", "",
           "<!-- Generated by `python tools/render_docs.py` from docs/results/*.json;",
           "     edit the records, not this file. -->", "",
           "Every measured figure in README.md and docs/ comes from one of these records.",
           "Each gives the exact command, the date, the machine and the software",
           "versions; a record's notes say when the machine was shared with other",
           "jobs (times taken under load are noisy; ratios, counts, sizes and",
           "accuracies are not affected).", ""]
  lines += [f"- [{r['title']}](#{name})" for name, r in records.items()]
  lines.append("")
  for name, r in records.items():
    lines += render_record(name, r)
  return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------
# Configs


def shipped_configs() -> dict[str, object]:
  """name -> ConfigDict of every shipped config, from the installed package."""
  if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
  import importlib  # pylint: disable=g-import-not-at-top
  from aps_tf import config_names  # pylint: disable=g-import-not-at-top
  return {n: importlib.import_module(f"aps_tf.configs.{n}").get_config()
          for n in config_names.names()}


def config_numbers(configs: dict[str, object]) -> list[float]:
  """Every numeric leaf of every shipped config (config-derived values)."""
  out = []

  def walk(x):
    if isinstance(x, bool) or x is None:
      return
    if isinstance(x, (int, float)):
      out.append(float(x))
    elif hasattr(x, "items"):
      for _, v in x.items():
        walk(v)
    elif isinstance(x, (list, tuple)):
      for v in x:
        walk(v)

  for c in configs.values():
    walk(c)
  return out


def _num(x) -> str:
  if isinstance(x, float):
    if x == 0:
      return "0"
    if abs(x) >= 1e5 or abs(x) < 1e-2:
      m, e = f"{x:.4g}".split("e") if "e" in f"{x:.4g}" else (f"{x:.4g}", None)
      if e is None:
        return f"{x:.4g}"
      return f"{m}e{int(e)}"
    return f"{x:.4g}"
  return str(x)


def _lr_schedule(s) -> str:
  if s.lr_schedule == "cosine":
    return f"cosine to {_num(s.lr_min)}"
  return f"x{_num(s.lr_decay)} at epochs {', '.join(str(e) for e in s.lr_decay_epochs)}"


def _cands(c) -> str:
  cands = "{" + ", ".join(str(x) for x in c.model.candidates) + "}"
  if c.model.stage_factors:
    cands += " x {" + ", ".join(_num(x) for x in c.model.stage_factors) + "}"
  return cands


def _summary(name: str) -> str:
  """The first line of a shipped config's module docstring."""
  import importlib  # pylint: disable=g-import-not-at-top
  doc = importlib.import_module(f"aps_tf.configs.{name}").__doc__ or ""
  return doc.strip().splitlines()[0].rstrip(".") if doc.strip() else ""


def _meta_width(c) -> str:
  if c.model.meta_width is not None:
    return str(c.model.meta_width) + (" x factor" if c.model.stage_factors else "")
  return f"{sum(c.model.candidates)} (sum)"


def block_configs(configs) -> list[str]:
  """The shipped configs: what each is, data, space and budget."""
  rows = []
  for name, c in configs.items():
    r = c.search.reward
    if r.kind == "latency":
      budget = f"{_num(r.target)} ms ({r.latency_format} LiteRT)"
    elif r.kind == "flops":
      budget = f"{_num(r.target)} FLOPs ({r.flops_convention})"
    else:
      budget = f"{_num(r.target)} params"
    rows.append([f"`{name}`", _summary(name), c.data.name, _cands(c), _meta_width(c),
                 c.model.space, budget])
  return _table(["config", "what", "data", "candidates", "meta width", "space", "budget"],
                rows)


def block_search_recipes(configs) -> list[str]:
  """The search recipe of every shipped config."""
  rows = []
  for name, c in configs.items():
    s = c.search
    rows.append([f"`{name}`", f"{s.epochs} ({s.warmup_epochs})",
                 s.steps_per_epoch if s.steps_per_epoch else "one pass", s.batch_size,
                 f"{_num(s.lr)}, {_lr_schedule(s)}", _num(s.weight_decay),
                 f"{_num(s.phi_lr)}, every {s.phi_every}", _num(s.noise_std),
                 _num(s.controller.lr), _num(s.controller.entropy_weight),
                 f"{_num(s.reward.alpha)}, {_num(s.reward.beta)}",
                 f"{s.top_n} of {s.beam_width}, {s.rescore_batches}"])
  return _table(["config", "epochs (warm-up)", "iterations per epoch", "batch",
                 "lr, schedule", "weight decay", "tau, Phi step", "P/Q noise",
                 "controller lr", "entropy", "alpha, beta", "top-N of beam, rescore batches"],
                rows)


def block_retrain_recipes(configs) -> list[str]:
  """The retraining recipe of every shipped config."""
  rows = []
  for name, c in configs.items():
    t = c.train
    warm = "-"
    if t.warmup_epochs:
      warm = f"{_num(t.warmup_epochs)} epochs from {_num(t.warmup_from_fraction)} x lr"
    rows.append([f"`{name}`", t.epochs, t.batch_size,
                 t.optimizer + (" nesterov" if t.nesterov else ""), _num(t.lr), t.schedule,
                 warm, _num(t.weight_decay), "yes" if t.decay_bn_and_bias else "no",
                 _num(t.label_smoothing)])
  return _table(["config", "epochs", "batch", "optimizer", "lr", "schedule", "warm-up",
                 "weight decay", "decay on BN/bias", "label smoothing"], rows)


def block_base_flops(configs) -> list[str]:
  """Base models' FLOPs (full convention) and params, from the counter."""
  del configs
  if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
  from aps_tf import flops  # pylint: disable=g-import-not-at-top
  from aps_tf.models import topology as topo  # pylint: disable=g-import-not-at-top
  rows = []
  for model, size, classes in (("resnet20", 32, 10), ("resnet56", 32, 10),
                               ("resnet18", 224, 1000), ("mobilenet_v2", 224, 1000)):
    t = topo.build_topology(model, (size, size, 3), classes)
    full = flops.count(t, t.base_widths, "full")
    search = flops.count(t, t.base_widths, "search")
    rows.append([f"{model}, {size}x{size}", f"{full['flops']:,}", f"{search['flops']:,}",
                 f"{full['params']:,}"])
  return _table(["model", "FLOPs (full)", "FLOPs (search)", "params"], rows)


BLOCKS = {
    "configs": block_configs,
    "search-recipes": block_search_recipes,
    "retrain-recipes": block_retrain_recipes,
    "base-flops": block_base_flops,
}


def doc_paths() -> list[str]:
  paths = []
  for pattern in DOCS:
    paths += sorted(glob.glob(os.path.join(ROOT, pattern)))
  return paths


def regenerate(text: str, configs, path: str = "") -> str:
  """TEXT with every generated block rewritten from the configs."""
  out, pos = [], 0
  for m in BEGIN.finditer(text):
    name = m.group(1)
    if name not in BLOCKS:
      raise ValueError(f"{path}: unknown generated block {name!r}; expected one of "
                       f"{sorted(BLOCKS)}")
    end = text.find(END.format(name), m.end())
    if end < 0:
      raise ValueError(f"{path}: {m.group(0).strip()} has no {END.format(name)}")
    out.append(text[pos:m.end()])
    out.append("\n".join(BLOCKS[name](configs)) + "\n")
    pos = end
  out.append(text[pos:])
  return "".join(out)


def outputs() -> dict[str, str]:
  """path -> the content it should have."""
  records = load_records()
  want = {RESULTS_MD: render_results(records)}
  configs = shipped_configs()
  for path in doc_paths():
    if path == RESULTS_MD:
      continue
    with open(path) as f:
      text = f.read()
    if BEGIN.search(text):
      want[path] = regenerate(text, configs, path)
  return want


def stale() -> list[str]:
  """Files whose content differs from what the records and configs give."""
  bad = []
  for path, text in outputs().items():
    current = open(path).read() if os.path.exists(path) else None
    if current != text:
      bad.append(os.path.relpath(path, ROOT))
  return bad


# ---------------------------------------------------------------------------
# Figures in prose

_UNITS = (r"%|x\b|×|ms\b|s\b|min\b|h\b|KiB\b|MiB\b|MB\b|GB\b|images/s\b|TFLOP\b|PFLOP\b|"
          r"MFLOPs\b|GFLOPs\b|M\b|G\b|k\b")
_FIGURE = re.compile(
    r"(?<![\w.§/-])"  # not inside a word, a version, a path or a section number
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:e[-+]?\d+)?)"
    r"(?P<unit>\s?(?:" + _UNITS + r"))?"
    r"(?![\w.]*\d)")
# Prose context that makes a number a name, not a measurement.
_NOT_FIGURE_BEFORE = re.compile(
    r"(Python|TensorFlow|Keras|tensorflow|keras|Eq\.|Theorem|Table|Figure|§|version|v|"
    r"ResNet-|MobileNetV|NeurIPS|ai-edge-litert|torch|setuptools)\s?$")


class Figure:
  """One measured-looking number in a document."""

  def __init__(self, text: str, unit: str, line: int):
    self.text, self.unit, self.line = text, unit, line
    self.value = float(text.replace(",", ""))
    mantissa, _, exponent = text.lower().replace(",", "").partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    # Half a unit in the last printed place: what rounding to this text allows.
    self.tolerance = 0.5 * 10.0**(int(exponent or 0) - decimals) * (1 + 1e-9)

  def __repr__(self):
    return f"{self.text}{self.unit} (line {self.line})"

  def matches(self, x: float) -> bool:
    """X printed at this figure's precision gives this figure (x100 for a %)."""
    if abs(x - self.value) <= self.tolerance:
      return True
    return self.unit == "%" and abs(100 * x - self.value) <= self.tolerance


def strip_non_prose(text: str) -> str:
  """TEXT with code, generated blocks, comments, link targets and URLs blanked.

  Lines are kept (blanked, not removed) so figures keep their line numbers.
  """
  def blank(m):
    return re.sub(r"[^\n]", " ", m.group(0))

  text = re.sub(r"<!-- BEGIN GENERATED: ([a-z0-9_-]+) -->.*?<!-- END GENERATED: \1 -->",
                blank, text, flags=re.S)
  text = re.sub(r"```.*?```", blank, text, flags=re.S)
  text = re.sub(r"<!--.*?-->", blank, text, flags=re.S)
  text = re.sub(r"`[^`\n]*`", blank, text)
  text = re.sub(r"\]\([^)]*\)", blank, text)
  text = re.sub(r"https?://\S+", blank, text)
  return text


def figures(text: str, prose_only: bool = True) -> list[Figure]:
  """The figures of TEXT: what a reader takes for a measured number.

  A figure is, outside fenced code, inline code, generated blocks, HTML
  comments, link targets and URLs: a decimal number (0.9944), a number in
  scientific notation (2e-5), an integer with thousands separators
  (40,813,194), or a number with a unit (%, x, ms, s, min, h, KiB, MB, ...).
  Plain integers without a unit (19 convs, 2 cores), dimensions (3x3,
  32x32x3), version numbers and numbers after Eq./Theorem/Table/§ are not.
  """
  if prose_only:
    text = strip_non_prose(text)
  found = []
  for m in _FIGURE.finditer(text):
    num, unit = m.group("num"), (m.group("unit") or "").strip()
    plain_int = re.fullmatch(r"\d+", num) is not None
    if plain_int and not unit:
      continue
    start = m.start()
    if _NOT_FIGURE_BEFORE.search(text[max(0, start - 16):start]):
      continue
    after = text[m.end("num"):m.end("num") + 2]
    if re.match(r"x\d", after) or re.match(r"[x×]\d", text[m.end("num"):m.end("num") + 2]):
      continue  # a dimension, 3x3 / 32x32
    if start > 0 and text[start - 1] in "x×" and start > 1 and text[start - 2].isdigit():
      continue
    found.append(Figure(num, unit, text.count("\n", 0, start) + 1))
  return found


_RECORD_LINK = re.compile(r"results\.md#([A-Za-z0-9_-]+)")


def paragraph_figures(text: str) -> list[tuple[list[Figure], list[str]]]:
  """(figures, names of the records the paragraph links) per paragraph of TEXT.

  A figure in a paragraph that links records (`results.md#NAME`) must come
  from those records; one in a paragraph without such links, from any.
  """
  prose = strip_non_prose(text)  # same length and offsets as TEXT
  out = []
  for m in re.finditer(r"(?:[^\n]|\n(?!\s*\n))+", prose):
    figs = figures(m.group(0), prose_only=False)
    if not figs:
      continue
    line0 = prose.count("\n", 0, m.start())
    for f in figs:
      f.line += line0
    out.append((figs, _RECORD_LINK.findall(text[m.start():m.end()])))
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--check", action="store_true",
                      help="write nothing; exit 1 when a generated file is stale")
  args = parser.parse_args(argv)
  try:
    want = outputs()
  except (RecordError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  bad = []
  for path, text in want.items():
    current = open(path).read() if os.path.exists(path) else None
    if current == text:
      continue
    bad.append(os.path.relpath(path, ROOT))
    if not args.check:
      with open(path, "w") as f:
        f.write(text)
  if args.check and bad:
    print("stale (run `python tools/render_docs.py`): " + ", ".join(bad), file=sys.stderr)
    return 1
  for path in bad:
    print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
