#!/usr/bin/python3
"""In-process FAISS baseline for the ivfpq benchmark, on ONE thread.

Index: IndexIVFPQ(IndexFlat, d, lists, m, 8 bits) wrapped by IndexRefineFlat,
the FAISS equivalent of an ivfpq index with exact rerank from the heap.
Reports train time, add time and train+add, then recall@10 and QPS for every
(nprobe, rerank) pair with queries issued one at a time (a loop of single-query
searches, as a client would issue them). rerank = k * k_factor candidates are
re-ranked exactly; rerank 0 means PQ distances only (no refine).

    python3 bench/faiss_baseline.py fashion-mnist --lists 256 --m 56

Importable: ``run_baseline(dataset, lists, m, probes, reranks, ...)`` returns
a dict with the build figures and a list of per-setting dicts.
"""

import argparse
import json
import sys
import time

import numpy as np

import datasets

DEFAULT_PROBES = (1, 2, 4, 8, 16, 32, 64, 128)
DEFAULT_RERANKS = (0, 10, 20, 50, 100, 200, 500)
K = 10


def faiss_metric(metric):
    import faiss
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def prepare(ds, metric):
    """Base and query arrays as FAISS wants them (cosine = inner product on unit vectors)."""
    base = np.ascontiguousarray(ds.base, dtype=np.float32)
    queries = np.ascontiguousarray(ds.queries, dtype=np.float32)
    if metric == "cosine":
        base, queries = datasets.normalize(base), datasets.normalize(queries)
    return base, queries


def build_index(base, lists, m, metric="l2", train_size=None, seed=1234):
    """Train and fill IndexRefineFlat(IndexIVFPQ); return (index, ivfpq, train_s, add_s)."""
    import faiss
    d = base.shape[1]
    quantizer = faiss.IndexFlat(d, faiss_metric(metric))
    ivfpq = faiss.IndexIVFPQ(quantizer, d, lists, m, 8, faiss_metric(metric))
    index = faiss.IndexRefineFlat(ivfpq)
    train = base
    if train_size and train_size < base.shape[0]:
        rows = np.sort(np.random.default_rng(seed).choice(base.shape[0], train_size, replace=False))
        train = base[rows]
    t0 = time.perf_counter()
    index.train(train)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index.add(base)
    add_s = time.perf_counter() - t0
    return index, ivfpq, train_s, add_s


def search_one_at_a_time(index, queries, k=K):
    """Search each query alone; return (ids (nq, k), seconds)."""
    ids = np.empty((queries.shape[0], k), dtype=np.int64)
    t0 = time.perf_counter()
    for i in range(queries.shape[0]):
        _, found = index.search(queries[i:i + 1], k)
        ids[i] = found[0]
    return ids, time.perf_counter() - t0


def build_baseline(ds, lists, m, metric="l2", nqueries=1000, train_size=None, threads=1, log=print):
    """Train and fill the FAISS baseline on ds; return a state dict for measure_setting()."""
    import faiss
    faiss.omp_set_num_threads(threads)
    ds = ds.limit(nqueries=nqueries)
    base, queries = prepare(ds, metric)
    gt = ds.ground_truth(metric)
    log(f"faiss: training IndexIVFPQ(lists={lists}, m={m}, nbits=8) + IndexRefineFlat "
        f"on {base.shape[0]} x {base.shape[1]} ({threads} thread{'s' if threads != 1 else ''})")
    index, ivfpq, train_s, add_s = build_index(base, lists, m, metric, train_size)
    # Serialized IVFPQ alone: centroids, codebooks, codes and ids (the refine
    # index's copy of the vectors is the "table" and is not counted).
    code_bytes = faiss.serialize_index(ivfpq).size
    build = {"train_s": train_s, "add_s": add_s, "train_add_s": train_s + add_s,
             "train_rows": int(train_size or base.shape[0]), "ivfpq_bytes": int(code_bytes),
             "threads": threads}
    log(f"faiss: train {train_s:.1f} s, add {add_s:.1f} s, train+add {train_s + add_s:.1f} s, "
        f"IVFPQ index {code_bytes / 2**20:.1f} MiB")
    return {"index": index, "ivfpq": ivfpq, "queries": queries, "gt": gt, "build": build,
            "faiss_version": faiss.__version__, "metric": metric, "lists": lists, "m": m,
            "base_rows": int(base.shape[0])}


def measure_setting(state, nprobe, rerank, warmup=20, log=print):
    """One (nprobe, rerank) setting, queries one at a time; returns a result row."""
    index, ivfpq, queries = state["index"], state["ivfpq"], state["queries"]
    ivfpq.nprobe = nprobe
    searcher = index if rerank else ivfpq
    if rerank:
        index.k_factor = rerank / K
    search_one_at_a_time(searcher, queries[-warmup:])  # warm caches for this setting
    cpu0 = time.thread_time()
    ids, secs = search_one_at_a_time(searcher, queries)
    cpu_s = time.thread_time() - cpu0
    row = {"nprobe": nprobe, "rerank": rerank, "recall@10": datasets.recall_at(ids, state["gt"]),
           "qps": queries.shape[0] / secs, "mean_ms": 1000 * secs / queries.shape[0],
           "cpu_qps": queries.shape[0] / max(cpu_s, 1e-6)}
    log(f"faiss: nprobe {nprobe:4d} rerank {rerank:4d}  recall@10 {row['recall@10']:.3f}  "
        f"QPS {row['qps']:8.1f}  CPU QPS {row['cpu_qps']:8.1f}")
    return row


def result_dict(state, rows):
    """The baseline's result: build figures and the measured rows."""
    return {"build": state["build"], "rows": rows, "faiss_version": state["faiss_version"],
            "metric": state["metric"], "lists": state["lists"], "m": state["m"],
            "nqueries": int(state["queries"].shape[0]), "base_rows": state["base_rows"]}


def run_baseline(ds, lists, m, probes=DEFAULT_PROBES, reranks=DEFAULT_RERANKS, metric="l2",
                 nqueries=1000, train_size=None, threads=1, warmup=20, log=print):
    """Build the FAISS baseline on ds and sweep (nprobe, rerank); return a result dict.

    result = {"build": {...}, "rows": [{"nprobe", "rerank", "recall@10", "qps", ...}, ...]}"""
    state = build_baseline(ds, lists, m, metric, nqueries, train_size, threads, log)
    rows = []
    for nprobe in probes:
        if nprobe > lists:
            continue
        for rerank in reranks:
            if rerank and rerank < K:
                continue
            rows.append(measure_setting(state, nprobe, rerank, warmup, log))
    return result_dict(state, rows)


def best_qps_at(rows, min_recall):
    """The row with the highest QPS among those with recall@10 >= min_recall (or None)."""
    ok = [r for r in rows if r["recall@10"] >= min_recall]
    return max(ok, key=lambda r: r["qps"]) if ok else None


def int_list(text):
    return [int(x) for x in text.split(",") if x]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", help="fashion-mnist | generated[:N]")
    ap.add_argument("--lists", type=int, default=256, help="IVF lists (default %(default)s)")
    ap.add_argument("--m", type=int, default=56, help="PQ subquantizers (default %(default)s)")
    ap.add_argument("--probes", type=int_list, default=list(DEFAULT_PROBES), help="comma-separated nprobe values")
    ap.add_argument("--rerank", type=int_list, default=list(DEFAULT_RERANKS),
                    help="comma-separated rerank depths (k*k_factor; 0 = no refine)")
    ap.add_argument("--metric", choices=datasets.METRICS, default="l2")
    ap.add_argument("--nqueries", type=int, default=1000, help="queries (default %(default)s)")
    ap.add_argument("--base-limit", type=int, help="use only the first N base rows")
    ap.add_argument("--train-size", type=int, help="train on a random sample of N rows (default: all)")
    ap.add_argument("--threads", type=int, default=1, help="FAISS threads (default %(default)s)")
    ap.add_argument("--json", help="write the result dict to this file")
    args = ap.parse_args()

    ds = datasets.load(args.dataset).limit(args.base_limit)
    res = run_baseline(ds, args.lists, args.m, args.probes, args.rerank, args.metric, args.nqueries,
                       args.train_size, args.threads, log=lambda s: print(s, flush=True))
    for target in (0.9, 0.95, 0.98):
        best = best_qps_at(res["rows"], target)
        if best:
            print(f"best QPS at recall@10 >= {target}: {best['qps']:.1f} "
                  f"(nprobe {best['nprobe']}, rerank {best['rerank']}, recall {best['recall@10']:.3f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
