r"""The end of `make demo`: where everything is, and what the search bought.

  python -m aps_tf.experiments.summary --search=DIR --train=DIR --export_dir=BASE/NAME/VERSION

Prints the chosen widths against the base model's, FLOPs and params against
the base, test accuracy, and the exported files with their sizes. Reads only
the files the three binaries wrote (arch.json, metrics.json,
export_report.json), so it also works on runs made by hand.
"""

import os

from absl import app
from absl import flags

from aps_tf import archfile
from aps_tf import cli
from aps_tf import errors
from aps_tf import fileio
from aps_tf import flops

_SEARCH = flags.DEFINE_string("search", None, "Search workdir (arch.json).")
_TRAIN = flags.DEFINE_string("train", None, "Retraining workdir (metrics.json).")
_EXPORT = flags.DEFINE_string("export_dir", None, "Exported version directory.")


class SummaryInputError(errors.UserError, FileNotFoundError):
  """A run directory without the file the summary reads."""


def _read_json(path: str) -> dict:
  try:
    return fileio.read_json(path)
  except OSError as e:
    raise SummaryInputError(f"{path}: cannot read ({e.strerror}); run the binary that "
                            "writes it first") from e
  except ValueError as e:
    raise SummaryInputError(f"{path}: not valid JSON: {e}") from e


def latest_version_dir(model_dir: str) -> str:
  versions = [int(d) for d in fileio.listdir(model_dir) if d.isdigit()]
  if not versions:
    raise SummaryInputError(f"{model_dir}: no exported version directory")
  return os.path.join(model_dir, str(max(versions)))


def summarize(search: str, train: str, export_dir: str) -> str:
  arch = archfile.load(os.path.join(search, "arch.json"))
  t = archfile.topology_of(arch)
  base = {c: flops.count(t, t.base_widths, c) for c in flops.CONVENTIONS}
  metrics = _read_json(os.path.join(train, "metrics.json"))
  report = _read_json(os.path.join(export_dir, "export_report.json"))
  lines = [f"aps-tf demo: {arch['model']} on {arch['input_shape']} images, "
           f"{arch['num_classes']} classes", ""]
  lines.append("| conv | base width | searched width |")
  lines.append("|---|---|---|")
  for name, b, w in zip(t.slot_names, t.base_widths, arch["widths"]):
    lines.append(f"| {name} | {b} | {w} |")
  lines += ["", "| | base | searched | ratio |", "|---|---|---|---|"]
  for conv in flops.CONVENTIONS:
    f0, f1 = base[conv]["flops"], arch["flops"][conv]
    lines.append(f"| FLOPs ({conv}) | {f0:,} | {f1:,} | {f1 / f0:.2f} |")
  p0, p1 = base["full"]["params"], arch["params"]
  lines.append(f"| params | {p0:,} | {p1:,} | {p1 / p0:.2f} |")
  lines.append(f"| test accuracy ({metrics.get('test_examples', '?')} images) | | "
               f"{metrics['test_accuracy']:.4f} | |")
  lines += ["", f"Exported files, checked on {report.get('parity_examples', '?')} test images:",
            "", "| exported file | size (KiB) | top-1 agreement with Keras | accuracy |",
            "|---|---|---|---|"]
  fmt = lambda v: "-" if v is None else f"{v:.3f}"
  for r in report["results"]:
    size = f"{r['size_bytes'] / 1024:.1f}" if r.get("size_bytes") else "-"
    lines.append(f"| {r['format']}: {r.get('file') or ''} | {size} | "
                 f"{fmt(r.get('top1_agreement'))} | {fmt(r.get('accuracy'))} |")
  lines += ["", "Where everything is:",
            f"  search workdir  {fileio.abspath(search)}  (arch.json, top_archs.json, plots/, tb/)",
            f"  retrained model {fileio.abspath(train)}  (model.keras, metrics.json)",
            f"  exported        {fileio.abspath(export_dir)}  (SavedModel, tflite/, "
            "export_report.md)"]
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    text = summarize(_SEARCH.value, _TRAIN.value, _EXPORT.value)
  except KeyError as e:
    raise SummaryInputError(f"a run file lacks the field {e}; was it written by this "
                            "aps-tf?") from e
  print(text)
  return 0


if __name__ == "__main__":
  flags.mark_flags_as_required(["search", "train", "export_dir"])
  cli.run(main)
