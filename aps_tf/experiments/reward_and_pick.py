r"""Which reward BN mode, and which pick rule: measured against retrained accuracy.

Two questions about the search, each answered by retraining architectures
from scratch and comparing with what the supernet said about them.

Reward BN (`search.reward.bn`): one search per mode (seed = the first of
--seeds). For a fixed set of --num_archs architectures drawn uniformly from
the space, every supernet scores each architecture on the whole reward split
(no augmentation) in each BN mode; each architecture is retrained with the
config's train settings (once per --retrain_seeds, averaged) and tested.
Reported per (search mode, scoring mode): the mean reward-split accuracy of
the set, and Kendall's tau-b between the supernet's reward-split accuracy and
the retrained test accuracy (and minus the test loss, which ties less on a
small test set); plus the reward accuracy the controller saw during the last
quarter of each search.

Pick (`search.pick`): one search per seed in --seeds with `search.reward.bn`
= --pick_bn (default: the config's). Each search's top_archs.json records
which top-N architecture every rule picks; each distinct pick is retrained
(same train seed for all) and tested.

  python -m aps_tf.experiments.reward_and_pick --workdir=workdirs/reward_and_pick \
      [--config=quick] [--seeds=0,1,2] [--num_archs=10] \
      [--parts=bn,pick] [--pick_bn=batch|moving] [--train_epochs=N] \
      [--retrain_seeds=0,1] [--config.search.epochs=...]

Searches live in WORKDIR/search/bn_MODE_seedS and retrains in
WORKDIR/retrain/KEY (normal workdirs: rerunning resumes and reuses them).
Results: WORKDIR/reward_and_pick.{json,md}.
"""

from __future__ import annotations

import hashlib
import json
import os

from absl import flags
import numpy as np
import tensorflow as tf

from aps_tf import cli
from aps_tf import errors
from aps_tf import fileio
from aps_tf import runner

BN_MODES = ("batch", "moving")


def kendall_tau(x, y) -> float:
  """Kendall's tau-b of two equally long sequences (ties counted as in tau-b)."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.shape != y.shape or x.size < 2:
    raise ValueError(f"need two equally long sequences of >= 2 values, got {x.shape}, {y.shape}")
  i, j = np.triu_indices(x.size, k=1)
  dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
  denom = np.sqrt(np.sum(dx != 0) * np.sum(dy != 0))
  return float(np.sum(dx * dy) / denom) if denom else float("nan")


def arch_key(widths) -> str:
  return hashlib.sha1(json.dumps(list(widths)).encode()).hexdigest()[:12]


def search_config(cfg, bn: str, seed: int):
  cfg = cfg.copy_and_resolve_references()
  cfg.search.reward.bn = bn
  cfg.seed = int(seed)
  return cfg


def run_search(cfg, workdir: str, progress: bool) -> None:
  """A normal search (resumes; a finished one is reused as is)."""
  from aps_tf.search import run  # pylint: disable=g-import-not-at-top
  if fileio.exists(os.path.join(workdir, "top_archs.json")):
    return
  run.run(cfg, workdir, progress=progress, config_name="reward_and_pick")


def search_reward_accuracy(workdir: str) -> float:
  """Mean reward-batch accuracy the controller saw over the last quarter of the search."""
  text = fileio.read_text(os.path.join(workdir, "metrics.jsonl"))
  recs = [json.loads(l) for l in text.splitlines() if l.strip()]
  accs = [r["reward_accuracy"] for r in recs
          if r.get("kind") == "train" and "reward_accuracy" in r]
  if not accs:
    raise errors.UserError(f"{workdir}/metrics.jsonl has no reward_accuracy records")
  return float(np.mean(accs[len(accs) * 3 // 4:]))


def score_archs(cfg, workdir: str, archs, bn: str) -> list[float]:
  """Reward-split accuracy (whole split, no augmentation) of each arch, BN per `bn`."""
  from aps_tf.search import task as task_lib  # pylint: disable=g-import-not-at-top
  sr = task_lib.SearchTask.from_config(search_config(cfg, bn, cfg.seed))
  latest = tf.train.latest_checkpoint(os.path.join(workdir, "ckpt"))
  sr.checkpoint.restore(latest).expect_partial()

  @tf.function
  def correct(arch, images, labels):
    logits = sr.reward_logits(images, arch)
    return runner.num_correct(logits, labels)

  batches = list(iter(sr.dataset("reward", 0, augment=False)))
  batches = batches[:max(1, sr.info.split_sizes["reward"] // sr.global_batch)]
  out = []
  for a in archs:
    c = sum(float(correct(tf.constant(a, tf.int32), *b)) for b in batches)
    out.append(c / (len(batches) * sr.global_batch))
  return out


def retrain(cfg, workdir: str, decisions, epochs: int | None, progress: bool,
            seeds=None) -> dict:
  """Retrains `decisions` from scratch once per seed (WORKDIR/retrain/KEY[_sSEED]).

  Returns the test accuracy and loss averaged over the seeds, and each seed's.
  """
  seeds = [int(cfg.seed)] if not seeds else [int(x) for x in seeds]
  runs = [_retrain_one(cfg, workdir, decisions, epochs, progress, seed) for seed in seeds]
  return {"widths": runs[0]["widths"], "key": runs[0]["key"], "epochs": runs[0]["epochs"],
          "seeds": seeds, "test_accuracy_per_seed": [r["test_accuracy"] for r in runs],
          "test_accuracy": float(np.mean([r["test_accuracy"] for r in runs])),
          "test_loss": float(np.mean([r["test_loss"] for r in runs]))}


def _retrain_one(cfg, workdir: str, decisions, epochs, progress: bool, seed: int) -> dict:
  from aps_tf import data  # pylint: disable=g-import-not-at-top
  from aps_tf import models  # pylint: disable=g-import-not-at-top
  info = data.dataset_info(cfg.data)
  topology = models.topology_from_config(cfg.model, info.image_shape, info.num_classes)
  return retrain_widths(cfg, workdir, topology.space.widths(decisions), epochs, progress,
                        seed, decisions=decisions)


def retrain_widths(cfg, workdir: str, widths, epochs, progress: bool, seed: int,
                   decisions=None) -> dict:
  """Retrains one architecture given by its widths (any positive widths; the
  decisions, when it is in the search space, only annotate arch.json).

  Stored in WORKDIR/retrain/KEY (cfg.seed) or KEY_sSEED; a finished one is reused.

  Returns:
    {'widths', 'test_accuracy', 'test_loss', 'epochs', 'key'}.
  """
  from aps_tf import archfile  # pylint: disable=g-import-not-at-top
  from aps_tf import data  # pylint: disable=g-import-not-at-top
  from aps_tf import models  # pylint: disable=g-import-not-at-top
  from aps_tf.train import trainer  # pylint: disable=g-import-not-at-top
  default_seed = int(cfg.seed)
  cfg = cfg.copy_and_resolve_references()
  cfg.seed = int(seed)
  if epochs:
    cfg.train.epochs = int(epochs)
  info = data.dataset_info(cfg.data)
  topology = models.topology_from_config(cfg.model, info.image_shape, info.num_classes)
  widths = [int(w) for w in widths]
  key = arch_key(widths)
  base = os.path.join(workdir, "retrain", key if seed == default_seed else f"{key}_s{seed}")
  metrics_path = os.path.join(base, "run", "metrics.json")
  if not fileio.exists(metrics_path):
    fileio.makedirs(base)
    arch = archfile.make(topology, widths,
                         decisions=None if decisions is None else list(decisions),
                         search_space=models.search_space_record(cfg.model),
                         provenance={"config": "reward_and_pick"})
    path = os.path.join(base, "arch.json")
    archfile.save(arch, path)
    trainer.train(cfg, path, os.path.join(base, "run"), progress=progress)
  m = fileio.read_json(metrics_path)
  return {"widths": widths, "test_accuracy": m["test_accuracy"], "test_loss": m["test_loss"],
          "epochs": m["epochs"], "key": key}


def uniform_archs(cfg, n: int, seed: int) -> list[list[int]]:
  from aps_tf import data  # pylint: disable=g-import-not-at-top
  from aps_tf import models  # pylint: disable=g-import-not-at-top
  info = data.dataset_info(cfg.data)
  space = models.topology_from_config(cfg.model, info.image_shape, info.num_classes).space
  rng = np.random.default_rng(seed)
  out: list[list[int]] = []
  while len(out) < n:
    a = space.sample_uniform(rng)
    if a not in out:
      out.append(a)
  return out


def compare_bn(cfg, workdir: str, seed: int, n: int, arch_seed: int, epochs, progress,
               retrain_seeds=None) -> dict:
  archs = uniform_archs(cfg, n, arch_seed)
  tests = [retrain(cfg, workdir, a, epochs, progress, retrain_seeds) for a in archs]
  test_acc = [t["test_accuracy"] for t in tests]
  neg_loss = [-t["test_loss"] for t in tests]
  res = {"archs": archs, "widths": [t["widths"] for t in tests], "test_accuracy": test_acc,
         "test_accuracy_per_seed": [t["test_accuracy_per_seed"] for t in tests],
         "test_loss": [t["test_loss"] for t in tests], "retrain_seeds": tests[0]["seeds"],
         "retrain_epochs": tests[0]["epochs"], "search_seed": seed, "modes": {}}
  for mode in BN_MODES:
    sdir = os.path.join(workdir, "search", f"bn_{mode}_seed{seed}")
    scfg = search_config(cfg, mode, seed)
    run_search(scfg, sdir, progress)
    row = {"search_reward_accuracy_last_quarter": search_reward_accuracy(sdir), "scored_by": {}}
    for score_mode in BN_MODES:
      acc = score_archs(scfg, sdir, archs, score_mode)
      row["scored_by"][score_mode] = {"reward_accuracy": acc,
                                      "mean_reward_accuracy": float(np.mean(acc)),
                                      "kendall_tau": kendall_tau(acc, test_acc),
                                      "kendall_tau_vs_test_loss": kendall_tau(acc, neg_loss)}
    res["modes"][mode] = row
  return res


def compare_pick(cfg, workdir: str, seeds, bn: str, epochs, progress,
                 retrain_seeds=None) -> dict:
  rows = []
  for seed in seeds:
    sdir = os.path.join(workdir, "search", f"bn_{bn}_seed{seed}")
    run_search(search_config(cfg, bn, seed), sdir, progress)
    top = fileio.read_json(os.path.join(sdir, "top_archs.json"))
    for rule, index in sorted(top["picked_by_rule"].items()):
      a = top["architectures"][index]
      t = retrain(cfg, workdir, a["decisions"], epochs, progress, retrain_seeds)
      rows.append({"seed": int(seed), "rule": rule, "index": index, "cost": a["cost"],
                   "log_prob": a["log_prob"], "reward": a.get("reward"),
                   "reward_se": a.get("reward_se"), "widths": a["widths"],
                   "test_accuracy": t["test_accuracy"], "test_loss": t["test_loss"],
                   "retrain_epochs": t["epochs"], "retrain_seeds": t["seeds"]})
  means = {}
  for rule in sorted({r["rule"] for r in rows}):
    accs = [r["test_accuracy"] for r in rows if r["rule"] == rule]
    means[rule] = {"mean_test_accuracy": float(np.mean(accs)), "n": len(accs)}
  return {"bn": bn, "seeds": [int(s) for s in seeds], "rows": rows, "means": means,
          "target": float(cfg.search.reward.target)}


def markdown(results: dict) -> str:
  lines = []
  if "bn" in results:
    r = results["bn"]
    lines += [f"Reward BN: search seed {r['search_seed']}, {len(r['archs'])} uniform "
              f"architectures retrained for {r['retrain_epochs']} epochs, retrain seeds "
              f"{r['retrain_seeds']} (mean test accuracy "
              f"{min(r['test_accuracy']):.4f}-{max(r['test_accuracy']):.4f}).", "",
              "| search BN | scored with | reward acc. in search (last 25%) | mean reward-split "
              "acc. of the set | Kendall tau vs test acc. | Kendall tau vs -test loss |",
              "|---|---|---|---|---|---|"]
    for mode, row in r["modes"].items():
      for score_mode, s in row["scored_by"].items():
        lines.append(f"| {mode} | {score_mode} | {row['search_reward_accuracy_last_quarter']:.3f}"
                     f" | {s['mean_reward_accuracy']:.3f} | {s['kendall_tau']:.3f} | "
                     f"{s['kendall_tau_vs_test_loss']:.3f} |")
    lines.append("")
  if "pick" in results:
    r = results["pick"]
    lines += [f"Pick: reward BN {r['bn']!r}, seeds {r['seeds']}, target {r['target']:.4g}.", "",
              "| seed | rule | top-N index | cost | re-scored reward (s.e.) | retrained test acc. |",
              "|---|---|---|---|---|---|"]
    for row in r["rows"]:
      rew = ("-" if row["reward"] is None
             else f"{row['reward']:.4f} ({row['reward_se']:.4f})")
      lines.append(f"| {row['seed']} | {row['rule']} | {row['index']} | {row['cost']:.4g} | "
                   f"{rew} | {row['test_accuracy']:.4f} |")
    for rule, m in r["means"].items():
      lines.append(f"| mean | {rule} | | | | {m['mean_test_accuracy']:.4f} |")
  return "\n".join(lines)


def define_flags() -> None:
  """The binary's flags (defined on use, so that importing the module for its
  functions does not clash with other binaries' flags in one process)."""
  global _CONFIG, _WORKDIR, _SEEDS, _NUM_ARCHS, _ARCH_SEED, _PARTS, _PICK_BN
  global _TRAIN_EPOCHS, _RETRAIN_SEEDS, _PROGRESS
  _CONFIG = cli.define_config("quick", "Base config: a file or a shipped config name")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
  _SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Search seeds of the pick comparison; "
                             "the first also seeds the BN comparison.")
  _NUM_ARCHS = flags.DEFINE_integer("num_archs", 10, "Uniformly drawn architectures ranked "
                                    "in the BN comparison.")
  _ARCH_SEED = flags.DEFINE_integer("arch_seed", 1234, "Seed of the uniform architecture draw.")
  _PARTS = flags.DEFINE_list("parts", ["bn", "pick"], "Which comparisons to run: bn, pick.")
  _PICK_BN = flags.DEFINE_string("pick_bn", None, "search.reward.bn of the pick searches "
                                 "(default: the config's).")
  _TRAIN_EPOCHS = flags.DEFINE_integer("train_epochs", None, "Retraining epochs (default: "
                                       "the config's train.epochs).")
  _RETRAIN_SEEDS = flags.DEFINE_list("retrain_seeds", None, "Seeds of the retrains of each "
                                      "architecture, averaged (default: the config's seed).")
  _PROGRESS = flags.DEFINE_bool("progress", False, "Progress bars.")


def main(argv):
  del argv
  cli.quiet_unless_verbose()
  if not _WORKDIR.value:
    raise errors.UserError("--workdir is required")
  parts = set(_PARTS.value)
  if not parts or parts - {"bn", "pick"}:
    raise errors.UserError(f"--parts must name bn and/or pick, got {_PARTS.value}")
  pick_bn = _PICK_BN.value or _CONFIG.value.search.reward.bn
  if pick_bn not in BN_MODES:
    raise errors.UserError(f"--pick_bn must be one of {BN_MODES}, got {pick_bn!r}")
  seeds = [int(s) for s in _SEEDS.value]
  if not seeds:
    raise errors.UserError("--seeds needs at least one seed")
  if _NUM_ARCHS.value < 3:
    raise errors.UserError(f"--num_archs must be >= 3 for a rank correlation, got "
                           f"{_NUM_ARCHS.value}")
  fileio.makedirs(_WORKDIR.value)
  cfg = _CONFIG.value
  results = {}
  if "bn" in parts:
    results["bn"] = compare_bn(cfg, _WORKDIR.value, seeds[0], _NUM_ARCHS.value,
                               _ARCH_SEED.value, _TRAIN_EPOCHS.value, _PROGRESS.value,
                               _RETRAIN_SEEDS.value)
  if "pick" in parts:
    results["pick"] = compare_pick(cfg, _WORKDIR.value, seeds, pick_bn, _TRAIN_EPOCHS.value,
                                   _PROGRESS.value, _RETRAIN_SEEDS.value)
  table = markdown(results)
  fileio.write_json(os.path.join(_WORKDIR.value, "reward_and_pick.json"), results, indent=1)
  fileio.write_text(os.path.join(_WORKDIR.value, "reward_and_pick.md"), table + "\n")
  print(table)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
