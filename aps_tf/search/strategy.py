"""tf.distribute strategy from `config.strategy` (DESIGN §9)."""

from __future__ import annotations

import json
import os

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def make_strategy(cfg) -> tf.distribute.Strategy:
  """'default' (one device), 'mirrored', 'multi_worker' (TF_CONFIG) or 'tpu'.

  For 'tpu' the caller must also force `cfg.search.static_shapes = True`
  (`resolve_config` in `aps_tf.search.loop` does).
  """
  kind = cfg.strategy
  if kind == "default":
    return tf.distribute.get_strategy()
  if kind == "mirrored":
    return tf.distribute.MirroredStrategy()
  if kind == "multi_worker":
    if not os.environ.get("TF_CONFIG"):
      raise ValueError("strategy='multi_worker' needs the TF_CONFIG environment variable")
    return tf.distribute.MultiWorkerMirroredStrategy()
  if kind == "tpu":
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=cfg.get("tpu", ""))
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise ValueError(f"unknown strategy {kind!r}; expected one of {STRATEGIES}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """True on the task that writes the workdir (every task but non-chief workers)."""
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return True
  resolver = strategy.cluster_resolver
  task_type, task_id = resolver.task_type, resolver.task_id
  if task_type == "chief":
    return True
  has_chief = "chief" in json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
  return task_type in (None, "worker") and task_id == 0 and not has_chief


def task_tag(strategy: tf.distribute.Strategy) -> str:
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return "chief"
  r = strategy.cluster_resolver
  return f"{r.task_type}-{r.task_id}"
