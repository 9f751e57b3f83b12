r"""The paper's §5.2 analysis, small: APS-O vs APS-I vs APS-T without a budget.

Runs one search per sharing mode on the embedded digits data with the reward
equal to the held-out accuracy (alpha = beta = 0: no FLOPs constraint), where
the oracle answer is the widest architecture. Reports per mode the sharing
level Phi, the gradient cosine between two sampled architectures (Eq. 3), the
coupled-gradient norm, and the controller's final layer-wise decision
probabilities, as plots and a markdown table.

  python -m aps_tf.experiments.sharing_analysis --workdir=workdirs/analysis \
      [--config=quick] [--modes=ordinal,independent,transitional] \
      [--config.search.epochs=60 ...]

Each mode's run lives in WORKDIR/MODE (a normal search workdir: rerunning
resumes). The comparison goes to WORKDIR/sharing_analysis.{png,md,json}.
"""

from __future__ import annotations

import json
import os

from absl import app
from absl import flags
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from aps_tf import cli
from aps_tf import fileio
from aps_tf import sharing

_CONFIG = cli.define_config("quick", "Base config: a file or a shipped config name")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
_MODES = flags.DEFINE_list("modes", list(sharing.MODES), "Sharing modes to compare.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Progress bars.")


def unconstrained(cfg, mode: str):
  """The config of one arm: same everything, reward = accuracy, one sharing mode."""
  cfg = cfg.copy_and_resolve_references()
  cfg.search.sharing = mode
  cfg.search.reward.alpha = 0.0
  cfg.search.reward.beta = 0.0
  # Keep a target the budget check accepts; with alpha = beta = 0 it has no effect.
  cfg.search.reward.target = 1e18
  if mode == "independent" and cfg.model.meta_width is not None:
    cfg.model.meta_width = max(cfg.model.meta_width, sum(cfg.model.candidates))
  return cfg


def _records(workdir: str) -> list[dict]:
  text = fileio.read_text(os.path.join(workdir, "metrics.jsonl"))
  return [json.loads(line) for line in text.splitlines() if line.strip()]


def summarize_mode(workdir: str, num_candidates: int) -> dict:
  """Curves and final numbers of one mode's search from its metrics log."""
  recs = _records(workdir)
  ana = [r for r in recs if r.get("kind") == "analysis"]
  train = [r for r in recs if r.get("kind") == "train"]
  arch = fileio.read_json(os.path.join(workdir, "arch.json"))
  probs = np.asarray(ana[-1]["probabilities"])[:, :num_candidates]
  widest = probs[:, -1]
  return {
      "steps": [r["step"] for r in ana],
      "phi": [r.get("phi") for r in ana],
      "grad_cosine": [r.get("grad_cosine") for r in ana],
      "coupled_grad_norm": [r.get("coupled_grad_norm") for r in ana],
      "train_steps": [r["step"] for r in train],
      "reward_accuracy": [r.get("reward_accuracy", r.get("accuracy")) for r in train],
      "final_probabilities": probs.tolist(),
      "final_phi": ana[-1].get("phi"),
      "final_grad_cosine": ana[-1].get("grad_cosine"),
      "final_coupled_grad_norm": ana[-1].get("coupled_grad_norm"),
      "mean_p_widest": float(widest.mean()),
      "layers_argmax_widest": int(np.sum(probs.argmax(-1) == num_candidates - 1)),
      "num_layers": int(probs.shape[0]),
      "picked_widths": arch["widths"],
      "picked_is_widest": arch["decisions"] is not None and all(
          d["index"] == len(d["candidates"]) - 1 for d in arch["decisions"]),
  }


def report(results: dict[str, dict], out_dir: str) -> str:
  """Writes the comparison plot, table and JSON; returns the markdown table."""
  fig, axes = plt.subplots(1, 4, figsize=(20, 4))
  for mode, r in results.items():
    axes[0].plot(r["steps"], r["phi"], label=mode)
    axes[1].plot(r["steps"], r["grad_cosine"], label=mode)
    axes[2].plot(r["steps"], r["coupled_grad_norm"], label=mode)
  for ax, title in zip(axes, ("sharing level Phi", "gradient cosine (Eq. 3)",
                              "coupled-gradient norm")):
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.legend()
  axes[0].set_yscale("log")
  width = 0.8 / max(len(results), 1)
  for k, (mode, r) in enumerate(results.items()):
    p = np.asarray(r["final_probabilities"])[:, -1]
    axes[3].bar(np.arange(len(p)) + k * width, p, width, label=mode)
  axes[3].set_title("final P(widest candidate) per layer")
  axes[3].set_xlabel("layer")
  axes[3].legend()
  fig.tight_layout()
  fileio.save_figure(fig, os.path.join(out_dir, "sharing_analysis.png"), dpi=80)
  plt.close(fig)

  def f(v, spec=".3g"):
    return "-" if v is None else format(v, spec)
  lines = ["| mode | final Phi | grad cosine | coupled-grad norm | mean P(widest) | "
           "layers choosing widest | picked = widest |", "|---|---|---|---|---|---|---|"]
  for mode, r in results.items():
    lines.append(f"| {mode} | {f(r['final_phi'])} | {f(r['final_grad_cosine'])} | "
                 f"{f(r['final_coupled_grad_norm'])} | {f(r['mean_p_widest'], '.3f')} | "
                 f"{r['layers_argmax_widest']}/{r['num_layers']} | {r['picked_is_widest']} |")
  table = "\n".join(lines)
  fileio.write_text(os.path.join(out_dir, "sharing_analysis.md"), table + "\n")
  fileio.write_json(os.path.join(out_dir, "sharing_analysis.json"), results, indent=None)
  return table


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  from aps_tf import config_check  # pylint: disable=g-import-not-at-top
  from aps_tf import data  # pylint: disable=g-import-not-at-top
  from aps_tf import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  from aps_tf.search import settings  # pylint: disable=g-import-not-at-top
  from aps_tf.search import run  # pylint: disable=g-import-not-at-top
  for mode in _MODES.value:
    config_check.check_enum("--modes", mode, sharing.MODES)
  # Every arm's config and workdir are checked before the first one starts.
  arms = {}
  for mode in _MODES.value:
    cfg = settings.resolve_config(unconstrained(_CONFIG.value, mode))
    workdir = os.path.join(_WORKDIR.value, mode)
    run.check_workdir(cfg, workdir, write=False)
    arms[mode] = (cfg, workdir)
  data.check_prepared(_CONFIG.value.data)
  workdir_lib.ensure_writable(_WORKDIR.value)
  fileio.makedirs(_WORKDIR.value)
  results = {}
  for mode, (cfg, workdir) in arms.items():
    print(f"== {mode}: {workdir}", flush=True)
    run.run(cfg, workdir, progress=_PROGRESS.value, config_name=f"sharing_analysis_{mode}")
    results[mode] = summarize_mode(workdir, len(cfg.model.candidates))
  print(report(results, _WORKDIR.value))
  print(f"plots and table: {_WORKDIR.value}/sharing_analysis.png, sharing_analysis.md")
  return 0


if __name__ == "__main__":
  cli.run(main)
