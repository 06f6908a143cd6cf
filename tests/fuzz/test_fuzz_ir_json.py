"""Fuzz the IR JSON loader: every mutated document loads (and verifies) or raises a graphopt error."""

import copy
import json

from _helpers import conv_bn_relu_graph
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphopt.errors import USER_ERRORS
from graphopt.ir import save, verify
from graphopt.ir.serialize import load

CASES = {"n": 0}
JUNK = st.one_of(st.none(), st.integers(-2**70, 2**70), st.floats(allow_nan=True), st.text(max_size=8),
                 st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                          max_size=2))


def _paths(doc, prefix=()):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


def _set(doc, path, value, delete):
    cur = doc
    for p in path[:-1]:
        cur = cur[p]
    if delete:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value


def test_fuzz_ir_json(tmp_path_factory):
    base_dir = tmp_path_factory.mktemp("fuzz")
    p = save(conv_bn_relu_graph(), base_dir / "m.json")
    base = json.loads(p.read_text())
    paths = list(_paths(base))

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(st.lists(st.tuples(st.sampled_from(paths), JUNK, st.booleans()), min_size=1, max_size=3))
    def run(edits):
        doc = copy.deepcopy(base)
        for path, value, delete in edits:
            try:
                _set(doc, path, value, delete)
            except (KeyError, IndexError, TypeError):
                pass
        p.write_text(json.dumps(doc))
        CASES["n"] += 1
        try:
            g = load(p)
            verify(g)
        except USER_ERRORS:
            pass

    run()
    print(f"IR JSON fuzz cases run: {CASES['n']}")
    assert CASES["n"] >= 300
