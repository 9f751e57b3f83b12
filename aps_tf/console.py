"""Console scripts of the installed package (pyproject.toml [project.scripts]).

Each script runs the `python -m` module of its binary as `__main__`, so both
ways of starting a binary go through the same main (and `aps_tf.cli.run`):

  aps-search  = python -m aps_tf.search       aps-train  = python -m aps_tf.train
  aps-export  = python -m export.export_model aps-verify = python -m export.verify
  aps-flops   = python -m aps_tf.flops
  aps-phi-schedule = python -m aps_tf.experiments.phi_schedule
  aps-latency = python -m aps_tf.latency
"""

from __future__ import annotations

import runpy

BINARIES = {
    "search": "aps_tf.search",
    "train": "aps_tf.train",
    "export": "export.export_model",
    "verify": "export.verify",
    "flops": "aps_tf.flops",
    "phi_schedule": "aps_tf.experiments.phi_schedule",
    "latency": "aps_tf.latency",
}


def _run(name: str) -> None:
  runpy.run_module(BINARIES[name], run_name="__main__", alter_sys=True)


def search() -> None:
  _run("search")


def train() -> None:
  _run("train")


def export() -> None:
  _run("export")


def verify() -> None:
  _run("verify")


def flops() -> None:
  _run("flops")


def phi_schedule() -> None:
  _run("phi_schedule")


def latency() -> None:
  _run("latency")
