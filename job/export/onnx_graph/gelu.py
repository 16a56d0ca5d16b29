"""GELU (tanh form), in the forms ONNX Runtime runs fast.

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
"""

import math

import numpy as np

from job.export.onnx_graph.graph import Graph, constant, drop_unused_initializers, replace_nodes, scalar

SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_CUBIC = 0.044715
MS_DOMAIN = "com.microsoft"


def _evaluate(nodes: list, x_name: str, x: np.ndarray, g: Graph) -> dict[str, np.ndarray]:
    """Evaluate a subgraph of elementwise Mul/Add nodes on the float64 vector `x` (nodes in any order)."""
    values = {x_name: x}
    pending = list(nodes)
    while pending:
        for node in pending:
            args = []
            for name in node.input:
                if name in values:
                    args.append(values[name])
                elif (c := scalar(g.initializers, name)) is not None:
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


def _sigmoid_gelus(g: Graph) -> list[tuple[str, list, str]]:
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
            if name == x or scalar(g.initializers, name) is not None:
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


def tanh_form(model) -> int:
    """Rewrite every sigmoid-form GELU of `model` (a ModelProto, in place) into the tanh form that ONNX Runtime's
    FastGeluFusion matches (its second formula). Returns how many were rewritten."""
    from onnx import helper

    g = Graph(model.graph)
    matches = _sigmoid_gelus(g)
    graph = model.graph
    three = constant(graph, "gelu/three", 3.0)
    cubic = constant(graph, "gelu/cubic", _CUBIC)
    scale = constant(graph, "gelu/sqrt_2_over_pi", SQRT_2_OVER_PI)
    one = constant(graph, "gelu/one", 1.0)
    half = constant(graph, "gelu/half", 0.5)
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
    replace_nodes(graph, replacements)
    drop_unused_initializers(graph)
    return len(matches)


def fast_gelu(model) -> int:
    """Replace every tanh-form GELU (as `tanh_form` writes it) by one com.microsoft FastGelu node, in place;
    adds the com.microsoft opset import when there was one. Returns how many were replaced."""
    from onnx import helper

    g = Graph(model.graph)

    def const(name: str, value: float, rtol: float = 1e-6) -> bool:
        c = scalar(g.initializers, name)
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
    replace_nodes(
        model.graph,
        [
            (old, [helper.make_node("FastGelu", [x], [y], f"fast_gelu_{i}", domain=MS_DOMAIN)])
            for i, (x, old, y) in enumerate(matches)
        ],
    )
    if matches and MS_DOMAIN not in {o.domain for o in model.opset_import}:
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    drop_unused_initializers(model.graph)
    return len(matches)
