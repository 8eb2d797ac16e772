"""``python -m benchmarks.cli_startup``: how long the CLI takes to start, on this machine.

Runs ``newsletter --help`` and ``newsletter status`` (on a fresh ``newsletter init``
folder with an upgraded database) as subprocesses, ``--runs`` times each, and prints
the median wall time next to the targets of the README (0.3 s and 0.8 s). Also prints
the import time of ``newsletter.cli`` alone. A benchmark, not a test: these figures
depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"--help": 0.3, "status": 0.8}


def _time(argv: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per command (median)")
    args = parser.parse_args(argv)
    cli = [sys.executable, "-m", "newsletter"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "digest"
        subprocess.run([*cli, "init", str(folder)], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([*cli, "db", "upgrade"], cwd=folder, check=True, stdout=subprocess.DEVNULL)
        cases = {
            "import newsletter.cli": [sys.executable, "-c", "import newsletter.cli"],
            "--help": [*cli, "--help"],
            "status": [*cli, "status"],
        }
        print(f"median of {args.runs} runs (python {sys.version.split()[0]})")
        for name, command in cases.items():
            _time(command, folder)  # warm the file cache
            median = statistics.median(_time(command, folder) for _ in range(args.runs))
            target = TARGETS.get(name)
            verdict = "" if target is None else f"  target < {target:.1f} s"
            verdict += "" if target is None else ("  ok" if median < target else "  SLOW")
            print(f"  {name:<22} {median:6.3f} s{verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
