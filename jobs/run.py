"""Entrypoint for ``ray job submit --working-dir . -- python jobs/run.py --config pipelines/run-tiny.yaml --output DIR``.

The whole chain (generate, curate, train, serve, evaluate) as one job; same arguments as ``ec2er run``
(``--debug`` anywhere for tracebacks).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the uploaded working dir first

from ec2er.cli import job_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(job_main(["run"], sys.argv[1:]))
