"""tf.distribute strategy from cfg.strategy, and who writes files.

'default' (one device), 'mirrored' (all local GPUs), 'multi_worker' (hosts,
from TF_CONFIG), 'tpu' (cfg.tpu address). Under multi-worker training every
worker runs the same code; only the chief writes outputs, the others write
checkpoints to a scratch directory (collective saves need every worker).
"""

from __future__ import annotations

import os

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def make_strategy(cfg) -> tf.distribute.Strategy:
  name = cfg.get("strategy", "default")
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "tpu":
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=cfg.get("tpu", "") or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise ValueError(f"unknown strategy {name!r}; expected one of {STRATEGIES}")


def task(strategy: tf.distribute.Strategy) -> tuple[str | None, int]:
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or isinstance(strategy, tf.distribute.TPUStrategy):
    return None, 0
  return resolver.task_type, int(resolver.task_id or 0)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  task_type, task_id = task(strategy)
  if task_type in (None, "chief"):
    return True
  if task_type == "worker" and task_id == 0:
    resolver = strategy.cluster_resolver
    return "chief" not in resolver.cluster_spec().as_dict()
  return False


def write_dir(directory: str, strategy: tf.distribute.Strategy) -> str:
  """`directory` on the chief, a per-worker scratch directory elsewhere."""
  if is_chief(strategy):
    return directory
  task_type, task_id = task(strategy)
  return os.path.join(directory, f".worker-{task_type}-{task_id}")
