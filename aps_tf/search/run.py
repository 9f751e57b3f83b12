"""Drives a search in a workdir: resume, loop, checkpoints, logs, pick.

See docs/method.md#picking-and-retraining and docs/internals.md.

The loop is `aps_tf.runner.Runner` over the `loop.Searcher` task (the same
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

import json
import math
import os
from typing import Any

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf

from aps_tf import anneal
from aps_tf import archfile
from aps_tf import config_check
from aps_tf import fileio
from aps_tf import models
from aps_tf import runner
from aps_tf.search import analysis
from aps_tf.search import beam as beam_lib
from aps_tf.search import loop
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


def config_json(cfg: ml_collections.ConfigDict) -> dict:
  return json.loads(cfg.to_json_best_effort())


def check_workdir(cfg: ml_collections.ConfigDict, workdir: str, write: bool = True) -> None:
  """Saves cfg to WORKDIR/config.json, or checks it against the saved one."""
  workdir_lib.check_config(config_json(cfg), workdir, loop.SECTIONS, write=write)


def _progress(total: int, initial: int, enabled: bool):
  try:
    import tqdm  # pylint: disable=g-import-not-at-top
    return tqdm.tqdm(total=total, initial=initial, disable=not enabled, dynamic_ncols=True,
                     mininterval=2.0, desc="search")
  except ImportError:  # pragma: no cover
    return None


class SearchRun:
  """One search in one workdir."""

  def __init__(self, cfg: ml_collections.ConfigDict, workdir: str,
               strategy: tf.distribute.Strategy | None = None, progress: bool = True):
    self.cfg = loop.resolve_config(cfg)
    self.workdir = workdir
    self.strategy = strategy or strategy_lib.make_strategy(self.cfg)
    self.chief = strategy_lib.is_chief(self.strategy)
    check_workdir(self.cfg, workdir, write=False)
    config_check.check_data_prepared(self.cfg.data)
    workdir_lib.ensure_writable(workdir)
    self.searcher = loop.Searcher(self.cfg, self.strategy)  # fails early on bad data/budget
    self.anneal = anneal.AnnealCheck.for_searcher(self.searcher)  # before any restore
    check_workdir(self.cfg, workdir, write=self.chief)
    self.ckpt_dir = os.path.join(workdir, "ckpt")
    if not self.chief:  # non-chief workers write to a scratch copy (collective save)
      self.ckpt_dir = os.path.join(workdir, "tmp", strategy_lib.task_tag(self.strategy))
    self.runner = None
    self.progress = progress
    self.config_name = ""

  def restore(self) -> int:
    """Restores the latest checkpoint (input iterators included); returns the step."""
    return self._runner().restore_or_initialize()

  def _runner(self, progress=None) -> runner.Runner:
    s, sr = self.cfg.search, self.searcher
    if getattr(self, "runner", None) is None:
      self.runner = runner.Runner(
          sr, self.workdir, total_steps=sr.total_steps, steps_per_loop=s.steps_per_loop,
          checkpoint_every=s.checkpoint_every_steps, log_every=s.log_every_steps,
          hook_every=s.analysis_every_steps, max_to_keep=s.keep_checkpoints,
          ckpt_dir=self.ckpt_dir, chief=self.chief,
          hparams=runner.flat_hparams(config_json(self.cfg), HPARAMS),
          extra_record=self._record)
    self.runner.progress = progress
    return self.runner

  def _record(self, step: int) -> dict[str, Any]:
    sr = self.searcher
    return {"epoch": (step - 1) // sr.steps_per_epoch,
            "phase": "search" if step > sr.warmup_steps else "warmup",
            "lr": float(_lr(sr.net_opt)), "baseline": float(sr.baseline.numpy()),
            **(self.anneal.record(step) if self.anneal else {})}

  def train(self, stop_at: int | None = None) -> dict:
    """Runs (or resumes) the search loop to the end (or to step `stop_at`, then
    checkpoints); returns the last loop's metrics."""
    sr = self.searcher
    bar = _progress(sr.total_steps, 0, self.progress and self.chief)

    def show(step, n, out):
      del n
      bar.n = step
      bar.set_postfix({k: round(out[k], 4) for k in ("loss", "reward") if k in out},
                      refresh=False)
      bar.update(0)

    r = self._runner(show if bar is not None else None)
    try:
      return r.run(stop_at=stop_at)
    finally:
      if bar is not None:
        bar.close()

  # -- picking --------------------------------------------------------------
  def pick(self) -> dict:
    """Beam search, optional re-scoring on the reward split, arch.json + top_archs.json.

    Re-scoring evaluates every top-N architecture on the same
    `search.rescore_batches` batches of the reward split (no augmentation; BN
    per `search.reward.bn`) and records the mean and its standard error over
    batches (`reward_accuracy_se`, `reward_se`). `search.pick` chooses; the
    choice of every rule is recorded in top_archs.json (`picked_by_rule`).
    """
    sr, s = self.searcher, self.cfg.search
    beams = beam_lib.beam_search(sr.controller, s.beam_width, s.top_n)
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
    if self.chief:
      try:
        analysis.plot(self.workdir)
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("plotting failed: %s", e)
    else:
      fileio.rmtree(os.path.join(self.workdir, "tmp", strategy_lib.task_tag(self.strategy)),
                    ignore_errors=True)


def _lr(opt) -> float:
  lr = opt.learning_rate
  return float(lr.numpy() if hasattr(lr, "numpy") else lr)


def run(cfg: ml_collections.ConfigDict, workdir: str,
        strategy: tf.distribute.Strategy | None = None, progress: bool = True,
        config_name: str = "") -> dict:
  """The whole search: train (or resume), pick, plot. Returns the arch dict."""
  r = SearchRun(cfg, workdir, strategy, progress)
  r.config_name = config_name
  with strategy_lib.peer_failures(r.strategy):
    r.train()
    arch = r.pick()
  r.finish()
  return arch
