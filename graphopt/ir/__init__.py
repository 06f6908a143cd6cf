"""The computation-graph IR: types, graph, op registry, inference, costs, verifier, serialization."""

from .cost import Cost, annotate_costs, graph_cost, node_cost
from .graph import Graph, IRError, Node, Use, Value
from .infer import ShapeInferenceError, infer_graph, infer_node
from .registry import REQUIRED, In, OpDef, UnsupportedOpError, all_ops, get_op, has_op, op, op_for_onnx
from .serialize import IRFormatError, load, save, structure_hash
from .types import DType, TensorType
from .verify import VerificationError, verify

__all__ = [
    "Cost", "DType", "Graph", "IRError", "IRFormatError", "In", "Node", "OpDef", "REQUIRED", "ShapeInferenceError",
    "TensorType", "UnsupportedOpError", "Use", "Value", "VerificationError", "all_ops", "annotate_costs",
    "get_op", "graph_cost", "has_op", "infer_graph", "infer_node", "load", "node_cost", "op", "op_for_onnx", "save",
    "structure_hash", "verify",
]
