"""Results JSON with provenance: the one place every benchmark script writes ``benchmarks/results/*.json`` through.

A results file is written whole, atomically (temporary file + ``os.replace``), by one invocation of its script,
and carries a ``provenance`` entry:

* ``command`` / ``argv``: the command line that produced it (``python benchmarks/x.py ...``) and ``make_target``,
  the registered one-command way to reproduce it (:data:`BENCHMARKS`);
* ``commit``: ``git rev-parse HEAD`` when the run started; ``dirty``: the measured files (below) that differed
  from that commit; ``code``: the git blob hash of every measured file *as run* (the working tree), so a figure
  measured on uncommitted code can be matched to the commit that later records exactly that code. A module entry
  ``path::A,b`` measures only the top-level classes/functions ``A`` and ``b`` of a file (hash of their source),
  for busy files of which a benchmark uses a small part;
* ``date`` (start, local ISO time) and ``wall_s`` (start to write);
* ``machine``: ``cores`` (``os.cpu_count()``), ``load_avg_start`` (1/5/15-minute load average at start, from
  ``os.getloadavg()``: a busy shared machine slows every timing), platform, python and library versions;
* ``quick``: whether this was a smoke run. A smoke run never writes the registered results file (its figures are
  not comparable): :meth:`Run.write` sends it to the system temporary directory instead, unless ``--out`` names
  another file explicitly.

:data:`BENCHMARKS` lists, per results file, the command that produces it and the modules whose code it measures
(the script itself among them). ``tests/benchmarks/test_benchmark_results.py`` checks that every JSON under
``benchmarks/results/`` is registered, carries the provenance fields, holds none of the keys people used to add by
hand (``previous_*``, ``before``, ``note``, ``by_target``), and is not stale: its measured modules must be the code
that produced it (same blob hashes as the working tree), or the last commit touching them must be an ancestor of
the JSON's commit with nothing dirty at run time. :data:`STALE_ALLOWED` names the few files that may be stale, each
with the reason.
"""

from __future__ import annotations

import ast
import datetime as _dt
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FORBIDDEN_KEYS = ("before", "note", "by_target")
"""Keys that were added to results files by hand (besides any ``previous_*``); no script writes them."""


@dataclass(frozen=True)
class Benchmark:
    """How one results file is produced and which code it measures (paths relative to the repository root)."""

    command: str
    modules: tuple[str, ...]
    make_target: str = ""


def _b(script: str, args: str, *modules: str, target: str) -> Benchmark:
    cmd = f"python benchmarks/{script}" + (f" {args}" if args else "")
    return Benchmark(cmd, (f"benchmarks/{script}", *modules), f"make {target}")


_NB201 = ("predictors/nb201_dataset.py", "predictors/gnn_features.py")
_PSC = ("predictors/psc.py", *_NB201)
_AUTOGO = ("graphopt/search/autogo.py", "graphopt/search/evolution.py", "passes/autogo", "graphopt/eval/train.py")
_EXPORT = ("graphopt/export.py", "graphopt/npu", "graphopt/backends/onnx.py", "graphopt/frontends/onnx.py",
           "passes")
_PROXIES = ("predictors/proxies",)
_REWRITE_PASSES = tuple(sorted(f"passes/{p.name}" for p in (ROOT / "passes").iterdir()
                               if p.name not in ("autogo", "__pycache__") and (p.suffix == ".py" or p.is_dir())))
"""The rewrite passes export and score run: ``passes/`` without ``passes/autogo`` (AutoGO's mutations, which only
``optimize`` uses)."""

BENCHMARKS: dict[str, Benchmark] = {
    "autogo_nb201.json": _b("autogo_nb201.py", "", "passes/autogo/nb201_space.py",
                            "graphopt/search/evolution.py::Candidate,pareto_front,select_parents", *_PSC,
                            target="bench-autogo-nb201"),
    "psc_nb201.json": _b("psc_nb201.py", "", *_PSC, target="bench-psc-nb201"),
    "export.json": _b("export.py", "", *_EXPORT, target="bench-export"),
    "export_int8.json": _b("export.py", "--int8", *_EXPORT,
                           "graphopt/eval/train.py", target="bench-export-int8"),
    "eval.json": _b("eval.py", "", "graphopt/eval/executors.py", "graphopt/eval/data.py",
                    "graphopt/backends/torch.py", "graphopt/frontends/torch.py", target="bench-eval"),
    "eval_executor_overhead.json": _b("eval_executor_overhead.py", "", "graphopt/eval/executors.py",
                                      target="bench-eval-executor-overhead"),
    "reliability.json": _b("reliability.py", "", "graphopt/eval/store.py", "graphopt/search/evolution.py",
                           "graphopt/frontends/onnx.py", "graphopt/ir/serialize.py", "graphopt/modelio.py",
                           "graphopt/ir/limits.py", "tests/fuzz/test_fuzz_onnx.py",
                           "tests/commands/test_reliability.py", target="bench-reliability"),
    "npu_coverage.json": _b("npu_coverage.py", "", *_EXPORT, target="bench-npu-coverage"),
    "roundtrip.json": _b("roundtrip.py", "", "graphopt/frontends/torch.py", "graphopt/frontends/torch_lowering",
                         "graphopt/backends", target="bench-roundtrip"),
    "supernet.json": _b("supernet.py", "", "graphopt/search/xnas.py", "graphopt/search/darts.py",
                        "graphopt/search/s3.py", "graphopt/search/dps.py", "graphopt/search/supernet_train.py",
                        "graphopt/supernet.py", target="bench-supernet"),
    "autogo_mining.json": _b("autogo_mining.py", "", "passes/autogo", target="bench-autogo-mining"),
    "autogo_mutation_zoo.json": _b("autogo_mutation_zoo.py", "", "passes/autogo", target="bench-autogo-mutation-zoo"),
    "synflow_nb201.json": _b("synflow_nb201.py", "", *_PROXIES, target="bench-synflow-nb201"),
    "estimators_nb201.json": _b("estimators_nb201.py", "--n-archs 1000 --proxy-jobs 2 --reinit-check 200 "
                                "--ponas-runs 10 --tse 100 --tfmas 32", *_PROXIES, "predictors/ponas",
                                "predictors/tse.py", "predictors/tfmas.py", target="bench-estimators-nb201"),
    "tfmas_design.json": _b("tfmas_design.py", "", "predictors/tfmas.py", *_PROXIES, target="bench-tfmas-design"),
    "ponas_mutants.json": _b("ponas_mutants.py", "", "predictors/ponas", *_PROXIES, *_AUTOGO,
                             target="bench-ponas-mutants"),
    "autogo_cifar10.json": _b("autogo_cifar10.py", "--models resnet20 --budget 900 --iterations 20 --train-size "
                              "10000 --epochs 10 --seeds 6 --final-k 2 --inherit seed --score-steps 40 "
                              "--proxy-check", *_AUTOGO, target="bench-autogo-cifar10"),
    "autogo_cifar10_window1.json": _b("autogo_cifar10.py", "--models resnet20 --budget 900 --iterations 20 "
                                      "--train-size 10000 --epochs 10 --seeds 3 --final-k 1 --inherit seed "
                                      "--score-steps 40 --cost-window 0,1.0 "
                                      "--out benchmarks/results/autogo_cifar10_window1.json", *_AUTOGO,
                                      target="bench-autogo-cifar10-window1"),
    "autogo_cifar10_mobilenetv2.json": _b("autogo_cifar10.py", "--models mobilenetv2 --budget 2400 --iterations 20 "
                                          "--train-size 10000 --epochs 10 --seeds 3 --final-k 1 --threads 2 "
                                          "--inherit seed --score-steps 120 "
                                          "--out benchmarks/results/autogo_cifar10_mobilenetv2.json", *_AUTOGO,
                                          target="bench-autogo-cifar10-mobilenetv2"),
    "autogo_cifar10_inherit_trained.json": _b("autogo_cifar10.py", "--models resnet20 --budget 600 --iterations 20 "
                                              "--train-size 10000 --epochs 10 --seeds 2 --final-k 2 --inherit "
                                              "trained --score-steps 40 "
                                              "--out benchmarks/results/autogo_cifar10_inherit_trained.json",
                                              *_AUTOGO, target="bench-autogo-cifar10-inherit-trained"),
    "optimize_trained.json": _b("optimize_trained.py", "--budgets 30m,2h --objectives flops,npu --seeds 0,1,2",
                                *_AUTOGO, "graphopt/eval/distill.py", "passes/reinsert_batch_norm.py",
                                "passes/relax_batch.py", "models/weights/resnet20_cifar10.pt",
                                target="bench-optimize-trained"),
    "latency.json": _b("latency.py", "", "predictors/latency", "graphopt/commands/latency_cmd.py", *_NB201,
                       "graphopt/npu/latency.py", "graphopt/profiles/edgetpu-like.toml", target="bench-latency"),
    "scale_out.json": _b("scale_out.py", "", "graphopt/search/evolution.py", "graphopt/search/autogo.py",
                         "graphopt/eval/executors.py", "graphopt/eval/train.py", "graphopt/eval/distill.py",
                         "passes/autogo", target="bench-scale-out"),
    "vision_zoo.json": _b("vision_zoo.py", "", "graphopt/export.py", "graphopt/npu", *_REWRITE_PASSES,
                          "graphopt/profiles", "graphopt/frontends", "graphopt/backends", "graphopt/ir",
                          "graphopt/pass_manager.py", "graphopt/commands/export_cmd.py",
                          "graphopt/commands/score_cmd.py", "graphopt/cli.py", "graphopt/compare.py",
                          "graphopt/modelio.py", *_PROXIES, target="bench-vision-zoo"),
}
"""Every results file, the command that writes it, and the code it measures."""

STALE_ALLOWED: dict[str, str] = {
    "autogo_cifar10.json": "15-minute search plus 18 ten-epoch CIFAR-10 trainings (~1.5 h on 2 idle cores); "
                           "written before provenance existed; re-run with `make bench-autogo-cifar10`",
    "autogo_cifar10_window1.json": "15-minute search plus 6 ten-epoch trainings (~1 h); written before provenance "
                                   "existed",
    "autogo_cifar10_mobilenetv2.json": "40-minute search plus 6 ten-epoch MobileNetV2 trainings (~2 h); written "
                                       "before provenance existed",
    "autogo_cifar10_inherit_trained.json": "10-minute search plus 6 trainings (~1 h); written before provenance "
                                           "existed and carries a hand-added `note`",
    "estimators_nb201.json": "assembled by several invocations (1,000-arch proxies 24 min on 2 idle cores, 100 TSE "
                             "trainings 27 min, PO-NAS, TF-MAS) with resumable JSONL caches and a hand-added "
                             "`previous_tse_50archs`; a single fresh invocation takes about 2 h",
    "tfmas_design.json": "reads the TF-MAS accuracies of estimators_nb201.json (itself stale) and a JSONL cache of "
                         "its design-set trainings; re-run after estimators_nb201",
    "supernet.json": "figures from --quick smoke runs (never quoted); the full protocol that issue 26 asks for "
                     "(a supernet that learns on CPU, 3 seeds per method, ~1-2 h) has not been run yet",
    "export.json": "re-run this session (25 min under load), then the vision-zoo fixes to export, legalize and "
                   "quantize landed (Col2Im, global pools, shared biases); re-run with `make bench-export`",
    "npu_coverage.json": "re-run this session, then the vision-zoo fixes to export, legalize and quantize landed; "
                         "re-run with `make bench-npu-coverage`",
    "ponas_mutants.json": "44 min on 2 idle cores over the cached ResNet-20 mutants of the autogo_cifar10 run; "
                          "written before provenance existed",
}
"""Results files that may be stale or lack provenance, with the reason: each is too expensive for the session
that introduced the provenance check. Keep this list short; a file leaves it when its benchmark is re-run."""


# ------------------------------------------------------------------------------------------------------- git
def _git(*args: str, input: str | None = None, strip: bool = True) -> str | None:
    try:
        p = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, input=input, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if p.returncode != 0:
        return None
    return p.stdout.strip() if strip else p.stdout


def in_git_checkout() -> bool:
    return _git("rev-parse", "--is-inside-work-tree") == "true"


def _paths(modules: tuple[str, ...] | list[str]) -> list[str]:
    """The paths of module entries (``path`` or ``path::Name,other``)."""
    return list(dict.fromkeys(m.split("::")[0] for m in modules))


def measured_files(modules: tuple[str, ...] | list[str]) -> list[str]:
    """Tracked and untracked (not ignored) files under ``modules``, sorted, relative to the repository root."""
    out = _git("ls-files", "--cached", "--others", "--exclude-standard", "--", *_paths(modules))
    if out is None:
        return []
    return sorted({p for p in out.splitlines() if p and (ROOT / p).is_file()})


def symbol_hash(source: str, names: list[str]) -> str:
    """Hash of the source of the top-level functions/classes ``names`` of a Python file (``sym:<sha1>``): a module
    entry ``path::a,b`` measures only these, so edits elsewhere in a busy file do not make a figure stale."""
    tree = ast.parse(source)
    segs = {n.name: ast.get_source_segment(source, n) or "" for n in tree.body
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    h = hashlib.sha1()
    for name in names:
        h.update(f"{name}\0{segs.get(name, '<missing>')}\0".encode())
    return "sym:" + h.hexdigest()


def code_hashes(modules: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``{path: git blob hash}`` of the measured files as they are now in the working tree, plus
    ``{"path::names": symbol hash}`` for symbol entries (their file's blob is listed too)."""
    files = measured_files(modules)
    out: dict[str, str] = {}
    if files:
        blobs = _git("hash-object", "--stdin-paths", input="\n".join(files) + "\n")
        if blobs is not None:
            out = dict(zip(files, blobs.splitlines(), strict=True))
    for m in modules:
        if "::" in m:
            path, names = m.split("::")
            if (ROOT / path).is_file():
                out[m] = symbol_hash((ROOT / path).read_text(), names.split(","))
    return out


def compared_keys(modules: tuple[str, ...] | list[str], code: dict[str, str]) -> list[str]:
    """The entries of a ``code`` record that decide freshness: whole files of plain entries, symbol entries."""
    plain = [m for m in modules if "::" not in m]
    syms = [m for m in modules if "::" in m]
    keep = {k for k in code if "::" not in k and any(k == m or k.startswith(m.rstrip("/") + "/") for m in plain)}
    return sorted(keep | set(syms))


def stale_entries(modules: tuple[str, ...] | list[str], recorded: dict[str, str]) -> list[str]:
    """Measured entries whose code differs between a results file's record and the working tree. A symbol entry
    missing from an older record is derived from the recorded blob of its file (when git still has it)."""
    now = code_hashes(modules)
    out = []
    for k in sorted(set(compared_keys(modules, now)) | set(compared_keys(modules, recorded))):
        rec = recorded.get(k)
        if rec is None and "::" in k:
            path, names = k.split("::")
            text = _git("cat-file", "-p", recorded[path], strip=False) if recorded.get(path) else None
            rec = symbol_hash(text, names.split(",")) if text is not None else None
        if rec != now.get(k):
            out.append(k)
    return out


def dirty_files(modules: tuple[str, ...] | list[str]) -> list[str]:
    """Measured files that differ from HEAD (modified, added or untracked); a symbol entry counts only when its
    symbols differ from HEAD's."""
    files = [m for m in modules if "::" not in m]
    out = _git("status", "--porcelain", "--untracked-files=all", "--", *files, strip=False) if files else ""
    dirty = sorted(line[3:].split(" -> ")[-1] for line in (out or "").splitlines() if line.strip())
    for m in modules:
        if "::" in m:
            path, names = m.split("::")
            head = _git("show", f"HEAD:{path}", strip=False)
            now = (ROOT / path).read_text() if (ROOT / path).is_file() else None
            if head is None or now is None or symbol_hash(head, names.split(",")) != symbol_hash(now, names.split(",")):
                dirty.append(m)
    return dirty


# -------------------------------------------------------------------------------------------------------- run
def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("torch", "numpy", "onnx", "onnxruntime"):
        m = sys.modules.get(mod)
        if m is not None and hasattr(m, "__version__"):
            out[mod] = str(m.__version__)
    return out


def _command(argv: list[str]) -> str:
    script = Path(argv[0]) if argv else Path("?")
    try:
        script_s = str(script.resolve().relative_to(ROOT))
    except ValueError:
        script_s = str(script)
    return shlex.join(["python", script_s, *argv[1:]])


@dataclass
class Run:
    """One invocation of a benchmark: start it first thing in ``main``, :meth:`write` the whole document last."""

    name: str
    argv: list[str]
    t0: float
    started: str
    load_avg_start: list[float]
    commit: str | None
    dirty: list[str]
    code: dict[str, str]
    quick: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, name: str, argv: list[str] | None = None, quick: bool = False) -> Run:
        """``name``: the results file's name (``autogo_nb201.json``); must be registered in :data:`BENCHMARKS`."""
        if name not in BENCHMARKS:
            raise KeyError(f"{name} is not registered in benchmarks/_results.py BENCHMARKS")
        mods = BENCHMARKS[name].modules
        return cls(name=name, argv=list(sys.argv if argv is None else argv), t0=time.perf_counter(),
                   started=_dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                   load_avg_start=[round(x, 2) for x in os.getloadavg()], commit=_git("rev-parse", "HEAD"),
                   dirty=dirty_files(mods), code=code_hashes(mods), quick=quick)

    def provenance(self) -> dict[str, Any]:
        b = BENCHMARKS[self.name]
        return {
            "benchmark": self.name, "command": _command(self.argv), "argv": self.argv[1:],
            "make_target": b.make_target, "registered_command": b.command, "quick": self.quick,
            "commit": self.commit, "dirty": self.dirty, "code": self.code, "date": self.started,
            "wall_s": round(time.perf_counter() - self.t0, 1),
            "machine": {"cores": os.cpu_count(), "load_avg_start": self.load_avg_start,
                        "load_avg_end": [round(x, 2) for x in os.getloadavg()], "platform": platform.platform(),
                        "machine": platform.machine(), **_versions()},
            **self.extra,
        }

    def default_out(self) -> Path:
        return RESULTS / self.name

    def write(self, doc: dict[str, Any], out: Path | str | None = None, *, dumps=None) -> Path:
        """Write ``doc`` plus ``provenance``, whole and atomically; returns the path written.

        A smoke run (``quick``) aimed at the registered results file goes to the system temporary directory
        instead. ``dumps``: a custom serializer (``dumps(dict) -> str``), default ``json.dumps(indent=1)``.
        """
        path = Path(out) if out is not None else self.default_out()
        if self.quick and path.resolve() == self.default_out().resolve():
            path = Path(tempfile.gettempdir()) / "graphopt-bench-quick" / self.name
            print(f"smoke run: not writing {self.default_out()}", file=sys.stderr)
        if "provenance" in doc:
            raise ValueError("the document already has a 'provenance' key")
        full = {"provenance": self.provenance(), **doc}
        text = (dumps or (lambda d: json.dumps(d, indent=1)))(full)
        json.loads(text)  # whatever the serializer, the file is valid JSON
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text if text.endswith("\n") else text + "\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path
