"""Preparing an embedded model prints its path and nothing else: the libraries' progress bars
and advice during its build go to a log file (a stage's logs/, else beside the cache's folders)."""

from __future__ import annotations

from ec2er.cli import main


def test_prepare_prints_only_its_path_and_the_build_output_goes_to_a_log(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("EC2ER_CACHE_DIR", str(tmp_path))
    assert main(["models", "prepare", "tiny-random-llama"]) == 0
    out, err = capfd.readouterr()
    assert (out, err) == (f"{tmp_path / 'tiny-random-llama'}\n", "")
    # the build's own output went to a log: beside the cache's folders, or into the logs of a stage
    # an earlier test of this process left as the console's (the suite runs many in one process)
    from ec2er import console

    beside = tmp_path / "tiny-random-llama.prepare.log"
    assert beside.is_file() or console.output_log() is not None
