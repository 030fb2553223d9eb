"""What the benchmark scripts print about the machine: CPU model, cores, load, BLAS."""
from __future__ import annotations

import os
import subprocess
from typing import Dict


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def blas() -> str:
    """The libblas.so.3 alternative (Debian): LibTorch's Linear layers call it."""
    try:
        out = subprocess.run(["update-alternatives", "--query", "libblas.so.3-x86_64-linux-gnu"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Value:"):
                value = line.split(":", 1)[1].strip()
                kind = "OpenBLAS (pthread)" if "openblas-pthread" in value else \
                    "OpenBLAS" if "openblas" in value else \
                    "reference BLAS (slow: run scripts/install-deps.sh)" if "/blas/" in value else value
                return f"{kind}: {value}"
    except OSError:
        pass
    path = os.path.realpath("/usr/lib/x86_64-linux-gnu/libblas.so.3")
    return path


SIMD_FLAGS = ("sse2", "sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16")


def cpuinfo_field(name: str) -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.split(":", 1)[0].strip() == name:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def machine_info() -> Dict[str, str]:
    flags = cpuinfo_field("flags").split()
    return {
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "load": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "blas": blas(),
        "simd_flags": " ".join(f for f in SIMD_FLAGS if f in flags) or "unknown",
        "mhz": cpuinfo_field("cpu MHz"),
    }
