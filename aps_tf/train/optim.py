"""Optimiser, learning-rate schedule and weight-decay selection (docs/method.md#picking-and-retraining).

Weight decay itself is `aps_tf.weight_decay`, which the search uses too.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up from `warmup_from` to `peak` over `warmup_steps`, then
  cosine from `peak` to `final` at `total_steps` (or constant)."""

  def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0,
               warmup_from: float | None = None, final: float = 0.0,
               schedule: str = "cosine"):
    if schedule not in ("cosine", "constant"):
      raise ValueError(f"unknown train.schedule {schedule!r}; expected 'cosine' or 'constant'")
    if total_steps < 1:
      raise ValueError(f"total_steps must be positive, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
      raise ValueError(f"warmup_steps {warmup_steps} not in [0, total_steps={total_steps}]")
    self.peak = float(peak)
    self.total_steps = int(total_steps)
    self.warmup_steps = int(warmup_steps)
    self.warmup_from = float(0.0 if warmup_from is None else warmup_from)
    self.final = float(final)
    self.schedule = schedule

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    peak = tf.constant(self.peak, tf.float32)
    if self.schedule == "constant":
      decayed = peak
    else:
      span = float(max(1, self.total_steps - self.warmup_steps))
      t = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
      decayed = self.final + 0.5 * (self.peak - self.final) * (1.0 + tf.cos(math.pi * t))
    if self.warmup_steps == 0:
      return decayed
    frac = tf.minimum(step / float(self.warmup_steps), 1.0)
    warm = self.warmup_from + (self.peak - self.warmup_from) * frac
    return tf.where(step < self.warmup_steps, warm, decayed)

  def get_config(self):
    return dict(peak=self.peak, total_steps=self.total_steps, warmup_steps=self.warmup_steps,
                warmup_from=self.warmup_from, final=self.final, schedule=self.schedule)


def make_schedule(tcfg, steps_per_epoch: int) -> WarmupCosine:
  """The retraining learning rate of a `train` section.

  Args:
    tcfg: the `train` section.
    steps_per_epoch: optimiser steps per epoch.

  Returns:
    The warm-up + cosine (or constant) schedule.
  """
  total = int(tcfg.epochs) * steps_per_epoch
  warmup = int(round(float(tcfg.warmup_epochs) * steps_per_epoch))
  # MobileNetV2's recipe: "lr 0.2 warm-up to 0.8" = start at 0.25 * peak.
  warmup_from = float(tcfg.warmup_from_fraction) * float(tcfg.lr)
  return WarmupCosine(tcfg.lr, total, min(warmup, total), warmup_from=warmup_from,
                      schedule=tcfg.schedule)


def make_optimizer(tcfg, schedule) -> keras.optimizers.Optimizer:
  """The retraining optimiser of a `train` section.

  Args:
    tcfg: the `train` section.
    schedule: its learning rate.

  Returns:
    SGD (Nesterov as configured), SGD with momentum, or Adam.

  Raises:
    ValueError: an unknown `train.optimizer`.
  """
  name = str(tcfg.optimizer).lower()
  if name == "sgd":
    return keras.optimizers.SGD(schedule, momentum=tcfg.momentum, nesterov=bool(tcfg.nesterov))
  if name == "momentum":
    return keras.optimizers.SGD(schedule, momentum=tcfg.momentum, nesterov=False)
  if name == "adam":
    return keras.optimizers.Adam(schedule)
  raise ValueError(f"unknown train.optimizer {tcfg.optimizer!r}; expected 'sgd', 'momentum' or 'adam'")
