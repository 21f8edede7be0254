"""What the benchmark ran on: CPU, cores, memory, load, versions, process memory."""

from __future__ import annotations

import datetime as dt
import os
import platform
import resource
import sys
from importlib import metadata
from pathlib import Path

import vlmserve


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def physical_cores() -> int | None:
    """Distinct (physical id, core id) pairs from /proc/cpuinfo; None when unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    cores, phys = set(), "0"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            phys = value.strip()
        elif key == "core id":
            cores.add((phys, value.strip()))
    return len(cores) or None


def last_level_cache_bytes() -> int | None:
    """Size of the largest CPU cache level of cpu0 (sysfs), None when unknown."""
    best: tuple[int, int] | None = None
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level = int((index / "level").read_text())
            size = (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        mult = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(size[-1:], 1)
        digits = size.rstrip("KMG")
        if digits.isdigit() and (best is None or level > best[0]):
            best = (level, int(digits) * mult)
    return best[1] if best else None


def memory_total_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def peak_rss_bytes() -> int:
    """This process's peak resident set size (ru_maxrss: kB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def current_rss_bytes() -> int | None:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    return {
        "vlmserve": vlmserve.__version__,
        "llama_cpp_python": package_version("llama_cpp_python"),
        "gguf": package_version("gguf"),
        "numpy": package_version("numpy"),
        "python": platform.python_version(),
    }


def machine_info() -> dict[str, object]:
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "usable_cores": usable,
        "last_level_cache_bytes": last_level_cache_bytes(),
        "memory_total_bytes": memory_total_bytes(),
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "gpu": None,  # filled from the engine's backend when it offloads to a GPU
    }


def run_header(schema: str, command: str, mode: str, **first: object) -> dict[str, object]:
    """The keys every benchmark document opens with, in order (``first``, e.g. the
    scenario, right after the schema); ``duration_s`` and the end load are filled last."""
    return {
        "schema": schema, **first, "command": command,
        "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "duration_s": None, "mode": mode, "machine": machine_info(),
        "load_average": {"start": load_average(), "end": None}, "versions": versions(),
    }
