r"""Decisions and FLOPs range of each search space, as a Markdown table.

Base model, smallest and largest architecture of every family under the
default and the authors' ('reference') layouts, in both FLOPs conventions:

  python benchmarks/space_ranges.py
"""

from aps_tf import flops
from aps_tf.models import topology as topo

ROWS = (
    ("resnet20", (32, 32, 3), 10, {}),
    ("resnet20", (32, 32, 3), 10, dict(space="reference", downsample_shortcut="avgpool_conv")),
    ("resnet18", (224, 224, 3), 1000, {}),
    ("resnet18", (224, 224, 3), 1000, dict(space="reference",
                                           downsample_shortcut="avgpool_conv")),
    ("mobilenet_v2", (224, 224, 3), 1000, {}),
    ("mobilenet_v2", (224, 224, 3), 1000, dict(space="reference")),
)


def main():
  print("| model | options | decisions | base (full) | smallest (full) | largest (full) | "
        "smallest (search) | largest (search) |")
  print("|---|---|---|---|---|---|---|---|")
  for model, shape, classes, options in ROWS:
    t = topo.build_topology(model, shape, classes, **options)
    sp = t.space

    def cost(arch, convention="full"):
      return flops.count(t, sp.widths(arch), convention)["flops"]

    label = ", ".join(str(v) for v in options.values()) or "defaults"
    base = flops.count(t, t.base_widths)["flops"]
    print(f"| {model} | {label} | {sp.num_decisions} | {base:,} | {cost(sp.smallest()):,} | "
          f"{cost(sp.largest()):,} | {cost(sp.smallest(), 'search'):,} | "
          f"{cost(sp.largest(), 'search'):,} |")


if __name__ == "__main__":
  main()
