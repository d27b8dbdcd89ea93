"""The messages the daemon raises by itself after a VM operation (message_forwarding.ml), with the
names and priorities of api_messages.ml. As in xapi, failing to raise one never fails the operation."""
from __future__ import annotations

import logging

from xapi.messages import store

log = logging.getLogger("xapi.alerts")

# operation -> (name, priority, body after "VM '<name_label>' ", says on which host)
_VM = {
    "start": ("VM_STARTED", 5, "started", True),
    "start_on": ("VM_STARTED", 5, "started", True),
    "resume": ("VM_RESUMED", 5, "resumed", True),
    "resume_on": ("VM_RESUMED", 5, "resumed", True),
    "clean_shutdown": ("VM_SHUTDOWN", 5, "shutdown", False),
    "shutdown": ("VM_SHUTDOWN", 5, "shutdown", False),
    "hard_shutdown": ("VM_SHUTDOWN", 5, "shutdown forcibly", False),
    "clean_reboot": ("VM_REBOOTED", 5, "rebooted cleanly", False),
    "hard_reboot": ("VM_REBOOTED", 5, "rebooted forcibly", False),
    "suspend": ("VM_SUSPENDED", 5, "suspended", False),
}


def vm_done(app, vm: str, op: str) -> None:
    """After a VM operation succeeded: its message, when xapi raises one for it."""
    entry = _VM.get(op)
    if entry is None:
        return
    name, priority, what, on_host = entry
    try:
        db = app.db
        rec = db.table("VM").get(vm)
        body = f"VM '{rec['name_label']}' {what}"
        if on_host:
            hosts = db.table("host")
            host = rec["resident_on"]
            if host in hosts:
                body += f" on host: {hosts.get_field(host, 'name_label')} (uuid: {hosts.get_field(host, 'uuid')})"
        store(app).create(name, priority, "VM", rec["uuid"], body)
    except Exception:                               # noqa: BLE001 - xapi: (try ... with _ -> ())
        log.exception("message %s for VM %s not raised", name, vm)
