#!/usr/bin/env bash
# A Ray cluster of several nodes on this machine (`ec2er cluster`, ec2er/cluster.py): a head and
# worker nodes carrying the resource `ec2er_worker` (as GPU nodes carry GPUs on a real cluster),
# optionally with Ray's fake autoscaler adding worker nodes as work asks for them. For
# `ray job submit` exactly as on a real cluster, and to see what ec2er does when a node is lost:
#   cluster/local-cluster.sh start                  # head + 2 worker nodes; prints RAY_ADDRESS and the job address
#   cluster/local-cluster.sh start --workers 0 --autoscale 3 --dashboard-port 8265
#   RAY_ADDRESS=http://127.0.0.1:<port> .venv/bin/ray job submit --working-dir . -- python jobs/run.py \
#       --config pipelines/run-tiny-random.yaml --output /tmp/ec2er-runs/tiny \
#       --set 'ray.worker_resources={ec2er_worker: 0.5}' --set 'ray.shared_storage=[/tmp/ec2er-runs]'
#   cluster/local-cluster.sh status                 # the live nodes
#   cluster/local-cluster.sh kill-node NODE_ID      # a spot loss: every process of the node, SIGKILL
#   cluster/local-cluster.sh add-node               # a replacement, as an autoscaler would add
#   cluster/local-cluster.sh stop                   # stops the processes `start` recorded in $DIR/cluster.json, and
#                                                   # what they started; nothing else (never `ray stop`)
# Uses the repository's .venv (make venv); the cluster lives in $EC2ER_CLUSTER_DIR (default /tmp/ec2er-cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
EC2ER=.venv/bin/ec2er
DIR=${EC2ER_CLUSTER_DIR:-/tmp/ec2er-cluster}
command=${1:-}
shift || true
case "$command" in
  start) exec "$EC2ER" cluster up --dir "$DIR" "$@" ;;
  stop) exec "$EC2ER" cluster down --dir "$DIR" "$@" ;;
  status|add-node|kill-node) exec "$EC2ER" cluster "$command" --dir "$DIR" "$@" ;;
  *)
    echo "usage: $0 start [--workers N] [--autoscale MAX] [--dashboard-port P] | status | add-node | kill-node NODE_ID | stop" >&2
    exit 2
    ;;
esac
