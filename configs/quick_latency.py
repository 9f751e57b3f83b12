"""The quick run under a measured latency budget (LiteRT int8, 1 thread, this CPU).

  make demo CONFIG=configs/quick_latency.py
  # = python -m aps_tf.latency build --config=configs/quick_latency.py  (the table)
  #   python -m aps_tf.search --config=configs/quick_latency.py --workdir=...  (etc.)

ResNet-20 on the embedded digits upsampled to 32x32 (at 16x16 a whole int8
model runs in ~0.06 ms, too close to the timer's noise). The reward's cost is
the latency the table predicts; the target is half the base ResNet-20's
measured int8 latency on the machine of docs/results/litert_latency_demo.json.
"""

from aps_tf.configs import quick


def get_config():
  c = quick.get_config()
  c.data.image_size = 32
  c.search.reward.kind = "latency"
  c.search.reward.latency_format = "int8"
  # Built by `python -m aps_tf.latency build --config=configs/quick_latency.py`
  # (the demo does it first; rerunning resumes or reuses it).
  c.search.reward.latency_table = "workdirs/latency/quick_latency_int8.json"
  # Base ResNet-20 (16/32/64) at 32x32, int8, 1 thread: 0.235 ms measured here
  # (median of 200 invocations, 2 shared cores); the target is half of it.
  c.search.reward.target = 0.118
  return c
