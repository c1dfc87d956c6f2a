"""Entrypoint for ``ray job submit --working-dir . -- python jobs/generate.py --config pipelines/mads.yaml --output DIR``.

Joins the cluster the job runs on (RAY_ADDRESS) and runs the same code as ``ec2er generate``.
"""

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the uploaded working dir

from ec2er.cli import main  # noqa: E402

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--output", default="runs/generate")
    args, rest = parser.parse_known_args()
    sys.exit(main(["generate", "--config", args.config, "--output", args.output, *rest]))
