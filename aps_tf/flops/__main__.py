r"""FLOPs / params binary.

  python -m aps_tf.flops --model=resnet20
  python -m aps_tf.flops --model=resnet20 --widths=16,16,... --json
  python -m aps_tf.flops --arch=WORKDIR/arch.json --convention=search
"""

import json

from absl import app
from absl import flags

from aps_tf import archfile
from aps_tf import cli
from aps_tf import errors
from aps_tf import flops
from aps_tf.models import topology as topo

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, f"Model name: {topo.model_names()}.")
flags.DEFINE_string("widths", None, "Comma-separated per-conv widths (architecture-file order).")
flags.DEFINE_string("arch", None, "Architecture JSON file (overrides --model/--widths).")
flags.DEFINE_enum("convention", "full", flops.CONVENTIONS, "FLOPs convention.")
flags.DEFINE_integer("image_size", None, "Input height = width (default: 32 CIFAR, 224 ImageNet).")
flags.DEFINE_integer("channels", 3, "Input channels.")
flags.DEFINE_integer("num_classes", None, "Classes (default 10 CIFAR, 1000 ImageNet).")
flags.DEFINE_bool("json", False, "Print one JSON object instead of a table.")


class FlopsInputError(errors.UserError, ValueError):
  """A model name, widths list or input size the counter cannot use."""


def _parse_widths(text: str) -> list[int]:
  try:
    return [int(w) for w in text.split(",") if w.strip()]
  except ValueError:
    raise FlopsInputError(f"--widths: expected comma-separated integers, got {text!r}") from None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.arch:
    arch = archfile.load(FLAGS.arch)
    t, widths = archfile.topology_of(arch), arch["widths"]
  else:
    if not FLAGS.model:
      raise app.UsageError("give --model (or --arch)")
    try:
      imagenet = topo.family_of(FLAGS.model) != "resnet_cifar"
      size = FLAGS.image_size or (224 if imagenet else 32)
      classes = FLAGS.num_classes or (1000 if imagenet else 10)
      t = topo.build_topology(FLAGS.model, (size, size, FLAGS.channels), classes)
    except ValueError as e:
      raise FlopsInputError(f"--model={FLAGS.model} --image_size={FLAGS.image_size}: {e}") from e
    widths = _parse_widths(FLAGS.widths) if FLAGS.widths else list(t.base_widths)
  try:
    result = flops.count(t, widths, FLAGS.convention)
  except ValueError as e:
    raise FlopsInputError(f"--widths: {e}") from e
  base = flops.count(t, t.base_widths, FLAGS.convention)
  result.update(model=t.model, widths=list(widths), base_flops=base["flops"],
                base_params=base["params"], input_shape=list(t.input_shape))
  if FLAGS.json:
    print(json.dumps(result))
  else:
    print(f"model       {t.model}  input {t.input_shape}  classes {t.num_classes}")
    print(f"FLOPs ({FLAGS.convention})  {result['flops']:,}  ({result['flops'] / 1e6:.2f}M, "
          f"{100 * result['flops'] / base['flops']:.1f}% of base)")
    print(f"params      {result['params']:,}  ({result['params'] / 1e6:.3f}M)")
  return 0


if __name__ == "__main__":
  cli.run(main)
