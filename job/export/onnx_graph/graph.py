"""What the ONNX graph rewrites share: an index of a graph (who makes and who uses each tensor), constants read
from and added to its initializers, and nodes replaced in one pass that keeps the graph topologically sorted."""

import numpy as np


def scalar(initializers: dict, name: str) -> float | None:
    from onnx import numpy_helper

    tensor = initializers.get(name)
    if tensor is None:
        return None
    value = numpy_helper.to_array(tensor)
    return float(value.reshape(-1)[0]) if value.size == 1 and value.dtype == np.float32 else None


class Graph:
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


def constant(graph, name: str, value: float) -> str:
    from onnx import numpy_helper

    if name not in {t.name for t in graph.initializer}:
        graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), name))
    return name


def replace_nodes(graph, replacements: list[tuple[list, list]]) -> None:
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


def drop_unused_initializers(graph) -> None:
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def per_channel(initializers: dict, name: str, channels: int) -> np.ndarray | None:
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
