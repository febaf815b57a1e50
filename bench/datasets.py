#!/usr/bin/python3
"""Benchmark datasets for ivfpq: Fashion-MNIST and a generated embedding-like set.

Importable (``load("fashion-mnist")``, ``load("generated:200000")``) and a CLI
that prepares/caches a dataset, computes exact ground truth and, with
``--check-ivf``, measures how many IVF probes the data needs (FAISS
IndexIVFFlat, nprobe sweep).

Datasets
  fashion-mnist    Debian's dataset-fashion-mnist, ann-benchmarks split:
                   train (60000 x 784) = base, t10k (10000 x 784) = queries.
  siftlike[:N]     N rows (default 1,000,000) x 128 that look like SIFT
                   descriptors: non-negative integers up to 255, rows of L2
                   norm ~512, a fifth of the values 0, noisy rescaled
                   copies of 20000 sparse,
                   gamma-distributed (heavy-tailed) prototypes of Zipf weights.
  generated[:N]    N rows (default 1,000,000) x 768 of synthetic embeddings:
                   a few thousand overlapping clusters of Zipf-distributed size
                   and anisotropic spread comparable to the distance between
                   centres, in a ~100-dim latent space with a decaying spectrum,
                   embedded into 768 dims by a random orthonormal map, plus
                   small full-dimensional noise, normalized to unit length.
                   Queries come from the same distribution (an independent
                   random stream, not copies of base rows).

The generator works in fixed-size chunks whose random streams depend only on
(seed, chunk index), so the first N rows of a larger generated set are exactly
the N-row set: ``generated:200000`` reuses a cached 1M file when one exists.

Everything is cached as .npy under /work/main/.tmp/datasets/ (override with
IVFPQ_DATASETS or --cache-dir). Ground truth: top-100 ids by exact search
(faiss brute force, chunked), per metric l2 | ip | cosine.
"""

import argparse
import gzip
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE_DIR = os.environ.get("IVFPQ_DATASETS", os.path.join(ROOT, ".tmp", "datasets"))
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
GT_K = 100
METRICS = ("l2", "ip", "cosine")

# Generator defaults (see GeneratedParams for meaning).
GEN_N = 1_000_000
GEN_DIM = 768
GEN_SEED = 42
GEN_QUERIES = 10_000
GEN_CHUNK = 50_000


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Fashion-MNIST
# --------------------------------------------------------------------------

def read_idx_images(path):
    """Read a gzipped idx3-ubyte image file into an (n, rows*cols) float32 array."""
    with gzip.open(path, "rb") as f:
        header = f.read(16)
        magic, count, rows, cols = np.frombuffer(header, dtype=">i4")
        if magic != 2051:
            raise ValueError(f"{path}: not an idx3-ubyte image file (magic {magic})")
        pixels = np.frombuffer(f.read(count * rows * cols), dtype=np.uint8)
    if pixels.size != count * rows * cols:
        raise ValueError(f"{path}: truncated ({pixels.size} of {count * rows * cols} bytes)")
    return pixels.reshape(count, rows * cols).astype(np.float32)


def fashion_mnist(cache_dir=CACHE_DIR):
    """Return (base, queries) of Fashion-MNIST as float32, cached as .npy."""
    base_path = os.path.join(cache_dir, "fashion-mnist.base.npy")
    query_path = os.path.join(cache_dir, "fashion-mnist.queries.npy")
    if os.path.exists(base_path) and os.path.exists(query_path):
        return np.load(base_path, mmap_mode="r"), np.load(query_path)
    src = {name: os.path.join(FASHION_DIR, f"{name}-images-idx3-ubyte.gz") for name in ("train", "t10k")}
    for path in src.values():
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} missing: apt-get install dataset-fashion-mnist")
    base, queries = read_idx_images(src["train"]), read_idx_images(src["t10k"])
    try:
        os.makedirs(cache_dir, exist_ok=True)
        _save_npy(base_path, base)
        _save_npy(query_path, queries)
    except OSError as e:  # a read-only cache only costs a re-read next time
        log(f"note: not caching Fashion-MNIST in {cache_dir}: {e}")
    return base, queries


def _save_npy(path, array):
    """Write an array atomically (temp file + rename), so a killed run leaves no half file."""
    tmp = path + ".part.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


# --------------------------------------------------------------------------
# Generated embedding-like data
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class GeneratedParams:
    """Shape of the generated distribution; everything but n fixes the model."""
    dim: int = GEN_DIM
    seed: int = GEN_SEED
    latent_dim: int = 100      # dimension of the subspace holding the structure
    spectrum_decay: float = 0.9  # latent axis i has variance (i+1)^-decay
    centres: int = 3000        # number of clusters
    zipf: float = 1.0          # cluster weight ~ rank^-zipf (shuffled)
    spread: float = 1.2        # cluster radius relative to the centre cloud's radius
    spread_jitter: float = 0.35  # log-normal sigma of per-cluster spread
    anisotropy: float = 0.3    # log-normal sigma of per-cluster axis scales
    noise: float = 0.15        # full-dimensional noise, relative to signal norm

    def tag(self):
        return (f"d{self.dim}-s{self.seed}-l{self.latent_dim}-a{self.spectrum_decay:g}"
                f"-c{self.centres}-z{self.zipf:g}-r{self.spread:g}-j{self.spread_jitter:g}"
                f"-x{self.anisotropy:g}-e{self.noise:g}")


class GeneratedModel:
    """The fixed random model (centres, per-cluster transforms, embedding) for one params set."""

    def __init__(self, p: GeneratedParams):
        self.p = p
        rng = np.random.default_rng([p.seed, 0])
        L = p.latent_dim
        self.scale = ((np.arange(L) + 1.0) ** (-p.spectrum_decay / 2)).astype(np.float32)
        # Centres: a Gaussian cloud shaped by the latent spectrum.
        self.centres = (rng.standard_normal((p.centres, L)) * self.scale).astype(np.float32)
        # Zipf-like cluster sizes, ranks shuffled so size is unrelated to position.
        weights = (np.arange(p.centres) + 1.0) ** (-p.zipf)
        rng.shuffle(weights)
        self.cum_weights = np.cumsum(weights / weights.sum())
        # Per-cluster anisotropy: a random (non-orthogonal) linear map with
        # log-normal per-axis scales; spread jittered per cluster.
        axis = np.exp(rng.normal(0.0, p.anisotropy, size=(p.centres, L)))
        mix = rng.standard_normal((p.centres, L, L)) / math.sqrt(L)
        radius = p.spread * np.exp(rng.normal(0.0, p.spread_jitter, size=p.centres))
        # Normalise so E|transform u|^2 = radius^2 * sum(scale^2), i.e. the
        # cluster's RMS radius is `radius` times the centre cloud's RMS radius.
        self.transforms = np.empty((p.centres, L, L), dtype=np.float32)
        cloud = float(np.sum(self.scale.astype(np.float64) ** 2))
        for k in range(p.centres):
            t = (self.scale[:, None] * mix[k]) * axis[k][None, :]
            t *= radius[k] * math.sqrt(cloud / float(np.sum(t.astype(np.float64) ** 2)))
            self.transforms[k] = t
        # Random orthonormal embedding of the latent space into dim dims.
        q, _ = np.linalg.qr(rng.standard_normal((p.dim, L)))
        self.embed = np.ascontiguousarray(q.T, dtype=np.float32)  # (L, dim)
        # Per-coordinate noise sigma so |noise| ~ noise * typical |signal|.
        signal = math.sqrt(cloud * (1.0 + p.spread ** 2))
        self.noise_sigma = p.noise * signal / math.sqrt(p.dim)

    def sample(self, count, rng):
        """Draw `count` unit-length rows (float32, (count, dim)) from the model."""
        p = self.p
        labels = np.searchsorted(self.cum_weights, rng.random(count), side="right")
        labels = np.minimum(labels, p.centres - 1)
        latent = self.centres[labels].copy()
        u = rng.standard_normal((count, p.latent_dim), dtype=np.float32)
        order = np.argsort(labels, kind="stable")
        bounds = np.flatnonzero(np.diff(labels[order])) + 1
        for group in np.split(order, bounds):
            if group.size:
                k = labels[group[0]]
                latent[group] += u[group] @ self.transforms[k].T
        x = latent @ self.embed
        x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(self.noise_sigma)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x


@dataclass(frozen=True)
class SiftLikeParams:
    """Shape of the SIFT-like set: 128 non-negative integer dimensions, clustered, heavy-tailed."""
    dim: int = 128
    seed: int = 7
    prototypes: int = 20000    # cluster prototypes
    zipf: float = 0.8          # cluster weight ~ rank^-zipf (shuffled)
    sparsity: float = 0.35     # share of a prototype's dimensions that are zero
    shape: float = 0.7         # gamma shape of prototype values (< 1: heavy-tailed)
    jitter: float = 0.6        # log-normal sigma of a row's per-dimension scale around its prototype
    noise: float = 8.0         # mean of the additive exponential noise (on 40% of the dimensions)
    norm: float = 512.0        # rows are scaled to about this L2 norm, as SIFT's are

    def tag(self):
        return (f"sift-d{self.dim}-s{self.seed}-p{self.prototypes}-z{self.zipf:g}-sp{self.sparsity:g}"
                f"-g{self.shape:g}-j{self.jitter:g}-e{self.noise:g}")


class SiftLikeModel:
    """Prototypes of gradient-histogram-like vectors; rows are noisy, rescaled, rounded copies."""

    def __init__(self, p: SiftLikeParams):
        self.p = p
        rng = np.random.default_rng([p.seed, 0])
        proto = rng.gamma(p.shape, 1.0, size=(p.prototypes, p.dim))
        proto[rng.random((p.prototypes, p.dim)) < p.sparsity] = 0.0
        proto /= np.linalg.norm(proto, axis=1, keepdims=True) + 1e-12
        self.prototypes = (proto * p.norm).astype(np.float32)
        weights = (np.arange(p.prototypes) + 1.0) ** (-p.zipf)
        rng.shuffle(weights)
        self.cum_weights = np.cumsum(weights / weights.sum())

    def sample(self, count, rng):
        p = self.p
        labels = np.minimum(np.searchsorted(self.cum_weights, rng.random(count), side="right"),
                            p.prototypes - 1)
        x = self.prototypes[labels] * np.exp(rng.normal(0.0, p.jitter, size=(count, p.dim))).astype(np.float32)
        x += (rng.exponential(p.noise, size=(count, p.dim))
              * (rng.random((count, p.dim)) < 0.4)).astype(np.float32)
        x *= (p.norm / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)).astype(np.float32)
        return np.clip(np.rint(x), 0, 255).astype(np.float32)


def generate(path, n, params, stream, chunk=GEN_CHUNK):
    """Write n rows of the model to path (.npy) chunk by chunk; stream 1 = base, 2 = queries."""
    model = SiftLikeModel(params) if isinstance(params, SiftLikeParams) else GeneratedModel(params)
    tmp = path + ".part.npy"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, params.dim))
    for j, start in enumerate(range(0, n, chunk)):
        stop = min(n, start + chunk)
        rng = np.random.default_rng([params.seed, stream, j])
        rows = model.sample(chunk, rng)  # always a full chunk: prefixes stay identical
        out[start:stop] = rows[: stop - start]
        if j % 4 == 3:
            log(f"  generated {stop}/{n} rows")
    out.flush()
    del out
    os.replace(tmp, path)


def generated(n=GEN_N, params=GeneratedParams(), nqueries=GEN_QUERIES, cache_dir=CACHE_DIR):
    """Return (base, queries) of the generated dataset with n base rows, cached as .npy.

    A cached base file with at least n rows of the same model is reused (its prefix)."""
    os.makedirs(cache_dir, exist_ok=True)
    tag = params.tag()
    prefix = "siftlike" if isinstance(params, SiftLikeParams) else "generated"
    base = None
    for name in sorted(os.listdir(cache_dir)):
        if name.startswith(f"{prefix}-{tag}-n") and name.endswith(".base.npy") and ".part" not in name:
            have = int(name[len(f"{prefix}-{tag}-n"):-len(".base.npy")])
            if have >= n:
                base = np.load(os.path.join(cache_dir, name), mmap_mode="r")[:n]
                break
    if base is None:
        path = os.path.join(cache_dir, f"{prefix}-{tag}-n{n}.base.npy")
        log(f"generating {n} x {params.dim} base rows -> {path}")
        t0 = time.perf_counter()
        generate(path, n, params, stream=1)
        log(f"  base generated in {time.perf_counter() - t0:.1f} s")
        base = np.load(path, mmap_mode="r")
    qpath = os.path.join(cache_dir, f"{prefix}-{tag}-q{nqueries}.queries.npy")
    if not os.path.exists(qpath):
        generate(qpath, nqueries, params, stream=2)
    return base, np.load(qpath)


# --------------------------------------------------------------------------
# Ground truth and the Dataset wrapper
# --------------------------------------------------------------------------

def normalize(x):
    """Return a float32 copy of x with unit-length rows (zero rows stay zero)."""
    x = np.array(x, dtype=np.float32, copy=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1
    x /= norms
    return x


def exact_knn(base, queries, k=GT_K, metric="l2", chunk=200_000):
    """Exact top-k ids (int64, (nq, k)) of queries in base, by brute force in base chunks."""
    import faiss
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if metric == "cosine":
        queries = normalize(queries)
    faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    best_d = best_i = None
    for start in range(0, base.shape[0], chunk):
        block = np.ascontiguousarray(base[start:start + chunk], dtype=np.float32)
        if metric == "cosine":
            block = normalize(block)
        d, i = faiss.knn(queries, block, min(k, block.shape[0]), metric=faiss_metric)
        if metric != "l2":
            d = -d  # smaller is better from here on
        i = i + start
        if best_d is None:
            best_d, best_i = d, i
        else:
            best_d = np.hstack([best_d, d])
            best_i = np.hstack([best_i, i])
            # Stable sort keeps the lower id first on ties, like a scan in id order.
            order = np.argsort(best_d, axis=1, kind="stable")[:, :k]
            best_d = np.take_along_axis(best_d, order, axis=1)
            best_i = np.take_along_axis(best_i, order, axis=1)
    return best_i.astype(np.int64)


@dataclass
class Dataset:
    """A base set, a query set and cached exact ground truth per metric."""
    name: str
    base: np.ndarray
    queries: np.ndarray
    cache_dir: str = CACHE_DIR
    _gt: dict = field(default_factory=dict)

    @property
    def dim(self):
        return self.base.shape[1]

    def limit(self, base_limit=None, nqueries=None):
        """Return a dataset restricted to the first base_limit rows / nqueries queries."""
        base, queries, name = self.base, self.queries, self.name
        if base_limit and base_limit < base.shape[0]:
            base = base[:base_limit]
            name = f"{self.name.split(':')[0]}:{base_limit}"
        if nqueries and nqueries < queries.shape[0]:
            queries = queries[:nqueries]
        return Dataset(name, base, queries, self.cache_dir)

    def ground_truth(self, metric="l2"):
        """Exact top-100 ids for every query, computed once and cached as .npy."""
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
        if metric not in self._gt:
            safe = self.name.replace(":", "-")
            path = os.path.join(self.cache_dir,
                                f"{safe}.n{self.base.shape[0]}.q{self.queries.shape[0]}.gt-{metric}.npy")
            if not os.path.exists(path):
                path = self._cached_gt_prefix(safe, metric) or path
            if not os.path.exists(path):
                log(f"computing exact {metric} ground truth for {self.name} "
                    f"({self.base.shape[0]} x {self.queries.shape[0]} queries)")
                t0 = time.perf_counter()
                gt = exact_knn(self.base, self.queries, GT_K, metric)
                log(f"  ground truth in {time.perf_counter() - t0:.1f} s")
                os.makedirs(self.cache_dir, exist_ok=True)
                _save_npy(path, gt)
            self._gt[metric] = np.load(path)[: self.queries.shape[0]]
        return self._gt[metric]

    def _cached_gt_prefix(self, safe, metric):
        """A cached ground truth for the same base and more queries (queries are prefixes)."""
        head = f"{safe}.n{self.base.shape[0]}.q"
        tail = f".gt-{metric}.npy"
        if not os.path.isdir(self.cache_dir):
            return None
        for name in os.listdir(self.cache_dir):
            if name.startswith(head) and name.endswith(tail) and ".part" not in name:
                if int(name[len(head):-len(tail)]) >= self.queries.shape[0]:
                    return os.path.join(self.cache_dir, name)
        return None


def load(spec, cache_dir=CACHE_DIR, params=None):
    """Load a dataset by spec: 'fashion-mnist', 'generated[:N]' or 'siftlike[:N]'."""
    name, _, arg = spec.partition(":")
    if name == "fashion-mnist":
        base, queries = fashion_mnist(cache_dir)
        ds = Dataset("fashion-mnist", base, queries, cache_dir)
        return ds.limit(int(arg)) if arg else ds
    if name == "generated":
        n = int(float(arg)) if arg else GEN_N
        params = params or GeneratedParams()
        base, queries = generated(n, params, cache_dir=cache_dir)
        label = "generated" if n == GEN_N else f"generated:{n}"
        if params != GeneratedParams():
            label += f"[{params.tag()}]"
        return Dataset(label, base, queries, cache_dir)
    if name == "siftlike":
        n = int(float(arg)) if arg else GEN_N
        base, queries = generated(n, SiftLikeParams(), cache_dir=cache_dir)
        return Dataset("siftlike" if n == GEN_N else f"siftlike:{n}", base, queries, cache_dir)
    raise ValueError(f"unknown dataset {spec!r}; expected fashion-mnist, generated[:N] or siftlike[:N]")


def recall_at(found, truth, k=10):
    """Mean recall@k: |found[:k] & truth[:k]| / k over the queries (lists or arrays)."""
    hits = 0
    for f, t in zip(found, truth):
        hits += len(set(int(x) for x in f[:k]) & set(int(x) for x in t[:k]))
    return hits / (k * len(truth))


# --------------------------------------------------------------------------
# IVF difficulty check
# --------------------------------------------------------------------------

def check_ivf(ds, lists=1000, subset=200_000, nqueries=1000, nprobes=(1, 2, 4, 8, 16, 32, 64, 128, 256),
              metric="l2", threads=None):
    """Recall@10 of FAISS IndexIVFFlat over an nprobe sweep on the first `subset` rows."""
    import faiss
    if threads:
        faiss.omp_set_num_threads(threads)
    sub = ds.limit(subset, nqueries)
    base = np.ascontiguousarray(sub.base, dtype=np.float32)
    queries = np.ascontiguousarray(sub.queries, dtype=np.float32)
    if metric == "cosine":
        base, queries = normalize(base), normalize(queries)
    gt = sub.ground_truth(metric)
    faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    quantizer = faiss.IndexFlat(sub.dim, faiss_metric)
    index = faiss.IndexIVFFlat(quantizer, sub.dim, lists, faiss_metric)
    t0 = time.perf_counter()
    index.train(base)
    index.add(base)
    build = time.perf_counter() - t0
    sizes = np.array([index.invlists.list_size(i) for i in range(lists)])
    rows = []
    for nprobe in nprobes:
        if nprobe > lists:
            break
        index.nprobe = nprobe
        _, ids = index.search(queries, 10)
        rows.append({"nprobe": nprobe, "recall@10": recall_at(ids, gt)})
    return {"dataset": sub.name, "rows": base.shape[0], "queries": queries.shape[0], "lists": lists,
            "build_s": build, "list_size_min": int(sizes.min()), "list_size_max": int(sizes.max()),
            "list_size_median": float(np.median(sizes)), "sweep": rows}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", help="fashion-mnist | generated[:N]")
    ap.add_argument("--cache-dir", default=CACHE_DIR, help="cache directory (default %(default)s)")
    ap.add_argument("--ground-truth", default="l2",
                    help="comma-separated metrics to compute ground truth for (l2,ip,cosine; '' = none)")
    ap.add_argument("--check-ivf", action="store_true",
                    help="measure IndexIVFFlat recall@10 over an nprobe sweep on a subset")
    ap.add_argument("--subset", type=int, default=200_000, help="rows for --check-ivf (default %(default)s)")
    ap.add_argument("--lists", type=int, default=1000, help="IVF lists for --check-ivf (default %(default)s)")
    ap.add_argument("--nqueries", type=int, default=1000, help="queries for --check-ivf (default %(default)s)")
    ap.add_argument("--nprobes", default="1,2,4,8,16,32,64,128,256",
                    help="comma-separated nprobe values for --check-ivf (default %(default)s)")
    for f in GeneratedParams.__dataclass_fields__.values():
        ap.add_argument("--gen-" + f.name.replace("_", "-"), type=type(f.default), default=f.default,
                        help=f"generator parameter (default {f.default})")
    args = ap.parse_args()

    params = GeneratedParams(**{f: getattr(args, "gen_" + f) for f in GeneratedParams.__dataclass_fields__})
    t0 = time.perf_counter()
    ds = load(args.dataset, args.cache_dir, params)
    print(f"{ds.name}: base {ds.base.shape}, queries {ds.queries.shape} "
          f"(ready in {time.perf_counter() - t0:.1f} s)")
    for metric in filter(None, args.ground_truth.split(",")):
        t0 = time.perf_counter()
        gt = ds.ground_truth(metric)
        print(f"ground truth {metric}: {gt.shape} (ready in {time.perf_counter() - t0:.1f} s)")
    if args.check_ivf:
        res = check_ivf(ds, args.lists, args.subset, args.nqueries, [int(x) for x in args.nprobes.split(",") if x])
        print(f"IndexIVFFlat on {res['dataset']} ({res['rows']} rows, {res['queries']} queries), "
              f"lists={res['lists']}: train+add {res['build_s']:.1f} s; list sizes "
              f"min {res['list_size_min']} / median {res['list_size_median']:.0f} / max {res['list_size_max']}")
        for row in res["sweep"]:
            print(f"  nprobe {row['nprobe']:4d}  recall@10 {row['recall@10']:.3f}")


if __name__ == "__main__":
    main()
