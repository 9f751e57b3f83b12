"""Architecture file: round trip, dense child from the file alone, every bad input."""

import json
import os

from absl.testing import parameterized
import numpy as np

from aps_tf import archfile
from aps_tf import flops
from aps_tf.models import dense
from aps_tf.models import topology as topo


def _arch(model="resnet20", shape=(16, 16, 1), seed=0, **space):
  t = topo.build_topology(model, shape, 10, **space)
  decisions = t.space.sample_uniform(np.random.default_rng(seed))
  return t, archfile.make(t, t.space.widths(decisions), decisions,
                          search_space={k: list(v) if isinstance(v, tuple) else v
                                        for k, v in space.items()},
                          provenance={"sharing": "transitional"})


class RoundTripTest(parameterized.TestCase):

  @parameterized.parameters(
      ("resnet20", (16, 16, 1), {}),
      ("resnet56", (32, 32, 3), {"candidates": (16, 32, 64, 96), "meta_width": 168}),
      ("resnet18", (64, 64, 3), {}),
      ("mobilenet_v2", (64, 64, 3), {}),
  )
  def test_save_load_build(self, model, shape, space):
    t, arch = _arch(model, shape, **space)
    path = os.path.join(self.create_tempdir_path(), "arch.json")
    archfile.save(arch, path)
    loaded = archfile.load(path)
    self.assertEqual(loaded, json.loads(json.dumps(arch)))
    self.assertEqual(loaded["version"], archfile.VERSION)
    self.assertLen(loaded["widths"], t.num_slots)
    self.assertEqual(loaded["flops"]["full"], flops.count(t, loaded["widths"])["flops"])
    model_ = dense.build_from_arch(loaded)
    self.assertEqual(tuple(model_.input_shape[1:]), tuple(shape))
    self.assertEqual(model_.output_shape[-1], 10)
    self.assertEqual(flops.count_keras_model(model_)["params"], loaded["params"])

  @parameterized.named_parameters(
      ("resnet20_avgpool_fixed", "resnet20", (16, 16, 1),
       dict(downsample_shortcut="avgpool_conv", fix_last_width=True)),
      ("resnet18_reference", "resnet18", (64, 64, 3),
       dict(space="reference", downsample_shortcut="avgpool_conv")),
      ("mobilenet_v2_reference", "mobilenet_v2", (64, 64, 3), dict(space="reference")),
  )
  def test_options_round_trip(self, model, shape, options):
    t, arch = _arch(model, shape, **options)
    path = os.path.join(self.create_tempdir_path(), "arch.json")
    archfile.save(arch, path)
    loaded = archfile.load(path)
    self.assertEqual(loaded["version"], 2)
    again = archfile.topology_of(loaded)
    self.assertEqual(again.space, t.space)
    self.assertEqual((again.space_kind, again.fix_last_width, again.downsample_shortcut),
                     (t.space_kind, t.fix_last_width, t.downsample_shortcut))
    child = dense.build_from_arch(loaded)
    self.assertEqual(flops.count_keras_model(child)["params"], loaded["params"])
    pooled = [l.name for l in child.layers if l.name.endswith("_shortcut_pool")]
    self.assertEqual(bool(pooled), t.downsample_shortcut == "avgpool_conv")

  def test_reads_version_1(self):
    t, arch = _arch()
    v1 = json.loads(json.dumps(arch))
    v1["version"] = 1
    for key in ("space", "fix_last_width", "downsample_shortcut"):
      del v1["search_space"][key]
    path = os.path.join(self.create_tempdir_path(), "arch.json")
    with open(path, "w") as f:
      json.dump(v1, f)
    loaded = archfile.load(path)
    again = archfile.topology_of(loaded)
    self.assertEqual(again.space, t.space)
    self.assertEqual((again.space_kind, again.fix_last_width, again.downsample_shortcut),
                     ("aps_tf", False, "conv_bn"))
    self.assertEqual(dense.build_from_arch(loaded).count_params(),
                     dense.build_from_arch(arch).count_params())

  def test_order_of_mobilenet_widths(self):
    t = topo.build_topology("mobilenet_v2")
    self.assertEqual(t.slot_names[:4], ("conv_first", "block1_project", "block2_expand",
                                        "block2_project"))
    self.assertEqual(t.slot_names[-1], "conv_last")
    self.assertLen(t.slot_names, 35)
    self.assertEqual(t.space.num_decisions, 24)

  def test_decision_counts(self):
    self.assertEqual(topo.build_topology("resnet20").space.num_decisions, 19)
    self.assertEqual(topo.build_topology("resnet56").space.num_decisions, 55)
    self.assertEqual(topo.build_topology("resnet18").space.num_decisions, 13)

  def test_save_is_atomic_and_keeps_old_file_on_error(self):
    _, arch = _arch()
    path = os.path.join(self.create_tempdir_path(), "arch.json")
    archfile.save(arch, path)
    bad = dict(arch, widths=[0] * len(arch["widths"]))
    with self.assertRaises(archfile.ArchFileError):
      archfile.save(bad, path)
    self.assertEqual(archfile.load(path), json.loads(json.dumps(arch)))
    self.assertEqual(os.listdir(os.path.dirname(path)), ["arch.json"])

  def create_tempdir_path(self):
    import tempfile  # pylint: disable=g-import-not-at-top
    return tempfile.mkdtemp()


def _mutations():
  def set_(key, value):
    return lambda a: a.__setitem__(key, value)
  return [
      ("unknown_model", set_("model", "vgg16"), "field 'model': unknown model 'vgg16'"),
      ("wrong_version", set_("version", 4),
       "field 'version': this aps-tf reads versions 1, 2, 3"),
      ("graph_version_without_graph", set_("version", 3), "field 'graph': version 3 needs"),
      ("wrong_format", set_("format", "other"), "field 'format'"),
      ("wrong_count", lambda a: a["widths"].pop(), "field 'widths': resnet20 has 19"),
      ("width_zero", lambda a: a["widths"].__setitem__(3, 0), "out of range"),
      ("width_huge", lambda a: a["widths"].__setitem__(3, 10 ** 6), "out of range"),
      ("width_type", lambda a: a["widths"].__setitem__(3, "8"), "list of integers"),
      ("bad_shape", set_("input_shape", [16, 16]), "field 'input_shape'"),
      ("bad_classes", set_("num_classes", 0), "field 'num_classes'"),
      ("decision_index", lambda a: a["decisions"][0].__setitem__("index", 9),
       "field 'decisions': decision 0 (stem): index 9 out of range"),
      ("decision_count", lambda a: a["decisions"].pop(), "field 'decisions'"),
      ("widths_vs_decisions", lambda a: a["widths"].__setitem__(
          0, 4 if a["widths"][0] != 4 else 8), "but the decisions give"),
      ("stale_flops", lambda a: a["flops"].__setitem__("full", 1), "field 'flops'"),
      ("stale_params", set_("params", 1), "field 'params'"),
      ("bad_space", set_("search_space", {"candidates": [8, 4]}), "field 'search_space'"),
      ("unknown_space_kind", lambda a: a["search_space"].__setitem__("space", "paper"),
       "field 'search_space': unknown search space 'paper'"),
      ("bad_fix_last_width", lambda a: a["search_space"].__setitem__("fix_last_width", "yes"),
       "field 'search_space': fix_last_width: expected true, false or null"),
      ("bad_shortcut", lambda a: a["search_space"].__setitem__("downsample_shortcut", "pool"),
       "field 'search_space': unknown downsample_shortcut 'pool'"),
      ("new_keys_in_version_1", set_("version", 1), "need version 2"),
      # Options change the slots a decision sets: stale decisions are caught.
      ("options_vs_decisions", lambda a: a["search_space"].__setitem__("fix_last_width", True),
       "field 'decisions'"),
  ]


class BadInputTest(parameterized.TestCase):

  @parameterized.named_parameters(*_mutations())
  def test_validation_names_field(self, mutate, message):
    _, arch = _arch()
    arch = json.loads(json.dumps(arch))
    mutate(arch)
    path = os.path.join(RoundTripTest.create_tempdir_path(self), "arch.json")
    with open(path, "w") as f:
      json.dump(arch, f)
    with self.assertRaisesRegex(archfile.ArchFileError, path.replace(".", r"\.")) as ctx:
      archfile.load(path)
    self.assertIn(message, str(ctx.exception))

  def test_malformed_json(self):
    path = os.path.join(RoundTripTest.create_tempdir_path(self), "arch.json")
    with open(path, "w") as f:
      f.write('{"format": "aps-tf-architecture",')
    with self.assertRaisesRegex(archfile.ArchFileError, r"not valid JSON \(line 1"):
      archfile.load(path)

  def test_not_an_object(self):
    path = os.path.join(RoundTripTest.create_tempdir_path(self), "arch.json")
    with open(path, "w") as f:
      f.write("[1, 2]")
    with self.assertRaisesRegex(archfile.ArchFileError, "expected a JSON object"):
      archfile.load(path)

  def test_mobilenet_untied_residual_widths(self):
    t = topo.build_topology("mobilenet_v2", (64, 64, 3), 10)
    widths = list(t.base_widths)
    widths[t.slot_names.index("block3_project")] = 8  # block 3 is residual on block 2
    with self.assertRaisesRegex(archfile.ArchFileError, "residual block needs equal"):
      archfile.make(t, widths)


if __name__ == "__main__":
  from absl.testing import absltest
  absltest.main()
