"""xenopsd: the VM lifecycle service on a Unix socket, owning the hypervisor handle.

Wire protocol (xapi.xenops.server): one JSON object per line each way.
    request  {"id": 1, "method": "VM.start", "params": [...]}
    reply    {"id": 1, "result": ...}  or  {"id": 1, "error": ["CODE", "param", ...]}
Lifecycle calls answer at once with a task id; TASK.wait / TASK.stat follow it (progress 0..1),
TASK.cancel cancels it, UPDATES.get(last, timeout) long-polls for VM state changes.
"""
from .server import Xenopsd  # noqa: F401
