"""The one training core of search and retraining (Orbit's controller shape).

A `Task` owns the state (models, optimisers, the step counter, the input
iterators, all in one `tf.train.Checkpoint`) and one traced step. The
`Runner` owns the loop: it runs up to `steps_per_loop` steps inside one
`tf.function` (`for _ in tf.range(n)`, so one host synchronisation per loop
and one trace for every loop length), and only at loop boundaries reads the
task's metrics, stops on a non-finite value before anything after it is
saved, writes metrics.jsonl and TensorBoard scalars, runs the task's
periodic hook and saves through `tf.train.CheckpointManager`.

Loop boundaries fall on every multiple of the logging, hook and checkpoint
intervals (a loop is cut short to reach the next one), so what is logged or
saved at step k does not depend on `steps_per_loop`.

Workdir layout shared by search and retraining (docs/internals.md):
config.json, ckpt/ (CheckpointManager; the checkpoint holds the input
iterators where TF can save them), tb/ (TensorBoard, with the HParams
plugin's record of the run's configuration), metrics.jsonl (one JSON object
per record; on resume the records after the restored step are dropped, so
a killed-and-resumed run has one history).
"""

from __future__ import annotations

import abc
import json
import math
import os
import time
from typing import Any, Callable

from absl import logging
import tensorflow as tf

from aps_tf import config_check
from aps_tf import errors
from aps_tf import fileio


def num_correct(logits, labels) -> tf.Tensor:
  """float32 count of argmax hits: the one accuracy numerator of search and retraining."""
  hits = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), tf.cast(labels, tf.int32))
  return tf.reduce_sum(tf.cast(hits, tf.float32))


def reset_every(metrics, step, every: int) -> None:
  """In-graph: zero the metrics' variables when `step` (steps done) is a multiple of `every`.

  Called at the start of each step, it makes a metric the mean since the last
  multiple of `every` (the last record), whatever the loop boundaries; with
  the metrics' variables in the checkpoint, a resumed run records the same.
  """
  keep = tf.cast(step % every != 0, tf.float32)
  for m in metrics:
    for v in m.variables:
      v.assign(v * tf.cast(keep, v.dtype))


class NonFiniteError(errors.UserError, RuntimeError):
  """A monitored metric became NaN/inf; the last good checkpoint is kept."""


class Task(abc.ABC):
  """What the Runner drives.

  Subclasses set `step` (an int64 variable, the global step), `checkpoint`
  (a `tf.train.Checkpoint` holding every piece of state, the step included)
  and implement `train_step`, which runs in cross-replica context inside the
  Runner's traced loop and accumulates into the task's metrics.
  """

  step: tf.Variable
  checkpoint: tf.train.Checkpoint
  # Metric names that must stay finite (checked once per loop).
  finite: tuple[str, ...] = ("loss",)

  @abc.abstractmethod
  def train_step(self, iterators) -> None:
    """One step (graph code): consumes from `iterators`, updates state and metrics."""

  @abc.abstractmethod
  def iterators(self) -> Any:
    """The input iterators (a nest); created once, after any restore."""

  def prepare_input(self) -> None:
    """Host code before a restore: attach checkpointable input iterators."""

  def train_loop_begin(self) -> None:
    """Host code before a loop (resets the loop's metrics)."""

  @abc.abstractmethod
  def train_loop_end(self) -> dict[str, Any]:
    """Host code after a loop: the loop's metrics as Python numbers."""

  def at_interval(self, step: int, log: "MetricsLog") -> None:
    """Host code every `hook_every` steps (analysis probes)."""

  def summaries(self, record: dict[str, Any]) -> None:
    """TensorBoard summaries of a record's non-scalar fields (inside its writer and step)."""


class MetricsLog:
  """metrics.jsonl (one JSON object per record) mirrored to TensorBoard (tb/).

  Every numeric field becomes a scalar `KIND/FIELD`; the task's `summaries`
  (given at open) write the others (the search: Phi per layer, the decision
  probabilities image), and `hparams` the run's record for the HParams
  dashboard. On open, records newer than `resume_step` are dropped (a kill
  between a record and its checkpoint would otherwise repeat them). Any
  filesystem (aps_tf.fileio).
  """

  def __init__(self, workdir: str, resume_step: int, enabled: bool = True,
               hparams: dict[str, Any] | None = None,
               summaries: Callable[[dict[str, Any]], None] | None = None):
    self.enabled = enabled
    self.summaries = summaries
    self.path = os.path.join(workdir, "metrics.jsonl")
    if not enabled:
      return
    kept = []
    if fileio.exists(self.path):
      for line in fileio.read_text(self.path).splitlines(keepends=True):
        try:
          rec = json.loads(line)
        except json.JSONDecodeError:
          continue  # a line cut by a kill
        if rec.get("step", 0) <= resume_step:
          kept.append(line if line.endswith("\n") else line + "\n")
    fileio.write_text(self.path, "".join(kept))
    self._file = tf.io.gfile.GFile(self.path, "a")
    self._writer = tf.summary.create_file_writer(os.path.join(workdir, "tb"))
    if hparams:
      from tensorboard.plugins.hparams import api as hp  # pylint: disable=g-import-not-at-top
      clean = {k: (v if isinstance(v, (bool, int, float, str)) else str(v))
               for k, v in hparams.items()}
      with self._writer.as_default(step=int(resume_step)):
        hp.hparams(clean, trial_id=os.path.basename(str(workdir).rstrip("/")) or None)

  def write(self, record: dict[str, Any]) -> None:
    if not self.enabled:
      return
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    with self._writer.as_default(step=int(record["step"])):
      kind = record.get("kind", "train")
      for k, v in record.items():
        if k == "step":
          continue
        if isinstance(v, (int, float)) and not isinstance(v, bool):
          tf.summary.scalar(f"{kind}/{k}", float(v))
      if self.summaries is not None:
        self.summaries(record)

  def close(self) -> None:
    if self.enabled:
      self._file.close()
      self._writer.flush()


def read_metrics(workdir: str) -> list[dict]:
  """The records of WORKDIR/metrics.jsonl (a line cut by a kill is skipped)."""
  path = os.path.join(workdir, "metrics.jsonl")
  out = []
  if fileio.exists(path):
    for line in fileio.read_text(path).splitlines():
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError:
        pass
  return out


def flat_hparams(config: dict, keys: tuple[str, ...]) -> dict[str, Any]:
  """The dotted `keys` of a config dict as HParams values (lists and None as text)."""
  flat = config_check.flatten(config)
  return {k: (flat[k] if isinstance(flat[k], (bool, int, float, str)) else str(flat[k]))
          for k in keys if k in flat}


class Runner:
  """Runs a Task to `total_steps` in traced multi-step loops; checkpoints and logs."""

  def __init__(self, task: Task, workdir: str, *, total_steps: int, steps_per_loop: int,
               checkpoint_every: int, log_every: int, hook_every: int = 0,
               max_to_keep: int = 3, ckpt_dir: str | None = None,
               init_fn: Callable[[], None] | None = None, chief: bool = True,
               hparams: dict[str, Any] | None = None, progress: Callable | None = None,
               extra_record: Callable[[int], dict] | None = None):
    self.task = task
    self.workdir = workdir
    self.total_steps = int(total_steps)
    self.steps_per_loop = max(1, int(steps_per_loop))
    self.checkpoint_every = max(1, int(checkpoint_every))
    self.log_every = max(1, int(log_every))
    self.hook_every = int(hook_every)
    self.chief = chief
    self.hparams = hparams
    self.progress = progress
    self.extra_record = extra_record
    self.manager = tf.train.CheckpointManager(
        task.checkpoint, ckpt_dir or os.path.join(workdir, "ckpt"), max_to_keep=max_to_keep,
        step_counter=task.step, checkpoint_interval=self.checkpoint_every, init_fn=init_fn)
    self.loop_traces = 0
    self._loop = tf.function(self._loop_impl)

  # -- the traced loop ------------------------------------------------------
  def _loop_impl(self, iterators, num_steps):
    self.loop_traces += 1
    for _ in tf.range(num_steps):
      self.task.train_step(iterators)
      self.task.step.assign_add(1)

  def run_steps(self, num_steps: int) -> dict[str, Any]:
    """One loop of `num_steps` steps (no logging or saving); the loop's metrics."""
    self.task.train_loop_begin()
    self._loop(self.task.iterators(), tf.constant(int(num_steps), tf.int32))
    return self.task.train_loop_end()

  # -- host side ------------------------------------------------------------
  def restore_or_initialize(self) -> int:
    """Restores the latest checkpoint (or runs init_fn); returns the step."""
    self.task.prepare_input()
    path = self.manager.restore_or_initialize()
    step = int(self.task.step.numpy())
    if path:
      logging.warning("restored %s at step %d", path, step)
    return step

  def _loop_length(self, step: int, end: int) -> int:
    n = min(self.steps_per_loop, end - step)
    for every in (self.log_every, self.checkpoint_every, self.hook_every):
      if every > 0:
        n = min(n, every - step % every)
    return max(1, n)

  def run(self, stop_at: int | None = None) -> dict[str, Any]:
    """Runs (or resumes) to the end, or to `stop_at` then checkpoints; the last loop's record."""
    step = self.restore_or_initialize()
    if step > self.total_steps:
      raise errors.WorkdirError(
          f"checkpoint in {self.manager.directory} is at step {step}, past this config's "
          f"{self.total_steps} steps")
    end = self.total_steps if stop_at is None else min(int(stop_at), self.total_steps)
    log = MetricsLog(self.workdir, step, enabled=self.chief, hparams=self.hparams,
                     summaries=self.task.summaries)
    if self.manager.latest_checkpoint is None:
      self.manager.save(checkpoint_number=step)  # a good checkpoint to fall back to
    last: dict[str, Any] = {}
    t0 = time.time()
    try:
      while step < end:
        n = self._loop_length(step, end)
        out = self.run_steps(n)
        bad = {k: out[k] for k in self.task.finite if k in out and not math.isfinite(out[k])}
        if bad:
          raise NonFiniteError(
              f"non-finite {', '.join(f'{k}={v}' for k, v in bad.items())} in steps "
              f"{step + 1}..{step + n}; stopped before saving. The last good checkpoint "
              f"({self.manager.latest_checkpoint}) is kept; lower the learning rate or check "
              f"the data.")
        step += n
        last = dict(out, step=step)
        if self.progress is not None:
          self.progress(step, n, out)
        if step % self.log_every == 0 or step == end:
          rec = {"kind": "train", "step": step, **out}
          if self.extra_record is not None:
            rec.update(self.extra_record(step))
          log.write(rec)
        if self.hook_every and (step % self.hook_every == 0 or step == self.total_steps):
          self.task.at_interval(step, log)
        self.manager.save(checkpoint_number=step, check_interval=step != end)
    finally:
      log.close()
    last["seconds"] = time.time() - t0
    return last
