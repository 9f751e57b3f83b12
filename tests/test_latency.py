"""Latency tables: file checks, in-graph lookup, a tiny real build, phone import."""

import json
import os
import tempfile
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from aps_tf import archfile
from aps_tf.latency import benchmark_output
from aps_tf.latency import build as build_lib
from aps_tf.latency import measure
from aps_tf.latency import table as table_lib
from aps_tf.latency import units as units_lib
from aps_tf.models import topology as topo
from aps_tf.search import reward
from configs import quick

FP = {"device": "host", "cpu": "test cpu", "cores": 2, "threads": 1,
      "runtime": "ai-edge-litert 0", "format": "int8", "date": "2026-01-01T00:00:00+00:00"}


def _topology(name):
  if name == "resnet8":
    return topo.build_topology("resnet8", (8, 8, 1), 10, candidates=(4, 8, 16))
  if name == "resnet18":
    return topo.build_topology("resnet18", (32, 32, 3), 10)
  return topo.build_topology("mobilenet_v2", (32, 32, 3), 10)


def _fake_ms(spec: dict) -> float:
  """A deterministic stand-in timing (depends on every field that matters)."""
  s = units_lib.Spec(**spec)
  if s.op == "tail":
    return 0.01 + 1e-5 * s.height * s.width * s.c_in
  return 1e-4 * s.height * s.width * (s.c_in + 1) * s.c_out * s.kernel**2 / s.stride**2 + 0.02


def _fake_table(t, fp=FP):
  tab = table_lib.new(t, fp, runs=5, warmup=1)
  tab["measurements"] = {k: {"spec": s.to_dict(), "ms": _fake_ms(s.to_dict())}
                         for k, s in table_lib.required_specs(t).items()}
  widths = t.space.widths(t.space.largest())
  tab["calibration"] = {"a": {"widths": widths, "ms": 1.0 + table_lib.unit_sum(
      t, dict(tab, layers=table_lib.derive_layers(t, tab), const_ms=0.0), widths)}}
  return build_lib.finish(t, tab)


def _tiny_config():
  c = quick.get_config()
  c.model.name = "resnet8"
  c.model.candidates = (4, 8)
  c.data.image_size = 8
  return c


class TableFileTest(parameterized.TestCase):

  def test_round_trip(self):
    t = _topology("resnet8")
    tab = _fake_table(t)
    self.assertAlmostEqual(tab["const_ms"], 1.0)
    path = os.path.join(tempfile.mkdtemp(), "t.json")
    table_lib.save(tab, path)
    back = table_lib.load(path, t)
    self.assertEqual(back, json.loads(json.dumps(tab)))
    w = t.space.widths(t.space.largest())
    self.assertAlmostEqual(table_lib.predict(t, back, w), table_lib.predict(t, tab, w))

  def test_fit_scale_and_constant(self):
    t = _topology("resnet8")
    tab = _fake_table(t)
    raw = dict(tab, layers=table_lib.derive_layers(t, tab), const_ms=0.0)
    rng = np.random.default_rng(0)
    archs = [t.space.smallest(), t.space.largest(), t.space.sample_uniform(rng)]
    tab["calibration"] = {str(i): {"widths": t.space.widths(a), "ms": 0.5 + 1.2 * (
        table_lib.unit_sum(t, raw, t.space.widths(a)))} for i, a in enumerate(archs)}
    build_lib.finish(t, tab, "linear")
    self.assertAlmostEqual(tab["const_fit"]["scale"], 1.2)
    self.assertAlmostEqual(tab["const_ms"], 0.5)
    for a in archs + [t.space.sample_uniform(rng)]:
      w = t.space.widths(a)
      self.assertAlmostEqual(table_lib.predict(t, tab, w),
                             0.5 + 1.2 * table_lib.unit_sum(t, raw, w))

  def test_entries_are_unit_minus_tail_and_absent_shortcuts_zero(self):
    t = _topology("resnet8")
    e = table_lib.entries(_fake_table(t))
    # resnet8 stage-1 block, equal widths: identity shortcut, entry 0.
    self.assertEqual(e["stage1_block1_shortcut"][(8, 8)], 0.0)
    self.assertGreater(e["stage1_block1_shortcut"][(4, 8)], 0.0)
    u = next(u for u in units_lib.units(t) if u.name == "stage1_block1_conv1")
    s = units_lib.entry_spec(t, u, 4, 16)
    want = _fake_ms(s.to_dict()) - _fake_ms(units_lib.tail_spec(s).to_dict())
    self.assertAlmostEqual(e["stage1_block1_conv1"][(4, 16)], want)

  @parameterized.named_parameters(
      ("missing_layer", lambda tab: tab["layers"].pop(3), "no entries for layer"),
      ("missing_entry", lambda tab: tab["layers"][2]["entries"].pop(), "has no entry for"),
      ("negative", lambda tab: tab["layers"][0]["entries"][0].__setitem__(2, -1.0),
       "ms >= 0"),
      ("unfinished", lambda tab: tab.pop("const_ms"), "build finished"),
      ("version", lambda tab: tab.__setitem__("version", 99), "reads version 1"),
      ("fingerprint", lambda tab: tab["fingerprint"].pop("cpu"), "'fingerprint'"),
  )
  def test_bad_table(self, corrupt, message):
    t = _topology("resnet8")
    tab = _fake_table(t)
    corrupt(tab)
    path = os.path.join(tempfile.mkdtemp(), "bad.json")
    table_lib.save(tab, path)
    with self.assertRaisesRegex(table_lib.TableError, f"{path}.*{message}"):
      table_lib.load(path, t)

  def test_wrong_model(self):
    tab = _fake_table(_topology("resnet8"))
    other = topo.build_topology("resnet8", (16, 16, 1), 10, candidates=(4, 8, 16))
    with self.assertRaisesRegex(table_lib.TableError, r"model.input_shape.*\[8, 8, 1\].*"
                                r"\(16, 16, 1\)|model.input_shape"):
      table_lib.validate(tab, "x.json", other)
    narrower = topo.build_topology("resnet8", (8, 8, 1), 10, candidates=(4, 8))
    with self.assertRaisesRegex(table_lib.TableError, "model.search_space"):
      table_lib.validate(tab, "x.json", narrower)

  def test_wrong_fingerprint_refused(self):
    tab = _fake_table(_topology("resnet8"))
    table_lib.check_fingerprint(tab, dict(FP, date="another day"), "t.json")  # date: fine
    with self.assertRaisesRegex(table_lib.TableError, "threads: table=1 now=4"):
      table_lib.check_fingerprint(tab, dict(FP, threads=4), "t.json")

  def test_load_is_a_user_error(self):
    with self.assertRaisesRegex(table_lib.TableError, "cannot read"):
      table_lib.load("/nonexistent/t.json")


class LookupTest(parameterized.TestCase):

  @parameterized.parameters("resnet8", "resnet18", "mobilenet_v2")
  def test_in_graph_equals_host_sum(self, name):
    t = _topology(name)
    tab = _fake_table(t)
    lm = table_lib.LatencyModel(t, tab)
    rng = np.random.default_rng(0)
    archs = [t.space.sample_uniform(rng) for _ in range(12)] + [t.space.smallest(),
                                                                t.space.largest()]
    got = lm.tf_cost(tf.constant(archs, tf.int32)).numpy()
    for a, g in zip(archs, got):
      host = table_lib.predict(t, tab, t.space.widths(a))
      self.assertAlmostEqual(float(g), host, places=9)
      self.assertAlmostEqual(lm.cost(a), host, places=9)

  def test_search_config_uses_table(self):
    t = topology = build_lib.topology_of_config(_tiny_config())
    path = os.path.join(tempfile.mkdtemp(), "t.json")
    table_lib.save(_fake_table(t), path)
    cfg = _tiny_config()
    cfg.search.reward.kind = "latency"
    with self.assertRaisesRegex(reward.errors.ConfigError, "latency_table"):
      reward.make_cost_model(topology, cfg.search.reward)
    cfg.search.reward.latency_table = path
    cm = reward.make_cost_model(topology, cfg.search.reward)
    self.assertIsInstance(cm, table_lib.LatencyModel)
    self.assertGreater(cm.minimum(), 0)
    cfg.search.reward.latency_format = "float32"
    with self.assertRaisesRegex(reward.errors.ConfigError, "format 'int8'"):
      reward.make_cost_model(topology, cfg.search.reward)


class ArchFileLatencyTest(parameterized.TestCase):

  def test_latency_field(self):
    t = _topology("resnet8")
    w = t.space.widths(t.space.smallest())
    lat = {"format": "tflite_int8", "target_ms": 0.1, "predicted_ms": 0.09}
    arch = archfile.make(t, w, latency=lat)
    self.assertEqual(arch["latency"], lat)
    for bad, field in (({"format": "tflite_int8", "target_ms": 0.1}, "latency.predicted_ms"),
                       (dict(lat, target_ms=-1.0), "latency.target_ms"), ("0.1", "latency")):
      with self.assertRaisesRegex(archfile.ArchFileError, f"'{field}'"):
        archfile.validate(dict(arch, latency=bad), "a.json")


class BenchmarkOutputTest(parameterized.TestCase):

  def test_parse_rendered(self):
    text = benchmark_output.render([1000, 2000, 3000, 2500, 1500], warmup_us=[9000, 8000])
    self.assertAlmostEqual(benchmark_output.parse_ms(text), 2.0)  # median of the timed runs

  def test_parse_without_percentiles_and_summary_only(self):
    old = ("INFO: count=3 first=5 curr=5 min=5 max=5 avg=5 std=0\n"
           "INFO: count=50 first=1 curr=1 min=1 max=1 avg=1.5e+03 std=0\n")
    self.assertAlmostEqual(benchmark_output.parse_ms(old), 1.5)
    self.assertAlmostEqual(benchmark_output.parse_ms(
        "Inference timings in us: Init: 1, First inference: 2, Warmup (avg): 3, "
        "Inference (avg): 4200"), 4.2)
    with self.assertRaisesRegex(benchmark_output.OutputError, "no benchmark_model timings"):
      benchmark_output.parse_ms("ERROR: Could not open 'x.tflite'.", "x.txt")


class ImportTest(parameterized.TestCase):

  def test_import_generated_outputs(self):
    cfg = _tiny_config()
    t = build_lib.topology_of_config(cfg)
    manifest = build_lib.make_manifest(t, "int8", 1, 20, 2, 2)
    d = tempfile.mkdtemp()
    with open(os.path.join(d, build_lib.MANIFEST), "w") as f:
      json.dump(manifest, f)
    with open(os.path.join(d, "device.txt"), "w") as f:
      f.write("Pixel Test\n")
    with open(os.path.join(d, "cpuinfo.txt"), "w") as f:
      f.write("processor\t: 0\nprocessor\t: 1\nHardware\t: Test SoC\n")
    rng = np.random.default_rng(0)
    for k, s in manifest["specs"].items():
      us = 1e3 * _fake_ms(s) * (1 + 0.05 * rng.standard_normal(30))
      with open(os.path.join(d, k + ".txt"), "w") as f:
        f.write(benchmark_output.render(us))
    out = os.path.join(d, "table.json")
    with self.assertRaisesRegex(table_lib.TableError, "no benchmark_model output for 2 models"):
      build_lib.import_results(cfg, d, out)
    for k in manifest["calibration"]:
      with open(os.path.join(d, k + ".txt"), "w") as f:
        f.write(benchmark_output.render([5000.0] * 10))
    tab = build_lib.import_results(cfg, d, out)
    back = table_lib.load(out, t)
    self.assertEqual(back["fingerprint"]["device"], "Pixel Test")
    self.assertEqual(back["fingerprint"]["cpu"], "Test SoC")
    self.assertEqual(back["fingerprint"]["cores"], 2)
    key = next(iter(manifest["specs"]))
    with open(os.path.join(d, key + ".txt")) as f:
      self.assertAlmostEqual(tab["measurements"][key]["ms"], benchmark_output.parse_ms(f.read()))
    w = manifest["calibration"][next(iter(manifest["calibration"]))]["widths"]
    self.assertAlmostEqual(np.median([table_lib.predict(t, back, c["widths"])
                                      for c in manifest["calibration"].values()]), 5.0)
    del w
    self.assertIn("--num_threads=1", build_lib.script(manifest))
    self.assertIn("--num_runs=20", build_lib.script(manifest))


class TinyBuildTest(parameterized.TestCase):
  """Real LiteRT conversions and timings."""

  @pytest.mark.slow
  def test_build_two_units_and_resume(self):
    cfg = _tiny_config()
    out = os.path.join(tempfile.mkdtemp(), "tiny.json")
    tab = build_lib.build(cfg, out, "int8", threads=1, runs=3, warmup=1, progress=False,
                          only_units=2)
    t = build_lib.topology_of_config(cfg)
    units = units_lib.units(t)[:2]
    want = set().union(*(build_lib._unit_keys(t, u) for u in units))  # pylint: disable=protected-access
    self.assertEqual(set(tab["measurements"]), want)
    self.assertTrue(all(m["ms"] > 0 for m in tab["measurements"].values()))
    on_disk = table_lib.read(out)
    self.assertEqual(set(on_disk["measurements"]), want)
    # Resuming measures nothing already measured ...
    with mock.patch.object(measure, "time_content", side_effect=AssertionError("re-measured")):
      build_lib.build(cfg, out, "int8", threads=1, runs=3, warmup=1, progress=False,
                      only_units=2)
    # ... and refuses another fingerprint.
    with self.assertRaisesRegex(table_lib.TableError, "threads: table=1 now=2"):
      build_lib.build(cfg, out, "int8", threads=2, runs=3, warmup=1, progress=False,
                      only_units=2)


class LatencySearchTest(parameterized.TestCase):

  @pytest.mark.slow
  def test_tiny_search_under_latency_budget(self):
    from aps_tf.search import run  # pylint: disable=g-import-not-at-top
    from tests.search_configs import tiny_config  # pylint: disable=g-import-not-at-top
    cfg = tiny_config("transitional")
    t = build_lib.topology_of_config(cfg)
    path = os.path.join(tempfile.mkdtemp(), "t.json")
    tab = _fake_table(t)
    table_lib.save(tab, path)
    lm = table_lib.LatencyModel(t, tab)
    low, high = lm.minimum(), lm.cost(t.space.largest())
    cfg.search.reward.kind = "latency"
    cfg.search.reward.latency_table = path
    cfg.search.reward.target = 0.5 * (low + high)
    cfg.search.rescore = False
    d = tempfile.mkdtemp()
    r = run.SearchRun(cfg, d, progress=False)
    sr = r.searcher
    batch = next(iter(sr.dataset("reward", 0)))
    for a in (t.space.smallest(), t.space.largest()):
      out = sr.reward_step(tf.constant(a, tf.int32), batch)
      self.assertAlmostEqual(float(out["cost"]), table_lib.predict(t, tab, t.space.widths(a)),
                             places=5)
    self.assertEqual(sr.reward_traces, 1)  # the table lookup does not retrace
    left = sr.policy.budget_left(tf.constant([t.space.largest()], tf.int32), 3)
    want = 1.0 - table_lib.predict(t, tab, t.space.widths(
        t.space.largest()[:3] + [0] * (t.space.num_decisions - 3))) / cfg.search.reward.target
    self.assertAlmostEqual(float(left[0]), float(np.clip(want, 0, 1)), places=5)
    arch = r.pick()
    lat = archfile.load(os.path.join(d, "arch.json"))["latency"]
    self.assertEqual(lat["format"], "tflite_int8")
    self.assertAlmostEqual(lat["target_ms"], cfg.search.reward.target)
    self.assertAlmostEqual(lat["predicted_ms"], table_lib.predict(t, tab, arch["widths"]))
    top = json.load(open(os.path.join(d, "top_archs.json")))
    self.assertEqual(top["latency"], lat)
    picked = top["architectures"][top["picked"]]
    self.assertEqual(picked["predicted_latency_ms"], lat["predicted_ms"])
    self.assertEqual(min(abs(a["predicted_latency_ms"] - lat["target_ms"])
                         for a in top["architectures"]),
                     abs(lat["predicted_ms"] - lat["target_ms"]))
