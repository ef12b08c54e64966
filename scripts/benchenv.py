"""What every benchmark records beside its figures, and how it states a target.

One home for: the machine (CPU model, cores, torch threads), the 1-minute load average, the refusal
to measure on a busy machine, and the ``target`` rows that ``scripts/bench_*.py`` print as
``PASS``/``FAIL``. Benchmarks import it as a sibling module (``scripts/`` is on ``sys.path`` when a
script runs).

    env = machine(max_load=1.5, force=args.force)   # refuses (exit 3) when load > max_load
    row = target("int8 vs torch at batch 32", measured=2.3, goal=2.0)   # higher is better
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

#: the 1-minute load average above which a benchmark refuses to start (figures taken at load 6-14
#: could not show whether targets were met)
MAX_LOAD = 1.5


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load1() -> float:
    """The 1-minute load average."""
    return round(os.getloadavg()[0], 2)


def loadavg() -> list[float]:
    """The 1, 5 and 15-minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def machine(max_load: float = MAX_LOAD, force: bool = False) -> dict[str, Any]:
    """The machine a benchmark runs on; exits with status 3 when the load is above ``max_load``.

    ``force``: measure anyway, with a loud warning and ``"load_ok": false`` in the record (ratios
    of a loaded run are still comparable within the run; absolute figures are not).
    """
    import torch

    load = loadavg()
    ok = load[0] <= max_load
    if not ok:
        msg = f"load average {load[0]} > {max_load}: figures would not show whether targets are met"
        if not force:
            print(
                f"refusing to benchmark: {msg} (wait for a quiet machine, or --force)",
                file=sys.stderr,
            )
            raise SystemExit(3)
        print(f"WARNING: {msg}; measuring anyway (--force)", file=sys.stderr)
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "loadavg_start": load,
        "load_ok": ok,
        "max_load": max_load,
    }


def target(name: str, measured: float | None, goal: float, higher_is_better: bool = True) -> dict:
    """One target row: ``{name, measured, goal, pass}``, printed as a PASS/FAIL line."""
    if measured is None:
        ok = False
    else:
        ok = measured >= goal if higher_is_better else measured <= goal
    sign = ">=" if higher_is_better else "<="
    shown = "n/a" if measured is None else f"{measured:.3g}"
    print(f"[{'PASS' if ok else 'FAIL'}] {name}: {shown} (target {sign} {goal:g})")
    return {
        "name": name,
        "measured": measured,
        "goal": goal,
        "higher_is_better": higher_is_better,
        "pass": ok,
    }


def add_load_arguments(ap) -> None:
    """``--max-load`` and ``--force`` on a benchmark's argument parser."""
    ap.add_argument("--max-load", type=float, default=MAX_LOAD, help="refuse above this 1-min load")
    ap.add_argument("--force", action="store_true", help="measure on a busy machine (warns)")
