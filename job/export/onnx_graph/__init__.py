"""Rewrites of the exported ONNX graph that keep its function and let ONNX Runtime run it faster.

    gelu.py       the sigmoid-form GELU tf2onnx writes -> the tanh form ONNX Runtime fuses (tanh_form), and that
                  form -> one com.microsoft FastGelu node for the INT8 file's quantizer (fast_gelu)
    batchnorm.py  BatchNorm after a max-pool folded into the convolution before it (fold_pooled_batchnorm)
    graph.py      what the rewrites share: the graph's index, constants, node replacement

`optimize` applies the two rewrites model.onnx gets (tanh_form, fold_pooled_batchnorm).
"""

from job.export.onnx_graph.batchnorm import fold_pooled_batchnorm
from job.export.onnx_graph.gelu import MS_DOMAIN, SQRT_2_OVER_PI, fast_gelu, tanh_form

__all__ = ["MS_DOMAIN", "SQRT_2_OVER_PI", "fast_gelu", "fold_pooled_batchnorm", "optimize", "tanh_form"]


def optimize(model) -> dict[str, int]:
    """The rewrites model.onnx gets, in place; how many of each were made. The BatchNorm fold only in graphs with
    GELU: in a ReLU model's INT8 file it was slower (748 vs 987 images per CPU-second, batch 256), as measured in
    docs/performance.md; ReLU models are exported as before."""
    gelus = tanh_form(model)
    return {"gelu_tanh_form": gelus, "pooled_batchnorm_folded": fold_pooled_batchnorm(model) if gelus else 0}
