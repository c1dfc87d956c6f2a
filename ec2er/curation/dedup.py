"""Near-duplicate scenarios at scale: MinHash LSH blocking, rapidfuzz verification, components.

All-pairs rapidfuzz is O(n^2) (10^12 comparisons for a million scenarios). Instead:
1. every scenario becomes a MinHash signature of its word n-grams, computed for a whole batch at
   once with numpy (one vectorized pass per hash function, ``np.minimum.reduceat`` per document);
2. signatures are cut into bands; scenarios sharing a band value are candidates (sort-based
   buckets; each item is paired with the next ``window`` items of its bucket, so a huge bucket of
   boilerplate costs O(n * window), not O(n^2));
3. candidates are verified with rapidfuzz's Indel ratio (``process.cpdist``, C++, multi-threaded),
   the similarity the threshold is stated in;
4. verified pairs form a graph whose connected components (scipy) are the clusters; one item per
   cluster is kept.

The same functions serve the in-process path (small data, tests) and the Ray Data path (signatures
with ``map_batches``, candidate pairs with ``groupby("band").map_groups``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from rapidfuzz import fuzz, process
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ec2er.curation.config import DedupConfig

log = logging.getLogger(__name__)

# A CJK character is one token (Chinese has no spaces); otherwise runs of letters/digits.
TOKEN_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+")
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant (golden ratio) to combine hashes
_EMPTY = np.iinfo(np.uint64).max


def tokenize(text: str) -> list[str]:
    return TOKEN_RE.findall(text.lower())


def normalize(text: str) -> str:
    """Lower-cased tokens joined by spaces: what similarities are computed on (punctuation,
    case and spacing differences are not what makes two scenarios different)."""
    return " ".join(tokenize(text))


def _hash_functions(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=n, dtype=np.uint64) * np.uint64(2) + np.uint64(1)  # odd: a bijection
    b = rng.integers(0, 2**63, size=n, dtype=np.uint64)
    return a, b


def shingle_hashes(normalized: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every word k-gram of ``normalize``d texts (documents shorter than k give
    one shingle of all their words), and the document each shingle belongs to."""
    toks = [t.split() for t in normalized]
    lengths = np.fromiter(map(len, toks), dtype=np.int64, count=len(toks))
    flat = [w for ts in toks for w in ts]
    if not flat:
        return np.empty(0, np.uint64), np.empty(0, np.int64)
    h = pd.util.hash_array(np.asarray(flat, dtype=object))  # SipHash in C, one call per batch
    doc = np.repeat(np.arange(len(normalized)), lengths)
    end = np.cumsum(lengths)[doc]
    pos = np.arange(len(h))
    shingle = h.copy()
    with np.errstate(over="ignore"):
        for j in range(1, k):
            nxt = np.where(pos + j < end, np.roll(h, -j), np.uint64(0))
            shingle = shingle * _MIX + nxt
    start = end - lengths[doc]
    keep = (pos + k <= end) | ((lengths[doc] < k) & (pos == start))
    return shingle[keep], doc[keep]


def minhash_signatures(texts: Sequence[str], cfg: DedupConfig) -> np.ndarray:
    """(n, bands * rows_per_band) uint64 MinHash signatures of ``normalize``d texts; rows of empty
    texts are all-max."""
    n_hashes = cfg.bands * cfg.rows_per_band
    sig = np.full((len(texts), n_hashes), _EMPTY, dtype=np.uint64)
    shingles, doc = shingle_hashes(texts, cfg.shingle_words)
    if len(shingles) == 0:
        return sig
    present, starts = np.unique(doc, return_index=True)  # doc is sorted: segment starts
    a, b = _hash_functions(n_hashes, cfg.seed)
    with np.errstate(over="ignore"):
        for i in range(n_hashes):
            sig[present, i] = np.minimum.reduceat(shingles * a[i] + b[i], starts)
    return sig


def band_keys(texts: Sequence[str], cfg: DedupConfig) -> np.ndarray:
    """(n, bands) uint64: one hash per band of MinHash rows of ``normalize``d texts (sharing a key
    in any band makes two texts candidates). Empty texts get key 0 in every band
    and are never paired (see ``band_pairs``)."""
    sig = minhash_signatures(texts, cfg).reshape(len(texts), cfg.bands, cfg.rows_per_band)
    keys = np.zeros((len(texts), cfg.bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for r in range(cfg.rows_per_band):
            keys = keys * _MIX + sig[:, :, r]
    keys[sig[:, 0, 0] == _EMPTY] = 0
    return keys


def band_pairs(keys: np.ndarray, rows: np.ndarray, window: int, max_bucket: int) -> np.ndarray:
    """Candidate pairs (m, 2) of ``rows`` sharing a key in one band: after a sort by key, each
    row is paired with the next ``window`` rows of the same bucket. Buckets larger than
    ``max_bucket`` are skipped: a key shared by that many texts is made of boilerplate shingles
    (frequent word pairs), and a true near-duplicate pair also meets in other bands, where its
    minima are rarer. Without this, such buckets grow with the corpus and so does the work per item."""
    order = np.argsort(keys, kind="stable")
    k, r = keys[order], rows[order]
    run = np.concatenate([[0], np.cumsum(k[1:] != k[:-1])]) if len(k) else np.empty(0, np.int64)
    small = np.bincount(run)[run] <= max_bucket if len(k) else np.empty(0, bool)
    out = []
    for d in range(1, min(window, len(k) - 1) + 1):
        same = (k[:-d] == k[d:]) & (k[d:] != 0) & small[d:]
        out.append(np.stack([r[:-d][same], r[d:][same]], axis=1))
    return np.concatenate(out) if out else np.empty((0, 2), dtype=rows.dtype)


def unique_pairs(pairs: np.ndarray) -> np.ndarray:
    if len(pairs) == 0:
        return pairs.reshape(0, 2).astype(np.int64)
    pairs = np.sort(pairs.astype(np.int64), axis=1)
    n = int(pairs.max()) + 1  # one int64 code per pair: a 1-D unique is much faster than axis=0
    codes = np.unique(pairs[:, 0] * n + pairs[:, 1])
    return np.stack([codes // n, codes % n], axis=1)


def verify_pairs(normalized: Sequence[str], pairs: np.ndarray, threshold: float,
                 workers: int = -1) -> np.ndarray:
    """Keep the candidate pairs whose rapidfuzz ratio reaches ``threshold`` (0-1)."""
    if len(pairs) == 0:
        return pairs
    cutoff = threshold * 100
    scores = process.cpdist([normalized[i] for i in pairs[:, 0]], [normalized[j] for j in pairs[:, 1]],
                            scorer=fuzz.ratio, score_cutoff=cutoff, workers=workers)
    return pairs[scores >= cutoff]


def cluster_labels(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected components of the verified-pair graph (scipy's C union-find, not a Python loop)."""
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


@dataclass
class DedupResult:
    labels: np.ndarray        # cluster id per item
    keep: np.ndarray          # bool per item: the cluster's representative
    representative: np.ndarray  # index of the kept item of each item's cluster
    candidates: int
    verified: int
    seconds: dict[str, float]  # per phase: normalize, candidates, verify, cluster

    @property
    def clusters_with_duplicates(self) -> int:
        return int(np.sum(np.bincount(self.labels) > 1))


def choose_representatives(labels: np.ndarray, preferred: np.ndarray | None) -> np.ndarray:
    """Per cluster, the first preferred item (e.g. one that passed validation), else the first."""
    n = len(labels)
    preferred = np.ones(n, bool) if preferred is None else preferred
    order = np.lexsort((np.arange(n), ~preferred, labels))
    first = np.ones(n, bool)
    first[1:] = labels[order][1:] != labels[order][:-1]
    rep_of_label = np.empty(labels.max() + 1 if n else 0, dtype=np.int64)
    rep_of_label[labels[order][first]] = order[first]
    return rep_of_label[labels]


def candidate_pairs_local(texts: Sequence[str], cfg: DedupConfig) -> np.ndarray:
    keys = np.concatenate([band_keys(texts[i:i + cfg.batch_size], cfg)
                           for i in range(0, len(texts), cfg.batch_size)]) if len(texts) else \
        np.zeros((0, cfg.bands), np.uint64)
    rows = np.arange(len(texts))
    return unique_pairs(np.concatenate([band_pairs(keys[:, b], rows, cfg.window, cfg.max_bucket) for b in range(cfg.bands)]))


def candidate_pairs_ray(texts: Sequence[str], cfg: DedupConfig) -> np.ndarray:
    """Signatures with Ray Data ``map_batches``; buckets with ``groupby("band").map_groups``."""
    import ray.data

    def signature_rows(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keys = band_keys(list(batch["text"]), cfg)
        n = len(keys)
        return {"band": np.tile(np.arange(cfg.bands), n), "key": keys.reshape(-1),
                "row": np.repeat(batch["row"], cfg.bands)}

    def pairs_of_band(group: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        p = band_pairs(group["key"], group["row"], cfg.window, cfg.max_bucket)
        return {"a": p[:, 0], "b": p[:, 1]}

    ds = ray.data.from_pandas(pd.DataFrame({"row": np.arange(len(texts)), "text": list(texts)}))
    pairs = (ds.map_batches(signature_rows, batch_size=cfg.batch_size, batch_format="numpy", num_cpus=0.5)
               .groupby("band", num_partitions=cfg.bands)  # one shuffle partition per band
               .map_groups(pairs_of_band, batch_format="numpy", num_cpus=0.5)
               .to_pandas())
    if pairs.empty:
        return np.empty((0, 2), np.int64)
    return unique_pairs(pairs[["a", "b"]].to_numpy())


class _Clock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, phase: str, fn):  # noqa: ANN001, ANN204
        t0 = time.perf_counter()
        out = fn()
        self.seconds[phase] = round(time.perf_counter() - t0, 3)
        return out


def deduplicate(texts: Sequence[str], cfg: DedupConfig, preferred: np.ndarray | None = None,
                workers: int = -1) -> DedupResult:
    """Cluster near-duplicate texts; ``keep`` marks one item per cluster."""
    clock = _Clock()
    normalized = clock("normalize", lambda: [normalize(t) for t in texts])
    find = candidate_pairs_ray if cfg.backend == "ray" else candidate_pairs_local
    candidates = clock("candidates", lambda: find(normalized, cfg))
    verified = clock("verify", lambda: verify_pairs(normalized, candidates, cfg.threshold, workers))
    labels = clock("cluster", lambda: cluster_labels(len(texts), verified)) if texts else np.empty(0, np.int64)
    rep = choose_representatives(labels, preferred) if len(texts) else np.empty(0, np.int64)
    log.info("dedup: %d items, %d candidate pairs, %d verified", len(texts), len(candidates), len(verified))
    return DedupResult(labels=labels, keep=rep == np.arange(len(texts)), representative=rep,
                       candidates=len(candidates), verified=len(verified), seconds=clock.seconds)
