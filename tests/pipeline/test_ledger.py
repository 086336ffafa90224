"""The ledger's view of who is alive: by pid on this host (same boot and PID namespace), by heartbeat elsewhere."""

from __future__ import annotations

import json
import os

from ledger_fixtures import dead_here, make_ledger


def test_liveness_by_pid_on_this_host_and_by_heartbeat_elsewhere(tmp_path):
    ledger = make_ledger(tmp_path / "state", lease_s=60)
    try:
        processes = ledger.processes_dir
        me = ledger.me
        assert ledger.is_alive(me.id)
        (processes / "vm-dead.json").write_text(dead_here(me.host))
        assert not ledger.is_alive("vm-dead")
        # the same host name and pid in another PID namespace (or recorded without one): its lease
        for other in ({"pid_namespace": 1}, {"boot_id": "another boot"}, {"boot_id": None}):
            member = {**json.loads(dead_here(me.host)), **other, "id": "ns-1"}
            (processes / "ns-1.json").write_text(json.dumps(member))
            assert ledger.is_alive("ns-1") and not ledger.silent("ns-1")
        (processes / "ns-1.json").unlink()
        remote = processes / "far-1.json"
        remote.write_text('{"id": "far-1", "host": "another-machine", "pid": 1}')
        assert ledger.is_alive("far-1")  # fresh heartbeat
        old = ledger.now() - 61
        os.utime(remote, (old, old))
        assert not ledger.is_alive("far-1")  # silent for longer than the lease
        assert [m["id"] for m in ledger.live_members()] == [me.id]
    finally:
        ledger.leave()
