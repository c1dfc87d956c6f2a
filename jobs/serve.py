"""Entry point for ``ray job submit``: the serving stage, on the cluster the job runs in.

    ray job submit --working-dir . -- python jobs/serve.py --config serve/gpu.yaml

Runs ``ec2er serve`` with the same arguments: the application stays up until the job is stopped
(``ray job stop`` sends SIGTERM; the application is then deleted and its engines shut down).
For a long-lived service, prefer ``serve deploy serve/serve-app.yaml`` or
cluster/kuberay/rayservice.yaml.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the uploaded working dir first

from ec2er.cli import job_main  # noqa: E402

if __name__ == "__main__":  # vLLM engines start in this process tree: guard required
    sys.exit(job_main(["serve"], sys.argv[1:]))
