"""The Python API: search the widths of your Keras model from a notebook.

  import aps_tf
  result = aps_tf.search(model, train_ds, budget=aps_tf.Flops(0.5), workdir="/tmp/s")
  child = result.retrain(epochs=5).model        # or result.child_model("supernet")
  aps_tf.export(child, "/tmp/serving", search=result)

Everything goes through the code the binaries run: `search` builds the config
of configs/keras_model.py with the caller's overrides, writes the model to
WORKDIR/user_model.keras, resolves the config (`aps_tf.user_model`) and calls
`aps_tf.search.run.run`, the entry `python -m aps_tf.search` uses; `retrain`
calls `aps_tf.train.trainer.train`, `export` calls `export.exporter.export`.
A rerun with the same arguments and workdir resumes. Bad input raises an
`aps_tf.UserError` subclass naming the problem; nothing here exits the process.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any, Mapping
import weakref

from aps_tf import errors
from aps_tf import fileio

UserError = errors.UserError
# Formats `export` builds by default for a python: data source: QAT runs in a
# subprocess, which cannot see an in-process dataset.
_IN_PROCESS_FORMATS = ("saved_model", "tflite_float32", "tflite_float16", "tflite_dynamic",
                       "tflite_int8")


class ApiError(errors.UserError, ValueError):
  """A bad argument to the Python API (the message names it)."""


# -- budgets -------------------------------------------------------------------


def _fraction_or_absolute(name: str, value) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
    raise ApiError(f"{name}: expected a positive number (<= 1: a fraction of the model's, "
                   f"> 1: absolute), got {value!r}")
  return float(value)


@dataclasses.dataclass(frozen=True)
class Flops:
  """A FLOPs budget: `value` <= 1 is a fraction of the model's FLOPs, else absolute.

  Attributes:
    value: the budget (multiply-accumulates, every conv and dense layer).
    convention: 'full' (every layer) or 'search' (convs with k > 1 only).
  """
  value: float
  convention: str = "full"

  def __post_init__(self):
    _fraction_or_absolute("Flops", self.value)
    if self.convention not in ("full", "search"):
      raise ApiError(f"Flops.convention: expected 'full' or 'search', got "
                     f"{self.convention!r}")

  def overrides(self) -> dict:
    return {"search.reward.kind": "flops", "search.reward.flops_convention": self.convention,
            **_target(self.value)}


@dataclasses.dataclass(frozen=True)
class Params:
  """A parameter budget: `value` <= 1 is a fraction of the model's, else absolute."""
  value: float

  def __post_init__(self):
    _fraction_or_absolute("Params", self.value)

  def overrides(self) -> dict:
    return {"search.reward.kind": "params", **_target(self.value)}


@dataclasses.dataclass(frozen=True)
class Latency:
  """A latency budget from a measured table (`python -m aps_tf.latency build`).

  Attributes:
    table: the table file, measured for this model's search space.
    ms: the budget in milliseconds; or
    fraction: the budget as a fraction of the model's predicted latency.
    format: the LiteRT format the table was measured in ('int8', 'float32').
  """
  table: str
  ms: float | None = None
  fraction: float | None = None
  format: str = "int8"

  def __post_init__(self):
    if (self.ms is None) == (self.fraction is None):
      raise ApiError("Latency: give exactly one of ms= and fraction=")
    value = self.ms if self.ms is not None else self.fraction
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or (
        self.fraction is not None and value > 1):
      raise ApiError(f"Latency: expected ms > 0 or 0 < fraction <= 1, got {value!r}")
    if not fileio.exists(self.table):
      raise ApiError(f"Latency.table={self.table}: no such file (build one with python -m "
                     "aps_tf.latency build)")

  def overrides(self) -> dict:
    target = ({"search.reward.target": float(self.ms), "search.reward.target_fraction": None}
              if self.ms is not None else {"search.reward.target_fraction": float(self.fraction)})
    return {"search.reward.kind": "latency", "search.reward.latency_table": self.table,
            "search.reward.latency_format": self.format, **target}


def _target(value: float) -> dict:
  if value <= 1:
    return {"search.reward.target_fraction": float(value)}
  return {"search.reward.target": float(value), "search.reward.target_fraction": None}


# -- config --------------------------------------------------------------------


def _set(cfg, key: str, value) -> None:
  *path, last = key.split(".")
  node = cfg
  for part in path:
    if part not in node:
      raise ApiError(f"overrides: unknown config field {key}")
    node = node[part]
  if last not in node:
    raise ApiError(f"overrides: unknown config field {key}")
  node[last] = tuple(value) if isinstance(value, list) else value


def _data_source(data, workdir: str) -> str:
  """data.source for a dataset argument; registers in-process datasets."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from aps_tf.data import config as data_config  # pylint: disable=g-import-not-at-top
  from aps_tf.data import sources  # pylint: disable=g-import-not-at-top
  if isinstance(data, str):
    if data in data_config.DATASETS:
      return data  # a built-in dataset (build_config sets data.name)
    if fileio.isdir(data):
      return f"folder:{fileio.abspath(data)}"
    try:
      data_config.parse_source(data)
    except ValueError as e:
      raise ApiError(f"data={data!r}: not a directory, and {e}") from e
    return data
  if isinstance(data, (tf.data.Dataset, dict)):
    # One key per workdir: a rerun (resume) registers the same name again.
    return sources.register(f"workdir:{fileio.abspath(workdir)}", data)
  raise ApiError(f"data: expected a tf.data.Dataset of (image, label), a dict "
                 f"{{'train': ds, 'test': ds}}, an image folder or a source string "
                 f"(tfds:NAME, folder:DIR), got {type(data).__name__}")


def _model_file(model, workdir: str) -> tuple[str, Any]:
  """(path of the .keras file the search reads, the Keras model)."""
  import keras  # pylint: disable=g-import-not-at-top
  from aps_tf import fileio  # pylint: disable=g-import-not-at-top
  from aps_tf import user_model  # pylint: disable=g-import-not-at-top
  if isinstance(model, (str, os.PathLike)):
    path = os.fspath(model)
    return path, user_model.load(path)
  if not isinstance(model, keras.Model):
    raise ApiError(f"model: expected a keras.Model or a path to a .keras file, got "
                   f"{type(model).__name__}")
  if not model.built:
    raise ApiError(f"model {model.name!r} is not built; call it once or build it with "
                   "keras.Input(shape=...)")
  from aps_tf import models  # pylint: disable=g-import-not-at-top
  models.from_keras(model)  # unsupported layers fail here, before anything is written
  path = os.path.join(workdir, user_model.USER_MODEL_FILE)
  fileio.makedirs(workdir)
  fileio.save_keras(model, path)
  return path, model


def build_config(model_file: str, source: str, *, budget=None, steps: int | None = None,
                 overrides: Mapping[str, Any] | None = None):
  """configs/keras_model.py with the API's arguments applied, resolved.

  Args:
    model_file: the user's model, a .keras file.
    source: data.source, or a built-in dataset's name ('digits', ...).
    budget: Flops, Params or Latency (default: the config's, half the FLOPs).
    steps: total search iterations (half warm-up), or None for the config's epochs.
    overrides: {'section.field': value} applied last.

  Returns:
    The resolved ConfigDict the search runs.
  """
  from aps_tf.configs import keras_model  # pylint: disable=g-import-not-at-top
  from aps_tf import user_model  # pylint: disable=g-import-not-at-top
  cfg = keras_model.get_config()
  from aps_tf.data import config as data_config  # pylint: disable=g-import-not-at-top
  settings = ({"model.keras_file": model_file, "data.name": source, "data.source": ""}
              if source in data_config.DATASETS else
              {"model.keras_file": model_file, "data.source": source})
  if budget is not None:
    if not isinstance(budget, (Flops, Params, Latency)):
      raise ApiError(f"budget: expected aps_tf.Flops, aps_tf.Params or aps_tf.Latency, got "
                     f"{budget!r}")
    settings.update(budget.overrides())
  if steps is not None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
      raise ApiError(f"steps: expected an integer >= 2, got {steps!r}")
    settings.update({"search.epochs": steps, "search.steps_per_epoch": 1,
                     "search.warmup_epochs": steps // 2})
  settings.update(overrides or {})
  for key, value in settings.items():
    _set(cfg, key, value)
  from aps_tf.search import settings as search_settings  # pylint: disable=g-import-not-at-top
  return search_settings.resolve_config(user_model.resolve_config(cfg))


# -- results -------------------------------------------------------------------

# Child models -> the search that made them, so export() needs no second argument.
_ORIGIN: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


@dataclasses.dataclass
class Retrained:
  """A fine-tuned child: the Keras model, its metrics.json and its workdir."""
  model: Any
  metrics: dict
  workdir: str


@dataclasses.dataclass
class SearchResult:
  """What `search` returns.

  Attributes:
    arch: the picked architecture (the arch.json dict: widths, flops, params).
    workdir: the search workdir (checkpoints, logs, arch.json, config.json).
    config: the resolved config the search ran.
    model_file: the user's model as the search read it.
  """
  arch: dict
  workdir: str
  config: Any
  model_file: str

  @property
  def widths(self) -> list[int]:
    return list(self.arch["widths"])

  def child_model(self, weights: str | None = "supernet"):
    """The picked architecture as a Keras model: the user's layers, thinner.

    Args:
      weights: 'supernet' (the searched supernet's weights for this child),
        'keras' (the user's model's weights, the channels the supernet's
        ordinal projections select) or None (freshly initialised).

    Returns:
      A keras.Model with the user's layer names.

    Raises:
      ApiError: weights is none of these.
    """
    from aps_tf.models import dense  # pylint: disable=g-import-not-at-top
    if weights not in ("supernet", "keras", None):
      raise ApiError(f"weights: expected 'supernet', 'keras' or None, got {weights!r}")
    model = dense.build_from_arch(self.arch)
    if weights == "supernet":
      from aps_tf.train import supernet_init  # pylint: disable=g-import-not-at-top
      supernet_init.init_from_supernet(model, self.arch, self.workdir)
    elif weights == "keras":
      _load_user_weights(model, self)
    _ORIGIN[model] = self
    return model

  def retrain(self, epochs: int | None = None, *, workdir: str | None = None,
              init: str = "supernet", progress: bool = True,
              overrides: Mapping[str, Any] | None = None) -> Retrained:
    """Fine-tunes (init='supernet' or 'keras') or trains from scratch the picked child.

    Runs `aps_tf.train` (the retraining binary's code) on the search's data
    ('full_train'), evaluates on 'test' and writes WORKDIR/model.keras.

    Args:
      epochs: training epochs (default: the config's train.epochs).
      workdir: the retraining workdir (default: SEARCH_WORKDIR/retrain).
      init: 'supernet' (the search's weights), 'keras' (the user's model's
        first channels, train.init='keras') or 'scratch'.
      progress: show a progress bar.
      overrides: {'train.field': value} applied last.

    Returns:
      A Retrained (model, metrics, workdir).
    """
    from aps_tf.train import trainer  # pylint: disable=g-import-not-at-top
    import ml_collections  # pylint: disable=g-import-not-at-top
    if init not in ("supernet", "scratch", "keras"):
      raise ApiError(f"init: expected 'supernet', 'keras' or 'scratch', got {init!r}")
    cfg = ml_collections.ConfigDict(self.config.to_dict())
    cfg.train.init = init
    cfg.train.supernet_workdir = self.workdir if init == "supernet" else None
    if epochs is not None:
      if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ApiError(f"epochs: expected a positive integer, got {epochs!r}")
      cfg.train.epochs = epochs
    for key, value in (overrides or {}).items():
      _set(cfg, key, value)
    workdir = workdir or os.path.join(self.workdir, "retrain")
    metrics = trainer.train(cfg, os.path.join(self.workdir, "arch.json"), workdir,
                            progress=progress)
    from aps_tf import fileio  # pylint: disable=g-import-not-at-top
    model = fileio.load_keras(os.path.join(workdir, "model.keras"), compile=False)
    _ORIGIN[model] = self
    return Retrained(model, metrics, workdir)


def _load_user_weights(model, result: SearchResult) -> None:
  """The user's weights into the child, through a supernet copied from them."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from aps_tf import user_model  # pylint: disable=g-import-not-at-top
  from aps_tf.models import dense  # pylint: disable=g-import-not-at-top
  from aps_tf.models import graph_supernet  # pylint: disable=g-import-not-at-top
  from aps_tf.train import supernet_init  # pylint: disable=g-import-not-at-top
  cfg = ml_collections.ConfigDict(result.config.to_dict())
  cfg.search.sharing = "ordinal"  # the widest candidate is the user's model exactly
  net = supernet_init.build_supernet(cfg, init_weights=False)
  graph_supernet.copy_keras_weights(net, user_model.load(result.model_file),
                                    importance=cfg.model.get("channel_order"))
  weights = net.child_weights(supernet_init.arch_indices(result.arch, net))
  dense.load_child_weights(model, weights)


# -- entry points --------------------------------------------------------------


def search(model, data, *, budget=None, workdir: str | None = None, steps: int | None = None,
           overrides: Mapping[str, Any] | None = None, progress: bool = True) -> SearchResult:
  """Searches the channel widths of `model` on `data` under `budget`.

  Args:
    model: a built Keras 3 Sequential/functional model, or a .keras file.
    data: a `tf.data.Dataset` of (image, label) on the 0..255 scale (or
      {'train': ds, 'test': ds}), an image folder, a source string
      ('tfds:NAME', 'folder:DIR') or a built-in dataset's name ('digits').
    budget: aps_tf.Flops(...), aps_tf.Params(...) or aps_tf.Latency(...);
      default: half the model's FLOPs.
    workdir: where checkpoints and results go (default: a new temporary
      directory). The same call on the same workdir resumes.
    steps: total search iterations, half of them warm-up (default: the
      config's epochs over the data).
    overrides: {'section.field': value} of configs/keras_model.py, e.g.
      {'search.sharing': 'ordinal', 'data.normalization': 'unit'}.
    progress: show a progress bar.

  Returns:
    A SearchResult: `.arch`, `.child_model(weights)`, `.retrain(epochs)`.

  Raises:
    UserError: a bad argument, an unsupported layer, unreadable data, a
      budget below the smallest architecture, a workdir of another search.
  """
  workdir = (fileio.abspath(workdir) if workdir else
             fileio.make_temp_dir(tempfile.gettempdir(), "aps_tf_"))
  model_file, _ = _model_file(model, workdir)
  source = _data_source(data, workdir)
  cfg = build_config(model_file, source, budget=budget, steps=steps, overrides=overrides)
  from aps_tf.search import run  # pylint: disable=g-import-not-at-top
  arch = run.run(cfg, workdir, progress=progress, config_name="keras_model")
  return SearchResult(arch=arch, workdir=workdir, config=cfg, model_file=model_file)


def export(model, export_dir: str, *, search: SearchResult | None = None,
           model_name: str = "model", formats=None, verify: bool = True) -> dict:
  """Exports a child for TF-Serving and LiteRT (`python -m export.export_model`).

  Args:
    model: a child from `result.child_model(...)` or `result.retrain(...)`
      (a keras.Model), or a `Retrained`.
    export_dir: the model base directory; the export goes to
      EXPORT_DIR/MODEL_NAME/VERSION/ with export_manifest.json.
    search: the SearchResult the child comes from (default: the one that
      made `model`).
    model_name: the served model's name.
    formats: export formats (default: the config's; for an in-process
      dataset, without tflite_qat_int8, which runs in a subprocess).
    verify: measure parity and latency (export_report.json).

  Returns:
    The export report (or the manifest when verify=False), with `path`.
    The exported model, config and arch also stay in SEARCH_WORKDIR/export_NAME.
  """
  from aps_tf import archfile  # pylint: disable=g-import-not-at-top
  from aps_tf import fileio  # pylint: disable=g-import-not-at-top
  from aps_tf.export import exporter  # pylint: disable=g-import-not-at-top
  if isinstance(model, Retrained):
    model = model.model
  search = search or _ORIGIN.get(model)
  if search is None:
    raise ApiError("export: pass search=<the SearchResult the model comes from> (its config "
                   "says how images are preprocessed)")
  cfg = search.config
  if formats is None and str(cfg.data.get("source", "")).startswith("python:"):
    formats = [f for f in exporter.setting(cfg, "formats") if f in _IN_PROCESS_FORMATS]
  # The exporter reads a retraining workdir: model.keras, config.json, arch.json.
  workdir = os.path.join(search.workdir, f"export_{model_name}")
  fileio.makedirs(workdir)
  fileio.save_keras(model, os.path.join(workdir, "model.keras"))
  fileio.write_text(os.path.join(workdir, "config.json"), cfg.to_json_best_effort(indent=2))
  archfile.save(search.arch, os.path.join(workdir, "arch.json"))
  return exporter.export(workdir, export_dir, model_name, formats=formats, verify=verify)
