"""Times the test tiers and writes docs/results/test_suite.json.

  python tools/time_tests.py                 # make test-fast, then make test
  python tools/time_tests.py --targets=test-fast --notes="..."

Each target runs as the README runs it (`make TARGET` in this checkout, its
venv already made), so the time is what a contributor waits for, lint and
worker start-up included. The record keeps the wall time, pytest's summary
line and the load average before each run: a time from a loaded machine is
not a result, and the notes say so.
"""

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORD = os.path.join(ROOT, "docs", "results", "test_suite.json")
SUMMARY = re.compile(r"^=*\s*(\d+ passed.*?) in [\d.]+s", re.M)


def run_target(target: str) -> dict:
  """Runs `make TARGET` and returns its row of the record.

  Raises:
    SystemExit: when the target fails (a red suite has no time worth keeping).
  """
  load_before = os.getloadavg()[0]
  start = time.monotonic()
  proc = subprocess.run(["make", target], cwd=ROOT, capture_output=True, text=True)
  wall = time.monotonic() - start
  if proc.returncode:
    sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
    raise SystemExit(f"time_tests: `make {target}` failed (exit {proc.returncode}); "
                     "no record written")
  found = SUMMARY.findall(proc.stdout)
  return {"target": f"make {target}", "wall_s": round(wall, 1),
          "wall_min": round(wall / 60, 2), "pytest": found[-1] if found else "",
          "load_before": round(load_before, 2)}


def versions() -> dict:
  out = subprocess.run(
      [os.path.join(ROOT, ".venv", "bin", "python"), "-c",
       "import json, platform, tensorflow as tf, keras; print(json.dumps({"
       "'python': platform.python_version(), 'tensorflow': tf.__version__, "
       "'keras': keras.__version__}))"],
      capture_output=True, text=True, check=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--targets", default="test-fast,test")
  parser.add_argument("--notes", default="")
  parser.add_argument("--out", default=RECORD)
  args = parser.parse_args()
  rows = []
  for target in args.targets.split(","):
    print(f"make {target} ...", flush=True)
    rows.append(run_target(target))
    print(json.dumps(rows[-1]), flush=True)
  # The first target's load is the machine's own; later ones include the
  # previous target's tail (the 1-minute average decays slowly).
  loaded = rows[0]["load_before"]
  notes = args.notes or (
      "Nothing else ran on the machine (load average before the first target "
      f"{loaded:.2f})." if loaded < 0.5 else
      f"The machine was not idle (load average {loaded:.1f} before the first target).")
  record = {
      "title": "Test suite wall time (make test, make test-fast)",
      "command": "python tools/time_tests.py --targets=" + args.targets,
      "date": datetime.date.today().isoformat(),
      "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no accelerator",
      "versions": versions(), "notes": notes, "results": rows}
  tmp = args.out + ".tmp"
  with open(tmp, "w") as f:
    json.dump(record, f, indent=1)
    f.write("\n")
  os.replace(tmp, args.out)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
