"""Every binary on bad input: exit 2, one line on stderr, the workdir untouched.

The cases run in one subprocess (tests.helpers.binary_driver: each binary run
as `python -m` runs it, stderr captured at the file descriptor), so
TensorFlow is imported once for the whole matrix. Each case gets its own
directory; it is hashed before and after the run. Read-only and full disks are
simulated (the tests run as root, where permissions do not stop writes): every
write below the case directory fails with EROFS or ENOSPC.
"""

import hashlib
import json
import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import pytest

from aps_tf import archfile
from aps_tf.models import dense
from aps_tf.models import topology as topo
from aps_tf.search import run as search_run
from aps_tf.train import trainer
from tests.helpers import binary_driver
from tests.helpers import train_util as util

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEARCH, TRAIN, EXPORT = "aps_tf.search.__main__", "aps_tf.train.__main__", "export.export_model"
FLOPS, QAT, CLIENT = "aps_tf.flops.__main__", "export.qat", "export.serving_client"
SUMMARY, ANALYSIS = "aps_tf.experiments.summary", "aps_tf.experiments.sharing_analysis"
FIGURE, PARETO = "aps_tf.experiments.figure", "aps_tf.experiments.pareto"
QUICK = "--config=configs/quick.py"
CIFAR = "--config=configs/cifar10_resnet20_50.py"

# name: (module, argv with {d} = the case directory and {f} = shared fixtures,
#        expected stderr fragment, options)
CASES = {
    # search
    "search_unknown_field": (SEARCH, [QUICK, "--workdir={d}/w", "--config.search.nope=1"],
                             "unknown config field in --config.search.nope=1", {}),
    "search_unknown_field_in_file": (SEARCH, ["--config={f}/typo.py", "--workdir={d}/w"],
                                     "unknown config field train.optimiser", {}),
    "search_wrong_type_flag": (SEARCH, [QUICK, "--workdir={d}/w", "--config.search.lr=fast"],
                               "search.lr", {}),
    "search_wrong_type_in_file": (SEARCH, ["--config={f}/wrongtype.py", "--workdir={d}/w"],
                                  "Could not override field 'epochs'", {}),
    "search_unknown_sharing": (SEARCH, [QUICK, "--workdir={d}/w",
                                        "--config.search.sharing=sideways"],
                               "search.sharing: expected one of ordinal", {}),
    "search_unknown_strategy": (SEARCH, [QUICK, "--workdir={d}/w", "--config.strategy=magic"],
                                "strategy: expected one of default", {}),
    "search_unknown_reward_kind": (SEARCH, [QUICK, "--workdir={d}/w",
                                            "--config.search.reward.kind=latency"],
                                   "search.reward.kind", {}),
    "search_unknown_optimizer": (SEARCH, [QUICK, "--workdir={d}/w",
                                          "--config.train.optimizer=rmsprop"],
                                 "train.optimizer: expected one of sgd", {}),
    "search_unknown_format": (SEARCH, [QUICK, "--workdir={d}/w",
                                       "--config.export.formats=('onnx',)"],
                              "export.formats", {}),
    "search_budget_below_smallest": (SEARCH, [QUICK, "--workdir={d}/w",
                                              "--config.search.reward.target=1000"],
                                     "target=1000 is below the smallest architecture's flops "
                                     "(flops=", {}),
    "search_unprepared_dataset": (SEARCH, [CIFAR, "--workdir={d}/w",
                                           "--config.data.data_dir={f}/empty"],
                                  "tfds build cifar10", {}),
    "search_other_config_workdir": (SEARCH, [QUICK, "--workdir={d}/w"], "seed: saved=1 now=0",
                                    {"setup": "search_workdir_seed1"}),
    "search_read_only_workdir": (SEARCH, [QUICK, "--workdir={d}/w"], "read-only file system",
                                 {"fail_writes": "EROFS", "setup": "empty_workdir"}),
    "search_disk_full": (SEARCH, [QUICK, "--workdir={d}/w"], "No space left on device",
                         {"fail_writes": "ENOSPC", "setup": "empty_workdir"}),
    "search_missing_workdir_flag": (SEARCH, [QUICK], "--workdir are required", {}),
    # train
    "train_unknown_field": (TRAIN, [QUICK, "--arch={f}/arch.json", "--workdir={d}/w",
                                    "--config.train.nope=1"], "train.nope", {}),
    "train_wrong_type": (TRAIN, [QUICK, "--arch={f}/arch.json", "--workdir={d}/w",
                                 "--config.train.epochs=many"], "train.epochs", {}),
    "train_unknown_optimizer": (TRAIN, [QUICK, "--arch={f}/arch.json", "--workdir={d}/w",
                                        "--config.train.optimizer=rmsprop"],
                                "train.optimizer: expected one of sgd, momentum, adam, got "
                                "'rmsprop'", {}),
    "train_unknown_schedule": (TRAIN, [QUICK, "--arch={f}/arch.json", "--workdir={d}/w",
                                       "--config.train.schedule=step"],
                               "train.schedule: expected one of cosine, constant", {}),
    "train_unknown_init": (TRAIN, [QUICK, "--arch={f}/arch.json", "--workdir={d}/w",
                                   "--config.train.init=imagenet"], "train.init", {}),
    "train_unknown_sharing": (TRAIN, [QUICK, "--arch={f}/arch.json", "--workdir={d}/w",
                                      "--config.search.sharing=sideways"], "search.sharing", {}),
    "train_malformed_arch": (TRAIN, [QUICK, "--arch={f}/malformed.json", "--workdir={d}/w"],
                             "malformed.json: not valid JSON", {}),
    "train_truncated_arch": (TRAIN, [QUICK, "--arch={f}/truncated.json", "--workdir={d}/w"],
                             "truncated.json: not valid JSON", {}),
    "train_wrong_version_arch": (TRAIN, [QUICK, "--arch={f}/version9.json", "--workdir={d}/w"],
                                 "field 'version'", {}),
    "train_other_family_arch": (TRAIN, [QUICK, "--arch={f}/resnet18.json", "--workdir={d}/w"],
                                "input_shape", {}),
    "train_missing_arch": (TRAIN, [QUICK, "--arch={f}/absent.json", "--workdir={d}/w"],
                           "cannot read architecture file", {}),
    "train_unprepared_dataset": (TRAIN, [CIFAR, "--arch={f}/arch.json", "--workdir={d}/w",
                                         "--config.data.data_dir={f}/empty"],
                                 "tfds build cifar10", {}),
    "train_other_config_workdir": (TRAIN, [QUICK, "--arch={f}/arch.json", "--workdir={d}/w"],
                                   "train.epochs: saved=99 now=15",
                                   {"setup": "train_workdir_epochs99"}),
    "train_other_arch_workdir": (TRAIN, [QUICK, "--arch={f}/arch.json", "--workdir={d}/w"],
                                 "another architecture", {"setup": "train_workdir_other_arch"}),
    "train_read_only_workdir": (TRAIN, [QUICK, "--arch={f}/arch.json", "--workdir={d}/w"],
                                "read-only file system",
                                {"fail_writes": "EROFS", "setup": "empty_workdir"}),
    "train_disk_full": (TRAIN, [QUICK, "--arch={f}/arch.json", "--workdir={d}/w"],
                        "No space left on device",
                        {"fail_writes": "ENOSPC", "setup": "empty_workdir"}),
    "train_missing_flag": (TRAIN, [QUICK, "--workdir={d}/w"], "--arch", {}),
    # export
    "export_unknown_format": (EXPORT, ["--workdir={f}/trained", "--export_base={d}/base",
                                       "--model_name=m", "--formats=onnx"],
                              "unknown format(s) ['onnx']", {}),
    "export_path_escape": (EXPORT, ["--workdir={f}/trained", "--export_base={d}/base",
                                    "--model_name=../../escaped"], "model_name '../../escaped'",
                           {}),
    "export_bad_version": (EXPORT, ["--workdir={f}/trained", "--export_base={d}/base",
                                    "--model_name=m", "--version=0"], "version", {}),
    "export_missing_workdir": (EXPORT, ["--workdir={f}/absent", "--export_base={d}/base",
                                        "--model_name=m"], "does not exist", {}),
    "export_untrained_workdir": (EXPORT, ["--workdir={f}/empty", "--export_base={d}/base",
                                          "--model_name=m"], "model.keras not found", {}),
    "export_malformed_config": (EXPORT, ["--workdir={d}/trained", "--export_base={d}/base",
                                         "--model_name=m"], "not valid JSON",
                                {"setup": "trained_bad_config"}),
    "export_read_only_base": (EXPORT, ["--workdir={f}/trained", "--export_base={d}/base",
                                       "--model_name=m", "--formats=tflite_float32"],
                              "read-only file system", {"fail_writes": "EROFS"}),
    "export_unknown_flag": (EXPORT, ["--workdir={f}/trained", "--export_base={d}/base",
                                     "--model_name=m", "--formatz=onnx"], "formatz", {}),
    # flops
    "flops_unknown_model": (FLOPS, ["--model=resnet21"], "unknown model 'resnet21'", {}),
    "flops_bad_widths": (FLOPS, ["--model=resnet20", "--widths=a,b"],
                         "comma-separated integers", {}),
    "flops_wrong_width_count": (FLOPS, ["--model=resnet20", "--widths=4,4"],
                                "expected 19 widths, got 2", {}),
    "flops_missing_arch": (FLOPS, ["--arch={f}/absent.json"], "cannot read architecture file",
                           {}),
    "flops_no_model": (FLOPS, [], "give --model", {}),
    "flops_malformed_arch": (FLOPS, ["--arch={f}/truncated.json"], "not valid JSON", {}),
    "flops_unknown_convention": (FLOPS, ["--model=resnet20", "--convention=macs"],
                                 "convention", {}),
    # QAT binary
    "qat_untrained_workdir": (QAT, ["--workdir={f}/empty", "--out={d}/m.tflite"],
                              "model.keras not found", {}),
    "qat_bad_overrides": (QAT, ["--workdir={f}/trained", "--out={d}/m.tflite",
                                "--overrides={{nope"], "--overrides", {}),
    "qat_unknown_override": (QAT, ["--workdir={f}/trained", "--out={d}/m.tflite",
                                   '--overrides={{"qat_epoch": 3}}'], "qat_epoch", {}),
    # serving client: payloads are checked before anything is sent
    "client_wrong_dtype": (CLIENT, ["--model_name=m", "--rest=localhost:9",
                                    "--workdir={f}/trained", "--images={f}/float.npy"],
                           "expected uint8 [N, 16, 16, 1], got float32", {}),
    "client_wrong_rank": (CLIENT, ["--model_name=m", "--rest=localhost:9",
                                   "--workdir={f}/trained", "--images={f}/rank3.npy"],
                          "got uint8 [16, 16, 1]", {}),
    "client_wrong_size": (CLIENT, ["--model_name=m", "--rest=localhost:9",
                                   "--workdir={f}/trained", "--images={f}/size.npy"],
                          "got uint8 [2, 32, 32, 1]", {}),
    "client_not_an_image": (CLIENT, ["--model_name=m", "--rest=localhost:9",
                                     "--workdir={f}/trained", "--images={f}/notimage.png"],
                            "not a PNG, JPEG", {}),
    "client_pickled_array": (CLIENT, ["--model_name=m", "--rest=localhost:9",
                                      "--workdir={f}/trained", "--images={f}/pickled.npy"],
                             "cannot read an array", {}),
    "client_no_server_flag": (CLIENT, ["--model_name=m", "--workdir={f}/trained"],
                              "--rest", {}),
    # summary, sharing analysis, figure
    "summary_missing_runs": (SUMMARY, ["--search={f}/absent", "--train={f}/absent",
                                       "--export_dir={f}/absent"], "cannot read", {}),
    "analysis_unknown_mode": (ANALYSIS, ["--workdir={d}/w", "--modes=ordinal,sideways"],
                              "--modes: expected one of", {}),
    "analysis_unknown_field": (ANALYSIS, ["--workdir={d}/w", "--config.search.nope=1"],
                               "search.nope", {}),
    "analysis_other_config_workdir": (ANALYSIS, ["--workdir={d}/w", "--modes=ordinal"],
                                      "seed: saved=1 now=0",
                                      {"setup": "analysis_workdir_seed1"}),
    # A default config (no --config) with a bad override: a user error, not the
    # traceback config_flags raises while the flag is defined.
    "pareto_unknown_field": (PARETO, ["--workdir={d}/w", "--config.search.nope=1"],
                             "unknown config field in --config.search.nope=1", {}),
    "figure_not_png": (FIGURE, ["--out={d}/fig.txt"], "--out", {}),
    "figure_bad_steps": (FIGURE, ["--out={d}/fig.png", "--steps=0"], "--steps", {}),
    "figure_read_only": (FIGURE, ["--out={d}/fig.png"], "read-only file system",
                         {"fail_writes": "EROFS"}),
}


def _digest(path: str) -> str:
  """Names and contents of everything below `path` ('absent' if it does not exist)."""
  if not os.path.exists(path):
    return "absent"
  h = hashlib.sha256()
  for d, dirs, files in sorted(os.walk(path)):
    dirs.sort()
    h.update(f"D {os.path.relpath(d, path)}\n".encode())
    for name in sorted(files):
      h.update(f"F {name}\n".encode())
      with open(os.path.join(d, name), "rb") as f:
        h.update(f.read())
  return h.hexdigest()


def _write(path: str, text: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(text)


def _fixtures(f: str) -> None:
  """Shared inputs (read-only for every case)."""
  cfg = util.tiny_config()
  os.makedirs(os.path.join(f, "empty"))
  arch = util.write_arch(cfg, os.path.join(f, "arch.json"), index=0)
  text = json.dumps(arch)
  _write(os.path.join(f, "malformed.json"), "{'format': aps}")
  _write(os.path.join(f, "truncated.json"), text[:len(text) // 2])
  _write(os.path.join(f, "version9.json"), json.dumps(dict(arch, version=9)))
  t = topo.build_topology("resnet18", (224, 224, 3), 1000)
  archfile.save(archfile.make(t, t.base_widths), os.path.join(f, "resnet18.json"))
  _write(os.path.join(f, "typo.py"), "from aps_tf.configs import quick\n\n\ndef get_config():\n"
         "  c = quick.get_config()\n  c.train.optimiser = 'adam'\n  return c\n")
  _write(os.path.join(f, "wrongtype.py"), "from aps_tf.configs import quick\n\n\ndef get_config():\n"
         "  c = quick.get_config()\n  c.search.epochs = 'sixty'\n  return c\n")
  trained = os.path.join(f, "trained")
  os.makedirs(trained)
  archfile.save(arch, os.path.join(trained, "arch.json"))
  dense.build_from_arch(arch).save(os.path.join(trained, "model.keras"))
  _write(os.path.join(trained, "config.json"), trainer.config_to_json(cfg))
  rng = np.random.default_rng(0)
  np.save(os.path.join(f, "float.npy"), rng.random((2, 16, 16, 1), np.float32))
  np.save(os.path.join(f, "rank3.npy"), np.zeros((16, 16, 1), np.uint8))
  np.save(os.path.join(f, "size.npy"), np.zeros((2, 32, 32, 1), np.uint8))
  np.save(os.path.join(f, "pickled.npy"), np.array([{"a": 1}], dtype=object),
          allow_pickle=True)
  _write(os.path.join(f, "notimage.png"), "this is not an image")


def _setup(kind: str, d: str, f: str) -> None:
  """A case's own directory content."""
  from aps_tf.configs import quick  # pylint: disable=g-import-not-at-top
  w = os.path.join(d, "w")
  if kind == "empty_workdir":
    os.makedirs(w)
  elif kind in ("search_workdir_seed1", "analysis_workdir_seed1"):
    cfg = quick.get_config()
    cfg.seed = 1
    if kind == "analysis_workdir_seed1":
      from aps_tf.experiments import sharing_analysis  # pylint: disable=g-import-not-at-top
      cfg = sharing_analysis.unconstrained(cfg, "ordinal")
      w = os.path.join(w, "ordinal")
    _write(os.path.join(w, "config.json"), json.dumps(search_run.config_json(cfg)))
  elif kind == "train_workdir_epochs99":
    cfg = quick.get_config()
    cfg.train.epochs = 99
    _write(os.path.join(w, "config.json"), trainer.config_to_json(cfg))
  elif kind == "train_workdir_other_arch":
    util.write_arch(util.tiny_config(), os.path.join(w, "arch.json"), index=2)
  elif kind == "trained_bad_config":
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.copytree(os.path.join(f, "trained"), os.path.join(d, "trained"))
    _write(os.path.join(d, "trained", "config.json"), "{not json")
  else:
    raise ValueError(kind)


class ConfigCheckTest(parameterized.TestCase):
  """The per-section checks on configs that bypass ConfigDict's typing (config.json)."""

  @parameterized.named_parameters(
      ("wrong_kind", "search.epochs", "sixty", "search.epochs: expected a number"),
      ("bool_for_number", "train.lr", True, "train.lr: expected a number"),
      ("unknown_field", "train.optimiser", "adam", "unknown config field train.optimiser"),
      ("schedule", "train.schedule", "step", "train.schedule: expected one of cosine"),
      ("format", "export.formats", ["onnx"], "export.formats"),
      ("dataset", "data.name", "mnist", "data.name: expected one of digits"),
      ("model", "model.name", "vgg16", "model.name"),
      ("candidates", "model.candidates", [8, 0], "model.candidates"),
      ("warmup", "search.warmup_epochs", 1000, "search.warmup_epochs"),
      ("jit_kind", "search.jit_compile", "yes", "search.jit_compile: expected a bool"),
      ("jit_needs_static", "search.jit_compile", True, "search.static_shapes: expected True"),
      ("precision", "mixed_precision", "float16", "mixed_precision: expected one of"),
      ("steps_per_loop", "train.steps_per_loop", 0,
       "train.steps_per_loop: expected a positive number, got 0"),
      ("analysis_every", "search.analysis_every_steps", -1,  # 0 (no probes) is allowed
       "search.analysis_every_steps: expected a non-negative number, got -1"),
  )
  def test_bad_field(self, field, value, message):
    import ml_collections  # pylint: disable=g-import-not-at-top
    from aps_tf import config_check  # pylint: disable=g-import-not-at-top
    from aps_tf import errors  # pylint: disable=g-import-not-at-top
    from aps_tf.configs import quick  # pylint: disable=g-import-not-at-top
    d = json.loads(quick.get_config().to_json_best_effort())
    section, key = field.rsplit(".", 1) if "." in field else ("", field)
    node = d
    for part in filter(None, section.split(".")):
      node = node[part]
    node[key] = value
    with self.assertRaisesRegex(errors.ConfigError, message):
      config_check.check(ml_collections.ConfigDict(d))

  def test_every_shipped_config_passes(self):
    import importlib  # pylint: disable=g-import-not-at-top
    from aps_tf import config_check  # pylint: disable=g-import-not-at-top
    for name in os.listdir(os.path.join(ROOT, "configs")):
      if name.endswith(".py") and name != "__init__.py":
        config_check.check(importlib.import_module(f"configs.{name[:-3]}").get_config())


@pytest.mark.slow  # one subprocess running every binary's main on every case
class UserErrorMatrixTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    tmp = tempfile.mkdtemp()
    f = os.path.join(tmp, "fixtures")
    _fixtures(f)
    cls.before, cases = {}, []
    for name, (module, argv, _, opts) in CASES.items():
      d = os.path.join(tmp, name)
      os.makedirs(d)
      if "setup" in opts:
        _setup(opts["setup"], d, f)
      case = {"name": name, "module": module, "argv": [a.format(d=d, f=f) for a in argv]}
      if "fail_writes" in opts:
        case.update(fail_writes=opts["fail_writes"], under=d)
      cases.append(case)
      cls.before[name] = (d, _digest(d))
    cls.fixtures_digest = (f, _digest(f))
    cls.results = binary_driver.run_in_subprocess(cases, tmp, timeout=600)

  @parameterized.named_parameters((name, name) for name in CASES)
  def test_case(self, name):
    result = self.results[name]
    stderr = result["stderr"]
    self.assertEqual(result["code"], 2, stderr[-3000:])
    self.assertNotIn("Traceback", stderr)
    lines = stderr.strip().splitlines()
    self.assertLen(lines, 1, stderr)
    self.assertTrue(lines[0].startswith("error: "), lines[0])
    self.assertIn(CASES[name][2], lines[0])
    d, digest = self.before[name]
    self.assertEqual(_digest(d), digest, f"{d} changed")

  def test_fixtures_unchanged(self):
    f, digest = self.fixtures_digest
    self.assertEqual(_digest(f), digest)

  def test_export_formats_agree(self):
    from aps_tf import config_check  # pylint: disable=g-import-not-at-top
    from aps_tf.export import exporter  # pylint: disable=g-import-not-at-top
    self.assertEqual(config_check.EXPORT_FORMATS, exporter.FORMATS)


if __name__ == "__main__":
  absltest.main()
