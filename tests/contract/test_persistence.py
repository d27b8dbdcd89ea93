"""state.db across restarts of a real daemon: SIGKILL loses at most the last flush interval, SIGTERM
flushes at once, and the file always loads, whenever the daemon dies.

Assertions look for the changed objects by ref/uuid and use any(): a restart must find the rows it
made before (until startup.populate reuses them, a restart may add a second pool/host/dom0)."""
import os
import random
import shutil
import signal
import threading
import time

import pytest
import XenAPI

from tests import daemon as _daemon
from tests.helpers import login
from xapi.db import persist

FLUSH = 0.5


def sdk(d):
    return login(d, "persistence-tests")


@pytest.fixture
def daemons():
    """Starts daemons on one data folder; stops them all and removes the folder at the end."""
    started = []
    folder = _daemon.data_folder()

    def start(*args):
        d = _daemon.start("--db-flush-interval", str(FLUSH), *args, data_dir=folder)
        started.append(d)
        return d

    yield start
    for d in reversed(started):
        d.stop()
    shutil.rmtree(folder, ignore_errors=True)


def kill(d):
    os.kill(d.proc.pid, signal.SIGKILL)
    d.proc.wait()


def state_db(d):
    return os.path.join(d.data_dir, "state.db")


def make_changes(x, tag):
    pool = x.pool.get_all()[0]
    host = x.pool.get_master(pool)
    dom0 = x.host.get_control_domain(host)
    x.pool.set_name_label(pool, f"pool {tag} <&> 'q' \"dq\" ☃")
    x.pool.add_to_other_config(pool, f"key {tag}", "it's a \\ value\nwith lines\tand %. signs")
    x.host.add_tags(host, f"tag {tag}")
    x.VM.add_to_other_config(dom0, "persisted", tag)
    return {"pool": pool, "host_uuid": x.host.get_uuid(host), "dom0_uuid": x.VM.get_uuid(dom0)}


def assert_changes_kept(x, tag, ids):
    pools = x.pool.get_all_records()
    assert ids["pool"] in pools
    p = pools[ids["pool"]]
    assert p["name_label"] == f"pool {tag} <&> 'q' \"dq\" ☃"
    assert p["other_config"][f"key {tag}"] == "it's a \\ value\nwith lines\tand %. signs"
    hosts = x.host.get_all_records()
    assert any(h["uuid"] == ids["host_uuid"] and f"tag {tag}" in h["tags"] for h in hosts.values())
    vms = x.VM.get_all_records()
    assert any(v["uuid"] == ids["dom0_uuid"] and v["other_config"].get("persisted") == tag
               for v in vms.values())


def test_sigkill_after_a_flush_interval_keeps_the_changes(daemons):
    d = daemons()
    s = sdk(d)
    ids = make_changes(s.xenapi, "one")
    time.sleep(3 * FLUSH)
    kill(d)
    d2 = daemons()
    assert "state.db: loaded" in d2.log()
    s2 = sdk(d2)
    assert_changes_kept(s2.xenapi, "one", ids)
    s2.xenapi.session.logout()


def test_sigterm_flushes_at_once(daemons):
    d = daemons("--db-flush-interval", "3600")      # only the shutdown flush can save this
    s = sdk(d)
    before = os.path.getmtime(state_db(d)) if os.path.exists(state_db(d)) else None
    ids = make_changes(s.xenapi, "two")
    assert d.stop() == 0                              # SIGTERM straight after the change
    assert os.path.exists(state_db(d)) and os.path.getmtime(state_db(d)) != before
    s2 = sdk(daemons())
    assert_changes_kept(s2.xenapi, "two", ids)
    s2.xenapi.session.logout()


def test_event_token_keeps_its_meaning_across_a_restart(daemons):
    """A load is not a write: the daemon resumes at the saved generation, so a token taken there
    gets only what changed after the restart, and an older one gets EVENTS_LOST (deletions were
    not saved), never a silent gap."""
    d = daemons("--db-flush-interval", "3600")
    x = sdk(d).xenapi
    net = x.network.create({"name_label": "before", "name_description": "", "MTU": "1500",
                            "other_config": {}, "bridge": "", "tags": []})
    gone = x.network.create({"name_label": "gone", "name_description": "", "MTU": "1500",
                             "other_config": {}, "bridge": "", "tags": []})
    x.network.destroy(gone)
    assert d.stop() == 0
    saved = int(persist.read(state_db(d))[0]["generation_count"])
    d2 = daemons("--db-flush-interval", "3600")
    x = sdk(d2).xenapi
    token = "%020d,%020d" % (saved, 0)
    batch = x.event_from(["network"], token, 0.0)
    assert all(int(e["id"]) > saved for e in batch["events"])
    assert net not in {e["ref"] for e in batch["events"]}, "unchanged since the token: not sent again"
    x.network.set_name_label(net, "after")
    batch = x.event_from(["network"], batch["token"], 5.0)
    assert [(e["ref"], e["operation"], e["snapshot"]["name_label"]) for e in batch["events"]] == \
           [(net, "mod", "after")]
    with pytest.raises(XenAPI.Failure) as info:
        x.event_from(["network"], "%020d,%020d" % (saved - 1, 0), 0.0)
    assert info.value.details == ["EVENTS_LOST"]
    everything = x.event_from(["network"], "", 0.0)
    assert net in {e["ref"] for e in everything["events"]} and gone not in {e["ref"] for e in everything["events"]}


def test_file_always_loads_when_killed_at_random_while_a_client_writes(daemons):
    """10 rounds: a client sets pool.other_config:counter in a loop; the daemon is SIGKILLed at a
    random moment; the next one must start (so state.db loads) and hold a counter the client wrote,
    no older than what the dead daemon had acknowledged a flush interval (plus slack) before it
    died, nor than what it had itself started with."""
    rng = random.Random(4321)
    acked: dict[int, float] = {0: 0.0}       # counter -> when a daemon acknowledged it
    pool = None
    settled = 0
    for round_ in range(10):
        d = daemons()
        x = sdk(d).xenapi
        if pool is None:
            pool = x.pool.get_all()[0]
            deadline = time.monotonic() + 10      # the first daemon's first flush: from then on the
            while not os.path.exists(state_db(d)) and time.monotonic() < deadline:   # pool is on disk
                time.sleep(0.05)
        counter = int(x.pool.get_other_config(pool).get("counter", "0"))
        assert counter in acked and counter >= settled, (round_, counter, settled)
        stop = threading.Event()
        mine: dict[int, float] = {}
        first = max(acked) + 1

        def write():
            n = first
            while not stop.is_set():
                try:
                    x.pool.set_other_config(pool, {"counter": str(n)})     # one write
                except Exception:
                    return                       # the daemon is gone
                mine[n] = time.monotonic()
                n += 1

        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(rng.uniform(0.1, 1.6))
        killed_at = time.monotonic()
        kill(d)
        stop.set()
        writer.join(10)
        assert not writer.is_alive()
        acked.update(mine)
        settled = max([counter] + [n for n, t in mine.items() if t < killed_at - (FLUSH + 1.0)])
        db = persist.load(state_db(d))           # what the next daemon will load
        assert len(db.table("pool")) >= 1
    assert max(acked) > 10
