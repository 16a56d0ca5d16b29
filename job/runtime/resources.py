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


def gpu_compute_capabilities() -> list[tuple[int, int]]:
    """The compute capabilities of the NVIDIA GPUs TensorFlow would train on: none with the tensorflow-cpu wheel
    (the CPU image) or with CUDA_VISIBLE_DEVICES empty or -1; else what `nvidia-smi` reports (the NVIDIA container
    toolkit mounts it with the driver). Without TensorFlow: config resolution runs before it loads."""
    import importlib.metadata
    import re
    import shutil
    import subprocess

    try:
        importlib.metadata.version("tensorflow-cpu")
        return []
    except importlib.metadata.PackageNotFoundError:
        pass
    if os.environ.get("CUDA_VISIBLE_DEVICES", "0").strip() in ("", "-1"):
        return []
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        proc = subprocess.run(
            [exe, "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return []
    caps = [re.fullmatch(r"\s*(\d{1,2})\.(\d{1,2})\s*", line) for line in proc.stdout.splitlines()[:64]]
    return [(int(m[1]), int(m[2])) for m in caps if m] if proc.returncode == 0 else []


def auto_precision(flags: set[str] | None = None, gpus: list[tuple[int, int]] | None = None) -> tuple[str, str]:
    """(precision, why) for `--precision auto`: on GPUs, mixed_bfloat16 where every one has bf16 tensor cores
    (compute capability 8.0 or newer: A100, A10G, L4, H100), else float32 (float16 would need loss scaling);
    on the CPU, mixed_bfloat16 where it has bf16 units (AMX or AVX512_BF16). Given `flags` alone, only the CPU."""
    gpus = (gpu_compute_capabilities() if flags is None else []) if gpus is None else gpus
    if gpus:
        low = min(gpus)
        if low >= (8, 0):
            return "mixed_bfloat16", f"GPU compute capability {low[0]}.{low[1]}: bf16 tensor cores"
        return "float32", f"GPU compute capability {low[0]}.{low[1]} has no bf16 tensor cores"
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
