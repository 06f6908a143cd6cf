"""Zero-cost proxies on NAS-Bench-201 (CIFAR-10): rank correlation with test accuracy vs published figures.

For ``--n-archs`` architectures sampled uniformly (seeded) from the 15,625 NB201 cells, build each with the
model zoo's NB201 network (C=16, N=5, fresh init, seed = NB201 index), compute every proxy of
``graphopt.predictors.proxies`` on one fixed CIFAR-10 training minibatch of ``--batch`` images (NB201
normalisation) with :func:`~graphopt.predictors.proxies.compute_proxies`: grad_norm, snip, fisher, grasp,
jacob_cov and nwot share one model copy, one train-mode forward and one loss gradient (taken with
``create_graph`` when grasp is asked for, so GraSP's two loss backward passes become one; jacob_cov and grasp add
only their own backward passes: the input Jacobian and the Hessian-gradient product), and
params/flops/zen/synflow re-use that copy (reset from the model's state) instead of deep-copying the network
again; the values are those of one ``proxies.compute`` call per proxy
(bit-identical on the archs checked, and tested to float tolerance in tests/predictors/test_proxies.py), at about
half the CPU time (measured on the same 4 archs, separate vs shared interleaved: 6.93 → 3.56 CPU-s per arch with all 10
proxies, 4.19 → 1.90 without grasp; on a random 10 of the sample 5.6 CPU-s per arch with all 10, of which grasp
2.6, the shared pass 1.0 and zen 0.9; grasp re-using the shared backward then cut two warm archs from 4.0 / 8.1
to 3.7 / 5.9 wall-s). The private copy then runs in channels_last (NHWC) memory format, which oneDNN's CPU
convolutions prefer: 1.86 -> 1.09 s/arch without grasp on 12 archs, one thread; a shared pass that includes
grasp stays NCHW (its double backward is ~1.5x slower in NHWC) and only zen/synflow/params/flops switch, 3.13 ->
2.96 s/arch. Rejected for grasp, measured on 40 archs: a finite-difference Hessian-vector product (one extra
forward/backward instead of the double backward) ranks archs at rho -0.36..0.46 against the exact value for
any step 1e-2..1e-5 (train-mode BatchNorm and ReLU kinks make the gradient far from smooth at float32), and
forward-over-reverse ``torch.func.jvp`` is 2x slower than the double backward. Archs are computed by
``--proxy-jobs`` (default 2) spawned worker processes with one torch
thread each: convolutions are ~77% of the profile, so the work is compute-bound and one process per core is
the parallelism that pays. Each arch's scores
and stage times are appended to ``estimators_nb201_proxies.jsonl`` in the ``--resume DIR`` folder (default: a
fresh temporary folder, so a plain run re-uses nothing) as soon as they are computed; a run restarted with the
same ``--resume DIR`` re-uses the rows with the same batch and seed, so a long run can be killed and resumed.
``--proxy-skip grasp`` leaves
proxies out of this run (grasp alone costs more than the others together: its double backward); with
``--previous-report R`` a skipped proxy's table row is then taken from R's own sample, marked ``*`` and stated
in the JSON (``results.<p>.sample``, ``carried``). Then print:

* Spearman ρ / Kendall τ against the 200-epoch CIFAR-10 test accuracy, beside the published figures of
  /work/shared/data/nas/README.md (Abdelfattah et al. 2021 on all 15,625 archs; secondary compilation for
  params / FLOPs / NWOT / Zen). "vote" = the paper's majority vote of synflow, jacob_cov and snip
  (:func:`majority_vote`: an arch beats another when at least two of the three score it higher; archs are
  ordered by how many they beat);
* the cross-check ρ between our value and NAS-Bench-Suite-Zero's value of the same proxy on the sampled archs
  that appear in ``zccombine_nb201_zc_proxies.csv`` (9,445 nets), and both proxies' ρ with accuracy on that
  overlap;
* with ``--reinit-check N``, the seed-to-seed agreement ρ(ours, ours with another init and minibatch) on N of
  the sampled archs (:func:`run_reinit_check`): the ceiling for the cross-check, since Suite-Zero's scores come
  from an independent init and minibatch too;
* the median time per proxy per architecture: the work only that proxy needs on top of the shared pass
  (printed separately), the median wall and CPU time per arch for all computed proxies, and the total wall time
  on the sample (sum over archs in their workers, across resumed runs) and the elapsed time of this invocation
  (``invocation.wall_s``: the whole-sample wall time when one invocation computed every arch).

Non-finite proxy values rank last (NASLib's −1e8 convention). Results and per-arch scores go to
``benchmarks/results/estimators_nb201.json``.

Optionally (``--ponas-runs K``) the PO-NAS loop is run K times (seeds 0..K-1) on the NB201 pool of the 9,445
nets with NAS-Bench-Suite-Zero metric values, querying the 12-epoch CIFAR-10-valid accuracy with a budget of
20, and the 200-epoch test accuracy of the returned architecture is reported beside RoBoT's 94.36.

``--tse N`` (TSE protocol, :func:`run_tse`): N NB201 architectures sampled uniformly (seed ``--seed``) from
the 15,625 are each trained briefly on CIFAR-10 and ranked by TSE, TSE-E (E = 1), TSE-EMA (γ = 0.999, the
paper's convention) and by the early-stopped validation accuracy after the same number of epochs; Spearman ρ /
Kendall τ against the 200-epoch CIFAR-10 test accuracy are reported for every epoch budget T = 1..epochs.
The full benchmark network (C=16, N=5, 32×32) costs ~29 ms per training image on one CPU core, so the
training is a *reduced proxy setting* (the EcoNAS-style reduction of channels/cells/resolution), documented
here and in the JSON: the NB201 cell network with C=16, N=1 (one cell per stage), CIFAR-10 images
2×2-average-pooled to 16×16, a class-balanced 5,000-image subset of the training split, 1,000 held-out
training images for validation, batch 64, SGD (momentum 0.9, Nesterov, weight decay 5e-4) at a *constant*
learning rate 0.05 (the start of a long schedule: the early-stopped accuracy is that of a run stopped early,
not of a short annealed run), no augmentation, ``--tse-epochs`` epochs (default 4), model init seed = NB201
index, data order seed 0. For reference the ρ of NB201's own 12-epoch CIFAR-10-valid accuracy (full network,
GPU, from ``robot_nb201_testacc_hp12.csv``) on the same archs is printed too. Paper (Ru et al. 2021): TSE beats
early-stopped validation accuracy for budgets ≤ 0.5·T_end; an earlier version reports ρ = 0.95 on NB201 within
50 epochs.

``--tfmas N`` (TF-MAS protocol, :func:`run_tfmas`): N Mamba2 configurations are sampled with
:func:`graphopt.predictors.tfmas.sample_configs` inside the ranges of
:func:`~graphopt.predictors.tfmas.determine_ranges` for a 60k-parameter budget (window [30k, 60k], reduced
grids below so that every config trains in well under a minute), vocabulary 64. Each freshly initialised model
(seed = config index) is scored at initialisation by TF-MAS (default ``rank_collapse`` and the alternative scores
of ``tfmas.SCORES``, LM loss on 32 training sequences), synflow, grad_norm (task loss on the same 32 sequences)
and params, then trained for ``--tfmas-steps`` (default 300) AdamW steps (lr 3e-3, cosine, batch 64) on the
synthetic multi-query associative-recall task of :mod:`graphopt.eval.data` (8 key-value pairs, 8 queries,
length 24, 4,000 training sequences); the target is the token accuracy on 500 validation sequences. Spearman ρ /
Kendall τ of each proxy against it are reported. Paper (TF-MAS, NeurIPS 2025): better ranking correlation than
all earlier training-free proxies (no per-proxy figures are available here).

Usage: ``python benchmarks/estimators_nb201.py --n-archs 1000 --proxy-jobs 2 --reinit-check 200 --ponas-runs 10
--tse 100 --tfmas 32`` writes every section in one invocation (about 2 h on 2 idle cores); ``--quick`` = 12 archs,
batch 16, a smoke test. A section not asked for is absent from the results file (the file is written whole; no
section is merged from an earlier run). TSE trainings are appended to ``estimators_nb201_tse.jsonl`` in the
``--resume`` folder as they finish.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from graphopt.predictors import proxies
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
NAS = ROOT.parent / "shared" / "data" / "nas"
CIFAR = ROOT.parent / "shared" / "data" / "cifar10_jpeg.npz"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Run  # noqa: E402

PROXIES = ["grad_norm", "snip", "grasp", "fisher", "synflow", "jacob_cov", "nwot", "zen", "params", "flops"]
PUBLISHED = {  # Spearman rho (Kendall tau where known) on all 15,625 NB201 archs, CIFAR-10
    "grad_norm": (0.594, None), "snip": (0.596, None), "grasp": (0.514, None), "fisher": (0.360, None),
    "synflow": (0.737, None), "jacob_cov": (0.731, None), "vote": (0.817, None),
    "params": (0.751, 0.576), "flops": (0.733, 0.541), "nwot": (0.743, 0.557), "zen": (0.365, 0.283),
}  # fmt: skip
ZC_COLUMN = {"jacob_cov": "jacov"}
NB201_MEAN = [125.3 / 255, 123.0 / 255, 113.9 / 255]
NB201_STD = [63.0 / 255, 62.1 / 255, 66.7 / 255]


def load_batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random CIFAR-10 training images (seeded), NB201-normalised NCHW float32, and their labels."""
    rng = np.random.default_rng(seed)
    try:
        from graphopt.eval.data import load_cifar10_arrays

        arrays = load_cifar10_arrays(CIFAR)
        idx = rng.choice(len(arrays["y_train"]), n, replace=False)
        imgs, labels = arrays["x_train"][idx], arrays["y_train"][idx]
    except ImportError:  # decode only the needed JPEGs
        from PIL import Image

        z = np.load(CIFAR, allow_pickle=False)
        jpeg, off, lab = z["train_jpeg"], z["train_offsets"], z["train_labels"]
        idx = rng.choice(len(lab), n, replace=False)
        imgs = np.stack(
            [np.asarray(Image.open(io.BytesIO(jpeg[off[i] : off[i + 1]].tobytes())).convert("RGB")) for i in idx]
        )
        labels = lab[idx]
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div(255.0)
    x = (x - torch.tensor(NB201_MEAN).view(1, 3, 1, 1)) / torch.tensor(NB201_STD).view(1, 3, 1, 1)
    return x.contiguous(), torch.from_numpy(np.asarray(labels, dtype=np.int64))


def build_nb201(arch: str, seed: int) -> torch.nn.Module:
    from graphopt import models

    return models.get("nb201", seed=seed, arch_str=arch, C=16, N=5, num_classes=10)


def majority_vote(*scores: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Abdelfattah et al.'s vote of several proxies: arch i beats arch j when a majority of the proxies score i
    above j; an arch's vote is the number of archs it beats (its Copeland count), which orders the archs.
    Non-finite scores rank last (as in :func:`rank_stats`)."""
    s = np.stack([np.where(np.isfinite(x), x, -np.inf) for x in scores])
    k, n = s.shape
    wins = np.zeros(n, dtype=np.int64)
    for lo in range(0, n, chunk):
        blk = s[:, lo:lo + chunk, None]  # [k, c, 1] against [k, 1, n]
        ahead = (blk > s[:, None, :]).sum(axis=0)
        wins[lo:lo + chunk] = (ahead * 2 > k).sum(axis=1)
    return wins.astype(float)


def rank_stats(score: np.ndarray, acc: np.ndarray) -> tuple[float, float]:
    s = np.where(np.isfinite(score), score, -1e8)
    return float(stats.spearmanr(s, acc).statistic), float(stats.kendalltau(s, acc).statistic)


def fmt(v: float | None) -> str:
    return "  -  " if v is None or not math.isfinite(v) else f"{v:5.3f}"


def _proxy_jsonl(args: argparse.Namespace) -> Path:
    return args.proxy_jsonl or args.cache_dir / "estimators_nb201_proxies.jsonl"


def _merge_sec(into: dict, sec: dict) -> None:
    """Stage times of a later row for the same arch: a proxy's own stage is taken, the common stages (build,
    shared pass) keep the first row's value, so the per-stage medians describe one full computation."""
    for k, v in sec.items():
        if k in ("build", "shared_pass"):
            into.setdefault(k, v)
        else:
            into[k] = v


def _load_proxy_rows(path: Path, batch: int, seed: int) -> dict[int, dict]:
    """Per-arch rows of earlier (possibly interrupted) runs with the same batch and seed, merged by NB201 index."""
    merged: dict[int, dict] = {}
    if not path.is_file():
        return merged
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        if row.get("batch") != batch or row.get("seed") != seed:
            continue
        m = merged.setdefault(row["index"], {"arch": row["arch"], "scores": {}, "sec": {}, "wall_s": 0.0, "cpu_s": 0.0})
        m["scores"].update(row["scores"])
        _merge_sec(m["sec"], row["sec"])
        m["wall_s"] += row["wall_s"]
        m["cpu_s"] += row["cpu_s"]
    return merged


def _carried_scores(args: argparse.Namespace, skip: list[str]) -> dict[str, dict]:
    """Scores of skipped proxies from the earlier report (its own arch sample), so they still get a row."""
    if not skip or args.previous_report is None or not args.previous_report.is_file():
        return {}
    prev = json.loads(args.previous_report.read_text()).get("proxies", {})
    if prev.get("batch") != args.batch or prev.get("seed") != args.seed:
        return {}
    carried = dict(prev.get("carried", {}))
    for p in skip:
        vals = prev.get("scores", {}).get(p)
        if p not in carried and vals and any(v is not None for v in vals):
            sec = prev.get("results", {}).get(p, {}).get("sec_per_arch")
            carried[p] = {"archs": prev["archs"], "scores": vals, "sec_per_arch_separate_call": sec,
                          "note": f"earlier run: its own seeded sample of {len(prev['archs'])} archs "
                                  f"(rng seed {prev['seed']}), separate proxies.compute call per proxy"}  # fmt: skip
    return {p: carried[p] for p in skip if p in carried}


_WORKER: dict = {}


#: the re-initialisation check builds arch ``idx`` with init seed ``idx + REINIT_OFFSET`` and scores it on the
#: minibatch of seed ``--seed + 1`` (see :func:`run_reinit_check`)
REINIT_OFFSET = 1_000_003


def _proxy_worker_init(x: torch.Tensor, y: torch.Tensor, seed: int, threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)
    _WORKER.update(x=x, y=y, seed=seed)


def _proxy_row(task: tuple[str, int, list[str], int]) -> dict:
    """One arch's JSONL row: the proxies ``missing`` of NB201 arch ``arch`` (index ``idx``, built with init seed
    ``idx + offset``), stage times."""
    arch, idx, missing, offset = task
    x, y, seed = _WORKER["x"], _WORKER["y"], _WORKER["seed"]
    w, c = time.perf_counter(), time.process_time()
    net = build_nb201(arch, seed=idx + offset)
    sec = {"build": time.perf_counter() - w}
    res, stage = proxies.compute_proxies(net, (x, y), missing, seed=seed, return_times=True)
    sec.update(stage)
    return {"index": idx, "arch": arch, "batch": int(x.shape[0]), "seed": seed,
            "scores": {p: (float(r.score) if math.isfinite(r.score) else None) for p, r in res.items()},
            "sec": sec, "wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c}  # fmt: skip


def run_proxies(args: argparse.Namespace) -> dict:
    rows = list(csv.DictReader(open(NAS / "nb201_test_acc_3datasets_vtao.csv")))
    acc_of = {r["ArchitectureString"]: float(r["CIFAR10TestAccuracy200Epochs"]) for r in rows}
    rng = np.random.default_rng(args.seed)
    pick = np.sort(rng.choice(len(rows), min(args.n_archs, len(rows)), replace=False))
    archs = [rows[i]["ArchitectureString"] for i in pick]
    acc = np.array([float(rows[i]["CIFAR10TestAccuracy200Epochs"]) for i in pick])
    skip = [p for p in (args.proxy_skip.split(",") if args.proxy_skip else []) if p]
    if set(skip) - set(PROXIES):
        raise SystemExit(f"--proxy-skip: unknown proxies {sorted(set(skip) - set(PROXIES))}")
    todo = [p for p in PROXIES if p not in skip]
    x, y = load_batch(args.batch, args.seed)
    jsonl = _proxy_jsonl(args)
    done = _load_proxy_rows(jsonl, args.batch, args.seed)
    print(f"{len(archs)} NB201 archs, CIFAR-10 batch {tuple(x.shape)}, torch threads {torch.get_num_threads()}; "
          f"per-arch rows: {jsonl} ({sum(int(i) in done for i in pick)} of the sample already there)")

    t0 = time.time()
    n_new = 0
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    # computed in a seeded random order, so the archs finished so far are a uniform subsample of the sample
    # (the interim rho printed below, and a run stopped early, are unbiased); the report lists them sorted
    order = np.random.default_rng(args.seed + 1).permutation(len(archs))
    if args.proxy_no_compute:
        order = order[:0]
    work = [(k, archs[j], int(pick[j]), [p for p in todo if p not in done.get(int(pick[j]), {}).get("scores", {})])
            for k, j in enumerate(order)]  # fmt: skip
    work = [w for w in work if w[3]]
    jobs = max(1, min(args.proxy_jobs, len(work)))
    pool = None
    if jobs > 1:  # one single-threaded worker process per core (spawned: no forked OpenMP state)
        ctx = multiprocessing.get_context("spawn")
        pool = ctx.Pool(jobs, initializer=_proxy_worker_init, initargs=(x, y, args.seed, args.threads or 1))
        rows = pool.imap(_proxy_row, [(a, i, m, 0) for _, a, i, m in work])
    else:
        _proxy_worker_init(x, y, args.seed, 0)
        rows = map(_proxy_row, [(a, i, m, 0) for _, a, i, m in work])
    with open(jsonl, "a") as fh:
        for (k, arch, idx, _missing), row in zip(work, rows, strict=True):
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            m = done.setdefault(int(idx), {"arch": arch, "scores": {}, "sec": {}, "wall_s": 0.0, "cpu_s": 0.0})
            m["scores"].update(row["scores"])
            _merge_sec(m["sec"], row["sec"])
            m["wall_s"] += row["wall_s"]
            m["cpu_s"] += row["cpu_s"]
            n_new += 1
            if n_new % 25 == 0:
                el = time.time() - t0
                left = len(work) - n_new
                fin = [i for i in pick if all(p in done.get(int(i), {}).get("scores", {}) for p in todo)]
                a_fin = np.array([acc_of[done[int(i)]["arch"]] for i in fin])
                rho = {p: rank_stats(np.array([np.nan if (v := done[int(i)]["scores"][p]) is None else v
                                               for i in fin], dtype=float), a_fin)[0]
                       for p in ("synflow", "jacob_cov", "snip", "grad_norm") if p in todo}  # fmt: skip
                print(f"  {k + 1}/{len(archs)} archs ({n_new} computed now), {el:.0f} s elapsed, "
                      f"ETA {el / n_new * left:.0f} s; interim rho on {len(fin)}: "
                      + ", ".join(f"{p} {v:.3f}" for p, v in rho.items()), flush=True)
    if pool is not None:
        pool.close()
        pool.join()
    session_wall = time.time() - t0
    n_sample = len(archs)
    if args.proxy_no_compute:  # table of the archs finished so far (a uniform subsample, see `order`)
        keep = [j for j in range(len(archs)) if all(p in done.get(int(pick[j]), {}).get("scores", {}) for p in todo)]
        pick, archs, acc = pick[keep], [archs[j] for j in keep], acc[keep]
        print(f"--proxy-no-compute: table of the {len(archs)} of {n_sample} sampled archs already in {jsonl.name}")

    def score_of(p: str) -> np.ndarray:
        return np.array([np.nan if (v := done[int(i)]["scores"].get(p)) is None else v for i in pick], dtype=float)

    have_all = {p: all(p in done[int(i)]["scores"] for i in pick) for p in PROXIES}
    carried = _carried_scores(args, [p for p in skip if not have_all[p]])
    scores = {p: score_of(p) for p in PROXIES}
    vote = majority_vote(*(scores[p] for p in ("synflow", "jacob_cov", "snip")))

    zc = {r["net_str"]: r for r in csv.DictReader(open(NAS / "zccombine_nb201_zc_proxies.csv"))}
    stage_names = ["build", "shared_pass", *PROXIES]
    stage_sec = {}
    for st in stage_names:
        vals = np.array([done[int(i)]["sec"][st] for i in pick if st in done[int(i)]["sec"]])
        if len(vals):
            stage_sec[st] = {"median": float(np.median(vals)), "mean": float(vals.mean()), "n": len(vals)}
    arch_wall = np.array([done[int(i)]["wall_s"] for i in pick])
    arch_cpu = np.array([done[int(i)]["cpu_s"] for i in pick])
    results: dict[str, dict] = {}
    for p in [*PROXIES, "vote"]:
        if p in carried:  # skipped in this run: the earlier report's own sample
            c_archs = carried[p]["archs"]
            s = np.array([np.nan if v is None else v for v in carried[p]["scores"]], dtype=float)
            a_arr, a_acc = np.array(c_archs), np.array([acc_of[a] for a in c_archs])
        elif p in skip and not have_all[p]:
            results[p] = {"spearman": None, "kendall": None, "published_spearman": PUBLISHED[p][0],
                          "published_kendall": PUBLISHED[p][1], "n_archs": 0, "sample": "not computed"}  # fmt: skip
            continue
        else:
            s = vote if p == "vote" else scores[p]
            a_arr, a_acc = np.array(archs), acc
        rho, tau = rank_stats(s, a_acc)
        entry = {"spearman": rho, "kendall": tau, "published_spearman": PUBLISHED[p][0],
                 "published_kendall": PUBLISHED[p][1], "nonfinite": int((~np.isfinite(s)).sum()), "n_archs": len(s),
                 "sample": carried[p]["note"] if p in carried else "this run's sample"}  # fmt: skip
        if p != "vote":
            if p in carried:
                entry["sec_per_arch"] = carried[p].get("sec_per_arch_separate_call")
                entry["sec_per_arch_note"] = "earlier run, separate compute() call (old code path)"
            elif p in stage_sec:
                entry["sec_per_arch"] = stage_sec[p]["median"]
                entry["sec_per_arch_mean"] = stage_sec[p]["mean"]
            overlap = np.array([a in zc for a in a_arr])
            entry["overlap_with_suite_zero"] = int(overlap.sum())
            if overlap.sum() >= 3:
                ref = np.array([float(zc[a][ZC_COLUMN.get(p, p)]) for a in a_arr[overlap]])
                ours = np.where(np.isfinite(s[overlap]), s[overlap], -1e8)
                entry["crosscheck_spearman_vs_suite_zero"] = float(stats.spearmanr(ours, ref).statistic)
                entry["overlap_spearman_ours"] = rank_stats(s[overlap], a_acc[overlap])[0]
                entry["overlap_spearman_suite_zero"] = rank_stats(ref, a_acc[overlap])[0]
        results[p] = entry

    n_ov = int(sum(a in zc for a in archs))
    print(f"\nSpearman rho / Kendall tau vs CIFAR-10 test accuracy ({len(archs)} archs unless n says otherwise; "
          "published: all 15,625)")
    print(f"cross-check: rho(ours, NAS-Bench-Suite-Zero) and both rho vs acc on the sampled archs present in "
          f"zccombine_nb201_zc_proxies.csv ({n_ov} of this sample)")
    print("s/arch: median seconds of the work only that proxy needs, on top of the shared pass (see below)")
    hdr = f"{'proxy':10s} {'n':>5s} {'rho':>6s} {'tau':>6s} | {'pub rho':>7s} {'pub tau':>7s} | {'x-check':>7s} " \
          f"{'ours@ov':>7s} {'NBSZ@ov':>7s} | {'s/arch':>7s}"  # fmt: skip
    print(hdr)
    print("-" * len(hdr))
    for p, e in results.items():
        sec = f"{e['sec_per_arch']:7.3f}" if e.get("sec_per_arch") is not None else "      -"
        mark = " *" if p in carried else ""
        print(f"{p:10s} {e['n_archs']:5d} {fmt(e['spearman']):>6s} {fmt(e['kendall']):>6s} | "
              f"{fmt(e['published_spearman']):>7s} {fmt(e['published_kendall']):>7s} | "
              f"{fmt(e.get('crosscheck_spearman_vs_suite_zero')):>7s} {fmt(e.get('overlap_spearman_ours')):>7s} "
              f"{fmt(e.get('overlap_spearman_suite_zero')):>7s} | {sec}{mark}")
    for p in carried:
        print(f"* {p}: not run on this sample (--proxy-skip); {carried[p]['note']}; s/arch from that run")
    if "shared_pass" in stage_sec:
        print(f"shared pass (model copy + train-mode forward + loss gradient w.r.t. the weights, used by "
              f"{', '.join(p for p in proxies.SHARED if p in todo)}): median {stage_sec['shared_pass']['median']:.3f} "
              f"s/arch; model build median {stage_sec['build']['median']:.3f} s/arch")
    print(f"per arch, all of {', '.join(todo)}: median {np.median(arch_wall):.2f} s wall, "
          f"{np.median(arch_cpu):.2f} s CPU (one torch thread per worker)")
    print(f"whole sample: {arch_wall.sum() / 60:.1f} worker-min (per-arch wall times summed over all workers and "
          f"resumed runs), {arch_cpu.sum() / 60:.1f} CPU-min; elapsed for this invocation {session_wall:.0f} s "
          f"({n_new} archs computed at least in part with {jobs} worker process(es), {len(archs) - n_new} fully "
          f"re-used from {jsonl.name})")
    return {
        "n_archs": len(archs), "batch": args.batch, "seed": args.seed, "overlap_with_suite_zero": n_ov,
        "torch_threads": torch.get_num_threads(), "computed_proxies": todo, "skipped_proxies": skip,
        "wall_s": float(arch_wall.sum()), "cpu_s": float(arch_cpu.sum()),
        "wall_s_note": "sum over archs of build + compute_proxies wall time in its worker (resumed runs "
                       "included); one torch thread per worker",
        "invocation": {"wall_s": session_wall, "archs_computed": n_new, "jobs": jobs,
                       "proxies": todo, "note": "elapsed time of this invocation (the whole-sample wall time "
                       "when it computed every arch)"},
        "median_wall_s_per_arch": float(np.median(arch_wall)), "median_cpu_s_per_arch": float(np.median(arch_cpu)),
        "stage_sec_per_arch": stage_sec, "jsonl": str(jsonl), "results": results,
        "archs": archs, "cifar10_test_acc": acc.tolist(),
        "scores": {p: [None if not math.isfinite(v) else float(v) for v in scores[p]] for p in PROXIES},
        "carried": carried, "partial": len(archs) < n_sample, "sample_size_requested": n_sample,
    }  # fmt: skip


def run_reinit_check(args: argparse.Namespace, report: dict) -> dict:
    """Seed-to-seed agreement of each proxy: the ceiling for the cross-check against NAS-Bench-Suite-Zero.

    The first ``--reinit-check`` archs of the sample (in its seeded random order, so a uniform subsample) are
    scored again with an independent weight init (seed ``idx + REINIT_OFFSET``) *and* an independent CIFAR-10
    minibatch (seed ``--seed + 1``): what differs between our run and Suite-Zero's besides the implementation.
    ρ(ours, ours re-drawn) bounds how well any independent run, Suite-Zero's included, can agree with ours;
    ρ(re-drawn, Suite-Zero) on the overlap is printed beside it. Rows go to ``<out stem>_reinit.jsonl`` and are
    re-used on restart.
    """
    archs = report["archs"]
    rows = list(csv.DictReader(open(NAS / "nb201_test_acc_3datasets_vtao.csv")))
    index_of = {r["ArchitectureString"]: i for i, r in enumerate(rows)}
    pick = [index_of[a] for a in archs]
    order = np.random.default_rng(args.seed + 1).permutation(len(archs))[: args.reinit_check]
    sub = [(archs[j], pick[j]) for j in sorted(order)]
    todo = list(report["computed_proxies"])
    x, y = load_batch(args.batch, args.seed + 1)
    jsonl = args.cache_dir / "estimators_nb201_reinit.jsonl"
    done = _load_proxy_rows(jsonl, args.batch, args.seed + 1)
    work = [(a, i, [p for p in todo if p not in done.get(i, {}).get("scores", {})], REINIT_OFFSET) for a, i in sub]
    work = [w for w in work if w[2]]
    print(f"\nre-initialisation check: {len(sub)} archs, init seed idx+{REINIT_OFFSET}, minibatch seed "
          f"{args.seed + 1} ({len(sub) - len(work)} already in {jsonl.name})", flush=True)
    t0 = time.time()
    if work:
        jobs = max(1, min(args.proxy_jobs, len(work)))
        ctx = multiprocessing.get_context("spawn")
        init = (x, y, args.seed + 1, args.threads or 1)
        with ctx.Pool(jobs, initializer=_proxy_worker_init, initargs=init) as pool, open(jsonl, "a") as fh:
            for n, row in enumerate(pool.imap(_proxy_row, work), 1):
                fh.write(json.dumps(row) + "\n")
                fh.flush()
                m = done.setdefault(row["index"], {"arch": row["arch"], "scores": {}})
                m["scores"].update(row["scores"])
                if n % 25 == 0:
                    print(f"  {n}/{len(work)} re-drawn, {time.time() - t0:.0f} s", flush=True)
    zc = {r["net_str"]: r for r in csv.DictReader(open(NAS / "zccombine_nb201_zc_proxies.csv"))}
    pos = {a: j for j, a in enumerate(archs)}
    out: dict[str, dict] = {}

    def fin(v: np.ndarray) -> np.ndarray:
        return np.where(np.isfinite(v), v, -1e8)

    print(f"{'proxy':10s} {'n':>5s} {'rho(ours, re-drawn)':>20s} | {'n@ov':>5s} {'rho(re-drawn, NBSZ)':>20s} "
          f"{'rho(ours, NBSZ)':>16s}")
    for p in todo:
        a_sub = [a for a, i in sub if done.get(i, {}).get("scores", {}).get(p) is not None]
        i_sub = [i for a, i in sub if done.get(i, {}).get("scores", {}).get(p) is not None]
        ours = np.array([np.nan if (v := report["scores"][p][pos[a]]) is None else v for a in a_sub], dtype=float)
        again = np.array([done[i]["scores"][p] for i in i_sub], dtype=float)
        e = {"n": len(a_sub), "spearman_ours_vs_redrawn": float(stats.spearmanr(fin(ours), fin(again)).statistic)}
        ov = np.array([a in zc for a in a_sub])
        if ov.sum() >= 3:
            ref = np.array([float(zc[a][ZC_COLUMN.get(p, p)]) for a in np.array(a_sub)[ov]])
            e["n_overlap"] = int(ov.sum())
            e["spearman_redrawn_vs_suite_zero"] = float(stats.spearmanr(fin(again[ov]), ref).statistic)
            e["spearman_ours_vs_suite_zero"] = float(stats.spearmanr(fin(ours[ov]), ref).statistic)
        out[p] = e
        print(f"{p:10s} {e['n']:5d} {e['spearman_ours_vs_redrawn']:20.3f} | {e.get('n_overlap', 0):5d} "
              f"{fmt(e.get('spearman_redrawn_vs_suite_zero')):>20s} {fmt(e.get('spearman_ours_vs_suite_zero')):>16s}")
    return {"n_archs": len(sub), "init_seed": f"NB201 index + {REINIT_OFFSET}", "batch_seed": args.seed + 1,
            "wall_s": time.time() - t0, "jsonl": str(jsonl), "results": out,
            "note": "rho(ours, re-drawn) is the agreement of two independent runs of our own code (other init, "
                    "other minibatch): the ceiling for the cross-check against Suite-Zero's independently run scores"}


def run_ponas(runs: int, jobs: int = 1, metric_set: str = "paper", norm: str = "minmax", prior: float = 0.0,
              ensemble: int = 1) -> dict:  # fmt: skip
    """PO-NAS on the NB201 pool of the 9,445 nets with NAS-Bench-Suite-Zero metrics, seeds 0..runs-1.

    Query objective: ``c10valid_hp12_valacc`` (12-epoch CIFAR-10-valid accuracy), budget 20 (3 initial + 14 loop +
    3 final queries); reported: the 200-epoch CIFAR-10 test accuracy of the returned architecture. Choices the
    paper leaves open (documented in :mod:`graphopt.predictors.ponas`); the defaults are the paper's setting:

    * ``metric_set="paper"``: the six metrics of the spec (grad_norm, snip, grasp, fisher, synflow, jacob_cov);
      ``"all"`` = every zero-cost proxy NAS-Bench-Suite-Zero provides for these nets (13: epe_nas, fisher, flops,
      grad_norm, grasp, jacob_cov, l2_norm, nwot, params, plain, snip, synflow, zen);
    * ``norm="minmax"`` (paper; synflow log-compressed first) or ``"rank"`` (pool quantile);
    * ``prior=0``: PyTorch's default surrogate initialisation; ``prior > 0`` starts every surrogate at equal
      positive metric weights (``s ≈`` the mean normalised metric);
    * NAS-Bench-Suite-Zero's failure sentinel −1e8 is read as a failed (non-finite) metric: such architectures
      (only the all-``none`` cell) stay in the pool but are never queried;
    * CPU sizing of :class:`~graphopt.predictors.ponas.PONASConfig` (pretraining 20 epochs instead of 100).

    ``jobs`` > 1 runs the seeds in that many forked single-thread worker processes. Besides the search figure,
    the combined score ``s(a)`` of each run's final surrogate is ranked against the whole pool's 200-epoch test
    accuracy and 12-epoch validation accuracy (Spearman ρ), beside the best single metric of the set used (raw
    value, failures last) and the equal-weight mean of the normalised metrics (the surrogate's starting point).
    """
    import os
    import tempfile

    from graphopt.predictors.ponas import ArchPool, PONASConfig, PONASRanker, nb201_graph

    paper = ["grad_norm", "snip", "grasp", "fisher", "synflow", "jacob_cov"]
    rows = list(csv.DictReader(open(NAS / "zccombine_nb201_zc_proxies.csv")))
    cols = [c for c in rows[0] if c not in ("net", "net_str")]
    names = paper if metric_set == "paper" else [{"jacov": "jacob_cov"}.get(c, c) for c in cols]
    archs = [r["net_str"] for r in rows]
    metrics = np.array([[float(r[ZC_COLUMN.get(n, n)]) for n in names] for r in rows])
    metrics[metrics <= -1e8] = np.nan  # NAS-Bench-Suite-Zero's "computation failed" sentinel
    robot = {r["arch_str"]: r for r in csv.DictReader(open(NAS / "robot_nb201_testacc_hp12.csv"))}
    val = np.array([float(robot[a]["c10valid_hp12_valacc"]) for a in archs])
    test = np.array([float(robot[a]["c10_test_acc_robot"]) for a in archs])
    pool = ArchPool([nb201_graph(a) for a in archs], metrics, names, archs, normalization=norm)
    cfg = PONASConfig(prior=prior, ensemble=ensemble)
    setting = {"pool": len(pool), "budget": 20, "n_init": 3, "final_k": 3, "metrics": names, "normalization": norm,
               "prior": prior, "ensemble": ensemble, "pretrain_epochs": cfg.pretrain_epochs,
               "pretrain_epochs_paper": 100, "failed_metric_sentinel": "-1e8 -> NaN, never queried"}  # fmt: skip
    print(f"\nPO-NAS setting: {setting}", flush=True)

    def rho(s: np.ndarray) -> dict[str, float]:
        s = np.where(np.isfinite(s), s, -np.inf)
        return {"test200": float(stats.spearmanr(s, test).statistic),
                "valid12": float(stats.spearmanr(s, val).statistic)}  # fmt: skip

    def one(seed: int) -> dict:
        torch.set_num_threads(1)
        t = time.time()
        ranker = PONASRanker(cfg, seed=seed)
        res = ranker.search(pool, lambda i: float(val[i]), budget=20)
        s = ranker.score(pool)
        out = {"seed": seed, "arch": archs[res.best_index], "valid12": res.best_value,
               "test200": float(test[res.best_index]), "queries": len(res.evaluated),
               "query_valid12": [round(v, 3) for v in res.evaluated.values()],
               "combined_rho": rho(s), "wall_s": time.time() - t, "score": s.astype(np.float32).tolist()}  # fmt: skip
        print(f"PO-NAS seed {seed}: {out['arch']} valid12 {res.best_value:.2f} test {out['test200']:.2f} "
              f"combined rho test {out['combined_rho']['test200']:.3f} ({out['wall_s']:.0f} s)", flush=True)
        return out

    seeds = list(range(runs))
    if jobs <= 1:
        out = [one(s) for s in seeds]
    else:  # forked workers, one JSON line per finished seed
        tmp = Path(tempfile.mkdtemp(prefix="ponas-"))
        pids = []
        for j in range(jobs):
            pid = os.fork()
            if pid == 0:  # child
                code = 0
                try:
                    for s in seeds[j::jobs]:
                        with open(tmp / f"{j}.jsonl", "a") as f:
                            f.write(json.dumps(one(s)) + "\n")
                except BaseException as e:  # noqa: BLE001 - report and exit the child
                    print(f"PO-NAS worker {j} failed: {e!r}", flush=True)
                    code = 1
                os._exit(code)
            pids.append(pid)
        for pid in pids:
            os.waitpid(pid, 0)
        out = [json.loads(line) for p in sorted(tmp.glob("*.jsonl")) for line in p.read_text().splitlines()]
        out.sort(key=lambda r: r["seed"])
        if len(out) != len(seeds):
            raise RuntimeError(f"PO-NAS: {len(out)} of {len(seeds)} seeds finished (see the worker messages)")
    scores = np.array([r.pop("score") for r in out])
    tests = np.array([r["test200"] for r in out])
    single = {n: rho(metrics[:, m]) for m, n in enumerate(names)}
    best_t = max(single, key=lambda n: single[n]["test200"])
    best_v = max(single, key=lambda n: single[n]["valid12"])
    per_seed = {k: np.array([r["combined_rho"][k] for r in out]) for k in ("test200", "valid12")}
    seed_mean = rho(scores.mean(0))
    prior_rho = rho(pool.normalized.mean(1))
    print(f"PO-NAS on NB201 (pool {len(pool)}, budget 20, {len(out)} seeds): test acc {tests.mean():.2f} ± "
          f"{tests.std():.2f} (RoBoT 94.36, optimum 94.37 over all NB201; best in this pool {test.max():.2f})")
    print("  per seed: " + ", ".join(f"{r['seed']}: {r['test200']:.2f}" for r in out))
    for k in ("test200", "valid12"):
        b = best_t if k == "test200" else best_v
        print(f"  Spearman rho vs {k} over the pool: combined score {per_seed[k].mean():.3f} ± {per_seed[k].std():.3f}"
              f" (per seed), {seed_mean[k]:.3f} (mean score over seeds); best single metric {b} {single[b][k]:.3f};"
              f" equal-weight mean (start) {prior_rho[k]:.3f}")
    return {
        **setting, "runs": out, "mean_test": float(tests.mean()), "std_test": float(tests.std()),
        "pool_best_test": float(test.max()), "robot_published": 94.36, "target_mean_test": 94.30,
        "target_met": bool(tests.mean() >= 94.30),
        "combined_rho_per_seed_mean": {k: float(v.mean()) for k, v in per_seed.items()},
        "combined_rho_per_seed_std": {k: float(v.std()) for k, v in per_seed.items()},
        "combined_rho_seed_mean_score": seed_mean, "equal_weight_mean_rho": prior_rho, "single_metric_rho": single,
        "best_single": {"test200": [best_t, single[best_t]["test200"]], "valid12": [best_v, single[best_v]["valid12"]]},
        "rho_target_met": bool(per_seed["test200"].mean() > single[best_t]["test200"]),
    }  # fmt: skip


TSE_PAPER = "Ru et al. 2021: TSE above early-stopped val acc for T <= 0.5*T_end; rho 0.95 on NB201 within 50 epochs"
TFMAS_PAPER = "TF-MAS (NeurIPS 2025): higher rank correlation than all earlier training-free proxies (no numbers here)"


def _rho_tau(score: np.ndarray, target: np.ndarray) -> dict[str, float]:
    rho, tau = rank_stats(score, target)
    return {"spearman": rho, "kendall": tau}


def _downsample(ds, factor: int):  # noqa: ANN001 - ArrayDataset
    """2×2 (``factor``) average pooling of NHWC uint8 images (CIFAR at 16×16 for the reduced TSE setting)."""
    from graphopt.eval.data import ArrayDataset, with_info

    x = ds.x.float()
    n, h, w, c = x.shape
    x = x.reshape(n, h // factor, factor, w // factor, factor, c).mean((2, 4)).round().clamp(0, 255).to(torch.uint8)
    return with_info(ArrayDataset(x, ds.y, ds.info), input_shape=(c, h // factor, w // factor))


def _tse_worker_init(train, val, cfg, key: str) -> None:  # noqa: ANN001 - ArrayDataset, TrainConfig
    torch.set_num_threads(1)
    _WORKER.update(train=train, val=val, cfg=cfg, key=key)


def _tse_row(task: tuple[str, int]) -> dict:
    """Train NB201 arch ``arch`` (index ``idx``: its init seed) in the reduced TSE setting; the per-step losses
    and per-epoch validation accuracies the estimators are computed from."""
    from graphopt.eval.train import train_model

    arch, idx = task
    torch.manual_seed(idx)
    net = models_nb201(arch, idx, C=16, N=1)
    res = train_model(net, _WORKER["train"], _WORKER["cfg"], val=_WORKER["val"])
    return {"key": _WORKER["key"], "index": idx, "arch": arch, "status": res.status,
            "step_losses": [float(v) for v in res.step_losses], "step_epochs": [int(e) for e in res.step_epochs],
            "val_acc": {str(h["epoch"]): h["accuracy"] for h in res.val_history},
            "epoch_train_loss": res.epoch_train_loss, "train_s": res.train_time}  # fmt: skip


def run_tse(args: argparse.Namespace) -> dict:
    """TSE / TSE-E / TSE-EMA vs early-stopped validation accuracy on NB201 (protocol in the module docstring)."""
    from graphopt.predictors import tse

    from graphopt.eval.data import load_dataset
    from graphopt.eval.train import TrainConfig

    rows = list(csv.DictReader(open(NAS / "nb201_test_acc_3datasets_vtao.csv")))
    robot_rows = csv.DictReader(open(NAS / "robot_nb201_testacc_hp12.csv"))
    robot = {r["arch_str"]: float(r["c10valid_hp12_valacc"]) for r in robot_rows}
    connected = {r["net_str"] for r in csv.DictReader(open(NAS / "zccombine_nb201_valid_nets.csv"))}
    rng = np.random.default_rng(args.seed + 1)  # not the proxy sample's stream
    pick = np.sort(rng.choice(len(rows), min(args.tse, len(rows)), replace=False))
    archs = [rows[i]["ArchitectureString"] for i in pick]
    acc = np.array([float(rows[i]["CIFAR10TestAccuracy200Epochs"]) for i in pick])
    splits = load_dataset("cifar10", seed=0, train_size=args.tse_train, val_size=args.tse_val)  # finds CIFAR
    train, val = _downsample(splits.train, 2), _downsample(splits.val, 2)
    setting = {"C": 16, "N": 1, "resolution": 16, "train_images": len(train), "val_images": len(val), "batch": 64,
               "optimizer": "sgd nesterov momentum 0.9 wd 5e-4", "lr": 0.05, "schedule": "constant",
               "augment": False, "epochs": args.tse_epochs, "tse_ema": "paper convention, gamma 0.999", "tse_e": 1}
    print(f"\nTSE: {len(archs)} NB201 archs, reduced setting {setting}", flush=True)
    cfg = TrainConfig(epochs=args.tse_epochs, batch_size=64, optimizer="sgd", lr=0.05, schedule="constant",
                      augment=False, threads=1, eval_every=1, seed=0)
    T = args.tse_epochs
    # per-arch rows are appended to a JSONL as they finish and re-used on restart (keyed by the setting), so
    # a killed run keeps every finished training
    jsonl = args.cache_dir / "estimators_nb201_tse.jsonl"
    key = json.dumps({**setting, "seed": args.seed}, sort_keys=True)
    done: dict[int, dict] = {}
    if jsonl.exists():
        for line in jsonl.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            if row.get("key") == key:
                done[int(row["index"])] = row
    work = [(a, int(i)) for a, i in zip(archs, pick, strict=True) if int(i) not in done]
    print(f"  {len(archs) - len(work)} of {len(archs)} archs already in {jsonl}; training {len(work)} with "
          f"{args.tse_jobs} worker(s)", flush=True)
    t0 = time.time()
    jobs = max(1, min(args.tse_jobs, len(work)))
    if jobs > 1:  # one single-threaded worker process per core (spawned: no forked OpenMP state)
        pool = multiprocessing.get_context("spawn").Pool(jobs, initializer=_tse_worker_init,
                                                         initargs=(train, val, cfg, key))
        rows = pool.imap_unordered(_tse_row, work)
    else:
        _tse_worker_init(train, val, cfg, key)
        rows = map(_tse_row, work)
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    with open(jsonl, "a") as fh:
        for n, row in enumerate(rows, 1):
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            done[row["index"]] = row
            if n % max(1, len(work) // 10) == 0 or n == len(work):
                el = time.time() - t0
                print(f"  {n}/{len(work)} archs trained, {el:.0f} s elapsed, ETA {el / n * (len(work) - n):.0f} s",
                      flush=True)
    est = {k: np.full((len(archs), T), np.nan) for k in ("tse", "tse_e", "tse_ema", "val_acc", "train_loss")}
    per_arch = []
    for k, (arch, idx) in enumerate(zip(archs, pick, strict=True)):
        row = done[int(idx)]
        vals = {int(e): a for e, a in row["val_acc"].items()}
        for t in range(1, T + 1):
            if row["status"] != "ok" or len(set(row["step_epochs"])) < t:
                continue
            est["tse"][k, t - 1] = -tse.tse(row["step_losses"], row["step_epochs"], T=t)  # negated: higher is better
            est["tse_e"][k, t - 1] = -tse.tse_e(row["step_losses"], row["step_epochs"], E=1, T=t)
            est["tse_ema"][k, t - 1] = -tse.tse_ema(row["step_losses"], row["step_epochs"], gamma=0.999, T=t)
            est["val_acc"][k, t - 1] = vals.get(t - 1, np.nan)
            est["train_loss"][k, t - 1] = row["epoch_train_loss"][t - 1]
        per_arch.append({"arch": arch, "index": int(idx), "test200": float(acc[k]), "status": row["status"],
                         "epoch_train_loss": row["epoch_train_loss"], "val_acc": [vals.get(t) for t in range(T)],
                         "train_s": row["train_s"]})
    conn = np.array([a in connected for a in archs])
    hp12 = np.array([robot[a] for a in archs])
    by_t: dict[str, dict] = {}
    print(f"\nTSE vs 200-epoch CIFAR-10 test accuracy: Spearman rho / Kendall tau ({len(archs)} archs; "
          f"'conn' = the {int(conn.sum())} without a disconnected cell)")
    hdr = f"{'T':>2s} | " + " | ".join(f"{n:>15s}" for n in ("TSE", "TSE-E", "TSE-EMA", "val acc (ES)")) + \
        " | " + f"{'TSE-E conn':>10s} {'val conn':>8s}"  # fmt: skip
    print(hdr)
    print("-" * len(hdr))
    for t in range(1, T + 1):
        row = {n: _rho_tau(est[n][:, t - 1], acc) for n in ("tse", "tse_e", "tse_ema", "val_acc")}
        row["connected"] = {n: _rho_tau(est[n][conn, t - 1], acc[conn]) for n in ("tse", "tse_e", "tse_ema", "val_acc")}
        by_t[str(t)] = row
        cells = " | ".join(f"{fmt(row[n]['spearman']):>6s} / {fmt(row[n]['kendall']):>6s}"
                           for n in ("tse", "tse_e", "tse_ema", "val_acc"))
        print(f"{t:>2d} | {cells} | {fmt(row['connected']['tse_e']['spearman']):>10s} "
              f"{fmt(row['connected']['val_acc']['spearman']):>8s}")
    ref = _rho_tau(hp12, acc)
    print(f"reference: NB201's own 12-epoch CIFAR-10-valid accuracy (full net, GPU) on these archs: "
          f"rho {ref['spearman']:.3f} / tau {ref['kendall']:.3f}")
    print(f"paper: {TSE_PAPER}")
    # paired bootstrap over archs of rho(TSE-E) - rho(val acc): is the gap more than sampling noise?
    boot = np.random.default_rng(args.seed + 2).integers(0, len(archs), (1000, len(archs)))
    print("rho(TSE-E) - rho(val acc), 95% bootstrap interval over archs (1,000 resamples): ", end="")
    for t in range(1, T + 1):
        te, va = est["tse_e"][:, t - 1], est["val_acc"][:, t - 1]
        diffs = np.array([stats.spearmanr(te[b], acc[b], nan_policy="omit")[0]
                          - stats.spearmanr(va[b], acc[b], nan_policy="omit")[0] for b in boot])
        lo, hi = np.nanpercentile(diffs, [2.5, 97.5])
        by_t[str(t)]["tse_e_minus_val_ci95"] = [float(lo), float(hi)]
        print(f"T={t} [{lo:+.3f}, {hi:+.3f}]", end="  " if t < T else "\n")
    final = by_t[str(T)]
    met = final["tse_e"]["spearman"] > final["val_acc"]["spearman"]
    above = {t: row["tse_e"]["spearman"] > row["val_acc"]["spearman"] for t, row in by_t.items()}
    print(f"target (TSE-E above early-stopped val acc at T={T}): {'MET' if met else 'NOT MET'} "
          f"({final['tse_e']['spearman']:.3f} vs {final['val_acc']['spearman']:.3f}); TSE-E ahead at "
          f"T = {', '.join(t for t, ok in above.items() if ok) or 'none'}")
    return {"n_archs": len(archs), "setting": setting, "seed": args.seed, "wall_s": time.time() - t0,
            "by_epochs": by_t, "nb201_hp12_valacc_reference": ref, "paper": TSE_PAPER, "target_met": bool(met),
            "tse_e_ahead_by_epochs": above, "train_s_total": sum(r["train_s"] for r in per_arch),
            "archs": per_arch}  # fmt: skip


def models_nb201(arch: str, seed: int, C: int = 16, N: int = 5) -> torch.nn.Module:
    from graphopt import models

    return models.get("nb201", seed=seed, arch_str=arch, C=C, N=N, num_classes=10)


def _seq_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the vocabulary (last dim) at positions with a target (ignore_index elsewhere)."""
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def run_tfmas(args: argparse.Namespace) -> dict:
    """TF-MAS vs synflow / grad_norm / params on Mamba2 configs trained briefly on MQAR (see module docstring)."""
    from graphopt.predictors import tfmas

    from graphopt.eval.data import load_dataset
    from graphopt.eval.train import TrainConfig, train_model

    task_kw = {"num_pairs": 8, "num_queries": 8, "vocab_size": 64}
    splits = load_dataset("assoc_recall", seed=0, n_train=4000, n_val=500, n_test=10, **task_kw)
    base = tfmas.Mamba2Config(vocab_size=64, d_model=64, n_layers=2, d_state=16, d_conv=4, expand=2, headdim=16,
                              ngroups=1)
    grids = {"d_model": (16, 24, 32, 48, 64, 96), "n_layers": (1, 2, 3, 4), "d_state": (4, 8, 16, 32, 64),
             "d_conv": (2, 3, 4), "expand": (1, 2, 3), "headdim": (16, 32), "ngroups": (1, 2)}
    budget = 60_000
    ranges = tfmas.determine_ranges(budget, base, grids, lower_frac=0.5)
    configs = tfmas.sample_configs(ranges, args.tfmas, budget, lower_frac=0.5, seed=args.seed, base=base)
    x, y = splits.train.x[:32], splits.train.y[:32]
    steps = args.tfmas_steps
    cfg = TrainConfig(steps=steps, batch_size=64, optimizer="adamw", lr=3e-3, schedule="cosine", augment=False,
                      threads=1, eval_every=0, seed=0)
    print(f"\nTF-MAS: {len(configs)} Mamba2 configs in {ranges} (budget {budget}, window [{budget // 2}, {budget}]), "
          f"MQAR {task_kw}, {steps} AdamW steps", flush=True)
    names = [*(f"tfmas_{s}" for s in tfmas.SCORES), "synflow", "grad_norm", "params"]
    scores = {n: np.full(len(configs), np.nan) for n in names}
    target = np.full(len(configs), np.nan)
    per_cfg, t0, cpu0 = [], time.time(), time.process_time()
    for k, c in enumerate(configs):
        model = c.build(seed=k)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            model.train()
            mats, grads, _ = tfmas.token_matrices_and_grads(model, x)
        for s, fn in tfmas.SCORES.items():
            scores[f"tfmas_{s}"][k] = math.fsum(fn(mats, grads).values())
        scores["synflow"][k] = proxies.compute("synflow", model, x, seed=args.seed).score
        scores["grad_norm"][k] = proxies.compute("grad_norm", model, (x, y), loss_fn=_seq_loss, seed=args.seed).score
        scores["params"][k] = proxies.compute("params", model, x, seed=args.seed).score
        t = time.time()
        res = train_model(model, splits, cfg)
        target[k] = res.val.get("token_accuracy", np.nan) if res.status == "ok" else 0.0
        per_cfg.append({"config": {f: getattr(c, f) for f in ("d_model", "n_layers", "d_state", "d_conv", "expand",
                                                               "headdim", "ngroups")},
                        "params": c.param_count(), "token_accuracy": float(target[k]), "status": res.status,
                        "train_s": time.time() - t, **{n: float(scores[n][k]) for n in names}})
        print(f"  {k + 1}/{len(configs)} {per_cfg[-1]['config']} acc {target[k]:.3f} ({time.time() - t:.0f} s; "
              f"{time.time() - t0:.0f} s elapsed)", flush=True)
    results = {n: _rho_tau(scores[n], target) for n in names}
    print(f"\nTF-MAS vs token accuracy after {steps} steps ({len(configs)} configs): Spearman rho / Kendall tau")
    for n in names:
        tag = " (default TF-MAS score)" if n == f"tfmas_{tfmas.DEFAULT_SCORE}" else ""
        print(f"  {n:22s} {fmt(results[n]['spearman'])} / {fmt(results[n]['kendall'])}{tag}")
    print(f"paper: {TFMAS_PAPER}")
    others = max(results[n]["spearman"] for n in ("synflow", "grad_norm", "params"))
    default = f"tfmas_{tfmas.DEFAULT_SCORE}"
    met = results[default]["spearman"] > others
    print(f"target (TF-MAS ahead of synflow/grad_norm/params): {'MET' if met else 'NOT MET'} "
          f"({results[default]['spearman']:.3f} vs best other {others:.3f})")
    return {"n_configs": len(configs), "budget": budget, "ranges": ranges, "grids": grids, "task": task_kw,
            "train": {"steps": steps, "optimizer": "adamw", "lr": 3e-3, "batch": 64, "n_train": 4000, "n_val": 500},
            "results": results, "paper": TFMAS_PAPER, "target_met": bool(met), "wall_s": time.time() - t0,
            "cpu_s": time.process_time() - cpu0,
            "configs": per_cfg}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-archs", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="smoke test: 12 archs, batch 16")
    ap.add_argument(
        "--threads", type=int, default=1,
        help="torch threads (default 1: the per-arch work is small, and on a shared 2-core machine 2 threads ran "
        "~8x slower than 1 from oversubscription; 0 = torch default)",
    )  # fmt: skip
    ap.add_argument("--proxy-skip", default="", help="proxies not computed in this run (comma list, e.g. grasp); "
                    "their row in the table comes from the earlier report's own sample when it has them")
    ap.add_argument("--proxy-jobs", type=int, default=2,
                    help="worker processes for the proxy part, one torch thread each (default 2 = the cores here)")
    ap.add_argument("--proxy-no-compute", action="store_true",
                    help="compute nothing: report on the archs of the sample already in the JSONL (e.g. while a run "
                    "is going; the report is marked partial)")
    ap.add_argument("--proxy-jsonl", type=Path, default=None,
                    help="per-arch proxy rows, appended as computed and re-used on restart "
                    "(default: <out stem>_proxies.jsonl beside --out)")
    ap.add_argument("--reinit-check", type=int, default=0,
                    help="re-score the first N archs of the sample with another init and minibatch: the seed-to-seed "
                    "rho that bounds the cross-check against Suite-Zero")
    ap.add_argument("--ponas-runs", type=int, default=0, help="also run the PO-NAS NB201 search K times")
    ap.add_argument("--ponas-jobs", type=int, default=1, help="PO-NAS: seeds run in this many forked workers")
    ap.add_argument("--ponas-metrics", choices=("paper", "all"), default="paper", help="PO-NAS metric set")
    ap.add_argument("--ponas-norm", choices=("minmax", "rank"), default="minmax", help="PO-NAS metric normalisation")
    ap.add_argument("--ponas-prior", type=float, default=0.0, help="PO-NAS equal-weight start (0 = random init)")
    ap.add_argument("--ponas-ensemble", type=int, default=1, help="PO-NAS surrogates per ranker")
    ap.add_argument("--tse", type=int, default=0, help="also run the TSE protocol on N NB201 archs (>= 50)")
    ap.add_argument("--tse-epochs", type=int, default=4)
    ap.add_argument("--tse-train", type=int, default=5000, help="training images for the TSE runs")
    ap.add_argument("--tse-val", type=int, default=1000, help="validation images for the TSE runs")
    ap.add_argument("--tse-jobs", type=int, default=2,
                    help="worker processes for the TSE trainings, one torch thread each (default 2 = the cores here)")
    ap.add_argument("--tfmas", type=int, default=0, help="also run the TF-MAS protocol on N Mamba2 configs (>= 30)")
    ap.add_argument("--tfmas-steps", type=int, default=300)
    ap.add_argument("--resume", type=Path, default=None, metavar="DIR",
                    help="keep the per-arch JSONL rows (proxies, re-init check, TSE trainings) in DIR and re-use "
                    "those of an earlier run with the same setting there (default: a fresh temporary folder, so "
                    "nothing is re-used)")
    ap.add_argument("--previous-report", type=Path, default=None,
                    help="with --proxy-skip: an earlier report whose own sample gives the skipped proxies' rows")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    run = Run.start("estimators_nb201.json", argv=None if argv is None else [__file__, *argv], quick=args.quick)
    args.cache_dir = args.resume or Path(tempfile.mkdtemp(prefix="estimators-nb201-"))
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    if args.quick:
        args.n_archs, args.batch = 12, 16
    if args.threads:
        torch.set_num_threads(args.threads)
    # the sections this invocation computes, written whole at the end
    doc: dict = {}
    if args.n_archs > 0:
        report = run_proxies(args)
        if args.reinit_check:
            report["reinit_check"] = run_reinit_check(args, report)
        doc["proxies"] = report
    if args.ponas_runs:
        doc["ponas"] = run_ponas(args.ponas_runs, args.ponas_jobs, args.ponas_metrics, args.ponas_norm,
                                 args.ponas_prior, args.ponas_ensemble)
    if args.tse:
        doc["tse"] = run_tse(args)
    if args.tfmas:
        doc["tfmas"] = run_tfmas(args)
    print(f"\nwrote {run.write(doc, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
