"""How long the guard itself holds the event loop, whatever else the machine is doing.

A wall-clock step time grows when the OS gives the CPU to other processes: on a loaded 2-core
machine a step that does 1 ms of work can take 150 ms. `ProcessClock` takes snapshots of three
clocks so a test can bound what the code under test did instead:

- `wall`: `time.perf_counter()`;
- `cpu`: the calling thread's CPU time (`time.thread_time()`), which does not grow when the
  thread waits;
- `waited`: the time every thread of this process spent runnable but waiting for a CPU (Linux
  ``/proc/self/task/*/schedstat``, second field; 0 where it is not available, which falls back
  to wall-clock time).

`held(start, end)` is the loop time attributable to the process: the wall time minus the time the
OS kept a runnable thread of ours off the CPU (a thread holding the GIL, or the loop thread
itself), and never less than the loop thread's own CPU time. A loop thread that works, or that
blocks on I/O, is counted in full; a loop thread the machine is too busy to run is not.
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

__all__ = ["ProcessClock", "Snapshot", "held"]

_TASKS = "/proc/self/task"


class Snapshot(NamedTuple):
    wall: float
    cpu: float
    waited: float


class ProcessClock:
    """Snapshots of wall, thread CPU and runqueue-wait time. `waited` is cumulative over every
    thread seen (a thread that ends keeps what it had waited), so it never goes backwards."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}
        self._last: dict[str, int] = {}
        self._total_ns = 0
        self.available = os.path.isfile(f"{_TASKS}/{os.getpid()}/schedstat")

    def _waited(self) -> float:
        if not self.available:
            return 0.0
        alive = set(os.listdir(_TASKS))
        for tid in alive:
            fd = self._fds.get(tid)
            try:
                if fd is None:
                    fd = self._fds[tid] = os.open(f"{_TASKS}/{tid}/schedstat", os.O_RDONLY)
                ns = int(os.pread(fd, 128, 0).split()[1])
            except (OSError, IndexError, ValueError):  # the thread ended meanwhile
                continue
            self._total_ns += ns - self._last.get(tid, 0)
            self._last[tid] = ns
        for tid in set(self._fds) - alive:
            os.close(self._fds.pop(tid))
        return self._total_ns / 1e9

    def snapshot(self) -> Snapshot:
        return Snapshot(time.perf_counter(), time.thread_time(), self._waited())

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def held(start: Snapshot, end: Snapshot) -> float:
    """Seconds between two snapshots attributable to this process (see the module docstring)."""
    return max(end.cpu - start.cpu, (end.wall - start.wall) - (end.waited - start.waited))
