"""Rewrites of the exported ONNX graph that keep its function and let ONNX Runtime run it faster.

GELU (tanh form), in the forms ONNX Runtime runs fast:

fast_net builds GELU from stock Keras layers as x * sigmoid(c (x + 0.044715 x^3)), c = 2 sqrt(2/pi), so that
model.keras loads with plain Keras. tf2onnx turns that into seven elementwise nodes that ONNX Runtime fuses into
nothing: float inference was about 20% slower than with ReLU, and static INT8 quantization put a MinMax range
on every one of them (the Pow/Mul/Add/Sigmoid ranges lost 14-18 points of accuracy).

`tanh_form` rewrites each such subgraph, in model.onnx, into the same function written as
0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) with opset-17 standard ops (Pow, Mul, Add, Tanh) in exactly
the arrangement ONNX Runtime's FastGeluFusion recognises: every ONNX Runtime (Python, Node.js, web) loads it
unchanged, and those that run graph optimisations (the default) execute it as one fused FastGelu kernel.
`fast_gelu` replaces that arrangement by the com.microsoft FastGelu node itself: for model.int8.onnx, whose
quantizer must see one activation node to put one quantize/dequantize pair around it (and ranges on nothing
inside it); that file is for ONNX Runtime only anyway.

`fold_pooled_batchnorm`: fast_net normalises after its max-pools (conv, pool, BatchNorm, activation). Inference
BatchNorm is a per-channel x * s + b, and with s > 0 (fast_net's BatchNorm has no learned scale: s = 1 /
sqrt(var + eps)) it commutes with the max-pool, so it folds into the convolution before the pool: two
elementwise passes (and, in the INT8 file, a dequantize/quantize pair) fewer per block, with the same function.

`optimize` applies the two rewrites model.onnx gets (tanh_form, fold_pooled_batchnorm).
"""

import math

import numpy as np

SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_CUBIC = 0.044715
MS_DOMAIN = "com.microsoft"


def _scalar(initializers: dict, name: str) -> float | None:
    from onnx import numpy_helper

    tensor = initializers.get(name)
    if tensor is None:
        return None
    value = numpy_helper.to_array(tensor)
    return float(value.reshape(-1)[0]) if value.size == 1 and value.dtype == np.float32 else None


class _Graph:
    def __init__(self, graph):
        self.graph = graph
        self.initializers = {t.name: t for t in graph.initializer}
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in graph.output}

    def only_consumer(self, tensor: str):
        users = self.consumers.get(tensor, [])
        return users[0] if len(users) == 1 and tensor not in self.outputs else None


def _evaluate(nodes: list, x_name: str, x: np.ndarray, g: _Graph) -> dict[str, np.ndarray]:
    """Evaluate a subgraph of elementwise Mul/Add nodes on the float64 vector `x` (nodes in any order)."""
    values = {x_name: x}
    pending = list(nodes)
    while pending:
        for node in pending:
            args = []
            for name in node.input:
                if name in values:
                    args.append(values[name])
                elif (c := _scalar(g.initializers, name)) is not None:
                    args.append(c)
                else:
                    break
            else:
                values[node.output[0]] = args[0] * args[1] if node.op_type == "Mul" else args[0] + args[1]
                pending.remove(node)
                break
        else:
            raise ValueError("not evaluable")
    return values


def _sigmoid_gelus(g: _Graph) -> list[tuple[str, list, str]]:
    """(x, nodes, y) for every y = x * sigmoid(p(x)) whose p is built from x and scalar constants by Mul/Add and
    equals 2 sqrt(2/pi) (x + 0.044715 x^3): checked by evaluating it, not by the shape tf2onnx gives it."""
    found = []
    for sigmoid in g.graph.node:
        if sigmoid.op_type != "Sigmoid":
            continue
        mul = g.only_consumer(sigmoid.output[0])
        if mul is None or mul.op_type != "Mul" or len(mul.input) != 2:
            continue
        x = mul.input[1] if mul.input[0] == sigmoid.output[0] else mul.input[0]
        if x in g.initializers:
            continue
        inner, stack, ok = [], [sigmoid.input[0]], True
        while stack and ok:
            name = stack.pop()
            if name == x or _scalar(g.initializers, name) is not None:
                continue
            node = g.producer.get(name)
            ok = node is not None and node.op_type in ("Mul", "Add") and len(node.input) == 2 and len(inner) < 8
            if ok and node not in inner:
                inner.append(node)
                stack.extend(node.input)
        if not ok or not inner:
            continue
        # every intermediate result is used only inside the subgraph
        members = {id(n) for n in [*inner, sigmoid]}
        if any(
            n.output[0] in g.outputs or any(id(u) not in members for u in g.consumers.get(n.output[0], []))
            for n in inner
        ):
            continue
        t = np.linspace(-6, 6, 97)
        try:
            p = _evaluate(inner, x, t, g)[sigmoid.input[0]]
        except ValueError:
            continue
        if np.allclose(p, 2 * SQRT_2_OVER_PI * (t + _CUBIC * t**3), rtol=1e-5, atol=1e-5):
            found.append((x, [*inner, sigmoid, mul], mul.output[0]))
    return found


def _constant(graph, name: str, value: float) -> str:
    from onnx import numpy_helper

    if name not in {t.name for t in graph.initializer}:
        graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), name))
    return name


def _replace(graph, replacements: list[tuple[list, list]]) -> None:
    """For each (old, new): put the nodes `new` where the last of `old` (the one that makes the result) was, so
    the graph stays topologically sorted, and drop `old`. One pass: protobuf copies the nodes it keeps."""
    first = {id(old[-1]): new for old, new in replacements}
    dropped = {id(n) for old, _ in replacements for n in old}
    kept = []
    for node in graph.node:
        if id(node) in first:
            kept.extend(first[id(node)])
        elif id(node) not in dropped:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)


def _drop_unused_initializers(graph) -> None:
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _per_channel(initializers: dict, name: str, channels: int) -> np.ndarray | None:
    """A constant of shape [C], [C,1,1] or [1,C,1,1] (or a scalar) as a float32 vector of C values."""
    from onnx import numpy_helper

    tensor = initializers.get(name)
    if tensor is None:
        return None
    value = numpy_helper.to_array(tensor)
    if value.dtype != np.float32:
        return None
    if value.size == 1:
        return np.full(channels, value.reshape(-1)[0], np.float32)
    squeezed = [d for d in value.shape if d != 1]
    ok = squeezed == [channels] and (value.ndim <= 1 or (value.ndim >= 3 and value.shape[-1] == value.shape[-2] == 1))
    return value.reshape(-1) if ok else None


def fold_pooled_batchnorm(model) -> int:
    """Conv -> MaxPool -> Mul(s) [-> Add(b)] with per-channel constants s > 0 becomes Conv(W s, B s + b) -> MaxPool,
    in place (new weight initializers; the old ones go when nothing else uses them). Returns how many."""
    from onnx import helper, numpy_helper

    g = _Graph(model.graph)
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
        scale = _per_channel(g.initializers, mul.input[1] if mul.input[0] == pool.output[0] else mul.input[0], channels)
        if scale is None or not (scale > 0).all() or weight.dtype != np.float32:
            continue
        add = g.only_consumer(mul.output[0])
        shift = None
        if add is not None and add.op_type == "Add":
            other = add.input[1] if add.input[0] == mul.output[0] else add.input[0]
            shift = _per_channel(g.initializers, other, channels)
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
    _replace(model.graph, replacements)
    _drop_unused_initializers(model.graph)
    return len(replacements)


def optimize(model) -> dict[str, int]:
    """The rewrites model.onnx gets, in place; how many of each were made. The BatchNorm fold only in graphs with
    GELU: in a ReLU model's INT8 file it was slower (748 vs 987 images per CPU-second, batch 256), as measured in
    docs/performance.md; ReLU models are exported as before."""
    gelus = tanh_form(model)
    return {"gelu_tanh_form": gelus, "pooled_batchnorm_folded": fold_pooled_batchnorm(model) if gelus else 0}


def tanh_form(model) -> int:
    """Rewrite every sigmoid-form GELU of `model` (a ModelProto, in place) into the tanh form that ONNX Runtime's
    FastGeluFusion matches (its second formula). Returns how many were rewritten."""
    from onnx import helper

    g = _Graph(model.graph)
    matches = _sigmoid_gelus(g)
    graph = model.graph
    three = _constant(graph, "gelu/three", 3.0)
    cubic = _constant(graph, "gelu/cubic", _CUBIC)
    scale = _constant(graph, "gelu/sqrt_2_over_pi", SQRT_2_OVER_PI)
    one = _constant(graph, "gelu/one", 1.0)
    half = _constant(graph, "gelu/half", 0.5)
    replacements = []
    for i, (x, old, y) in enumerate(matches):
        p = f"gelu_{i}/"
        new = [
            helper.make_node("Pow", [x, three], [p + "cube"], p + "Pow"),
            helper.make_node("Mul", [p + "cube", cubic], [p + "cubic"], p + "MulCubic"),
            helper.make_node("Add", [x, p + "cubic"], [p + "inner"], p + "AddInner"),
            helper.make_node("Mul", [p + "inner", scale], [p + "scaled"], p + "MulScale"),
            helper.make_node("Tanh", [p + "scaled"], [p + "tanh"], p + "Tanh"),
            helper.make_node("Add", [p + "tanh", one], [p + "one_plus"], p + "AddOne"),
            helper.make_node("Mul", [x, half], [p + "half_x"], p + "MulHalf"),
            helper.make_node("Mul", [p + "half_x", p + "one_plus"], [y], p + "Mul"),
        ]
        replacements.append((old, new))
    _replace(graph, replacements)
    _drop_unused_initializers(graph)
    return len(matches)


def fast_gelu(model) -> int:
    """Replace every tanh-form GELU (as `tanh_form` writes it) by one com.microsoft FastGelu node, in place;
    adds the com.microsoft opset import when there was one. Returns how many were replaced."""
    from onnx import helper

    g = _Graph(model.graph)

    def const(name: str, value: float, rtol: float = 1e-6) -> bool:
        c = _scalar(g.initializers, name)
        return c is not None and abs(c - value) <= rtol * abs(value)

    def other(node, name: str) -> str:
        return node.input[1] if node.input[0] == name else node.input[0]

    matches = []
    for pow_ in g.graph.node:
        if pow_.op_type != "Pow" or not const(pow_.input[1], 3.0):
            continue
        x = pow_.input[0]
        chain, name = [pow_], pow_.output[0]
        for op, value in (("Mul", _CUBIC), ("Add", None), ("Mul", SQRT_2_OVER_PI), ("Tanh", None), ("Add", 1.0)):
            node = g.only_consumer(name)
            if node is None or node.op_type != op:
                break
            if op == "Add" and value is None and other(node, name) != x:
                break
            if value is not None and not const(other(node, name), value):
                break
            chain.append(node)
            name = node.output[0]
        else:
            last = g.only_consumer(name)
            if last is None or last.op_type != "Mul":
                continue
            half = g.producer.get(other(last, name))
            if half is None or half.op_type != "Mul" or x not in half.input or not const(other(half, x), 0.5):
                continue
            if g.only_consumer(half.output[0]) is not last:
                continue
            matches.append((x, [*chain, half, last], last.output[0]))
    _replace(
        model.graph,
        [
            (old, [helper.make_node("FastGelu", [x], [y], f"fast_gelu_{i}", domain=MS_DOMAIN)])
            for i, (x, old, y) in enumerate(matches)
        ],
    )
    if matches and MS_DOMAIN not in {o.domain for o in model.opset_import}:
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    _drop_unused_initializers(model.graph)
    return len(matches)
