"""The core (scheduler, KV accounting, requests, sampling parameters, metrics, workloads) imports no
torch: the simulator drives the same code on a CPU-only machine with a predicted clock."""

from __future__ import annotations

import subprocess
import sys


def test_core_imports_no_torch():
    code = (
        "import sys\n"
        "import cadence, cadence.core.scheduler, cadence.core.kv, cadence.core.request\n"
        "import cadence.core.sampling_params, cadence.core.config, cadence.core.metrics, cadence.core.workload\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
