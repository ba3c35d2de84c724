"""What /proc says of one running process: CPU seconds, resident memory, open descriptors and
threads (the storm and soak benchmarks sample many boxes and Asterisk with it)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    cpu_s: float  # user + system since the process started
    rss_mb: float  # resident now (VmRSS)
    fds: int
    threads: int


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def sample(pid: int) -> Sample:
    rss, threads = 0.0, 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return Sample(cpu_seconds(pid), rss, len(os.listdir(f"/proc/{pid}/fd")), threads)
