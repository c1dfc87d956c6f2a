"""Entrypoint for ``ray job submit --working-dir . -- python jobs/evaluate.py --config pipelines/eval-full.yaml [--output DIR]``.

Same arguments and the same one-line errors as ``ec2er evaluate``, on the cluster the job runs in.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the uploaded working dir first

from ec2er.cli import job_main  # noqa: E402

if __name__ == "__main__":  # vLLM engines start in this process tree: guard required
    sys.exit(job_main(["evaluate"], sys.argv[1:]))
