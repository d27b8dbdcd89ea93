"""The error both xenctrl implementations raise (compiled shim and pure reference)."""


class XenctrlError(OSError):
    """A failed hypervisor call: ``XenctrlError(errno, message)``.

    ``.errno`` is a positive errno value (e.g. ``errno.ENOENT`` when no
    hypervisor is present, ``errno.ENOSYS`` for a backend that was not
    built, ``errno.EINVAL`` for a bad sim config) and ``.strerror`` the message.
    """


# Argument checks shared by both implementations, so that values the C API
# cannot represent fail the same way in each (with the C code's messages
# where the C code has the same check).
import errno as _errno
import operator as _operator
import uuid as _uuid

MAX_VCPUS = 4096  # XCS_MAX_VCPUS
SHUTDOWN_REASONS = {
    "poweroff": 0, "reboot": 1, "suspend": 2, "crash": 3, "watchdog": 4, "soft_reset": 5,
}


def check_domid(op: str, domid) -> int:
    domid = _operator.index(domid)
    if not 0 <= domid <= 0xFFFFFFFF:
        raise XenctrlError(_errno.ESRCH, f"{op}: domain {domid}: no such domain")
    return domid


def check_vcpus(op: str, n) -> int:
    n = _operator.index(n)
    if not 0 <= n <= 0xFFFFFFFF:
        raise XenctrlError(_errno.EINVAL, f"{op}: max_vcpus {n} out of range [1, {MAX_VCPUS}]")
    return n


def check_kib(op: str, kib) -> int:
    kib = _operator.index(kib)
    if not 0 <= kib <= 0xFFFFFFFFFFFFFFFF:
        raise XenctrlError(_errno.EINVAL, f"{op}: memory size {kib} KiB out of range")
    return kib


def check_reason(reason) -> int:
    if isinstance(reason, str):
        if reason not in SHUTDOWN_REASONS:
            raise XenctrlError(_errno.EINVAL, f"domain_shutdown: unknown reason '{reason}'")
        return SHUTDOWN_REASONS[reason]
    reason = _operator.index(reason)
    if not 0 <= reason <= 0xFFFFFFFF:
        raise XenctrlError(_errno.EINVAL, f"domain_shutdown: bad reason {reason}")
    return reason


def check_uuid(value) -> bytes:
    try:
        return _uuid.UUID(str(value)).bytes
    except ValueError:
        raise XenctrlError(_errno.EINVAL, f"domain_create: bad uuid '{value}'") from None
