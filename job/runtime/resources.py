"""What this process may really use: CPUs (affinity mask and cgroup CPU quota, what a container gets) and
the CPU's instruction set (whether bfloat16 runs natively). No TensorFlow here: config resolution and the
ONNX-only predictor use it."""

import math
import os
from pathlib import Path


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPU quota in cores from cgroup v2 (cpu.max) or v1 (cfs_quota/period); None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs in this process's affinity mask, capped by the cgroup CPU quota rounded up."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    limit = cgroup_cpu_limit(cgroup_root)
    if limit is not None:
        count = min(count, max(1, math.ceil(limit)))
    return max(1, count)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo is missing: not Linux)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


# Measured with fast_net (width 64, batch 256, training steps, `python -m bench.throughput`): mixed_bfloat16 against
# float32 was 1.6-2x faster on a Xeon with AMX, 1.46x faster on an AMD EPYC with AVX512_BF16 but no AMX (347 / 354
# against 238 / 240 images/s, alternating, idle machine), and 12x slower (9 vs 113 images/s) on an AVX2-only EPYC,
# where oneDNN has no bf16 kernels and emulates them.
BF16_UNITS = {"amx_bf16": "AMX bf16 tiles", "avx512_bf16": "AVX512_BF16"}


def auto_precision(flags: set[str] | None = None) -> tuple[str, str]:
    """(precision, why) for `--precision auto`: mixed_bfloat16 where the CPU has bf16 units (AMX or AVX512_BF16)."""
    flags = cpu_flags() if flags is None else flags
    for flag, units in BF16_UNITS.items():
        if flag in flags:
            return "mixed_bfloat16", f"this CPU has {units}"
    return "float32", "no bf16 units (AMX, AVX512_BF16) on this CPU: bfloat16 would be emulated, about 12x slower"


# The CPU features under which ONNX Runtime's u8 x s8 multiply accumulates in 32 bits (no int16 saturation): what
# a full-range INT8 model (model.int8-vnni.onnx) needs. '|' separates alternatives, as cpu_has() reads them.
VNNI = "avx512_vnni|avx_vnni"


def cpu_has(features: str, flags: set[str] | None = None) -> bool:
    """`features`: alternatives separated by '|' (e.g. VNNI), as /proc/cpuinfo names them."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in features.split("|"))


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
