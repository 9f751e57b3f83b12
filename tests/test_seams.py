"""The public seams the search uses, and the one source of config defaults."""

import json
import os
import tempfile

from absl.testing import parameterized
import ml_collections
import numpy as np
import tensorflow as tf

from aps_tf import config_check
from aps_tf import errors
from aps_tf import layers as aps_layers
from aps_tf import models
from aps_tf import schema
from aps_tf import workdir as workdir_lib
from aps_tf.models import supernet
from aps_tf.models import topology as topo
from aps_tf.policy import Policy
from aps_tf.search import settings
from aps_tf.configs import base

MODELS = {
    "resnet20": dict(input_shape=(16, 16, 1), candidates=(2, 4, 8)),
    "mobilenet_v2": dict(input_shape=(32, 32, 3), candidates=(2, 4), meta_width=6),
}


def _config(model: str, mode: str) -> ml_collections.ConfigDict:
  kw = dict(MODELS[model])
  cfg = base.get_config()
  cfg.model.name = model
  cfg.model.candidates = kw["candidates"]
  cfg.model.meta_width = kw.get("meta_width")
  cfg.search.sharing = mode
  cfg.search.noise_std = 1e-2
  return cfg


def _net(model: str, mode: str) -> supernet.Supernet:
  kw = dict(MODELS[model])
  t = topo.build_topology(model, kw.pop("input_shape"), 10, **kw)
  return models.supernet_from_config(_config(model, mode), t)


class SupernetSeamsTest(parameterized.TestCase):

  @parameterized.product(model=tuple(MODELS), mode=schema.SHARING_MODES)
  def test_project_gradient_is_the_candidate_kernel_map(self, model, mode):
    # Q^T W P is linear in W: projecting the meta-weight itself must give the
    # candidate kernel the layer computes with its projections.
    checked = 0
    for layer, _, _ in _net(model, mode).searched_units():
      c, w = layer.get_config(), np.asarray(layer.kernel)
      if isinstance(layer, aps_layers.APSDepthwiseConv2D):
        if not c["candidates"]:
          continue
        got = layer.project_gradient(w, None, 0)
        want = layer.candidate_kernel(0, use_projection=True).numpy()[..., 0]
      elif isinstance(layer, aps_layers.APSDense):
        if not c["in_candidates"]:
          continue
        last = len(c["in_candidates"]) - 1
        got = layer.project_gradient(w, last, None)
        want = layer.candidate_kernel(last, use_projection=True).numpy()
      else:
        if not (c["in_candidates"] and c["out_candidates"]):
          continue
        last = len(c["in_candidates"]) - 1
        got = layer.project_gradient(w, last, 0)
        want = layer.candidate_kernel(last, 0, use_projection=True).numpy()
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
      checked += 1
    self.assertGreater(checked, 1)

  def test_searched_units_cover_every_aps_layer_and_bn(self):
    net = _net("resnet20", "ordinal")
    self.assertEqual([u[0] for u in net.searched_units()], list(net.aps_layers))
    bns = net.batch_norm_layers()
    self.assertNotEmpty(bns)
    slots = net.topology.num_slots
    for _, in_slot, out_slot in net.searched_units():
      for s in (in_slot, out_slot):
        self.assertTrue(s is None or 0 <= s < slots)

  def test_supernet_from_config_is_seeded_by_the_config(self):
    a, b = _net("resnet20", "transitional"), _net("resnet20", "transitional")
    for x, y in zip(a.weights, b.weights):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

  def test_policy_valid_mask(self):
    counts = (3, 1, 2)
    mask = Policy(counts, hidden=4).valid_mask
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 0, 0], [1, 1, 0]])
    arch, _, _ = Policy(counts, hidden=4, seed=3).sample(n=32)
    self.assertTrue(np.all(np.take_along_axis(mask, arch.numpy().T, 1) == 1))


class ConfigDefaultsTest(parameterized.TestCase):

  def test_old_config_json_is_upgraded_by_base(self):
    old = json.loads(base.get_config().to_json_best_effort())
    del old["export"]["latency_runs"]
    del old["search"]["phi_every"]
    old["search"]["lr"] = 0.5
    cfg = config_check.with_defaults(old)
    self.assertEqual(cfg.export.latency_runs, base.get_config().export.latency_runs)
    self.assertEqual(cfg.search.phi_every, base.get_config().search.phi_every)
    self.assertEqual(cfg.search.lr, 0.5)  # given values win

  def test_workdir_of_an_older_release_still_matches(self):
    cfg = base.get_config()
    new = json.loads(cfg.to_json_best_effort())
    old = json.loads(cfg.to_json_best_effort())
    del old["search"]["phi_every"]  # a field added since the run was written
    with tempfile.TemporaryDirectory() as d:
      with open(os.path.join(d, workdir_lib.CONFIG_FILE), "w") as f:
        json.dump(old, f)
      workdir_lib.check_config(new, d, ("search",))  # no mismatch
      new["search"]["phi_every"] += 1
      with self.assertRaisesRegex(workdir_lib.WorkdirMismatchError, "search.phi_every"):
        workdir_lib.check_config(new, d, ("search",))

  def test_unknown_dataset_is_a_config_error(self):
    with self.assertRaisesRegex(errors.ConfigError, "data.name"):
      config_check.with_defaults({"data": {"name": "mnist"}})

  def test_a_search_config_is_resolved_once(self):
    cfg = base.get_config()
    resolved = settings.resolve_config(cfg)
    self.assertIsNot(resolved, cfg)
    self.assertIs(settings.resolve_config(resolved), resolved)


if __name__ == "__main__":
  tf.test.main()
