"""Entry point for ``ray job submit``: the evaluation stage, on the cluster the job runs in.

    ray job submit --working-dir . -- python jobs/evaluate.py --config pipelines/eval-full.yaml
"""

import sys

from ec2er.cli import main

if __name__ == "__main__":  # vLLM engines start in this process tree: guard required
    sys.exit(main(["evaluate", *sys.argv[1:]]))
