"""The pass API (graphopt/pass_api.py): declared requirements (static shapes) and user pass modules."""

import textwrap

import pytest
from _helpers import conv_bn_relu_graph

from graphopt.pass_api import PassError, graph_pass, load_pass_module
from graphopt.pass_manager import PassManager


def test_static_shape_requirement_names_dim():
    @graph_pass("test-needs-static", requires=("static_shapes",))
    def needs_static(graph):
        return 0

    with pytest.raises(PassError, match="symbolic dim 'batch'.*--input-shape"):
        PassManager("test-needs-static").run(conv_bn_relu_graph())
    PassManager("specialize-shapes,test-needs-static").run(conv_bn_relu_graph())


def test_load_user_pass_module(tmp_path, monkeypatch):
    (tmp_path / "my_passes.py").write_text(textwrap.dedent('''
        from graphopt.pass_api import graph_pass

        @graph_pass("drop-relu-user", "Replace relu by identity (for testing)")
        def drop_relu(graph):
            n = 0
            for node in graph.nodes_by_op().get("relu", []):
                graph.replace_all_uses(node.output, node.inputs[0])
                graph.erase_node(node)
                n += 1
            return {"relu": n}
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_pass_module("my_passes:drop_relu")
    assert loaded[0].name == "drop-relu-user"
    res = PassManager("drop-relu-user").run(conv_bn_relu_graph())
    assert "relu" not in {n.op for n in res.graph.nodes}
    with pytest.raises(PassError, match="cannot import"):
        load_pass_module("no_such_module_xyz:fn")
