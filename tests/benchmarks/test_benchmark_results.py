"""Every results JSON under ``benchmarks/results/`` is reproducible and not stale.

* it is registered in ``benchmarks/_results.py`` (the command that writes it and the modules it measures);
* it carries the provenance ``benchmarks/_results.py`` writes: command line, git commit, date, machine (cores,
  load average at start) and wall time, and is not a smoke (``--quick``) run;
* it holds none of the keys that used to be added by hand (``previous_*``, ``before``, ``note``, ``by_target``);
* its figures measure the current code: the measured modules' blob hashes recorded at run time equal the working
  tree's (so a JSON produced by code that was committed afterwards, unchanged, stays fresh), or else the last
  commit touching those modules is an ancestor of the JSON's commit and none of them was dirty at run time.

Files in ``STALE_ALLOWED`` are reported as skipped with their reason.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def _load_registry():
    spec = importlib.util.spec_from_file_location("bench_results_registry", ROOT / "benchmarks" / "_results.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


R = _load_registry()
FILES = sorted(p.name for p in RESULTS.glob("*.json") if not p.name.endswith(".partial.json"))


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def _forbidden_keys(doc, path: str = "") -> list[str]:
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            here = f"{path}.{k}" if path else str(k)
            if str(k).startswith("previous_") or k in R.FORBIDDEN_KEYS:
                out.append(here)
            out += _forbidden_keys(v, here)
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _forbidden_keys(v, f"{path}[{i}]")
    return out


def test_every_results_file_is_registered():
    assert FILES, "no results JSON found"
    missing = [f for f in FILES if f not in R.BENCHMARKS]
    assert not missing, f"results files not registered in benchmarks/_results.py BENCHMARKS: {missing}"
    assert set(R.STALE_ALLOWED) <= set(R.BENCHMARKS)
    for name, b in R.BENCHMARKS.items():
        assert b.command.startswith("python benchmarks/") and b.make_target.startswith("make bench-"), name
        assert (ROOT / b.command.split()[1]).is_file(), name
        assert b.modules[0] == b.command.split()[1], f"{name}: the script itself is the first measured module"
        for m in b.modules:
            path, _, names = m.partition("::")
            assert (ROOT / path).exists(), f"{name}: measured module {path} does not exist"
            if names:  # symbol entries name top-level definitions that exist
                src = (ROOT / path).read_text()
                assert all(f"def {n}(" in src or f"class {n}" in src for n in names.split(",")), m


def test_every_results_file_has_a_make_target():
    makefile = (ROOT / "Makefile").read_text()
    for name, b in R.BENCHMARKS.items():
        target = b.make_target.removeprefix("make ")
        assert f"\n{target}:" in makefile, f"{name}: Makefile has no target {target}"


@pytest.mark.parametrize("name", FILES)
def test_results_file_has_provenance_and_is_fresh(name: str):
    if name in R.STALE_ALLOWED:
        pytest.skip(f"{name} is allowed to be stale: {R.STALE_ALLOWED[name]}")
    doc = json.loads((RESULTS / name).read_text())
    prov = doc.get("provenance")
    assert isinstance(prov, dict), f"{name} has no provenance: re-run `{R.BENCHMARKS[name].make_target}`"
    for key in ("command", "commit", "date", "wall_s", "machine", "code", "dirty", "quick"):
        assert key in prov, f"{name}: provenance lacks {key!r}"
    assert prov["command"].startswith("python benchmarks/"), prov["command"]
    assert prov["quick"] is False, f"{name} was written by a smoke run"
    assert isinstance(prov["wall_s"], (int, float)) and prov["wall_s"] >= 0
    assert isinstance(prov["machine"].get("cores"), int)
    assert len(prov["machine"].get("load_avg_start", [])) == 3
    bad = _forbidden_keys(doc)
    assert not bad, f"{name} holds keys no script writes (added by hand?): {bad}"

    if not R.in_git_checkout():
        pytest.skip("not a git checkout: freshness cannot be checked")
    modules = R.BENCHMARKS[name].modules
    changed = R.stale_entries(modules, prov["code"]) if prov["code"] else ["(no code record)"]
    if not changed:
        return  # the measured code is exactly what produced the figures
    assert prov["commit"], f"{name}: no commit recorded"
    last = _git("log", "-1", "--format=%H", "--", *R._paths(modules)).stdout.strip()
    assert last, f"{name}: none of its measured modules is committed"
    anc = _git("merge-base", "--is-ancestor", last, prov["commit"])
    assert anc.returncode == 0 and not prov["dirty"] and not R.dirty_files(modules), (
        f"{name} is stale: its measured code changed since it was produced (commit {prov['commit'][:10]}, "
        f"dirty then {prov['dirty']}; last change to the measured modules {last[:10]}; files that differ now: "
        f"{changed[:8]}). Re-run `{R.BENCHMARKS[name].make_target}`.")


def test_symbol_entries_see_only_their_symbols():
    src = "import os\n\n\ndef a(x):\n    return x\n\n\ndef b():\n    return 1\n"
    h = R.symbol_hash(src, ["a"])
    assert h == R.symbol_hash(src.replace("return 1", "return 2"), ["a"])  # b changed: a's hash is not
    assert h != R.symbol_hash(src.replace("return x", "return -x"), ["a"])
    assert R.symbol_hash(src, ["a", "missing"]) != h


def test_provenance_writer(tmp_path, monkeypatch):
    """The writer adds every field, writes atomically, and keeps smoke runs away from the results file."""
    run = R.Run.start("eval.json", argv=["benchmarks/eval.py", "--steps", "2"])
    out = run.write({"x": 1}, tmp_path / "eval.json")
    doc = json.loads(out.read_text())
    prov = doc["provenance"]
    assert doc["x"] == 1 and prov["command"] == "python benchmarks/eval.py --steps 2"
    assert prov["make_target"] == "make bench-eval" and prov["wall_s"] >= 0
    assert prov["machine"]["cores"] >= 1 and len(prov["machine"]["load_avg_start"]) == 3
    if R.in_git_checkout():
        assert len(prov["commit"]) == 40 and "benchmarks/eval.py" in prov["code"]
    assert not list(tmp_path.glob("*.tmp"))
    quick = R.Run.start("eval.json", argv=["benchmarks/eval.py", "--quick"], quick=True)
    monkeypatch.setattr(R, "RESULTS", tmp_path / "results")
    written = quick.write({"x": 2})
    assert written.parent != tmp_path / "results" and not (tmp_path / "results").exists()
    assert json.loads(written.read_text())["provenance"]["quick"] is True
    with pytest.raises(KeyError, match="not registered"):
        R.Run.start("nope.json")
