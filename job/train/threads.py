"""TensorFlow's thread pools, sized to the CPUs this process may really use (job.runtime.resources)."""

from job.runtime.resources import available_cpus


def configure_tensorflow(threads: int = 0, inter_op_threads: int = 0) -> tuple[int, int]:
    """Set TF's thread pools before any op runs. Returns (intra, inter) actually requested."""
    import tensorflow as tf

    intra = threads or available_cpus()
    inter = inter_op_threads or min(2, intra)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:  # TensorFlow already ran an op in this process: its pools are fixed now
        return (
            tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads(),
        )
    return intra, inter
