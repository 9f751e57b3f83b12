"""Console scripts of the installed package (pyproject.toml [project.scripts]).

Each script runs the `python -m` module of its binary as `__main__`, so both
ways of starting a binary go through the same main (and `aps_tf.cli.run`).
`BINARIES` maps every script to its module; README.md's command reference
lists the same pairs (tests/test_package.py checks both against pyproject.toml).
"""

from __future__ import annotations

import runpy

# console script -> module run as __main__
BINARIES = {
    "aps-search": "aps_tf.search",
    "aps-train": "aps_tf.train",
    "aps-export": "aps_tf.export.export_model",
    "aps-verify": "aps_tf.export.verify",
    "aps-serving-client": "aps_tf.export.serving_client",
    "aps-flops": "aps_tf.flops",
    "aps-latency": "aps_tf.latency",
    "aps-phi-schedule": "aps_tf.experiments.phi_schedule",
    "aps-summary": "aps_tf.experiments.summary",
    "aps-sharing-analysis": "aps_tf.experiments.sharing_analysis",
    "aps-reward-and-pick": "aps_tf.experiments.reward_and_pick",
}


def _run(script: str) -> None:
  runpy.run_module(BINARIES[script], run_name="__main__", alter_sys=True)


def search() -> None:
  _run("aps-search")


def train() -> None:
  _run("aps-train")


def export() -> None:
  _run("aps-export")


def verify() -> None:
  _run("aps-verify")


def serving_client() -> None:
  _run("aps-serving-client")


def flops() -> None:
  _run("aps-flops")


def latency() -> None:
  _run("aps-latency")


def phi_schedule() -> None:
  _run("aps-phi-schedule")


def summary() -> None:
  _run("aps-summary")


def sharing_analysis() -> None:
  _run("aps-sharing-analysis")


def reward_and_pick() -> None:
  _run("aps-reward-and-pick")
