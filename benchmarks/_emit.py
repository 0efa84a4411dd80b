"""What the benchmarks share: the machine's description and printing + writing their JSON."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def machine(**extra: Any) -> dict[str, Any]:
    """Python version, the CPUs this process may use and the 1-minute load average (idle is near 0)."""
    return {
        "python": platform.python_version(),
        "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "loadavg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        **extra,
    }


def emit(result: dict[str, Any], path: str | Path | None) -> None:
    """Print ``result`` as JSON and write it to ``path`` (when given)."""
    text = json.dumps(result, indent=2)
    print(text)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
