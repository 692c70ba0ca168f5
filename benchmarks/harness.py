"""Measurement plumbing shared by the benchmark scripts: interleaved timing, peak memory per fresh
process, machine state, and the markdown/JSON output.

Timings on a shared machine drift with whatever else runs, so every script times its settings round
by round in one process (each round runs every setting once) and reports medians and ratios. Peak RSS
on CPU only ever grows, so a clean peak needs a fresh process per setting: `run_child` starts one and
reads back the JSON line it prints.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sfclip.train.logs import peak_rss_mb

__all__ = ["Timings", "interleaved", "median", "round_ratio", "min_ratio", "rss_mb", "peak_rss_mb", "peak_memory_mb",
           "reset_peak_memory", "sync", "set_threads", "machine_state", "emit_child_result", "run_child",
           "markdown_table", "write_json"]

CHILD_MARK = "BENCH_CHILD_RESULT "


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timings:
    """Seconds per call by setting, on two clocks: `wall`, and `cpu`, this process's CPU time (all its
    threads). With one thread on a CPU shared with other work, CPU time counts only our own work, so
    its ratios hold steady while wall-clock ratios swing with the neighbours' load."""

    wall: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)

    def primary(self, device: torch.device) -> dict[str, list[float]]:
        """CPU time on a CPU (steady under others' load), wall time on a GPU (CPU time means nothing there)."""
        return self.cpu if device.type == "cpu" else self.wall


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, device: torch.device,
                warmup: int = 1) -> Timings:
    """Time each function `rounds` times, in round-robin order after `warmup` calls each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = Timings({name: [] for name in fns}, {name: [] for name in fns})
    for _ in range(rounds):
        for name, fn in fns.items():
            sync(device)
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            sync(device)
            times.wall[name].append(time.perf_counter() - w0)
            times.cpu[name].append(time.process_time() - c0)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def round_ratio(times: dict[str, list[float]], name: str, base: str) -> float:
    """Median over rounds of time(name) / time(base) in the same round: a load change between rounds
    moves both, so this is steadier than a ratio of medians."""
    return statistics.median(a / b for a, b in zip(times[name], times[base]))


def min_ratio(times: dict[str, list[float]], name: str, base: str) -> float:
    """Ratio of the fastest runs: the ones least disturbed by other work on the machine."""
    return min(times[name]) / min(times[base])


def rss_mb() -> float:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """CUDA peak allocated, or on CPU the process's peak RSS (clean only in a fresh process)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()


def set_threads(threads: int, device: str) -> int:
    """`threads` torch threads, or by default one on a CPU: two threads on a two-core machine that others
    also use wait at every parallel region for a descheduled partner, so their times measure the
    neighbours, not the code. Returns the count in use."""
    threads = threads or (1 if device == "cpu" else 0)
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def machine_state() -> dict:
    """What the numbers were measured on, including how busy the machine was."""
    info = {"load_average": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def emit_child_result(result: dict) -> None:
    """A child process's last word: one marked JSON line on stdout."""
    print(CHILD_MARK + json.dumps(result), flush=True)


def run_child(argv: list[str], env: dict | None = None, timeout: float = 1800) -> dict:
    """Run `python argv...` in a fresh process and return the dict it emitted with `emit_child_result`."""
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(CHILD_MARK):
            return json.loads(line[len(CHILD_MARK):])
    raise RuntimeError(f"child {argv} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")


def markdown_table(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def write_json(path: str | Path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
