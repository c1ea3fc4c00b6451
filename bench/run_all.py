"""Run every benchmark in turn and print their results: ``python bench/run_all.py [--smoke]``.

Each benchmark measures archspec and its reference side by side in the same run
and prints the ratio; ``--smoke`` uses tiny sizes to prove the scripts still run.
"""

from __future__ import annotations

import argparse
import time

import build_time
import export
import inference
import memory_scaling
import scaling
import startup
import train_memory
from common import machine

BENCHMARKS = (
    ("1. build", build_time),
    ("2. eager inference", inference),
    ("3. training memory and step time", train_memory),
    ("4. export", export),
    ("5. scaling", scaling),
    ("6. startup", startup),
    ("7. training memory against depth", memory_scaling),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: proves it runs, measures nothing")
    smoke = parser.parse_args().smoke
    print(machine(), flush=True)
    for title, module in BENCHMARKS:
        start = time.perf_counter()
        results = module.run(smoke=smoke)
        print(f"== {title} ({time.perf_counter() - start:.1f} s)", *results, sep="\n", flush=True)


if __name__ == "__main__":
    main()
