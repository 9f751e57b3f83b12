r"""Does search beat a width multiplier, and which sharing mode ranks best?

Two studies on one set of searches (the paper's Figures 9 and 8, small):

Pareto: test accuracy against FLOPs at each budget in --budgets (fractions of
the base network's FLOPs, in the reward's FLOPs convention) for
  * 'uniform': the base network with every width multiplied by one factor,
    the largest factor whose FLOPs stay within the budget (no search);
  * 'APS-O', 'APS-I', 'APS-T': the architecture each sharing mode's search
    picks with that budget as its target.
Every arm is retrained from scratch with the config's train settings, once
per seed in --seeds (a search seed retrains its own pick with the same seed;
the uniform network is retrained with every seed). Reported per (arm,
budget): mean, standard deviation and min/max of the test accuracy, and the
FLOPs; for a search arm also the mean reward-batch accuracy its supernet gave
the controller over the search's last quarter (a pick is only as good as the
supernet that scored it).

Ranking: for each sharing mode and seed, the search at --rank_budget has
re-scored its beam-search top-N on the reward split (`top_archs.json`);
every top-N architecture is retrained (same seed) and Kendall's tau-b
between the re-scored reward (and reward-split accuracy) and the retrained
test accuracy is reported per seed, with the mean over seeds.

Shared work: one warm-up per (mode, seed). The warm-up trains the supernet
with uniformly sampled architectures and touches neither the controller nor
the reward, so it does not depend on the budget: its checkpoint (input
iterators included) seeds every budget's search, which resumes from it as an
interrupted search resumes.

  python -m aps_tf.experiments.pareto --workdir=workdirs/pareto \
      [--config=configs/pareto_digits.py] [--seeds=0,1,2] \
      [--budgets=0.25,0.5,0.75] [--modes=APS-O,APS-I,APS-T] [--parts=pareto,rank] \
      [--rank_budget=0.5] [--record=docs/results/pareto.json] \
      [--png=docs/pareto.png] [--config.data.name=cifar10 ...]

Layout: WORKDIR/warm/MODE_sSEED, WORKDIR/search/MODE_bBUDGET_sSEED (normal
search workdirs), WORKDIR/retrain/KEY_sSEED (as `reward_and_pick`), and
WORKDIR/pareto.json (every row). Rerunning the same command skips what has
finished and resumes what has not. Seeds may run in parallel processes
(--seeds=1 --out_name=pareto_s1.json); a final run over all seeds then only
reads their results.
"""

from __future__ import annotations

import datetime
import os
import platform

from absl import flags
import numpy as np
import tensorflow as tf

from aps_tf import cli
from aps_tf import errors
from aps_tf import fileio
from aps_tf.experiments import reward_and_pick as rp

MODES = {"APS-O": "ordinal", "APS-I": "independent", "APS-T": "transitional"}
UNIFORM = "uniform"
PARTS = ("pareto", "rank")


class NotFinished(Exception):
  """A run that --report_only does not start (it reports finished runs only)."""


# --report_only: summarise the finished runs, start none.
REPORT_ONLY = {"on": False}


def _topology(cfg):
  from aps_tf import data  # pylint: disable=g-import-not-at-top
  from aps_tf import models  # pylint: disable=g-import-not-at-top
  info = data.dataset_info(cfg.data)
  return models.topology_from_config(cfg.model, info.image_shape, info.num_classes)


def flops_of(cfg, widths) -> int:
  """FLOPs of `widths` in the reward's convention (search.reward.flops_convention)."""
  from aps_tf import flops  # pylint: disable=g-import-not-at-top
  return flops.count(_topology(cfg), widths, cfg.search.reward.flops_convention)["flops"]


def base_flops(cfg) -> int:
  return flops_of(cfg, _topology(cfg).base_widths)


def uniform_widths(cfg, budget_flops: float) -> tuple[list[int], float]:
  """The base widths times the largest multiplier whose FLOPs stay <= budget_flops.

  Returns:
    (widths, multiplier).

  Raises:
    errors.UserError: when even width 1 everywhere exceeds the budget.
  """
  base = _topology(cfg).base_widths

  def widths(m):
    return [max(1, int(round(m * b))) for b in base]

  if flops_of(cfg, widths(0.0)) > budget_flops:
    raise errors.UserError(f"budget {budget_flops:.4g} FLOPs is below the narrowest network")
  lo, hi = 0.0, 4.0
  for _ in range(40):  # flops(widths(m)) is non-decreasing in m
    mid = 0.5 * (lo + hi)
    lo, hi = (mid, hi) if flops_of(cfg, widths(mid)) <= budget_flops else (lo, mid)
  return widths(lo), lo


def mode_config(cfg, mode: str, seed: int, budget: float):
  out = cfg.copy_and_resolve_references()
  out.search.sharing = MODES[mode]
  out.seed = int(seed)
  out.search.reward.target = float(budget) * base_flops(cfg)
  return out


def _tag(budget: float) -> str:
  return f"{budget:g}".replace(".", "p")


def warm_up(cfg, warm_dir: str) -> None:
  """Runs a search to the end of its warm-up (a finished one is reused)."""
  from aps_tf.search import run  # pylint: disable=g-import-not-at-top
  from aps_tf.search import settings  # pylint: disable=g-import-not-at-top
  latest = tf.train.latest_checkpoint(os.path.join(warm_dir, "ckpt"))
  sr_cfg = settings.resolve_config(cfg)
  if latest and int(latest.rsplit("-", 1)[1]) >= _warmup_steps(sr_cfg):
    return
  r = run.SearchRun(cfg, warm_dir, progress=False)
  r.train(stop_at=r.searcher.warmup_steps)


def _warmup_steps(cfg) -> int:
  from aps_tf import data  # pylint: disable=g-import-not-at-top
  s = cfg.search
  if s.steps_per_epoch:
    per_epoch = int(s.steps_per_epoch)
  else:
    per_epoch = data.dataset_info(cfg.data).split_sizes["train"] // int(s.batch_size)
  return int(s.warmup_epochs) * per_epoch


def seed_from_warm_up(warm_dir: str, search_dir: str) -> None:
  """Copies the warm-up's last checkpoint into an empty search workdir."""
  dst = os.path.join(search_dir, "ckpt")
  if tf.train.latest_checkpoint(dst):
    return
  latest = tf.train.latest_checkpoint(os.path.join(warm_dir, "ckpt"))
  if not latest:
    raise errors.WorkdirError(f"{warm_dir}/ckpt has no checkpoint")
  fileio.makedirs(dst)
  name = os.path.basename(latest)
  for f in tf.io.gfile.glob(latest + ".*"):
    fileio.copy(f, os.path.join(dst, os.path.basename(f)))
  fileio.write_text(os.path.join(dst, "checkpoint"),
                    f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n')


def search_dir(workdir: str, mode: str, seed: int, budget: float, arm: str = "") -> str:
  return os.path.join(workdir, "search", f"{arm}{mode}_b{_tag(budget)}_s{seed}")


def searched(cfg, workdir: str, mode: str, seed: int, budget: float, arm: str = "",
             warm_arm: str | None = None) -> dict:
  """The top_archs.json of (mode, seed, budget), searching first if needed.

  `arm` prefixes the search's directory names (a variant of `cfg`); its
  warm-up is WORKDIR/warm/{warm_arm}MODE_sSEED (default: the arm's own), for
  variants that change nothing the warm-up touches.
  """
  from aps_tf.search import run  # pylint: disable=g-import-not-at-top
  sdir = search_dir(workdir, mode, seed, budget, arm)
  top_path = os.path.join(sdir, "top_archs.json")
  if not fileio.exists(top_path) and REPORT_ONLY["on"]:
    raise NotFinished(sdir)
  if not fileio.exists(top_path):
    mcfg = mode_config(cfg, mode, seed, budget)
    warm = arm if warm_arm is None else warm_arm
    warm_dir = os.path.join(workdir, "warm", f"{warm}{mode}_s{seed}")
    warm_up(mcfg, warm_dir)
    seed_from_warm_up(warm_dir, sdir)
    run.run(mcfg, sdir, progress=False, config_name=f"pareto {mode} budget {budget:g}")
  return fileio.read_json(top_path)


def retrain(cfg, workdir, widths, seed, decisions=None) -> dict:
  """Retrains one architecture of the study (finished retrains are reused).

  Args:
    cfg: the study's config.
    workdir: the study's workdir (retrains go under WORKDIR/retrain).
    widths: the architecture's widths.
    seed: the retrain's seed (in its directory name, KEY_sSEED).
    decisions: the architecture's decisions when it is in the search space.

  Returns:
    The retrain's record (`reward_and_pick.retrain_widths`).

  Raises:
    NotFinished: under --report_only, the retrain has not finished.
  """
  base = cfg.copy_and_resolve_references()
  base.seed = -1  # every retrain directory carries its seed (KEY_sSEED)
  if REPORT_ONLY["on"] and not fileio.exists(os.path.join(
      workdir, "retrain", f"{rp.arch_key(widths)}_s{int(seed)}", "run", "metrics.json")):
    raise NotFinished(f"retrain of {widths} seed {seed}")
  return rp.retrain_widths(base, workdir, widths, None, False, int(seed), decisions=decisions)


def run_pareto(cfg, workdir, seeds, budgets, modes, on_row) -> list[dict]:
  """Every arm at every budget and seed; budget-major within a seed, so that a
  run cut short has every arm at the first budgets."""
  rows = []
  bflops = base_flops(cfg)
  for seed in seeds:
    for budget in budgets:
      widths, m = uniform_widths(cfg, budget * bflops)
      try:
        t = retrain(cfg, workdir, widths, seed)
        rows.append({"arm": UNIFORM, "budget": budget, "seed": seed, "widths": widths,
                     "multiplier": m, "flops": flops_of(cfg, widths),
                     "test_accuracy": t["test_accuracy"], "test_loss": t["test_loss"]})
        on_row(rows)
      except NotFinished:
        pass
      for mode in modes:
        try:
          top = searched(cfg, workdir, mode, seed, budget)
          a = top["architectures"][top["picked"]]
          t = retrain(cfg, workdir, a["widths"], seed, a["decisions"])
        except NotFinished:
          continue
        rows.append({"arm": mode, "budget": budget, "seed": seed, "widths": a["widths"],
                     "multiplier": None, "flops": flops_of(cfg, a["widths"]),
                     "test_accuracy": t["test_accuracy"], "test_loss": t["test_loss"],
                     "search_reward_accuracy": rp.search_reward_accuracy(
                         search_dir(workdir, mode, seed, budget))})
        on_row(rows)
  return rows


def run_ranking(cfg, workdir, seeds, budget, modes, on_row) -> list[dict]:
  rows = []
  for mode in modes:
    for seed in seeds:
      try:
        top = searched(cfg, workdir, mode, seed, budget)
        archs = top["architectures"]
        if any(a.get("reward") is None for a in archs):
          raise errors.UserError(f"{mode} seed {seed}: top_archs.json has no re-scored "
                                 "rewards (search.rescore must be True)")
        acc = [retrain(cfg, workdir, a["widths"], seed, a["decisions"])["test_accuracy"]
               for a in archs]
      except NotFinished:
        continue
      rows.append({"mode": mode, "seed": seed, "n": len(archs),
                   "reward": [a["reward"] for a in archs],
                   "reward_accuracy": [a["reward_accuracy"] for a in archs],
                   "test_accuracy": acc,
                   "kendall_tau_reward": rp.kendall_tau([a["reward"] for a in archs], acc),
                   "kendall_tau_reward_accuracy": rp.kendall_tau(
                       [a["reward_accuracy"] for a in archs], acc)})
      on_row(rows)
  return rows


def summarize(rows: list[dict]) -> list[dict]:
  """One row per (arm, budget): FLOPs and test accuracy mean, std, min, max over seeds."""
  out = []
  for arm in [UNIFORM] + list(MODES):
    for budget in sorted({r["budget"] for r in rows}):
      sel = [r for r in rows if r["arm"] == arm and r["budget"] == budget]
      if not sel:
        continue
      acc = np.array([r["test_accuracy"] for r in sel])
      fl = np.array([r["flops"] for r in sel], np.float64)
      out.append({"arm": arm, "budget": float(budget), "n_seeds": len(sel),
                  "flops_mean": float(fl.mean()), "flops_min": float(fl.min()),
                  "flops_max": float(fl.max()),
                  "test_accuracy_mean": float(acc.mean()),
                  "test_accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else float("nan"),
                  "test_accuracy_min": float(acc.min()),
                  "test_accuracy_max": float(acc.max())})
      if arm != UNIFORM:
        # The supernet's health: the reward-batch accuracy the controller saw
        # over the search's last quarter (a search arm's pick is only as good
        # as the supernet that scored it).
        out[-1]["search_reward_accuracy_mean"] = float(np.mean(
            [r["search_reward_accuracy"] for r in sel]))
  return out


def summarize_ranking(rows: list[dict]) -> list[dict]:
  out = []
  for mode in MODES:
    sel = [r for r in rows if r["mode"] == mode]
    if not sel:
      continue
    taus = np.array([r["kendall_tau_reward"] for r in sel])
    taus_acc = np.array([r["kendall_tau_reward_accuracy"] for r in sel])
    out.append({"mode": mode, "n_seeds": len(sel), "top_n": int(sel[0]["n"]),
                "kendall_tau_reward_mean": float(np.nanmean(taus)),
                "kendall_tau_reward_min": float(np.nanmin(taus)),
                "kendall_tau_reward_max": float(np.nanmax(taus)),
                "kendall_tau_reward_accuracy_mean": float(np.nanmean(taus_acc)),
                "test_accuracy_spread_mean": float(np.mean(
                    [max(r["test_accuracy"]) - min(r["test_accuracy"]) for r in sel]))})
  return out


def plot(summary: list[dict], base: float, path: str, title: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  for i, arm in enumerate([UNIFORM] + list(MODES)):
    sel = [r for r in summary if r["arm"] == arm]
    if not sel:
      continue
    x = np.array([r["flops_mean"] for r in sel]) / base
    y = np.array([r["test_accuracy_mean"] for r in sel])
    lo = y - np.array([r["test_accuracy_min"] for r in sel])
    hi = np.array([r["test_accuracy_max"] for r in sel]) - y
    off = (i - 1.5) * 0.006
    ax.errorbar(x + off, y, yerr=[lo, hi], marker="o", capsize=3,
                linestyle="--" if arm == UNIFORM else "-", label=arm)
  ax.set_xlabel("FLOPs / base network FLOPs")
  ax.set_ylabel("test accuracy (mean; bars: min-max over seeds)")
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fileio.makedirs(os.path.dirname(path) or ".")
  fig.savefig(path, dpi=110)
  plt.close(fig)


def record(title: str, command: str, seeds, notes: str, results) -> dict:
  import keras  # pylint: disable=g-import-not-at-top
  return {"title": title, "command": command,
          "date": datetime.date.today().isoformat(),
          "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
          "versions": {"python": platform.python_version(), "tensorflow": tf.__version__,
                       "keras": keras.__version__},
          "seeds": [int(s) for s in seeds], "notes": notes, "results": _no_nan(results)}


def _no_nan(x):
  """NaN (a spread of one seed) as null: the records are strict JSON."""
  if isinstance(x, dict):
    return {k: _no_nan(v) for k, v in x.items()}
  if isinstance(x, list):
    return [_no_nan(v) for v in x]
  return None if isinstance(x, float) and x != x else x


def define_flags() -> None:
  """The binary's flags (defined on use, as reward_and_pick's)."""
  global _CONFIG, _WORKDIR, _SEEDS, _BUDGETS, _MODES, _PARTS, _RANK_BUDGET
  global _RECORD, _PNG, _NOTES, _OUT_NAME, _REPORT_ONLY
  _CONFIG = cli.define_config("pareto_digits", "Config: a file or a shipped config name")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (resumable).")
  _SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Search and retraining seeds.")
  _BUDGETS = flags.DEFINE_list("budgets", ["0.25", "0.5", "0.75"],
                               "Budgets, fractions of the base network's FLOPs.")
  _MODES = flags.DEFINE_list("modes", list(MODES), f"Sharing modes, of {list(MODES)} "
                             "(empty: the uniform arm only).")
  _PARTS = flags.DEFINE_list("parts", list(PARTS), "pareto and/or rank.")
  _RANK_BUDGET = flags.DEFINE_float("rank_budget", 0.5, "Budget of the ranking study "
                                    "(one of --budgets, so its searches are shared).")
  _RECORD = flags.DEFINE_string("record", None, "Also write the JSON results records here "
                                "(RECORD and RECORD with _ranking before .json).")
  _PNG = flags.DEFINE_string("png", None, "Figure path (default WORKDIR/pareto.png).")
  _NOTES = flags.DEFINE_string("notes", "", "The records' notes (e.g. machine load).")
  _REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Summarise the finished runs "
                                   "only; start no search or retraining.")
  _OUT_NAME = flags.DEFINE_string("out_name", "pareto.json", "Name of the all-rows JSON in "
                                  "WORKDIR (processes that split --seeds give each its own; "
                                  "a final run over all seeds reuses their runs).")


def main(argv):
  del argv
  cli.quiet_unless_verbose()
  if not _WORKDIR.value:
    raise errors.UserError("--workdir is required")
  parts = set(_PARTS.value)
  if not parts or parts - set(PARTS):
    raise errors.UserError(f"--parts must name pareto and/or rank, got {_PARTS.value}")
  modes = list(_MODES.value)
  if set(modes) - set(MODES):  # none: the uniform arm only
    raise errors.UserError(f"--modes must name some of {list(MODES)}, got {modes}")
  try:
    seeds = [int(s) for s in _SEEDS.value]
    budgets = [float(b) for b in _BUDGETS.value]
  except ValueError as e:
    raise errors.UserError(f"--seeds must be integers and --budgets numbers: {e}") from e
  if not seeds or not budgets or any(not 0.0 < b for b in budgets):
    raise errors.UserError(f"need seeds and positive budgets, got {seeds}, {budgets}")
  cfg = _CONFIG.value
  workdir = _WORKDIR.value
  fileio.makedirs(workdir)
  REPORT_ONLY["on"] = bool(_REPORT_ONLY.value)
  bflops = base_flops(cfg)
  command = cli.rerun_command("aps_tf.experiments.pareto", "workdirs/pareto",
                              drop=("record", "png", "notes", "report_only", "out_name"))
  state = {"base_flops": bflops, "pareto": [], "ranking": []}
  png = _PNG.value or os.path.join(workdir, "pareto.png")
  title = (f"{cfg.model.name} on {cfg.data.name}, candidates {tuple(cfg.model.candidates)}, "
           f"{cfg.train.epochs} retraining epochs")

  def write():
    summary = summarize(state["pareto"])
    ranking = summarize_ranking(state["ranking"])
    fileio.write_json(os.path.join(workdir, _OUT_NAME.value),
                      dict(state, summary=summary, ranking_summary=ranking), indent=1)
    if summary:
      plot(summary, bflops, png, title)
    if _RECORD.value:
      if summary:
        arms = [a for a in [UNIFORM] + modes if any(r["arm"] == a for r in summary)]
        missing = [a for a in [UNIFORM] + modes if a not in arms]
        fileio.write_json(_RECORD.value, record(
            f"Test accuracy against FLOPs: uniform width scaling vs {'/'.join(modes)} "
            f"({title}; base {bflops} FLOPs, {cfg.search.reward.flops_convention} convention)"
            + (f"; PARTIAL: no finished runs of {', '.join(missing)}" if missing else ""),
            command, seeds, _NOTES.value, summary), indent=1)
      if ranking:
        fileio.write_json(_RECORD.value.replace(".json", "_ranking.json"), record(
            f"Kendall tau between the supernet's re-scored reward and retrained test "
            f"accuracy over each search's top-{cfg.search.top_n} ({title}, budget "
            f"{_RANK_BUDGET.value:g})", command, seeds, _NOTES.value, ranking), indent=1)

  def on_pareto(rows):
    state["pareto"] = list(rows)
    write()

  def on_rank(rows):
    state["ranking"] = list(rows)
    write()

  if "pareto" in parts:
    run_pareto(cfg, workdir, seeds, budgets, modes, on_pareto)
  if "rank" in parts:
    run_ranking(cfg, workdir, seeds, _RANK_BUDGET.value, modes, on_rank)
  write()
  for r in summarize(state["pareto"]):
    print(f"{r['arm']:8s} budget {r['budget']:.2f}: FLOPs {r['flops_mean'] / bflops:.3f} of "
          f"base, test acc {r['test_accuracy_mean']:.4f} +- {r['test_accuracy_std']:.4f} "
          f"[{r['test_accuracy_min']:.4f}, {r['test_accuracy_max']:.4f}] (n={r['n_seeds']})")
  for r in summarize_ranking(state["ranking"]):
    print(f"{r['mode']}: Kendall tau (reward vs retrained acc.) mean "
          f"{r['kendall_tau_reward_mean']:.3f} [{r['kendall_tau_reward_min']:.3f}, "
          f"{r['kendall_tau_reward_max']:.3f}] over {r['n_seeds']} seeds, top-{r['top_n']}")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
