r"""Do the authors'-release options change what the search finds?

One APS-T search per (arm, seed) at --budget of the base network's FLOPs, in
the `pareto` regime (configs/pareto_digits.py), for
  * 'default': the config as it is;
  * 'pairwise_shortcut': model.supernet_shortcut='pairwise';
  * 'kaiming_uniform': model.meta_init='kaiming_uniform';
  * 'shared_controller': search.controller.kind='shared';
  * 'controller_l2_1e-5': search.controller.weight_decay=1e-5 (the ImageNet
    configs' value; the controller is untouched in the warm-up, so this arm
    resumes from the default arm's warm-up).
Reported per arm and seed: the picked architecture (widths, FLOPs), how many
decisions differ from the default's pick at the same seed (beside how many
differ between the arm's own seeds, the yardstick), the pick's
re-scored reward and reward-split accuracy, the mean re-scored reward of the
top-N, the reward accuracy the controller saw over the last quarter of the
search, and the pick's retrained test accuracy (same seed); per arm, the
means over seeds.

  python -m aps_tf.experiments.release_options --workdir=workdirs/release_options \
      [--config=configs/pareto_digits.py] [--seeds=0,1,2] [--budget=0.5] \
      [--arms=default,pairwise_shortcut,...] [--record=docs/results/release_options.json]

Workdir layout as `aps_tf.experiments.pareto` (arm-prefixed search and warm-up
directories); rerunning resumes.
"""

from __future__ import annotations

import os

from absl import flags
import numpy as np

from aps_tf import cli
from aps_tf import errors
from aps_tf import fileio
from aps_tf.experiments import pareto
from aps_tf.experiments import reward_and_pick as rp

# arm -> (config overrides, warm-up shared with the default arm)
ARMS = {
    "default": ({}, False),
    "pairwise_shortcut": ({"model.supernet_shortcut": "pairwise"}, False),
    "kaiming_uniform": ({"model.meta_init": "kaiming_uniform"}, False),
    "shared_controller": ({"search.controller.kind": "shared"}, False),
    "controller_l2_1e-5": ({"search.controller.weight_decay": 1e-5}, True),
}
MODE = "APS-T"


def arm_config(cfg, arm: str):
  out = cfg.copy_and_resolve_references()
  for path, value in ARMS[arm][0].items():
    node = out
    *parents, leaf = path.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return out


def run_arm(cfg, workdir: str, arm: str, seed: int, budget: float) -> dict:
  acfg = arm_config(cfg, arm)
  prefix = "" if arm == "default" else arm + "_"
  top = pareto.searched(acfg, workdir, MODE, seed, budget, arm=prefix,
                        warm_arm="" if ARMS[arm][1] else None)
  sdir = pareto.search_dir(workdir, MODE, seed, budget, prefix)
  a = top["architectures"][top["picked"]]
  t = pareto.retrain(acfg, workdir, a["widths"], seed, a["decisions"])
  rewards = [x["reward"] for x in top["architectures"] if x.get("reward") is not None]
  return {"arm": arm, "seed": int(seed), "widths": a["widths"], "decisions": a["decisions"],
          "flops": pareto.flops_of(acfg, a["widths"]), "reward": a.get("reward"),
          "reward_accuracy": a.get("reward_accuracy"),
          "top_n_mean_reward": float(np.mean(rewards)) if rewards else None,
          "search_reward_accuracy_last_quarter": rp.search_reward_accuracy(sdir),
          "test_accuracy": t["test_accuracy"], "test_loss": t["test_loss"]}


def _differing(a: dict, b: dict) -> int:
  """How many decisions two rows' picks differ in."""
  return int(np.sum(np.array(a["decisions"]) != np.array(b["decisions"])))


def _mean(values) -> float:
  return float(np.mean(values)) if values else float("nan")


def summarize(rows: list[dict]) -> list[dict]:
  default = {r["seed"]: r for r in rows if r["arm"] == "default"}
  out = []
  for arm in ARMS:
    sel = [r for r in rows if r["arm"] == arm]
    if not sel:
      continue

    def mean(key, sel=sel):
      return _mean([r[key] for r in sel if r[key] is not None])

    acc = np.array([r["test_accuracy"] for r in sel])
    out.append({"arm": arm, "n_seeds": len(sel),
                "decisions_differing_from_default_mean": _mean(
                    [_differing(r, default[r["seed"]]) for r in sel if r["seed"] in default]),
                # The yardstick: how many decisions another seed changes, the arm fixed.
                "decisions_differing_between_seeds_mean": _mean(
                    [_differing(a, b) for i, a in enumerate(sel) for b in sel[i + 1:]]),
                "flops_mean": mean("flops"), "picked_reward_mean": mean("reward"),
                "picked_reward_accuracy_mean": mean("reward_accuracy"),
                "top_n_mean_reward": mean("top_n_mean_reward"),
                "search_reward_accuracy_last_quarter_mean": mean(
                    "search_reward_accuracy_last_quarter"),
                "test_accuracy_mean": float(acc.mean()),
                "test_accuracy_min": float(acc.min()), "test_accuracy_max": float(acc.max())})
  return out


def define_flags() -> None:
  global _CONFIG, _WORKDIR, _SEEDS, _BUDGET, _ARMS, _RECORD, _NOTES, _REPORT_ONLY
  _CONFIG = cli.define_config("pareto_digits", "Config: a file or a shipped config name")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (resumable).")
  _SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Search and retraining seeds.")
  _BUDGET = flags.DEFINE_float("budget", 0.5, "Target, a fraction of the base FLOPs.")
  _ARMS = flags.DEFINE_list("arms", list(ARMS), f"Arms, of {list(ARMS)}.")
  _RECORD = flags.DEFINE_string("record", None, "Also write the JSON results record here.")
  _NOTES = flags.DEFINE_string("notes", "", "The record's notes (e.g. machine load).")
  _REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Summarise the finished runs "
                                   "only; start no search or retraining.")


def main(argv):
  del argv
  cli.quiet_unless_verbose()
  if not _WORKDIR.value:
    raise errors.UserError("--workdir is required")
  arms = list(_ARMS.value)
  if not arms or set(arms) - set(ARMS):
    raise errors.UserError(f"--arms must name some of {list(ARMS)}, got {arms}")
  try:
    seeds = [int(s) for s in _SEEDS.value]
  except ValueError as e:
    raise errors.UserError(f"--seeds must be integers: {e}") from e
  cfg, workdir = _CONFIG.value, _WORKDIR.value
  fileio.makedirs(workdir)
  pareto.REPORT_ONLY["on"] = bool(_REPORT_ONLY.value)
  rows = []
  command = cli.rerun_command("aps_tf.experiments.release_options",
                              "workdirs/release_options", drop=("record", "notes", "report_only"))
  for seed in seeds:
    for arm in arms:
      try:
        rows.append(run_arm(cfg, workdir, arm, seed, _BUDGET.value))
      except pareto.NotFinished:
        pass
      summary = summarize(rows)
      fileio.write_json(os.path.join(workdir, "release_options.json"),
                        {"rows": rows, "summary": summary}, indent=1)
      if _RECORD.value:
        fileio.write_json(_RECORD.value, pareto.record(
            f"The authors'-release options: APS-T search outcome on {cfg.data.name} "
            f"({cfg.model.name}, candidates {tuple(cfg.model.candidates)}, budget "
            f"{_BUDGET.value:g} of the base FLOPs, {cfg.train.epochs} retraining epochs)",
            command, seeds, _NOTES.value, summary), indent=1)
  for r in summarize(rows):
    print(f"{r['arm']:20s} n={r['n_seeds']} differing decisions "
          f"{r['decisions_differing_from_default_mean']:.1f}, FLOPs {r['flops_mean']:.4g}, "
          f"picked reward {r['picked_reward_mean']:.4f}, test acc "
          f"{r['test_accuracy_mean']:.4f} [{r['test_accuracy_min']:.4f}, "
          f"{r['test_accuracy_max']:.4f}]")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
