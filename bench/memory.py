"""Memory of a process tree: the benchmarks' peak of a process and its workers."""

from __future__ import annotations

import threading


class TreeMemory:
    """Samples the summed RSS and PSS of a process and its descendants; keeps the peaks.

    Forked payload workers share pages with their parent: summed RSS counts those twice,
    summed PSS (each shared page split between its sharers) counts them once.
    """

    INTERVAL_S = 0.5

    def __init__(self, pid: int):
        self.pid = pid
        self.peak_rss_mb = self.peak_pss_mb = 0.0
        self.max_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-memory", daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while True:
            try:
                members = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            rss = 0.0
            for member in members:
                try:
                    rss += member.memory_info().rss / 2**20
                except psutil.Error:
                    pass
            self.peak_rss_mb = max(self.peak_rss_mb, rss)
            self.peak_pss_mb = max(self.peak_pss_mb, sum(pss_mb(m.pid) for m in members))
            self.max_processes = max(self.max_processes, len(members))
            if self._stop.wait(self.INTERVAL_S):
                return


def pss_mb(pid: int) -> float:
    """A process's proportional set size in MiB (0 once it has ended)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # the process has just ended
        pass
    return 0.0
