"""Curation as a Ray job: ``ray job submit -- python jobs/curate.py --input GEN --output OUT ...``.

Same arguments as ``ec2er curate``; near-duplicate signatures and buckets run on Ray Data.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ec2er.curation.cli import add_arguments, run
from ec2er.ray_utils import init_ray

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args()
    args.set.append("dedup.backend=ray")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    init_ray()
    sys.exit(run(args))
