"""Entrypoint for ``ray job submit --working-dir . -- python jobs/curate.py --input GEN --output OUT [--benchmark B]``.

Same arguments and the same one-line errors as ``ec2er curate``; on a cluster the near-duplicate
signatures and buckets run on Ray Data (``dedup.backend=ray``, which a later ``--set`` may undo).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the uploaded working dir first

from ec2er.cli import job_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(job_main(["curate", "--set", "dedup.backend=ray"], sys.argv[1:]))
