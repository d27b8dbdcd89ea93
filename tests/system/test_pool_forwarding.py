"""Where calls run in a 2-host `xapi sim` pool, by the datamodel's forwarding class of each message
(xapi.datamodel.flags.forwarding), and a member's writes run by the coordinator (xapi.pool.relay):
every message sent to the member with its own session over JSON-RPC; `member.call` and
`member.started` on the internal endpoints of both hosts; the member's storage writes seen at once
in its own replica."""
from __future__ import annotations

import asyncio
import json
import os
import urllib.request

from tests.fixtures import own_pool
from tests.helpers import eventually
from tests.system.pool_vms import hosts_by_address
from xapi import datamodel as dm
from xapi.datamodel.errors import XapiError
from xapi.datamodel.flags import forwarding
from xapi.pool.calls import Peer
from xapi.server import tls

sim = own_pool(2)


def _jsonrpc(host, method: str, params: list) -> dict:
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).encode()
    req = urllib.request.Request(host.url + "jsonrpc", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _value(t):
    """A well-typed value of XenAPI type `t` in JSON-RPC form (what the arguments' checks accept)."""
    k = t.kind
    if k == "enum":
        return dm.ENUMS[t.name][0]
    if k == "option":
        return _value(t.elem)
    return {"int": 0, "float": 0.0, "bool": False, "datetime": "19700101T00:00:00Z", "ref": "OpaqueRef:NULL",
            "set": [], "map": {}, "record": {}}.get(k, "")


def _peer(host) -> Peer:
    secret = open(os.path.join(host.data_dir, "ptoken")).read().strip()
    pem = open(os.path.join(host.data_dir, "xapi-ssl.pem"), "rb").read()
    return Peer(host.address, host.https_port, tls.certificate_info(pem).fingerprint, secret)


def _internal(host, method: str, *params):
    """An internal call to `host` with the pool secret: its result, or the XapiError's description."""
    async def main():
        peer = _peer(host)
        try:
            return await peer.call(method, *params)
        except XapiError as e:
            return e.description
        finally:
            peer.close()
    return asyncio.run(main())


def test_every_message_on_a_member_by_its_forwarding_class(sim):
    member, coordinator = sim.hosts[1], sim.coordinator
    session = member.local_session()._session
    seen = {"master": 0, "local": 0}
    for cls in dm.CLASSES.values():
        for m in cls.messages.values():
            kind = forwarding(m)
            if kind == "emergency":
                continue                # they act on the member itself (transitions, shutdown): below
            params = ([session] if m.takes_session else []) + [_value(p.type) for p in m.params]
            reply = _jsonrpc(member, m.wire_name, params)
            error = reply.get("error") or {}
            if kind == "master":
                # refused before anything runs, naming the coordinator (or not implemented anywhere)
                assert error.get("message") in ("HOST_IS_SLAVE", "NOT_IMPLEMENTED"), (m.wire_name, reply)
                if error["message"] == "HOST_IS_SLAVE":
                    assert error["data"] == [coordinator.address], m.wire_name
                    seen["master"] += 1
            else:
                # answered from the member's replica: a result or the call's own error
                assert error.get("message") != "HOST_IS_SLAVE", (m.wire_name, reply)
                seen["local"] += 1
    assert seen["master"] > 400 and seen["local"] > 1000
    # an emergency call is answered by the member itself
    assert _jsonrpc(member, "host.is_in_emergency_mode", [session]) == {"jsonrpc": "2.0", "result": False, "id": 1}


def test_member_call_answers_result_and_generation(sim, x):
    coordinator, member = sim.coordinator, sim.hosts[1]
    h1, h2 = hosts_by_address(x)
    pool = x.pool.get_all()[0]
    first = _internal(coordinator, "member.call", h2, "pool.set_name_label", [pool, "written for a member"])
    assert first["result"] == "" and x.pool.get_name_label(pool) == "written for a member"
    second = _internal(coordinator, "member.call", h2, "pool.set_name_description", [pool, "again"])
    assert second["generation"] > first["generation"]          # the coordinator's, after each write
    read = _internal(coordinator, "member.call", h2, "pool.get_name_label", [pool])
    assert read["result"] == "written for a member" and read["generation"] >= second["generation"]
    # the result as the coordinator's JSON-RPC endpoint encodes it (a datetime as xapi's string)
    vm = next(v for v in x.VM.get_all() if x.VM.get_is_control_domain(v))
    stamp = _internal(coordinator, "member.call", h2, "VM.get_snapshot_time", [vm])["result"]
    assert isinstance(stamp, str) and stamp.endswith("Z")
    s = coordinator.session()
    try:
        assert stamp == _jsonrpc(coordinator, "VM.get_snapshot_time", [s._session, vm])["result"]
    finally:
        s.xenapi.session.logout()
    # the call's own errors, as over JSON-RPC
    assert _internal(coordinator, "member.call", h2, "pool.get_name_label", ["OpaqueRef:nope"])[:2] == \
        ["HANDLE_INVALID", "pool"]
    assert _internal(coordinator, "member.call", h2, "no.such_message", [])[0] == "MESSAGE_METHOD_UNKNOWN"
    assert _internal(coordinator, "member.call", h2, "pool.get_name_label", [])[0] == \
        "MESSAGE_PARAMETER_COUNT_MISMATCH"
    # only for a host of the pool, and only the coordinator runs members' writes
    assert _internal(coordinator, "member.call", "OpaqueRef:nope", "pool.get_name_label", [pool]) == \
        ["HANDLE_INVALID", "host", "OpaqueRef:nope"]
    assert _internal(member, "member.call", h2, "pool.set_name_label", [pool, "no"]) == \
        ["HOST_IS_SLAVE", coordinator.address]
    assert _internal(member, "member.started", h2, {}) == ["HOST_IS_SLAVE", coordinator.address]
    assert x.pool.get_name_label(pool) == "written for a member"


def test_members_storage_writes_are_in_its_replica_at_once(sim, x):
    """VDI.create on the member's local SR: its driver introduces the disk through the coordinator
    and goes on once the member's replica holds it, so the member reads it right away."""
    member = sim.hosts[1]
    h1, h2 = hosts_by_address(x)
    sr = next(x.PBD.get_SR(p) for p in x.host.get_PBDs(h2) if not x.SR.get_shared(x.PBD.get_SR(p)))
    local = member.local_session().xenapi
    vdis = []
    for i in range(10):
        vdi = x.VDI.create({"name_label": f"member-write-{i}", "name_description": "", "SR": sr,
                            "virtual_size": str(1 << 20), "type": "user", "sharable": False,
                            "read_only": False, "other_config": {}, "xenstore_data": {}, "sm_config": {},
                            "tags": []})
        vdis.append(vdi)
        assert local.VDI.get_SR(vdi) == sr and local.VDI.get_uuid(vdi) == x.VDI.get_uuid(vdi)
    for vdi in vdis:
        x.VDI.destroy(vdi)
    assert eventually(lambda: not set(vdis) & set(local.VDI.get_all()))
