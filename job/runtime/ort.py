"""ONNX Runtime sessions as the job and the predictor both open them: CPU provider, threads = CPUs available."""

from pathlib import Path

from job.runtime.resources import available_cpus


def ort_session(path: Path, threads: int = 0, spin: bool = True):
    """`spin=False` for a server: idle intra-op threads sleep instead of spinning, leaving the cores to the
    HTTP side between batches (spinning is faster only when nothing else needs the CPU)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or available_cpus()
    options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
