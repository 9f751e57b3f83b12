"""One run lifecycle for search and retraining: check, open, report, close.

A binary resolves (checks) its config once, then `open_run` checks what the
run needs before anything is written (the data is prepared, the workdir's
`config.json` is this config's, the workdir is writable) and picks the
strategy. The returned `Run` knows whether this task is the chief, where it
writes checkpoints (the workdir's `ckpt/` on the chief, a per-worker scratch
directory `ckpt/.worker-TASK` elsewhere, removed at `close`), writes
`config.json` (compare, then write, on the chief only), gives the HParams
record and the one progress reporter.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable

import ml_collections
import tensorflow as tf

from aps_tf import data
from aps_tf import distribute as strategy_lib
from aps_tf import fileio
from aps_tf import runner
from aps_tf import workdir as workdir_lib


def config_json(cfg: ml_collections.ConfigDict) -> dict:
  """The JSON dict `config.json` holds for `cfg`.

  Args:
    cfg: a config.

  Returns:
    A JSON-compatible dict.
  """
  return json.loads(cfg.to_json_best_effort())


def progress(total: int, enabled: bool, keys: Iterable[str], desc: str
             ) -> tuple[Callable[[int, int, dict], None] | None, Callable[[], None]]:
  """The progress reporter of a run: a bar with the loop's latest `keys`.

  Args:
    total: the run's last step.
    enabled: show it (the chief, unless --noprogress).
    keys: the metrics shown beside the bar.
    desc: the bar's label.

  Returns:
    (callback for `runner.Runner`'s `progress`, or None; close function).
  """
  if not enabled:
    return None, lambda: None
  import tqdm  # pylint: disable=g-import-not-at-top
  bar = tqdm.tqdm(total=total, initial=0, dynamic_ncols=True, mininterval=2.0, desc=desc)
  keys = tuple(keys)

  def show(step: int, _n: int, out: dict) -> None:
    bar.n = step
    bar.set_postfix({k: round(out[k], 4) for k in keys if k in out}, refresh=False)
    bar.update(0)

  return show, bar.close


class Run:
  """An opened run: the chief's files, the checkpoint directory, HParams, progress.

  Args:
    cfg: the resolved config.
    workdir: the run's directory.
    sections: the config sections the run reads (`workdir.check_config`).
    strategy: the run's strategy.
  """

  def __init__(self, cfg: ml_collections.ConfigDict, workdir: str, sections: Iterable[str],
               strategy: tf.distribute.Strategy):
    self.cfg, self.workdir, self.sections = cfg, workdir, tuple(sections)
    self.strategy = strategy
    self.chief = strategy_lib.is_chief(strategy)
    self.config = config_json(cfg)
    self.ckpt_dir = strategy_lib.write_dir(os.path.join(workdir, "ckpt"), strategy)

  def write_config(self) -> None:
    """Creates the workdir and saves `config.json` (chief only), after comparing again."""
    if self.chief:
      fileio.makedirs(self.workdir)
      workdir_lib.check_config(self.config, self.workdir, self.sections, write=True)

  def hparams(self, keys: Iterable[str], extra: dict[str, Any] | None = None) -> dict:
    """The HParams record of the config fields `keys` (plus `extra`).

    Args:
      keys: dotted config fields.
      extra: further name -> value pairs.

    Returns:
      {name: bool, number or text}.
    """
    out = runner.flat_hparams(self.config, tuple(keys))
    out.update(extra or {})
    return out

  def progress(self, total: int, enabled: bool, keys: Iterable[str], desc: str):
    """The run's progress reporter, shown on the chief only.

    Args:
      total: the run's last step.
      enabled: show it (unless --noprogress).
      keys: the metrics shown beside the bar.
      desc: the bar's label.

    Returns:
      (callback or None, close function), as `progress`.
    """
    return progress(total, enabled and self.chief, keys, desc)

  def close(self) -> None:
    """Removes a non-chief worker's scratch checkpoints."""
    if not self.chief and fileio.exists(self.ckpt_dir):
      fileio.rmtree(self.ckpt_dir, ignore_errors=True)


def open_run(cfg: ml_collections.ConfigDict, workdir: str, sections: Iterable[str], *,
             strategy: tf.distribute.Strategy | None = None,
             checks: Callable[[], None] | None = None) -> Run:
  """Checks everything a run needs before it writes, then opens it.

  Args:
    cfg: the resolved (checked) config; it is not checked again.
    workdir: the run's directory (created by `Run.write_config`).
    sections: the config sections the run reads; a saved `config.json` must
      agree on them.
    strategy: overrides the one `cfg.strategy` names (tests: logical devices).
    checks: the run's own checks (e.g. the retraining's architecture file),
      run after the workdir's config compares and before the write probe.

  Returns:
    The opened `Run`.

  Raises:
    DatasetNotPreparedError: the dataset is not on disk.
    WorkdirMismatchError: the workdir holds another config's run.
    WorkdirError: the workdir cannot be written.
  """
  data.check_prepared(cfg.data)
  workdir_lib.check_config(config_json(cfg), workdir, sections)
  if checks is not None:
    checks()
  workdir_lib.ensure_writable(workdir)
  return Run(cfg, workdir, sections, strategy or strategy_lib.make_strategy(cfg))
