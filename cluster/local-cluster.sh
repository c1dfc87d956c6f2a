#!/usr/bin/env bash
# A Ray cluster on this machine, for `ray job submit` exactly as on a real one:
#   cluster/local-cluster.sh start      # head with 4 logical CPUs, dashboard on 127.0.0.1:8265
#   RAY_ADDRESS=http://127.0.0.1:8265 ray job submit --working-dir . -- python jobs/run.py \
#       --config pipelines/run-tiny.yaml --output /tmp/ec2er-runs/demo
#   cluster/local-cluster.sh stop
# Uses the repository's .venv (make venv). Logical CPUs exceed the cores on purpose: engine
# actors mostly wait on vLLM's own threads, and Ray Data's checkpoint filter asks a whole CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
RAY=.venv/bin/ray
TEMP=${EC2ER_RAY_TEMP:-/tmp/ec2er-ray}
case "${1:-}" in
  start)
    "$RAY" start --head --num-cpus="${EC2ER_RAY_CPUS:-4}" --temp-dir="$TEMP" --include-dashboard=true \
      --dashboard-host=127.0.0.1 --dashboard-port="${EC2ER_RAY_DASHBOARD_PORT:-8265}" --disable-usage-stats
    echo "submit with: RAY_ADDRESS=http://127.0.0.1:${EC2ER_RAY_DASHBOARD_PORT:-8265} $RAY job submit --working-dir . -- python jobs/run.py ..."
    ;;
  stop)
    "$RAY" stop
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
