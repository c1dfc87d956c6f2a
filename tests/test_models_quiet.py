"""Preparing an embedded model prints its path and nothing else: the libraries' progress bars
and advice during its build go to a log file (a stage's logs/, else beside the cache's folders)."""

from __future__ import annotations

from ec2er import console
from ec2er.cli import main


def test_prepare_prints_only_its_path_and_the_build_output_goes_to_a_log(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("EC2ER_CACHE_DIR", str(tmp_path))
    # the suite runs many tests in one process: forget any stage's log folder an earlier one set,
    # as a fresh `ec2er models prepare` process would have none
    monkeypatch.setitem(console._settings, "log_dir", None)
    monkeypatch.setitem(console._settings, "verbose", False)
    assert main(["models", "prepare", "tiny-random-llama"]) == 0
    out, err = capfd.readouterr()
    assert (out, err) == (f"{tmp_path / 'tiny-random-llama'}\n", "")
    build_log = tmp_path / "tiny-random-llama.prepare.log"
    assert build_log.is_file() and build_log.stat().st_size > 0
