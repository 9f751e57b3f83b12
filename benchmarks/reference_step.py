r"""Times the authors' PyTorch release's search steps at a fixed architecture list.

The other half of `benchmarks/compare_reference.py`: it runs under a Python
that has `torch` and `numpy` (not the project's environment) and imports the
release's own modules from `--reference_dir` (a checkout or `git archive`
export of github.com/haolibai/APS-channel-search); nothing of the release is
vendored here.

What is built: the release's ResNet-20 channel-search supernet
(`nets/resnet_20s_width.resnet20_width`), its learner
(`learners/chann_cifar_learner.ChannCifarLearner`, SGD for the meta weights and
the projections, Adam for the controller) with the hyper-parameters of the
release's CIFAR search script (`scripts/search/start_search_resnet_cifar.sh`),
at the candidates, meta width and batch of `--archs_file` / the flags.

The release samples the architecture inside the supernet's forward. To time
it at the fixed architectures, the controller still runs (its LSTM, its
log-probability and entropy, as the release pays them) and its sample is then
replaced by the fixed architecture; nothing else of the release is changed.
The architectures of `--archs_file` (written by `benchmarks/search_step.py`)
are mapped by width: decision k of the release is the candidate index of conv
k's width (stem, then conv1 and conv2 of every block). Two differences belong
to the release and are kept: the last block's output is always the widest
candidate, and every block's shortcut is a 1x1 conv + BN.

Per architecture, alternated, one warm-up call each, medians over `--iters`:
  reward_step_s   `Architect.step`: controller sample, supernet forward on the
                  reward batch, REINFORCE update (the release's reward step)
  fused_step_s    one batch of `ChannCifarLearner.epoch_train` in the warm-up
                  phase: supernet forward + orthogonal (Phi) loss, one backward,
                  SGD, column renormalisation of the projections. The release
                  fuses the supernet step and the Phi step; this is both.
  search_iter_s   one batch of `epoch_train` in the search phase: the reward
                  step followed by the fused step (the release's iteration)
  phi_step_s      the Phi part alone: the release's `orthogonal_reg_loss()`,
                  its gradient, the renormalisation of the projections
  supernet_step_s fused_step_s - phi_step_s (derived)
  dense_step_s    a plain PyTorch ResNet-20 at the architecture's widths (not the
                  release's code: `_dense_child` below, the same network as
                  aps-tf's dense child, SGD with momentum and weight decay), so the
                  two frameworks' convolution kernels compare at the same widths
One stand-in: the release's top-k accuracy helper fails under torch 2.x (a
.view() of a non-contiguous tensor); the learner's copy is replaced by the
same count with .reshape() (see `_import_release`).
The JSON's top-level figures are medians over the architectures.

  /path/to/torch/python benchmarks/reference_step.py --reference_dir=/tmp/aps_ref \
      --archs_file=/tmp/archs.json --iters=3 --json

Errors a user can fix (missing directory, archs file, torch) print one line on
stderr and exit 2.
"""

import argparse
import importlib.util
import json
import os
import sys
import time
import types

_RELEASE_FILES = ("nets/resnet_20s_width.py", "learners/chann_cifar_learner.py",
                  "flops_table_resnet20_thinner.pkl")


class _UsageError(Exception):
  pass


def _parse(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  p.add_argument("--reference_dir", default=None,
                 help="Directory of the authors' release (its nets/, learners/, utils/).")
  p.add_argument("--archs_file", default=None,
                 help="JSON of fixed architectures written by benchmarks/search_step.py.")
  p.add_argument("--num_archs", type=int, default=20, help="Architectures timed (the first N).")
  p.add_argument("--iters", type=int, default=3, help="Timed repetitions per step (medians).")
  p.add_argument("--batch_size", type=int, default=128)
  p.add_argument("--seed", type=int, default=0, help="Seed of the random data and weights.")
  p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's).")
  p.add_argument("--skip_iteration", action="store_true",
                 help="Do not time search_iter_s (it is the reward step then the fused step).")
  p.add_argument("--json", action="store_true", help="End with one JSON line only.")
  return p.parse_args(argv)


def _check(a):
  if not a.reference_dir:
    raise _UsageError("--reference_dir: expected the directory of the authors' release "
                      "(github.com/haolibai/APS-channel-search), got none")
  for f in _RELEASE_FILES:
    if not os.path.isfile(os.path.join(a.reference_dir, f)):
      raise _UsageError(f"--reference_dir={a.reference_dir}: expected the authors' release "
                        f"there, but {f} is missing")
  if not a.archs_file or not os.path.isfile(a.archs_file):
    raise _UsageError(f"--archs_file={a.archs_file}: expected the JSON written by "
                      "benchmarks/search_step.py --archs_file, not found")
  missing = [m for m in ("torch", "numpy") if importlib.util.find_spec(m) is None]
  if missing:
    raise _UsageError(f"{sys.executable}: expected a Python with torch and numpy, "
                      f"missing: {', '.join(missing)}")
  with open(a.archs_file) as f:
    doc = json.load(f)
  if doc.get("model") != "resnet20" or len(doc.get("archs", [])) < a.num_archs:
    raise _UsageError(f"--archs_file={a.archs_file}: expected >= {a.num_archs} resnet20 "
                      f"architectures, got model {doc.get('model')!r} with "
                      f"{len(doc.get('archs', []))}")
  return doc


def _release_args(doc, batch_size):
  """The release's learner arguments, as its CIFAR ResNet-20 search script sets them."""
  return argparse.Namespace(
      # scripts/search/start_search_resnet_cifar.sh
      exec_mode="train", learner="chann_cifar", lr_decy_type="multi_step",
      model_type="resnet_20_width", lr=0.1, batch_size=batch_size, controller_type="ENAS",
      arch_weight_decay=1e-3, arch_learning_rate=1.6e-4, entropy_coeff=4e-3,
      ft_schedual="fixed", orthg_weight=5e-3, ft_proj_lr=1e-3, flops=True,
      flops_coeff=[0.0, -0.1], max_flops=2.05e7, updt_proj=1, multiplier=1.0,
      max_width=int(doc["meta_width"]),
      candidate_width=",".join(str(c) for c in doc["candidates"]), overlap=1.0,
      norm_constraint="constraint", warmup_epochs=200, epochs=600, print_freq=20,
      # main.py defaults the script leaves alone
      momentum=0.9, nesterov=False, weight_decay=2e-4, gamma=0.99, norm_weight=0.01,
      ortho_type="l1", controller_hid=100, controller_temperature=None,
      controller_tanh_constant=None, controller_op_tanh_reduce=2.5, lstm_num_layers=1,
      use_aux=False, blockwise=False, rank=0, local_rank=0, lr_min=2e-4,
      save_path="/tmp/aps_reference_step", job_id="bench")


def _import_release(reference_dir):
  sys.path.insert(0, os.path.abspath(reference_dir))
  # utils/compute_flops.py (imported by the learner) imports torchvision at
  # module level but the search step never calls it; a stand-in keeps this
  # benchmark to torch + numpy.
  if importlib.util.find_spec("torchvision") is None:
    sys.modules["torchvision"] = types.ModuleType("torchvision")
  from learners import chann_cifar_learner  # pylint: disable=g-import-not-at-top
  from nets import resnet_20s_width  # pylint: disable=g-import-not-at-top
  # utils.utils.accuracy calls .view() on a transposed (non-contiguous) tensor,
  # which torch 2.x rejects for top-5 (the learner's training metrics); the
  # same top-k count with reshape() stands in for it in the learner only.
  chann_cifar_learner.accuracy = _topk_accuracy
  return resnet_20s_width, chann_cifar_learner


def _topk_accuracy(output, target, topk=(1,)):
  """Top-k accuracies in percent, as the release's utils.utils.accuracy returns them."""
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    pred = output.topk(max(topk), 1, True, True)[1]
    hit = pred.eq(target[:, None])
    return [hit[:, :k].reshape(-1).float().sum(0, keepdim=True) * (100.0 / target.size(0))
            for k in topk]


def _ref_arch(entry, candidates):
  widths = entry["widths"]
  if len(widths) != 19 or any(w not in candidates for w in widths):
    raise _UsageError(f"archs file: expected 19 ResNet-20 conv widths among {candidates}, "
                      f"got {widths}")
  return [candidates.index(w) for w in widths]


def _dense_child(widths, num_classes=10):
  """A plain PyTorch ResNet-20 at conv widths `widths` (stem, then conv1/conv2 of every
  block), shaped as aps-tf's dense child: 3x3 convs without bias, each followed by
  BN; a 1x1 conv + BN shortcut where the stride or the width changes; global
  average pool and a linear classifier."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  def conv_bn(cin, cout, k, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
                         nn.BatchNorm2d(cout))

  class Block(nn.Module):

    def __init__(self, cin, mid, cout, stride):
      super().__init__()
      self.conv1, self.conv2 = conv_bn(cin, mid, 3, stride), conv_bn(mid, cout, 3, 1)
      self.shortcut = (conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout
                       else nn.Identity())

    def forward(self, x):
      y = self.conv2(torch.relu(self.conv1(x)))
      return torch.relu(y + self.shortcut(x))

  layers = [conv_bn(3, widths[0], 3, 1), nn.ReLU()]
  cin = widths[0]
  for b in range(9):
    stride = 2 if b in (3, 6) else 1
    layers.append(Block(cin, widths[1 + 2 * b], widths[2 + 2 * b], stride))
    cin = widths[2 + 2 * b]
  layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
  return nn.Sequential(*layers)


def _timed(f):
  t = time.perf_counter()
  f()
  return time.perf_counter() - t


def main(argv=None):
  a = _parse(argv)
  try:
    doc = _check(a)
  except _UsageError as e:
    print(f"reference_step.py: error: {e}", file=sys.stderr)
    return 2
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  load_before = os.getloadavg()
  if a.threads:
    torch.set_num_threads(a.threads)
  torch.manual_seed(a.seed)
  candidates = [int(c) for c in doc["candidates"]]
  try:
    archs = [_ref_arch(e, candidates) for e in doc["archs"][:a.num_archs]]
  except _UsageError as e:
    print(f"reference_step.py: error: {e}", file=sys.stderr)
    return 2
  cwd = os.getcwd()
  os.chdir(a.reference_dir)  # the release's Architect opens its FLOPs table by a relative path
  try:
    nets, learners = _import_release(a.reference_dir)
    args = _release_args(doc, a.batch_size)
    device = torch.device("cpu")
    model = nets.resnet20_width(10, candidate_width=args.candidate_width,
                                max_width=args.max_width, args=args).to(device)
    h, w, c = doc.get("image_shape", [32, 32, 3])
    x = torch.randn(a.batch_size, c, h, w)
    y = torch.randint(0, 10, (a.batch_size,))
    learner = learners.ChannCifarLearner(model, ([(x, y)], [(x, y)], None), args, device)
  finally:
    os.chdir(cwd)
  model.train()
  master = model.arch_master
  master.force_uniform = False  # the search phase: the controller's own distribution
  sampled = master.forward
  fixed = {"arch": None}

  def fixed_forward():
    _, log_prob, entropy = sampled()
    return fixed["arch"], log_prob, entropy

  master.forward = fixed_forward
  proj = [v for _, v in model.named_projection_parameters()]

  def reward():
    learner.architect.step(x, y)

  def fused():
    args.warmup_epochs = 10**9  # epoch 0 is a warm-up epoch: no reward step
    learner.epoch_train(0)

  def iteration():
    args.warmup_epochs = -1  # epoch 0 is a search epoch: reward step, then the fused step
    learner.epoch_train(0)

  def phi():
    for v in proj:
      v.grad = None
    loss_orth, _ = model.orthogonal_reg_loss()
    (args.orthg_weight * loss_orth).backward()
    with torch.no_grad():
      for v in proj:  # the release's column renormalisation under norm_constraint='constraint'
        v.copy_(v / torch.diagonal(v.t().mm(v)).sqrt())

  fns = {"reward_step_s": reward, "fused_step_s": fused, "phi_step_s": phi}
  if not a.skip_iteration:
    fns["search_iter_s"] = iteration
  per_arch = []
  for arch, entry in zip(archs, doc["archs"]):
    fixed["arch"] = torch.tensor(arch, dtype=torch.long, device=device)
    child = _dense_child(entry["widths"]).train()
    child_opt = torch.optim.SGD(child.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)

    def dense(child=child, child_opt=child_opt):
      child_opt.zero_grad()
      torch.nn.functional.cross_entropy(child(x), y).backward()
      child_opt.step()

    fns["dense_step_s"] = dense
    for f in fns.values():
      f()
    ts = {k: [] for k in fns}
    for _ in range(a.iters):
      for k, f in fns.items():
        ts[k].append(_timed(f))
    med = {k: float(np.median(v)) for k, v in ts.items()}
    med["supernet_step_s"] = med["fused_step_s"] - med["phi_step_s"]
    per_arch.append(med)
  res = {"impl": "authors' PyTorch release", "reference_dir": os.path.abspath(a.reference_dir),
         "torch": torch.__version__, "threads": torch.get_num_threads(),
         "candidates": candidates, "meta_width": args.max_width, "batch_size": a.batch_size,
         "iters": a.iters, "num_archs": len(archs), "archs_file": a.archs_file}
  for k in ("reward_step_s", "supernet_step_s", "fused_step_s", "phi_step_s", "search_iter_s",
            "dense_step_s"):
    if k in per_arch[0]:
      res[k] = float(np.median([m[k] for m in per_arch]))
  res["parts_sum_s"] = res["reward_step_s"] + res["fused_step_s"]
  res["fused_step_per_arch"] = [round(m["fused_step_s"], 4) for m in per_arch]
  res["loadavg_before"] = [round(v, 2) for v in load_before]
  res["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
  res["cpus"] = os.cpu_count()
  if a.json:
    print(json.dumps(res))
  else:
    for k, v in res.items():
      print(f"{k:22s} {v}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
