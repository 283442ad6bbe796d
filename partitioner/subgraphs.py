"""If/Loop/Scan bodies seen from the outer graph (pure: protobuf in, names out).

A node with a subgraph attribute is one node of the outer graph. Its bodies may read
values of the enclosing scope by name without listing them as inputs; for cut
enumeration, splitting and renaming those reads are inputs of the node like any other:
:func:`node_inputs` lists them, :func:`rename_outer_reads` follows a renamed outer value
into the bodies, and :func:`nodes_with_bodies` walks every node, bodies included.
"""
from __future__ import annotations

from typing import Iterator

import onnx

__all__ = ["node_inputs", "nodes_with_bodies", "rename_outer_reads"]


def _bodies(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    return [body for attr in node.attribute
            for body in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs))]


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """The outer-graph values ``node`` reads: its inputs, then (for If/Loop/Scan) the names its
    bodies read from the enclosing scope, in first-use order; empty names dropped."""
    names = [name for name in node.input if name]
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        names += [name for name in _outer_names(node) if name not in names]
    return names


def rename_outer_reads(node: onnx.NodeProto, old: str, new: str) -> None:
    """Make the bodies of ``node`` read ``new`` wherever they read the outer value ``old``
    (names a body defines itself shadow the outer one and are left alone); in place."""
    for body in _bodies(node):
        local = {vi.name for vi in body.input} | {t.name for t in body.initializer}
        if old in local:
            continue
        for inner in body.node:
            inner.input[:] = [new if name == old else name for name in inner.input]
            rename_outer_reads(inner, old, new)
            if old in inner.output:
                break
        else:
            for out in body.output:
                if out.name == old:
                    out.name = new


def _outer_names(node: onnx.NodeProto) -> list[str]:
    found: list[str] = []
    for body in _bodies(node):
        local = {vi.name for vi in body.input} | {t.name for t in body.initializer}
        local |= {t.name for t in body.sparse_initializer}
        for inner in body.node:
            for name in node_inputs(inner):
                if name not in local and name not in found:
                    found.append(name)
            local.update(out for out in inner.output if out)
        found += [o.name for o in body.output if o.name not in local and o.name not in found]
    return found


def nodes_with_bodies(graph: onnx.GraphProto, where: str = "") -> Iterator[tuple[int, onnx.NodeProto, str]]:
    """(index, node, where) for every node, the nodes of If/Loop/Scan bodies included."""
    for index, node in enumerate(graph.node):
        yield index, node, where
        for attr in node.attribute:
            for body in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                yield from nodes_with_bodies(body, f" in the {attr.name!r} body of {node.name or node.op_type!r}{where}")
