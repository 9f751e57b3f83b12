"""The search's settings from its config: checked config, batching, learning rate.

`resolve_config` checks a config once and applies the settings a strategy
forces; `batching` and `search_lr` derive the step counts and the supernet's
learning-rate schedule the task is built with.
"""

from __future__ import annotations

import keras
import ml_collections

from aps_tf import config_check
from aps_tf import data
from aps_tf import errors

ConfigError = errors.ConfigError
# The config sections a search reads (the rest may differ on resume).
SECTIONS = ("data", "model", "search")
_RESOLVED: list[ml_collections.ConfigDict] = []  # by identity: checked in this process


def resolve_config(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks a search config once and completes it; applies forced settings.

  Args:
    cfg: a search config (from a config file, or a saved `config.json`).

  Returns:
    A new ConfigDict over the defaults of configs/base.py (TPU: static
    shapes forced). Resolving a resolved config returns it unchanged, so a
    process checks each config once.

  Raises:
    ConfigError: a field is unknown, of the wrong kind or out of range.
  """
  if any(c is cfg for c in _RESOLVED):
    return cfg
  config_check.check(cfg)  # every section: a typo in train.* should not wait for the search
  cfg = config_check.with_defaults(cfg)
  if cfg.strategy == "tpu":
    cfg.search.static_shapes = True
  _RESOLVED.append(cfg)
  return cfg


def search_lr(s, steps_per_epoch: int, total_steps: int):
  """The supernet optimiser's learning rate (a float or a Keras schedule)."""
  if s.lr_schedule == "cosine":
    return keras.optimizers.schedules.CosineDecay(
        s.lr, max(1, total_steps), alpha=float(s.lr_min) / s.lr if s.lr else 0.0)
  boundaries = [int(e) * steps_per_epoch for e in s.lr_decay_epochs]
  values = [s.lr * s.lr_decay**k for k in range(len(boundaries) + 1)]
  return (keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
          if boundaries else s.lr)


def batching(cfg, info: data.DatasetInfo, num_replicas: int) -> tuple[int, int]:
  """(global batch, steps per epoch) of a search, checked against the replicas and data."""
  s = cfg.search
  global_batch = int(s.batch_size)
  if global_batch % num_replicas:
    raise ConfigError(f"search.batch_size={global_batch} is not divisible by "
                      f"{num_replicas} replicas")
  steps_per_epoch = int(s.steps_per_epoch or info.split_sizes["train"] // global_batch)
  if steps_per_epoch < 1:
    raise ConfigError(f"search.batch_size={global_batch} exceeds the train split "
                      f"({info.split_sizes['train']} examples)")
  return global_batch, steps_per_epoch
