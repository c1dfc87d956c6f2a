"""Entrypoint for ``ray job submit --working-dir . -- python jobs/train.py --config pipelines/train-qwen2.5-7b.yaml --data DIR --output DIR``.

Joins the cluster the job runs on (RAY_ADDRESS) and runs the same code, with the same arguments,
as ``ec2er train``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the uploaded working dir first

from ec2er.cli import job_main  # noqa: E402

if __name__ == "__main__":  # Ray Train workers are started from this process: keep the guard
    sys.exit(job_main(["train"], sys.argv[1:]))
