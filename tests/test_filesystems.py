"""Any filesystem through aps_tf.fileio: local paths and TensorFlow's in-memory
ram:// filesystem (what gs:// goes through too), atomic writes, Keras models,
figures, and the export library run end to end with only ram:// paths."""

import errno
import inspect
import os
import shutil
import subprocess
import tempfile
import uuid
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import pytest
import tensorflow as tf

from aps_tf import archfile
from aps_tf import cli
from aps_tf import errors
from aps_tf import fileio
from aps_tf import runner
from aps_tf import workdir as workdir_lib
from aps_tf.configs import base
from aps_tf.models import dense
from aps_tf.search import analysis
from aps_tf.search import probes
from tests import search_configs
from tests.helpers import train_util as util


def _tree(root: str) -> list[str]:
  """Every path under ROOT (local), relative, sorted."""
  out = []
  for d, dirs, files in os.walk(root):
    out += [os.path.relpath(os.path.join(d, n), root) for n in dirs + files]
  return sorted(out)


def _local_root(test) -> str:
  path = tempfile.mkdtemp()
  test.addCleanup(shutil.rmtree, path, ignore_errors=True)
  return path


def _ram_root(test) -> str:
  return f"ram://{test.id().split('.')[-1]}-{uuid.uuid4().hex[:8]}"


class FileioTest(parameterized.TestCase):

  def root(self, kind: str) -> str:
    return _local_root(self) if kind == "local" else _ram_root(self)

  @parameterized.parameters("local", "ram")
  def test_atomic_write_overwrites_and_leaves_no_temp_file(self, kind):
    root = self.root(kind)
    path = os.path.join(root, "sub", "config.json")
    fileio.write_json(path, {"a": 1})
    fileio.write_json(path, {"a": 2})
    self.assertEqual(fileio.read_json(path), {"a": 2})
    self.assertEqual(fileio.listdir(os.path.join(root, "sub")), ["config.json"])
    fileio.write_text(path, "plain\n")
    self.assertEqual(fileio.read_text(path), "plain\n")

  @parameterized.parameters("local", "ram")
  def test_failed_write_keeps_the_old_file_and_no_temp_file(self, kind):
    root = self.root(kind)
    path = os.path.join(root, "arch.json")
    fileio.write_text(path, "old")
    with mock.patch.object(tf.io.gfile, "rename", side_effect=tf.errors.UnavailableError(
        None, None, "disk went away")):
      with self.assertRaises(OSError):
        fileio.write_text(path, "new")
    self.assertEqual(fileio.read_text(path), "old")
    self.assertEqual(fileio.listdir(root), ["arch.json"])

  @parameterized.parameters("local", "ram")
  def test_atomic_path_for_local_only_writers(self, kind):
    root = self.root(kind)
    path = os.path.join(root, "model.keras")
    with fileio.atomic_path(path, suffix=".keras") as tmp:
      self.assertTrue(fileio.is_local(tmp))
      with open(tmp, "wb") as f:
        f.write(b"one")
    with self.assertRaisesRegex(RuntimeError, "killed"):
      with fileio.atomic_path(path, suffix=".keras") as tmp:
        with open(tmp, "wb") as f:
          f.write(b"two")
        raise RuntimeError("killed")
    self.assertEqual(fileio.read_bytes(path), b"one")
    self.assertEqual(fileio.listdir(root), ["model.keras"])

  @parameterized.parameters(
      (tf.errors.ResourceExhaustedError, "No space left on device", errno.ENOSPC),
      (tf.errors.ResourceExhaustedError, "Disk quota exceeded", errno.EDQUOT),
      (tf.errors.PermissionDeniedError, "Read-only file system", errno.EROFS),
      (tf.errors.PermissionDeniedError, "denied by the bucket policy", errno.EACCES),
      (tf.errors.UnavailableError, "connection reset", errno.EIO))
  def test_tensorflow_errors_become_os_errors(self, error, text, code):
    # What the binaries turn into a one-line user error (aps_tf.cli).
    path = os.path.join(_ram_root(self), "x.json")
    with mock.patch.object(tf.io.gfile, "GFile", side_effect=error(None, None,
                                                                   f"{path}; {text}")):
      with self.assertRaises(OSError) as ctx:
        fileio.write_text(path, "x")
    self.assertEqual(ctx.exception.errno, code)
    self.assertEqual(ctx.exception.filename, path)

  @parameterized.parameters(
      (tf.errors.ResourceExhaustedError, "/w/ckpt/x.index; No space left on device", True),
      (tf.errors.UnknownError, "/w/tb/events; Read-only file system", True),
      (tf.errors.PermissionDeniedError, "gs://b/w/ckpt: 403 Forbidden", True),
      (tf.errors.ResourceExhaustedError, "OOM when allocating tensor", False),
      (tf.errors.InvalidArgumentError, "Incompatible shapes", False))
  def test_tensorflow_file_errors_are_user_errors(self, error, message, is_user_error):
    # Raised by TensorFlow itself (checkpoints, summaries) past aps_tf.fileio.
    got = cli.environment_error(error(None, None, message))
    self.assertEqual(got, message if is_user_error else None)

  @parameterized.parameters("local", "ram")
  def test_missing_file_raises_file_not_found(self, kind):
    with self.assertRaises(FileNotFoundError):
      fileio.read_text(os.path.join(self.root(kind), "nope.json"))

  @parameterized.parameters("local", "ram")
  def test_keras_model_round_trip(self, kind):
    root = self.root(kind)
    # ResNet-8 (tests/search_configs.py): the smallest model to build and save.
    cfg = search_configs.tiny_config()
    arch = util.write_arch(cfg, os.path.join(root, "arch.json"), index=0)
    model = dense.build_from_arch(arch)
    path = os.path.join(root, "model.keras")
    fileio.save_keras(model, path)
    fileio.save_keras(model, path)  # overwrite
    loaded = fileio.load_keras(path, compile=False)
    x = np.random.default_rng(0).normal(size=(2,) + model.input_shape[1:]).astype(np.float32)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    self.assertEqual(fileio.listdir(root), ["arch.json", "model.keras"])

  @parameterized.parameters("local", "ram")
  def test_figure_is_a_png(self, kind):
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    path = os.path.join(self.root(kind), "plots", "x.png")
    fileio.save_figure(fig, path, dpi=20)
    plt.close(fig)
    self.assertEqual(fileio.read_bytes(path)[:8], b"\x89PNG\r\n\x1a\n")

  @parameterized.parameters(("local", "ram"), ("ram", "ram"), ("ram", "local"),
                            ("local", "local"))
  def test_publish_dir_moves_every_file_saved_model_last(self, src_kind, dst_kind):
    src = os.path.join(self.root(src_kind), ".tmp-1")
    dst = os.path.join(self.root(dst_kind), "1")
    files = {"saved_model.pb": "g", "fingerprint.pb": "f", "variables/variables.index": "i",
             "assets.extra/tf_serving_warmup_requests": "w", "tflite/model.tflite": "t"}
    for rel, content in files.items():
      fileio.write_text(os.path.join(src, rel), content)
    copied = []
    real_copy = tf.io.gfile.copy

    def copy(a, b, overwrite=False):
      copied.append(os.path.basename(b))
      return real_copy(a, b, overwrite=overwrite)

    with mock.patch.object(tf.io.gfile, "copy", copy):
      fileio.publish_dir(src, dst)
    for rel, content in files.items():
      self.assertEqual(fileio.read_text(os.path.join(dst, rel)), content)
    if src_kind == dst_kind == "local":
      self.assertEqual(copied, [])  # one atomic rename
    else:
      self.assertLen(copied, len(files))
      self.assertEqual(copied[-1], "saved_model.pb")
    self.assertFalse(fileio.listdir(src))
    with self.assertRaises(OSError):
      fileio.write_text(os.path.join(src, "x"), "x")
      fileio.publish_dir(src, dst)

  def test_ram_listing_has_no_phantom_entries(self):
    # TF's ram:// lists 'assets' with an entry '.extra' when 'assets.extra' exists.
    root = _ram_root(self)
    fileio.write_text(os.path.join(root, "assets.extra", "w"), "w")
    fileio.makedirs(os.path.join(root, "assets"))
    self.assertEqual(fileio.listdir(os.path.join(root, "assets")), [])
    self.assertEqual(fileio.listdir(root), ["assets", "assets.extra"])
    fileio.rmtree(root)
    self.assertEqual(fileio.listdir(root), [])
    self.assertFalse(fileio.exists(os.path.join(root, "assets.extra", "w")))

  def test_ensure_writable_on_ram_leaves_nothing(self):
    root = _ram_root(self)
    fileio.makedirs(root)
    workdir_lib.ensure_writable(os.path.join(root, "new", "run"))
    self.assertEqual(fileio.listdir(root), [])

  def test_ensure_writable_url_names_the_failure(self):
    with mock.patch.object(tf.io.gfile, "GFile", side_effect=tf.errors.PermissionDeniedError(
        None, None, "bucket is read-only")):
      with self.assertRaisesRegex(errors.WorkdirError, "gs://b/run: cannot be written"):
        with mock.patch.object(fileio, "exists", return_value=True), \
            mock.patch.object(fileio, "isdir", return_value=True):
          workdir_lib.ensure_writable("gs://b/run")

  def test_workdir_config_check_on_ram(self):
    root = _ram_root(self)
    config = base.get_config().to_dict()  # a saved config is compared with the defaults merged
    workdir_lib.check_config(dict(config, seed=1), root, ["train"], write=True)
    workdir_lib.check_config(dict(config, seed=1), root, ["train"])
    with self.assertRaisesRegex(workdir_lib.WorkdirMismatchError, "seed"):
      workdir_lib.check_config(dict(config, seed=2), root, ["train"])

  def test_metrics_log_and_plots_on_ram(self):
    root = _ram_root(self)
    config = {"search": {"sharing": "ordinal", "lr": 0.1}, "model": {"candidates": (4, 8)},
              "seed": 3, "other": 1}
    keys = ("search.sharing", "search.lr", "model.candidates", "seed", "search.missing")
    self.assertEqual(runner.flat_hparams(config, keys),
                     {"search.sharing": "ordinal", "search.lr": 0.1,
                      "model.candidates": "[4, 8]", "seed": 3})
    log = runner.MetricsLog(root, resume_step=0, hparams=runner.flat_hparams(config, keys),
                            summaries=probes.write_summaries)
    for step in (1, 2, 3):
      log.write({"step": step, "kind": "train", "accuracy": 0.1 * step, "cost": 1.0})
    log.write({"step": 3, "kind": "analysis", "phi": 0.5, "probabilities": [[0.2, 0.8]]})
    log.close()
    self.assertLen(runner.read_metrics(root), 4)
    # A resume at step 2 drops the later records.
    runner.MetricsLog(root, resume_step=2).close()
    self.assertEqual([r["step"] for r in runner.read_metrics(root)], [1, 2])
    events = fileio.glob(os.path.join(root, "tb", "events.out.tfevents.*"))
    self.assertNotEmpty(events)
    plugins = {}
    for path in events:
      for event in tf.compat.v1.train.summary_iterator(path):
        for v in event.summary.value:
          plugins[v.tag] = v.metadata.plugin_data.plugin_name or plugins.get(v.tag)
    self.assertEqual(plugins["train/accuracy"], "scalars")
    self.assertEqual(plugins["analysis/phi"], "scalars")
    self.assertEqual(plugins["decision_probabilities"], "images")
    self.assertEqual(plugins["_hparams_/session_start_info"], "hparams")
    paths = analysis.plot(root)
    self.assertNotEmpty(paths)
    for p in paths:
      self.assertTrue(p.startswith("ram://"), p)
      self.assertEqual(fileio.read_bytes(p)[:4], b"\x89PNG")


class QATStagingTest(absltest.TestCase):
  """QAT runs in a child process, which cannot see this process's ram://."""

  def test_ram_workdir_is_staged_locally_and_the_result_copied_back(self):
    from aps_tf.export import qat  # pylint: disable=g-import-not-at-top
    root = _ram_root(self)
    workdir, out = f"{root}/train", f"{root}/export/.tmp-1/qat_saved_model"
    for name in ("model.keras", "config.json", "arch.json"):
      fileio.write_text(f"{workdir}/{name}", name)
    seen = {}

    def fake_run(cmd, **kwargs):
      del kwargs
      args = dict(a[2:].split("=", 1) for a in cmd if a.startswith("--"))
      seen.update(args)
      for name in ("model.keras", "config.json", "arch.json"):
        with open(os.path.join(args["workdir"], name)) as f:
          self.assertEqual(f.read(), name)
      os.makedirs(os.path.join(args["out"], "variables"))
      for rel in ("saved_model.pb", "variables/variables.index"):
        with open(os.path.join(args["out"], rel), "w") as f:
          f.write(rel)
      with open(os.path.join(args["out"], qat.SUMMARY_FILE), "w") as f:
        f.write('{"calibrated_ranges": 7}')
      return subprocess.CompletedProcess(cmd, 0, "", "")

    with mock.patch.object(subprocess, "run", fake_run):
      summary = qat.run_subprocess(workdir, out)
    self.assertEqual(summary, {"calibrated_ranges": 7})
    self.assertTrue(fileio.is_local(seen["workdir"]) and fileio.is_local(seen["out"]), seen)
    self.assertFalse(os.path.exists(seen["workdir"]))  # the staging directory is removed
    self.assertEqual(fileio.listdir(out), ["saved_model.pb", "variables"])
    self.assertEqual(fileio.read_text(f"{out}/variables/variables.index"),
                     "variables/variables.index")


@pytest.mark.slow
class PipelineOnRamTest(absltest.TestCase):
  """Search, retraining and export with every path on ram://: nothing local."""

  def test_search_train_export_write_nothing_locally(self):
    from aps_tf.export import exporter  # pylint: disable=g-import-not-at-top
    from aps_tf.search import run as search_run  # pylint: disable=g-import-not-at-top
    from aps_tf.train import trainer  # pylint: disable=g-import-not-at-top
    root = _ram_root(self)
    search, workdir, base = f"{root}/search", f"{root}/train", f"{root}/serving"
    # The export verifies on few images (its paths are the point here; parity
    # and latency themselves: tests/test_export.py).
    cfg = util.tiny_config(epochs=1)
    cfg.export.parity_examples = 32
    cfg.export.representative_examples = 16
    cfg.export.latency_runs = 2

    local = _local_root(self)
    cwd = os.getcwd()
    cwd_before = sorted(os.listdir(cwd))
    ours = (os.path.join(util.ROOT, "aps_tf"), os.path.join(util.ROOT, "export"))
    temp_calls = []  # local temporary files or dirs the product itself made
    real_mkdtemp, real_mkstemp = tempfile.mkdtemp, tempfile.mkstemp

    def record(fn):
      def wrapped(*args, **kwargs):
        caller = inspect.stack()[1].filename
        if caller.startswith(ours):
          temp_calls.append((fn.__name__, caller))
        return fn(*args, **kwargs)
      return wrapped

    os.chdir(local)
    # TensorFlow's own temporaries (the LiteRT converter makes some) go to
    # the test's directory too, and must be gone afterwards.
    try:
      with mock.patch.object(tempfile, "mkdtemp", record(real_mkdtemp)), \
          mock.patch.object(tempfile, "mkstemp", record(real_mkstemp)), \
          mock.patch.object(tempfile, "tempdir", local):
        search_run.run(search_configs.tiny_config("transitional"), search, progress=False)
        metrics = trainer.train(cfg, f"{search}/arch.json", workdir, progress=False)
        arch = archfile.load(f"{workdir}/arch.json")
        report = exporter.export(workdir, base, "digits",
                                 formats=["saved_model", "tflite_float32", "tflite_int8"])
        again = exporter.export(workdir, base, "digits",
                                formats=["saved_model", "tflite_float32", "tflite_int8"])
    finally:
      os.chdir(cwd)

    # AutoGraph's cache of converted Python source is all TensorFlow leaves.
    self.assertEqual([p for p in _tree(local) if not p.startswith("__autograph_generated_")],
                     [])
    self.assertEqual(sorted(os.listdir(cwd)), cwd_before)
    self.assertEqual(temp_calls, [])  # no local staging by the product either
    # The search and retraining workdirs have the one layout.
    for d in (search, workdir):
      self.assertContainsSubset(["config.json", "ckpt", "tb", "metrics.jsonl", "arch.json"],
                                fileio.listdir(d))
    self.assertContainsSubset(["top_archs.json", "plots"], fileio.listdir(search))
    self.assertContainsSubset(["model.keras", "metrics.json"], fileio.listdir(workdir))
    self.assertEqual(metrics["steps"], metrics["steps_per_epoch"])
    self.assertNotEmpty(tf.train.latest_checkpoint(f"{search}/ckpt"))
    version = f"{base}/digits/1"
    self.assertEqual(report["path"], version)
    self.assertTrue(again["reused"])
    self.assertEqual(report["models_config"], f"{base}/models.config")
    self.assertIn("digits", fileio.read_text(f"{base}/models.config"))
    self.assertEqual(fileio.listdir(f"{base}/digits"), ["1"])  # no .tmp-* left
    self.assertEqual(
        fileio.listdir(version),
        ["arch.json", "assets", "assets.extra", "export_manifest.json", "export_report.json",
         "export_report.md", "fingerprint.pb", "saved_model.pb", "tflite", "variables"])
    self.assertEqual(fileio.listdir(f"{version}/tflite"),
                     ["model_float32.tflite", "model_int8.tflite"])
    self.assertTrue(fileio.exists(f"{workdir}/export_report.json"))
    results = {r["format"]: r for r in report["results"]}
    self.assertEqual(results["saved_model"]["top1_agreement"], 1.0)
    self.assertEqual(results["tflite_float32"]["top1_agreement"], 1.0)
    self.assertGreater(results["saved_model"]["size_bytes"], 0)
    # The served SavedModel loads from ram:// and answers.
    loaded = tf.saved_model.load(version)
    out = loaded.signatures["serving_default"](
        images=tf.zeros((1,) + tuple(arch["input_shape"]), tf.uint8))
    self.assertEqual(out["probabilities"].shape, (1, arch["num_classes"]))


if __name__ == "__main__":
  absltest.main()
