"""The engine experiment's guest plan: which snapshots go by hot load and which as modules."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.tensorflow


def test_a_blob_over_the_netlink_limit_ships_as_a_compiled_module(tmp_path):
    from userspace.snapshot import module_name, write_blob
    from userspace.uapi import load_uapi
    from workloads.engine import guest_plan, network_blob

    networks = [{"name": "small", "units": [4, 8, 1], "activations": ["relu", "linear"]},
                {"name": "big", "units": [128, 256, 256, 8], "activations": ["relu", "relu", "linear"]}]
    blobs = {net["name"]: network_blob(net, seed=1) for net in networks}
    limit = load_uapi().limits["BINARY_MAX"]
    assert len(blobs["small"]) <= limit < len(blobs["big"])

    plan, modules = guest_plan(networks, blobs, 10**6, tmp_path)
    small, big = plan["networks"]
    assert "module" not in small
    assert big["module"] == f"{module_name('lf_test', big['snapshot_id'])}.ko"
    (snap,) = modules
    assert (snap.app, snap.snapshot_id) == ("lf_test", big["snapshot_id"])
    assert write_blob(snap.spec) == blobs["big"]
    for entry in plan["networks"]:                       # the user-space half times every blob
        assert (tmp_path / entry["blob"]).read_bytes() == blobs[entry["name"]]
    assert small["snapshot_id"] != big["snapshot_id"]
