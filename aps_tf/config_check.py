"""Checks a whole config before a binary writes anything.

One function per section (`data`, `model`, `search`, `train`, `export`) and
`check(cfg, sections)` over them; every binary calls `check` first, so a typo
in any field ends the run with a `ConfigError` naming the field, what was
expected and what was given, before a workdir is created or touched.

Fields are checked against the schema of `configs/base.py`: a field the base
config does not have is unknown (a misspelt field would otherwise be silently
ignored), and a value must have the base value's kind (number, string,
sequence, bool). Enumerated fields are checked against their choices.
"""

from __future__ import annotations

import numbers
from typing import Any, Iterable

import ml_collections

from aps_tf import errors
from aps_tf import schema
from aps_tf.configs import base

SECTIONS = ("data", "model", "search", "train", "export")
PICK_RULES = schema.PICK_RULES
EXPORT_FORMATS = schema.EXPORT_FORMATS


def fail(field: str, expected: str, got: Any) -> None:
  raise errors.ConfigError(f"config field {field}: expected {expected}, got {got!r}")


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
  """{'a.b.c': value} of a nested dict (tuples as lists, as in config.json)."""
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(flatten(v, key + "."))
    else:
      out[key] = list(v) if isinstance(v, tuple) else v
  return out


def _overlay(into: dict, over: dict) -> None:
  for k, v in over.items():
    if isinstance(v, dict) and isinstance(into.get(k), dict):
      _overlay(into[k], v)
    else:
      into[k] = v


def with_defaults(cfg) -> ml_collections.ConfigDict:
  """A config over the defaults of configs/base.py, the one place defaults live.

  A `config.json` written before a field existed lacks it; reading it through
  this function gives the field its default, so no reader restates one.

  Args:
    cfg: a ConfigDict or a JSON dict (as read from `config.json`).

  Returns:
    A new ConfigDict with every field of configs/base.py for its dataset;
    the given values win.

  Raises:
    ConfigError: `data.name` is not a known dataset.
  """
  given = cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else dict(cfg)
  name = (given.get("data") or {}).get("name", "digits")
  check_enum("data.name", name, schema.DATASETS)
  merged = base.get_config(name).to_dict()
  _overlay(merged, given)
  return ml_collections.ConfigDict(merged)


def _kind(v: Any) -> str | None:
  if v is None:
    return None
  if isinstance(v, bool):
    return "bool"
  if isinstance(v, numbers.Number):
    return "number"
  if isinstance(v, str):
    return "string"
  if isinstance(v, (list, tuple)):
    return "sequence"
  return type(v).__name__


def _schema(dataset: str) -> dict[str, Any]:
  return flatten(base.get_config(dataset).to_dict())


def check_fields(cfg: ml_collections.ConfigDict, sections: Iterable[str] = SECTIONS) -> None:
  """Unknown fields and values of the wrong kind, against configs/base.py."""
  name = cfg.get("data", {}).get("name", "digits")
  check_enum("data.name", name, schema.DATASETS)
  fields = _schema(name)
  sections = tuple(sections)
  for key, value in flatten(cfg.to_dict()).items():
    top = key.split(".", 1)[0]
    if "." in key and top not in sections:
      continue
    if key not in fields:
      if "." not in key:
        continue  # top-level bookkeeping (config_name, ...) is free
      siblings = sorted(k.rsplit(".", 1)[1] for k in fields if k.rsplit(".", 1)[0] ==
                        key.rsplit(".", 1)[0])
      raise errors.ConfigError(f"unknown config field {key}; "
                               f"{key.rsplit('.', 1)[0]} has {', '.join(siblings)}")
    want, got = _kind(fields[key]), _kind(value)
    if want is None or got is None or want == got:
      continue
    fail(key, f"a {want} (like the default {fields[key]!r})", value)


def check_enum(field: str, value: Any, choices: Iterable[str]) -> None:
  choices = tuple(choices)
  if value not in choices:
    fail(field, f"one of {', '.join(choices)}", value)


def check_positive(field: str, value: Any, allow_zero: bool = False) -> None:
  ok = isinstance(value, numbers.Number) and not isinstance(value, bool) and (
      value >= 0 if allow_zero else value > 0)
  if not ok:
    fail(field, "a non-negative number" if allow_zero else "a positive number", value)


def check_data(d: ml_collections.ConfigDict) -> None:
  check_enum("data.name", d.name, schema.DATASETS)
  if not 0.0 < float(d.reward_fraction) < 1.0:
    fail("data.reward_fraction", "a number in (0, 1)", d.reward_fraction)
  check_positive("data.image_size", d.image_size)
  if d.get("source"):
    try:
      schema.parse_source(d.source)
    except ValueError:
      fail("data.source", "'' (the built-in data.name), tfds:NAME, folder:DIR or python:KEY",
           d.source)
  check_enum("data.normalization", d.get("normalization", "mean_std"),
             schema.NORMALIZATIONS)
  if not 0.0 < float(d.get("test_fraction", 0.2)) < 1.0:
    fail("data.test_fraction", "a number in (0, 1)", d.test_fraction)
  for f in ("channels", "num_classes"):
    if d.get(f) is not None:
      check_positive(f"data.{f}", d[f])


def check_model(m: ml_collections.ConfigDict) -> None:
  check_enum("model.init_from", m.get("init_from") or "", schema.MODEL_INITS)
  check_enum("model.channel_order", m.get("channel_order") or "none", schema.CHANNEL_ORDERS)
  if m.get("keras_file") or m.name == schema.KERAS_MODEL:
    _check_keras_model(m)  # the file itself is read (and checked) where it is loaded
    return
  if m.get("init_from"):
    fail("model.keras_file", f"the user's .keras file when model.init_from={m.init_from!r}",
         m.get("keras_file"))
  try:
    schema.family_of(m.name)
  except ValueError:
    fail("model.name", schema.model_names(), m.name)
  cands = m.candidates
  if (not isinstance(cands, (list, tuple)) or not cands or
      not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in cands)):
    fail("model.candidates", "a non-empty sequence of positive integers", cands)
  if m.get("meta_width") is not None and not (
      isinstance(m.meta_width, int) and not isinstance(m.meta_width, bool) and m.meta_width > 0):
    fail("model.meta_width", "None or a positive integer", m.meta_width)
  check_enum("model.space", m.space, schema.SPACES)
  check_enum("model.downsample_shortcut", m.downsample_shortcut, schema.DOWNSAMPLE_SHORTCUTS)
  check_enum("model.supernet_shortcut", m.supernet_shortcut, schema.SUPERNET_SHORTCUTS)
  check_enum("model.meta_init", m.meta_init, schema.META_INITS)
  if m.get("fix_last_width") and schema.family_of(m.name) == "mobilenet_v2":
    fail("model.fix_last_width", "unset or False (ResNets only)", m.fix_last_width)


def _check_keras_model(m: ml_collections.ConfigDict) -> None:
  fractions = m.get("width_fractions")
  if fractions is not None and (
      not isinstance(fractions, (list, tuple)) or not fractions or not all(
          isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f <= 1
          for f in fractions)):
    fail("model.width_fractions", "a non-empty sequence of numbers in (0, 1]", fractions)
  pinned = m.get("pinned")
  if pinned is not None and (not isinstance(pinned, (list, tuple)) or
                             not all(isinstance(p, str) for p in pinned)):
    fail("model.pinned", "a sequence of layer names", pinned)
  meta = m.get("meta_width")
  if meta is not None and meta != "sum" and (
      isinstance(meta, bool) or not isinstance(meta, (int, float)) or meta < 1):
    fail("model.meta_width", "None, 'sum' or a number >= 1 (a multiple of each layer's "
         "width) for a Keras model", meta)


def check_search(cfg: ml_collections.ConfigDict) -> None:
  s = cfg.search
  check_enum("strategy", cfg.strategy, schema.STRATEGIES)
  check_enum("search.sharing", s.sharing, schema.SHARING_MODES)
  check_enum("search.reward.kind", s.reward.kind, schema.REWARD_KINDS)
  check_enum("search.reward.flops_convention", s.reward.flops_convention, schema.FLOPS_CONVENTIONS)
  for f in ("epochs", "batch_size", "lr", "top_n", "beam_width", "checkpoint_every_steps",
            "keep_checkpoints", "log_every_steps", "steps_per_loop"):
    check_positive(f"search.{f}", s[f])
  check_positive("search.analysis_every_steps", s.analysis_every_steps, allow_zero=True)
  check_positive("search.reward.target", s.reward.target)
  fraction = s.reward.get("target_fraction")
  if fraction is not None and not (isinstance(fraction, (int, float)) and
                                   not isinstance(fraction, bool) and 0 < fraction <= 1):
    fail("search.reward.target_fraction", "None or a number in (0, 1]", fraction)
  if not 0 <= s.warmup_epochs <= s.epochs:
    fail("search.warmup_epochs", f"a number in [0, search.epochs={s.epochs}]", s.warmup_epochs)
  check_enum("search.lr_schedule", s.lr_schedule, schema.SEARCH_LR_SCHEDULES)
  check_enum("search.reward.bn", s.reward.bn, schema.REWARD_BN_MODES)
  if s.reward.kind == "latency":
    check_enum("search.reward.latency_format", s.reward.latency_format, schema.LATENCY_FORMATS)
    if not s.reward.get("latency_table"):
      fail("search.reward.latency_table", "a table file from `python -m aps_tf.latency build` "
           "when search.reward.kind='latency'", s.reward.get("latency_table"))
  check_enum("search.pick", s.pick, PICK_RULES)
  if s.pick == "best_reward" and not s.rescore:
    fail("search.rescore", "True when search.pick='best_reward' (it ranks by the re-scored "
         "reward)", s.rescore)
  if not (isinstance(s.pick_accuracy_fraction, (int, float)) and
          not isinstance(s.pick_accuracy_fraction, bool) and 0 < s.pick_accuracy_fraction <= 1):
    fail("search.pick_accuracy_fraction", "a number in (0, 1]", s.pick_accuracy_fraction)
  check_positive("search.pick_accuracy_se", s.pick_accuracy_se, allow_zero=True)
  check_positive("search.controller.weight_decay", s.controller.weight_decay, allow_zero=True)
  check_enum("search.controller.kind", s.controller.kind, schema.POLICY_KINDS)
  if cfg.model.supernet_shortcut == "pairwise" and (s.static_shapes or cfg.strategy == "tpu"):
    fail("search.static_shapes", "False with model.supernet_shortcut='pairwise' (dynamic "
         "shapes only)", s.static_shapes)
  check_positive("search.rescore_batches", s.rescore_batches)
  check_enum("search.phi_objective", s.phi_objective, schema.PHI_OBJECTIVES)
  if s.jit_compile and not s.static_shapes and cfg.strategy != "tpu":
    fail("search.static_shapes", "True when search.jit_compile=True (XLA compiles the "
         "static-shape path only)", s.static_shapes)
  if not (isinstance(s.phi_every, int) and s.phi_every >= 1):
    fail("search.phi_every", "an integer >= 1", s.phi_every)
  check_positive("search.phi_lr", s.phi_lr, allow_zero=True)
  check_positive("search.phi_weight", s.phi_weight)
  check_positive("search.phi_weight_decay", s.phi_weight_decay, allow_zero=True)
  if not 0 <= s.phi_momentum < 1:
    fail("search.phi_momentum", "a number in [0, 1)", s.phi_momentum)
  if not 0 <= s.lr_min <= s.lr:
    fail("search.lr_min", f"a number in [0, search.lr={s.lr}]", s.lr_min)


def check_train(cfg: ml_collections.ConfigDict) -> None:
  t = cfg.train
  check_enum("strategy", cfg.strategy, schema.STRATEGIES)
  check_enum("train.optimizer", str(t.optimizer).lower(), schema.TRAIN_OPTIMIZERS)
  check_enum("train.schedule", t.schedule, schema.TRAIN_SCHEDULES)
  check_enum("train.init", t.init, schema.TRAIN_INITS)
  if t.init == "keras" and not cfg.model.get("keras_file"):
    fail("model.keras_file", "the user's .keras file when train.init='keras'",
         cfg.model.get("keras_file"))
  if t.init == "supernet" and not t.supernet_workdir:
    fail("train.supernet_workdir", "a search workdir when train.init='supernet'",
         t.supernet_workdir)
  for f in ("epochs", "batch_size", "lr", "checkpoint_every_steps", "log_every_steps",
            "keep_checkpoints", "steps_per_loop"):
    check_positive(f"train.{f}", t[f])
  for f in ("weight_decay", "warmup_epochs", "momentum"):
    check_positive(f"train.{f}", t[f], allow_zero=True)
  if not 0.0 <= float(t.label_smoothing) < 1.0:
    fail("train.label_smoothing", "a number in [0, 1)", t.label_smoothing)


def check_export(cfg: ml_collections.ConfigDict) -> None:
  e = cfg.get("export") or {}
  formats = e.get("formats")
  if formats is not None:
    check_formats(formats, "export.formats")
  for f in ("representative_examples", "parity_examples", "latency_runs"):
    if e.get(f) is not None:
      check_positive(f"export.{f}", e[f])
  if e.get("qat_epochs") is not None:
    check_positive("export.qat_epochs", e["qat_epochs"], allow_zero=True)


def check_formats(formats, field: str = "--formats") -> tuple[str, ...]:
  if isinstance(formats, str):
    formats = [f.strip() for f in formats.split(",") if f.strip()]
  formats = tuple(formats)
  unknown = [f for f in formats if f not in EXPORT_FORMATS]
  if unknown or not formats:
    fail(field, f"some of {', '.join(EXPORT_FORMATS)}", ",".join(formats))
  return formats


_CHECKS = {"data": lambda c: check_data(c.data), "model": lambda c: check_model(c.model),
           "search": check_search, "train": check_train, "export": check_export}


def check(cfg: ml_collections.ConfigDict, sections: Iterable[str] = SECTIONS) -> None:
  """Checks `sections` of cfg (schema, kinds, enums, ranges); raises ConfigError."""
  sections = tuple(sections)
  check_fields(cfg, sections)
  cfg = with_defaults(cfg)  # a field left out takes its default; the rest is checked as given
  if {"search", "train"} & set(sections):
    check_enum("mixed_precision", cfg.mixed_precision, schema.PRECISION_POLICIES)
  for name in sections:
    _CHECKS[name](cfg)
