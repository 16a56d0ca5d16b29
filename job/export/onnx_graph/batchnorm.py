"""`fold_pooled_batchnorm`: fast_net normalises after its max-pools (conv, pool, BatchNorm, activation). Inference
BatchNorm is a per-channel x * s + b, and with s > 0 (fast_net's BatchNorm has no learned scale: s = 1 /
sqrt(var + eps)) it commutes with the max-pool, so it folds into the convolution before the pool: two
elementwise passes (and, in the INT8 file, a dequantize/quantize pair) fewer per block, with the same function.
"""

import numpy as np

from job.export.onnx_graph.graph import Graph, drop_unused_initializers, per_channel, replace_nodes


def fold_pooled_batchnorm(model) -> int:
    """Conv -> MaxPool -> Mul(s) [-> Add(b)] with per-channel constants s > 0 becomes Conv(W s, B s + b) -> MaxPool,
    in place (new weight initializers; the old ones go when nothing else uses them). Returns how many."""
    from onnx import helper, numpy_helper

    g = Graph(model.graph)
    replacements, new_initializers = [], {}
    for conv in model.graph.node:
        if conv.op_type != "Conv" or len(conv.input) < 2 or conv.input[1] not in g.initializers:
            continue
        pool = g.only_consumer(conv.output[0])
        if pool is None or pool.op_type != "MaxPool" or len(pool.output) != 1:
            continue
        mul = g.only_consumer(pool.output[0])
        if mul is None or mul.op_type != "Mul":
            continue
        weight = numpy_helper.to_array(g.initializers[conv.input[1]])
        channels = weight.shape[0]
        scale = per_channel(g.initializers, mul.input[1] if mul.input[0] == pool.output[0] else mul.input[0], channels)
        if scale is None or not (scale > 0).all() or weight.dtype != np.float32:
            continue
        add = g.only_consumer(mul.output[0])
        shift = None
        if add is not None and add.op_type == "Add":
            other = add.input[1] if add.input[0] == mul.output[0] else add.input[0]
            shift = per_channel(g.initializers, other, channels)
        bias = np.zeros(channels, np.float32)
        if len(conv.input) > 2 and conv.input[2]:
            if conv.input[2] not in g.initializers:
                continue
            bias = numpy_helper.to_array(g.initializers[conv.input[2]]).astype(np.float32)
        folded_w = (weight * scale.reshape(-1, *[1] * (weight.ndim - 1))).astype(np.float32)
        folded_b = (bias * scale + (shift if shift is not None else 0)).astype(np.float32)
        last = add if shift is not None else mul
        i = len(replacements)
        w_name, b_name = f"bn_folded_{i}/W", f"bn_folded_{i}/B"
        new_initializers[w_name] = numpy_helper.from_array(folded_w, w_name)
        new_initializers[b_name] = numpy_helper.from_array(folded_b, b_name)
        new_conv = helper.make_node("Conv", [conv.input[0], w_name, b_name], [conv.output[0]], conv.name)
        new_conv.attribute.extend(conv.attribute)
        new_pool = helper.make_node("MaxPool", list(pool.input), [last.output[0]], pool.name)
        new_pool.attribute.extend(pool.attribute)
        replacements.append(([conv, pool, mul, *([add] if shift is not None else [])], [new_conv, new_pool]))
    # the two TTA passes share weights: fold them into shared initializers again
    by_bytes: dict[bytes, str] = {}
    renamed = {}
    for name, tensor in new_initializers.items():
        key = bytes(tensor.raw_data) + str(list(tensor.dims)).encode()
        renamed[name] = by_bytes.setdefault(key, name)
    model.graph.initializer.extend(t for n, t in new_initializers.items() if renamed[n] == n)
    for _, new in replacements:
        new[0].input[1], new[0].input[2] = renamed[new[0].input[1]], renamed[new[0].input[2]]
    replace_nodes(model.graph, replacements)
    drop_unused_initializers(model.graph)
    return len(replacements)
