"""Drives a search in a workdir: resume, loop, checkpoints, logs, pick.

See docs/method.md#picking-and-retraining and docs/internals.md.

The loop is `aps_tf.runner.Runner` over the `task.SearchTask` task (the same
core retraining uses). Workdir contents: config.json (the resolved config; a
rerun must match it), ckpt/ (tf.train.CheckpointManager; the checkpoint's
`net` is the supernet, which supernet-initialised retraining reads),
metrics.jsonl + tb/ (analysis; TensorBoard with HParams), plots/,
top_archs.json and arch.json (the result).

Resume: rerunning the same command restores the latest checkpoint (input
iterators included) and continues at its step. Checkpoints are written by
TF's atomic protocol (data files, then the index, then the `checkpoint`
state file renamed into place), so a SIGKILL at any moment leaves the
previous checkpoint usable. A non-finite loss stops the run before anything
is saved after it.
"""

from __future__ import annotations

import math
import os
from typing import Any

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf

from aps_tf import archfile
from aps_tf import config_check
from aps_tf import fileio
from aps_tf import lifecycle
from aps_tf import models
from aps_tf import runner
from aps_tf.search import analysis
from aps_tf.search import beam as beam_lib
from aps_tf.search import task as task_lib
from aps_tf import distribute as strategy_lib
from aps_tf import workdir as workdir_lib

# The config fields TensorBoard's HParams dashboard compares runs by.
HPARAMS = (
    "search.sharing", "search.phi_objective", "search.phi_lr", "search.phi_weight",
    "search.static_shapes", "search.lr", "search.batch_size", "search.epochs",
    "search.warmup_epochs", "search.reward.kind", "search.reward.target", "search.reward.bn",
    "search.pick", "model.name", "model.candidates", "model.meta_width", "model.space",
    "data.name", "seed")

# Fields a rerun may change without invalidating the run (shared by every binary).
MUTABLE_FIELDS = workdir_lib.MUTABLE_FIELDS
WorkdirMismatchError = workdir_lib.WorkdirMismatchError


config_json = lifecycle.config_json


def check_workdir(cfg: ml_collections.ConfigDict, workdir: str, write: bool = True) -> None:
  """Saves cfg to WORKDIR/config.json, or checks it against the saved one.

  Args:
    cfg: the resolved search config.
    workdir: the search's directory.
    write: save the config after the comparison.

  Raises:
    WorkdirMismatchError: the workdir holds a search of another config.
  """
  workdir_lib.check_config(config_json(cfg), workdir, task_lib.SECTIONS, write=write)


class SearchRun:
  """One search in one workdir."""

  def __init__(self, cfg: ml_collections.ConfigDict, workdir: str,
               strategy: tf.distribute.Strategy | None = None, progress: bool = True):
    self.cfg = task_lib.resolve_config(cfg)
    self.workdir = workdir
    self.opened = lifecycle.open_run(self.cfg, workdir, task_lib.SECTIONS, strategy=strategy)
    self.strategy, self.chief = self.opened.strategy, self.opened.chief
    # Built before config.json is written: it fails early on bad data or budget.
    self.searcher = task_lib.SearchTask.from_config(self.cfg, self.strategy)
    self.opened.write_config()
    self.ckpt_dir = self.opened.ckpt_dir  # non-chief workers: a scratch copy (collective save)
    self.runner = None
    self.progress = progress
    self.config_name = ""

  def restore(self) -> int:
    """Restores the latest checkpoint (input iterators included).

    Returns:
      The restored step (0 on a fresh workdir).
    """
    return self._runner().restore_or_initialize()

  def _runner(self, progress=None) -> runner.Runner:
    s, sr = self.cfg.search, self.searcher
    if getattr(self, "runner", None) is None:
      self.runner = runner.Runner(
          sr, self.workdir, total_steps=sr.total_steps, steps_per_loop=s.steps_per_loop,
          checkpoint_every=s.checkpoint_every_steps, log_every=s.log_every_steps,
          hook_every=s.analysis_every_steps, max_to_keep=s.keep_checkpoints,
          ckpt_dir=self.ckpt_dir, chief=self.chief,
          hparams=self.opened.hparams(HPARAMS),
          extra_record=self._record)
    self.runner.progress = progress
    return self.runner

  def _record(self, step: int) -> dict[str, Any]:
    sr = self.searcher
    return {"epoch": (step - 1) // sr.steps_per_epoch,
            "phase": "search" if step > sr.warmup_steps else "warmup",
            "lr": float(_lr(sr.net_opt)), "baseline": float(sr.baseline.numpy())}

  def train(self, stop_at: int | None = None) -> dict:
    """Runs (or resumes) the search loop to the end, or to `stop_at`.

    Args:
      stop_at: stop (and checkpoint) at this step instead of the last.

    Returns:
      The last loop's metrics (loop means of the search's metrics).

    Raises:
      NonFiniteError: a loss became NaN or infinite (nothing after it is saved).
    """
    show, close = self.opened.progress(self.searcher.total_steps, self.progress,
                                    ("loss", "reward"), "search")
    r = self._runner(show)
    try:
      return r.run(stop_at=stop_at)
    finally:
      close()

  # -- picking --------------------------------------------------------------
  def pick(self) -> dict:
    """Beam search, optional re-scoring on the reward split, arch.json + top_archs.json.

    Re-scoring evaluates every top-N architecture on the same
    `search.rescore_batches` batches of the reward split (no augmentation; BN
    per `search.reward.bn`) and records the mean and its standard error over
    batches (`reward_accuracy_se`, `reward_se`). `search.pick` chooses; the
    choice of every rule is recorded in top_archs.json (`picked_by_rule`).

    Returns:
      The picked architecture file's contents (as written to arch.json).
    """
    sr, s = self.searcher, self.cfg.search
    beams = beam_lib.beam_search(sr.policy, s.beam_width, s.top_n)
    info = []
    reward_batches = None
    if s.rescore:
      available = max(1, sr.info.split_sizes["reward"] // sr.global_batch)
      ds = sr.dataset("reward", 0, augment=False)
      reward_batches = [b for _, b in zip(range(min(int(s.rescore_batches), available)),
                                          iter(ds))]
    for b in beams:
      row = {"decisions": b.arch, "log_prob": b.log_prob,
             "widths": self.searcher.space.widths(b.arch),
             "cost": sr.cost_model.cost(b.arch), "cost_kind": s.reward.kind,
             "flops_convention": s.reward.flops_convention}
      if reward_batches:
        accs = np.array([self._evaluate(b.arch, batch) for batch in reward_batches])
        se = float(accs.std(ddof=1) / math.sqrt(len(accs))) if len(accs) > 1 else float("nan")
        factor = (row["cost"] / s.reward.target) ** (
            s.reward.alpha if row["cost"] <= s.reward.target else s.reward.beta)
        row.update(reward_accuracy=float(accs.mean()), reward_accuracy_se=se,
                   reward=float(accs.mean() * factor), reward_se=se * factor,
                   rescore_batches=len(accs))
        logging.warning("top-%d #%d: cost=%d log_prob=%.3f reward=%.4f +- %.4f (s.e., %d "
                        "batches)", len(beams), len(info), row["cost"], row["log_prob"],
                        row["reward"], row["reward_se"], len(accs))
      if s.reward.kind == "latency":
        row["predicted_latency_ms"] = row["cost"]
      info.append(row)
    rules = config_check.PICK_RULES if reward_batches else ("closest_to_target",)
    picked_by_rule = {r: info.index(beam_lib.pick(info, s.reward.target, r)) for r in rules}
    best = info[picked_by_rule[s.pick]]
    step = int(sr.step.numpy())
    arch = archfile.make(
        sr.topology, best["widths"], decisions=best["decisions"],
        search_space=models.search_space_record(self.cfg.model),
        provenance={"config": self.config_name, "sharing": s.sharing,
                    "step": step, "log_prob": best["log_prob"], "reward": best.get("reward"),
                    "reward_accuracy": best.get("reward_accuracy"),
                    "target": s.reward.target, "cost_kind": s.reward.kind,
                    "picked_by": f"search.pick={s.pick!r} among the beam-search top-"
                                 f"{len(info)}"},
        latency=self._latency_record(best))
    if self.chief:
      archfile.save(arch, os.path.join(self.workdir, "arch.json"))
      fileio.write_json(os.path.join(self.workdir, "top_archs.json"),
                        {"target": s.reward.target, "beam_width": s.beam_width,
                         "top_n": s.top_n, "step": step, "picked": info.index(best),
                         "pick": s.pick, "picked_by_rule": picked_by_rule,
                         "reward_bn": s.reward.bn, "architectures": info,
                         **({"latency": arch["latency"]} if "latency" in arch else {})})
    return arch

  def _latency_record(self, best: dict) -> dict | None:
    """arch.json's 'latency' (kind='latency' only): format, target, prediction (ms)."""
    s = self.cfg.search
    if s.reward.kind != "latency":
      return None
    from aps_tf.latency import measure  # pylint: disable=g-import-not-at-top
    fp = self.searcher.cost_model.table["fingerprint"]
    return {"format": measure.FORMATS.get(fp["format"], fp["format"]),
            "target_ms": float(s.reward.target), "predicted_ms": float(best["cost"]), "table": s.reward.latency_table,
            "device": f"{fp['device']}: {fp['cpu']}, {fp['threads']} thread(s)"}

  def _evaluate(self, arch, batch) -> float:
    sr = self.searcher
    if not hasattr(self, "_eval_fn"):
      def replica_fn(arch, images, labels):
        logits = sr.reward_logits(images, arch)
        return runner.num_correct(logits, labels)

      @tf.function
      def eval_fn(arch, batch):
        c = self.strategy.run(replica_fn, args=(arch,) + tuple(batch))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, c, axis=None)
      self._eval_fn = eval_fn
    return float(self._eval_fn(tf.constant(arch, tf.int32), batch).numpy()) / sr.global_batch

  def finish(self) -> None:
    """Plots the run's curves (chief) and removes a worker's scratch checkpoints."""
    if self.chief:
      try:
        analysis.plot(self.workdir)
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("plotting failed: %s", e)
    self.opened.close()


def _lr(opt) -> float:
  lr = opt.learning_rate
  return float(lr.numpy() if hasattr(lr, "numpy") else lr)


def run(cfg: ml_collections.ConfigDict, workdir: str,
        strategy: tf.distribute.Strategy | None = None, progress: bool = True,
        config_name: str = "") -> dict:
  """The whole search: train (or resume), pick, plot.

  Args:
    cfg: a search config (checked here, once).
    workdir: the search's directory; a rerun with the same config resumes.
    strategy: overrides the one `cfg.strategy` names (tests: logical devices).
    progress: show a progress bar on the chief.
    config_name: the config's name, recorded in the architecture file.

  Returns:
    The picked architecture file's contents.

  Raises:
    ConfigError: a bad config field.
    WorkdirError: the workdir holds another run or cannot be written.
    DatasetNotPreparedError: the dataset is not on disk.
  """
  r = SearchRun(cfg, workdir, strategy, progress)
  r.config_name = config_name
  with strategy_lib.peer_failures(r.strategy):
    r.train()
    arch = r.pick()
  r.finish()
  return arch
