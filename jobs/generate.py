"""Entrypoint for ``ray job submit --working-dir . -- python jobs/generate.py --config pipelines/mads.yaml --output DIR``.

Joins the cluster the job runs on (RAY_ADDRESS) and runs the same code, with the same arguments,
as ``ec2er generate``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the uploaded working dir first

from ec2er.cli import job_main  # noqa: E402

if __name__ == "__main__":  # vLLM engines start in this process tree: guard required
    sys.exit(job_main(["generate"], sys.argv[1:]))
