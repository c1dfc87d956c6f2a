"""The fake autoscaler's node provider for ``ec2er cluster`` (``ec2er.cluster``): the autoscaler
(Ray's monitor process on the head) imports it by name from the cluster's config. Kept apart from
``ec2er.cluster`` so that the command line does not import Ray's autoscaler to start."""

from __future__ import annotations

import json

from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider

from ec2er.cluster import node_dir


class OwnDiskFakeProvider(FakeMultiNodeProvider):
    """Ray's fake multi-node provider (``fake_multinode``), except that each node it starts gets
    a Ray folder of its own (``node_dir``), and the config's ``gcs_address``. Its node start is
    Ray 2.60's ``FakeMultiNodeProvider._create_node_with_resources_and_labels`` with ``temp_dir``
    added: that method builds the node's parameters inline, so there is nothing smaller to change."""

    def non_terminated_nodes(self, tag_filters):
        """As a cloud provider reports a preempted instance gone: a node whose raylet died (a spot
        loss, ``kill-node``) is terminated here (its leftover processes too), so the autoscaler
        stops counting it and starts a replacement. Ray's fake provider keeps it forever, and the
        autoscaler then believes it still has the node, uninitialized."""
        from ray._private import ray_constants

        with self.lock:
            for node_id, entry in list(self._nodes.items()):
                node = entry.get("node")  # the head has none
                if node is not None and any(kind == ray_constants.PROCESS_TYPE_RAYLET
                                            for kind, _ in node.dead_processes()):
                    del self._nodes[node_id]
                    node.kill_all_processes(check_alive=False, allow_graceful=False)
        return super().non_terminated_nodes(tag_filters)

    def _create_node_with_resources_and_labels(self, node_config, tags, count, resources, labels):
        import copy

        import ray._private.node
        from ray._private import ray_constants
        from ray._private.parameter import RayParams
        from ray.autoscaler.tags import (
            NODE_KIND_WORKER,
            STATUS_UP_TO_DATE,
            TAG_RAY_NODE_KIND,
            TAG_RAY_NODE_NAME,
            TAG_RAY_NODE_STATUS,
            TAG_RAY_USER_NODE_TYPE,
        )

        resources = copy.deepcopy(resources)
        with self.lock:
            node_type = tags[TAG_RAY_USER_NODE_TYPE]
            next_id = self._next_hex_node_id()
            params = RayParams(
                min_worker_port=0, max_worker_port=0, dashboard_port=None, dashboard_agent_listen_port=0,
                num_cpus=resources.pop("CPU", 0), num_gpus=resources.pop("GPU", 0),
                object_store_memory=resources.pop("object_store_memory", None), resources=resources,
                labels=labels, redis_address=self._gcs_address, gcs_address=self._gcs_address,
                temp_dir=str(node_dir(self.provider_config["root"], next_id[-5:])),
                env_vars={"RAY_OVERRIDE_NODE_ID_FOR_TESTING": next_id, "RAY_CLOUD_INSTANCE_ID": next_id,
                          "RAY_NODE_TYPE_NAME": node_type,
                          ray_constants.RESOURCES_ENVIRONMENT_VARIABLE: json.dumps(resources),
                          ray_constants.LABELS_ENVIRONMENT_VARIABLE: json.dumps(labels)})
            node = ray._private.node.Node(params, head=False, shutdown_at_exit=False, spawn_reaper=False)
            self._nodes[next_id] = {"tags": {TAG_RAY_NODE_KIND: NODE_KIND_WORKER, TAG_RAY_USER_NODE_TYPE: node_type,
                                             TAG_RAY_NODE_NAME: next_id, TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE,
                                             **tags},
                                    "node": node}
