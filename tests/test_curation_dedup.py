"""Near-duplicate removal: blocking finds what all-pairs rapidfuzz finds; Ray and local agree."""

from __future__ import annotations

import random

import numpy as np
import pytest
from rapidfuzz import fuzz, process

from ec2er.curation.config import DedupConfig
from ec2er.curation.dedup import (
    band_keys,
    candidate_pairs_local,
    candidate_pairs_ray,
    choose_representatives,
    deduplicate,
    normalize,
)


def corpus(n: int, seed: int = 0) -> tuple[list[str], list[tuple[int, int]]]:
    """Random-word texts; every 10th is a lightly edited copy of an earlier one."""
    rng = random.Random(seed)
    vocab = [f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "pe", "ri", "so", "tu") for b in range(60)]
    texts, planted = [], []
    for i in range(n):
        if i % 10 == 9:
            src = rng.randrange(i)
            words = texts[src].split()
            for _ in range(3):
                words[rng.randrange(len(words))] = rng.choice(vocab)
            texts.append(" ".join(words).upper() + "!")
            planted.append((src, i))
        else:
            texts.append(" ".join(rng.choice(vocab) for _ in range(rng.randint(40, 90))))
    return texts, planted


def test_matches_all_pairs_rapidfuzz() -> None:
    texts, planted = corpus(600)
    cfg = DedupConfig()
    result = deduplicate(texts, cfg)
    norm = [normalize(t) for t in texts]
    sim = process.cdist(norm, norm, scorer=fuzz.ratio, score_cutoff=cfg.threshold * 100)
    truth = np.argwhere(np.triu(sim, k=1) > 0)
    assert len(truth) >= len(planted)
    assert all(result.labels[a] == result.labels[b] for a, b in truth)  # recall 1.0 vs all pairs
    assert result.verified == len(truth)  # nothing below the threshold is merged
    assert (~result.keep).sum() == len({b for _, b in planted})
    for label in set(result.labels.tolist()):  # the first item of a cluster is kept by default
        members = np.nonzero(result.labels == label)[0]
        assert result.keep[members].tolist() == [True] + [False] * (len(members) - 1)


def test_representative_prefers_valid_items() -> None:
    labels = np.array([0, 0, 0, 1, 2, 2])
    preferred = np.array([False, True, True, False, False, False])
    assert choose_representatives(labels, preferred).tolist() == [1, 1, 1, 3, 4, 4]


def test_cjk_texts_and_empty_texts() -> None:
    a = "她把外婆留下的旧钢琴搬进了新家，每天晚上都弹一首小时候学的曲子，邻居们常常站在门口听。"
    b = a.replace("每天晚上", "每天傍晚")
    c = "他在火车站等了三个小时，最后发现自己记错了日期，只好一个人去附近的面馆吃了一碗面。"
    result = deduplicate([a, b, c, "", ""], DedupConfig())
    assert result.keep.tolist() == [True, False, True, True, True]
    assert (band_keys([""], DedupConfig()) == 0).all()


@pytest.mark.slow
def test_ray_data_path_matches_local(ray_local) -> None:
    texts, _ = corpus(300, seed=2)
    norm = [normalize(t) for t in texts]
    cfg = DedupConfig(batch_size=100, bands=6)  # few bands: few shuffle partitions on 2 cores
    local = candidate_pairs_local(norm, cfg)
    on_ray = candidate_pairs_ray(norm, cfg.model_copy(update={"backend": "ray"}))
    assert len(local) > 0
    assert np.array_equal(local, on_ray)
