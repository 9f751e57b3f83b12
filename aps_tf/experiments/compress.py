r"""Compressing a pretrained model to half its FLOPs: search vs. uniform scaling.

A small functional CNN (a residual Add, batch norm, two strides) is trained on
the embedded digits once (WORKDIR/pretrained.keras). Then, per seed, three
children of about half its FLOPs are fine-tuned with the same retraining
budget (`train.*` of configs/keras_model.py, --finetune_epochs) and tested:

  searched_from_supernet  search from the pretrained weights (the supernet
                          starts as the user's model, `model.init_from`),
                          child fine-tuned from the supernet (train.init=supernet)
  searched_from_scratch   the same searched widths, trained from scratch
  searched_from_pretrained  the same searched widths, started from the
                          pretrained model's first channels (train.init=keras)
  uniform_from_pretrained every searched width scaled by one factor chosen so
                          the FLOPs are closest to the searched child's budget,
                          started from the pretrained model's first channels
                          (train.init=keras)

With --importance, arm (a) also runs with the channels pre-ordered by
importance before copying (`searched_importance_from_supernet`).

The reward is configs/keras_model.py's: R = acc * (F/T)^alpha under the
budget T, alpha = 0, so a child below the budget is not pushed up to it and
the searched arms may land well under it. --reward_alpha=A (> 0) makes
undershooting cost reward, which brings the searched children to the budget,
next to the uniform arm's FLOPs (the equal-FLOPs comparison).

  python -m aps_tf.experiments.compress --workdir=workdirs/compress \
      [--seeds=0,1,2] [--pretrain_epochs=30] [--search_steps=600] \
      [--finetune_epochs=10] [--finetune_lr=0.05] [--importance] \
      [--reward_alpha=A] [--out=docs/results/compress.json]

Every stage goes through the Python API (`aps_tf.search`, `SearchResult.retrain`),
i.e. the search and retraining binaries' code, in normal workdirs under
WORKDIR: rerunning the command resumes and reuses finished stages. Results:
WORKDIR/compress.json and, with --out, the record in the docs/results format.
"""

from __future__ import annotations

import datetime
import os
import platform

from absl import flags
import numpy as np

from aps_tf import cli
from aps_tf import fileio


ARMS = ("searched_from_supernet", "searched_from_scratch", "searched_from_pretrained",
        "uniform_from_pretrained")


def pretrained_cnn(seed: int = 0):
  """The small functional CNN: 16x16x1 digits, 10 classes."""
  import keras  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(seed)
  layers = keras.layers

  def conv_bn(x, width, stride, name, act=True):
    x = layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if act else x

  x = inp = keras.Input((16, 16, 1), name="image")
  x = conv_bn(x, 32, 1, "stem")
  y = conv_bn(x, 32, 1, "res_a")
  y = conv_bn(y, 32, 1, "res_b", act=False)
  x = layers.ReLU(name="res_relu")(layers.Add(name="res_add")([x, y]))
  x = conv_bn(x, 64, 2, "down1")
  x = conv_bn(x, 64, 1, "mid")
  x = conv_bn(x, 128, 2, "down2")
  x = layers.GlobalAveragePooling2D(name="pool")(x)
  return keras.Model(inp, layers.Dense(10, name="logits")(x), name="digits_cnn")


def pretrain(path: str, epochs: int) -> dict:
  """Trains the CNN on digits 'full_train' once; returns its test accuracy and costs."""
  import keras  # pylint: disable=g-import-not-at-top
  from aps_tf import data  # pylint: disable=g-import-not-at-top
  from aps_tf import flops as flops_lib  # pylint: disable=g-import-not-at-top
  cfg = data.default_config("digits")
  if not fileio.exists(path):
    model = pretrained_cnn()
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    n = data.dataset_info(cfg).split_sizes["full_train"]
    model.fit(data.build_dataset(cfg, "full_train", 64, training=True, seed=0),
              epochs=epochs, steps_per_epoch=n // 64, verbose=0)
    fileio.save_keras(model, path)
  model = fileio.load_keras(path, compile=False)
  test = data.build_dataset(cfg, "test", 128, training=False, repeat=False,
                            drop_remainder=False)
  correct = total = 0
  for x, y in test:
    correct += int(np.sum(np.argmax(model(x, training=False), -1) == y.numpy()))
    total += len(y)
  return {"test_accuracy": correct / total, **flops_lib.count_keras_model(model)}


def uniform_widths(topology, target_flops: float) -> tuple[float, list[int]]:
  """(factor, widths): every decision's original width times one factor, rounded,
  the factor (searched on a 1/1000 grid) whose full FLOPs are closest to the target."""
  from aps_tf import flops as flops_lib  # pylint: disable=g-import-not-at-top
  t = topology
  best = None
  for f in np.linspace(0.05, 1.0, 951):
    widths = list(t.base_widths)
    for d in t.space.decisions:
      for s in d.slots:
        widths[s] = max(1, int(round(f * t.base_widths[s])))
    cost = flops_lib.count(t, widths, "full")["flops"]
    if best is None or abs(cost - target_flops) < abs(best[2] - target_flops):
      best = (float(f), widths, cost)
  return round(best[0], 3), best[1]


def _summary(values) -> dict:
  v = np.asarray(values, np.float64)
  return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
          "min": float(v.min()), "max": float(v.max()), "n": int(len(v))}


def run(workdir: str, seeds, pretrain_epochs: int, search_steps: int, finetune_epochs: int,
        fraction: float, importance: bool, finetune_lr: float = 0.05,
        arms=ARMS, reward_alpha: float | None = None) -> dict:
  """Every stage of `arms` (resumable); returns {'pretrained', 'runs', 'arms', 'settings'}."""
  import aps_tf  # pylint: disable=g-import-not-at-top
  from aps_tf import api  # pylint: disable=g-import-not-at-top
  from aps_tf import archfile  # pylint: disable=g-import-not-at-top
  from aps_tf import models  # pylint: disable=g-import-not-at-top
  from aps_tf.train import trainer  # pylint: disable=g-import-not-at-top
  unknown = sorted(set(arms) - set(ARMS) - {"searched_importance_from_supernet"})
  if unknown:
    raise api.ApiError(f"--arms: unknown {unknown}; expected some of {list(ARMS)}")
  fileio.makedirs(workdir)
  model_path = os.path.join(workdir, "pretrained.keras")
  pre = pretrain(model_path, pretrain_epochs)
  runs = []
  searches = [("searched", None)] + ([("searched_importance", "l1")] if importance else [])
  for seed in seeds:
    if "uniform_from_pretrained" in arms:
      # Every width scaled by one factor to the budget, from the pretrained channels.
      cfg = api.build_config(model_path, "digits", budget=aps_tf.Flops(fraction))
      t = models.topology_from_config(cfg.model, (cfg.data.image_size,) * 2 +
                                      (cfg.data.channels,), cfg.data.num_classes)
      factor, widths = uniform_widths(t, fraction * pre["flops"])
      arch_path = os.path.join(workdir, f"uniform_seed{seed}_arch.json")
      if not fileio.exists(arch_path):
        archfile.save(archfile.make(t, widths, provenance={"uniform_factor": factor}),
                      arch_path)
      cfg.seed, cfg.train.init, cfg.train.epochs = int(seed), "keras", finetune_epochs
      cfg.train.lr = finetune_lr
      m = trainer.train(cfg, arch_path, os.path.join(workdir, f"uniform_seed{seed}"),
                        progress=False)
      runs.append({"arm": "uniform_from_pretrained", "seed": int(seed),
                   "test_accuracy": m["test_accuracy"], "flops": m["flops"]["full"],
                   "params": m["params"], "widths": m["widths"], "factor": factor})
    for tag, order in searches:
      todo = [(a, i) for a, i in ((f"{tag}_from_supernet", "supernet"),
                                  (f"{tag}_from_scratch", "scratch"),
                                  (f"{tag}_from_pretrained", "keras"))
              if a in arms or (order and i == "supernet")]
      if not todo:
        continue
      overrides = {"seed": int(seed), "model.init_from": "keras"}
      if reward_alpha is not None:
        overrides["search.reward.alpha"] = float(reward_alpha)
      if order:
        overrides["model.channel_order"] = order
      result = aps_tf.search(model_path, "digits", budget=aps_tf.Flops(fraction),
                             workdir=os.path.join(workdir, f"{tag}_seed{seed}", "search"),
                             steps=search_steps, overrides=overrides, progress=False)
      for arm, init in todo:
        m = result.retrain(finetune_epochs, init=init, progress=False,
                           workdir=os.path.join(workdir, f"{tag}_seed{seed}", arm),
                           overrides={"seed": int(seed), "train.lr": finetune_lr})
        runs.append({"arm": arm, "seed": int(seed), "test_accuracy": m.metrics["test_accuracy"],
                     "flops": m.metrics["flops"]["full"], "params": m.metrics["params"],
                     "widths": m.metrics["widths"]})
  names = sorted({r["arm"] for r in runs}, key=lambda a: (a not in ARMS, a))
  arms = {a: {"test_accuracy": _summary([r["test_accuracy"] for r in runs if r["arm"] == a]),
              "flops_fraction": _summary([r["flops"] / pre["flops"] for r in runs
                                          if r["arm"] == a])}
          for a in names}
  out = {"pretrained": pre, "runs": runs, "arms": arms,
         "settings": {"seeds": [int(s) for s in seeds], "pretrain_epochs": pretrain_epochs,
                      "search_steps": search_steps, "finetune_epochs": finetune_epochs,
                      "flops_fraction": fraction, "importance": importance,
                      "finetune_lr": finetune_lr, "arms": list(arms),
                      "reward_alpha": reward_alpha}}
  fileio.write_json(os.path.join(workdir, "compress.json"), out, indent=2)
  return out


def record(out: dict, command: str) -> dict:
  """The docs/results record: flat name -> number."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  results = {"pretrained_test_accuracy": out["pretrained"]["test_accuracy"],
             "pretrained_flops": out["pretrained"]["flops"]}
  for arm, s in out["arms"].items():
    for k in ("mean", "std", "min", "max"):
      results[f"{arm}_test_accuracy_{k}"] = s["test_accuracy"][k]
    results[f"{arm}_flops_fraction_mean"] = s["flops_fraction"]["mean"]
  alpha = out["settings"].get("reward_alpha")
  title = ("Compressing a pretrained digits CNN to half its FLOPs: search from its "
           "weights vs. the same widths from scratch vs. uniform scaling")
  if alpha is not None:
    title += f", with a reward that targets the budget (alpha={alpha:g})"
  return {"title": title,
          "command": command, "date": datetime.date.today().isoformat(),
          "machine": f"{platform.machine()} {os.cpu_count()} CPU cores",
          "versions": {"python": platform.python_version(), "tensorflow": tf.__version__,
                       "keras": keras.__version__},
          "seeds": out["settings"]["seeds"],
          "notes": "Test accuracy on the digits test split (360 images) after fine-tuning "
                   "with the same retraining budget per arm; std over seeds (ddof=1). Arms "
                   f"run: {', '.join(out['arms'])}. Accuracies only (no timings), so a "
                   "shared machine does not change them.",
          "results": results}


def define_flags() -> None:
  """The binary's flags (defined when it runs, so importing this module defines none)."""
  global _WORKDIR, _SEEDS, _PRETRAIN_EPOCHS, _SEARCH_STEPS, _FINETUNE_EPOCHS  # pylint: disable=global-statement
  global _FINETUNE_LR, _FRACTION, _IMPORTANCE, _OUT, _ARMS, _ALPHA  # pylint: disable=global-statement
  _WORKDIR = flags.DEFINE_string("workdir", None, "Where every stage's workdir goes.")
  _SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Search and fine-tuning seeds.")
  _PRETRAIN_EPOCHS = flags.DEFINE_integer("pretrain_epochs", 30, "Epochs of the pretrained CNN.")
  _SEARCH_STEPS = flags.DEFINE_integer("search_steps", 600, "Search iterations (half warm-up).")
  _FINETUNE_EPOCHS = flags.DEFINE_integer("finetune_epochs", 10, "Retraining epochs, every arm.")
  _FINETUNE_LR = flags.DEFINE_float("finetune_lr", 0.05, "Retraining learning rate, every arm.")
  _FRACTION = flags.DEFINE_float("flops_fraction", 0.5, "Budget: fraction of the CNN's FLOPs.")
  _IMPORTANCE = flags.DEFINE_bool("importance", False, "Also search with importance ordering.")
  _OUT = flags.DEFINE_string("out", None, "Write the docs/results record here.")
  _ARMS = flags.DEFINE_list("arms", list(ARMS), "Which arms to run.")
  _ALPHA = flags.DEFINE_float("reward_alpha", None, "The reward's exponent under the budget "
                              "(search.reward.alpha); > 0 pushes the searched children up to "
                              "the budget. Default: the config's (0).")
  flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  out = run(_WORKDIR.value, _SEEDS.value, _PRETRAIN_EPOCHS.value, _SEARCH_STEPS.value,
            _FINETUNE_EPOCHS.value, _FRACTION.value, _IMPORTANCE.value, _FINETUNE_LR.value,
            tuple(_ARMS.value), _ALPHA.value)
  for arm, s in out["arms"].items():
    a = s["test_accuracy"]
    print(f"{arm:36s} test accuracy {a['mean']:.4f} +- {a['std']:.4f} (n={a['n']}), "
          f"FLOPs {s['flops_fraction']['mean']:.3f} of the pretrained")
  if _OUT.value:
    command = cli.rerun_command("aps_tf.experiments.compress", "WORKDIR")
    fileio.write_json(_OUT.value, record(out, command), indent=2)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
