"""A Parquet read on a small cluster starts as many footer-reading actors as the cluster's size
warrants (``ec2er.ray_utils.parquet_footer_readers``), not Ray Data 2.60's fixed 32 Python
processes, which cost our 2-core machine over a minute of CPU per read."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq

from ec2er.ray_utils import FOOTER_READERS_ENV, parquet_footer_readers


def test_the_pool_grows_with_the_cluster_from_1_to_32() -> None:
    assert [parquet_footer_readers(c) for c in (1, 4, 15, 16, 64, 256, 4096)] == [1, 1, 1, 2, 8, 32, 32]


def _footer_readers_ever_started() -> int:
    # the GCS's own actor table (the suite's local Ray has no dashboard for ray.util.state)
    from ray._private.state import state

    return sum(a.get("ActorClassName") == "FooterReader" for a in state.actor_table(None).values())


def test_a_read_on_this_machine_starts_one_footer_reader(ray_local, tmp_path) -> None:
    before = _footer_readers_ever_started()
    for k in range(3):
        pq.write_table(pa.table({"x": list(range(k * 10, k * 10 + 10))}), tmp_path / f"part-{k}.parquet")
    assert sorted(ray_local.data.read_parquet(str(tmp_path)).to_pandas()["x"]) == list(range(30))
    started = _footer_readers_ever_started() - before
    assert os.environ[FOOTER_READERS_ENV] == "1" and started == 1, started
