"""The error both xenctrl implementations raise (compiled shim and pure reference)."""


class XenctrlError(OSError):
    """A failed hypervisor call: ``XenctrlError(errno, message)``.

    ``.errno`` is a positive errno value (e.g. ``errno.ENOENT`` when no
    hypervisor is present, ``errno.ENOSYS`` for a backend that was not
    built, ``errno.EINVAL`` for a bad sim config) and ``.strerror`` the message.
    """
