"""ONNX Runtime sessions as the job and the predictor both open them: CPU provider, threads = CPUs available."""

from pathlib import Path

from job.runtime.resources import available_cpus


def ort_session(path: Path, threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or available_cpus()
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
