"""The local SR a freshly installed host gets: "Local storage", an ``ext`` SR of this host only, made the
pool's default SR and its suspend-image and crash-dump SR (as XCP-ng's first-boot scripts do), and
the host's suspend-image and crash-dump SR.

Only database rows are made here (start-up is synchronous): the SR, its PBD (device-config empty,
so the driver keeps the VDIs in ``<data>/sr/<sr-uuid>``, making the folder when it attaches), and
the pool's and host's SR fields where they are still empty. The storage layer plugs the PBD once
the daemon runs, which attaches and scans the SR.
"""
from __future__ import annotations

from xapi.db.schema import NULL_REF, insert

NAME_LABEL = "Local storage"
OTHER_CONFIG = {"i18n-key": "local-storage", "i18n-original-value-name_label": NAME_LABEL}


def find(db, host: str) -> str | None:
    """This host's local SR, if it has one."""
    srs, pbds = db.table("SR"), db.table("PBD")
    for pbd in pbds.find("host", host):
        sr = pbds.get_field(pbd, "SR")
        if sr in srs and srs.get_field(sr, "other_config").get("i18n-key") == "local-storage":
            return sr
    return None


def first_boot(db, pool: str, host: str) -> str:
    """Makes the local SR unless the host has one; returns its ref. Idempotent."""
    sr = find(db, host)
    if sr is None:
        sr = insert(db, "SR", name_label=NAME_LABEL, name_description="", type="ext", content_type="user",
                    shared=False, physical_size=-1, physical_utilisation=-1, virtual_allocation=0,
                    other_config=dict(OTHER_CONFIG), sm_config={})
        pbd = insert(db, "PBD", host=host, SR=sr, device_config={}, currently_attached=False)
        _add(db, "SR", sr, "PBDs", pbd)
        _add(db, "host", host, "PBDs", pbd)
    pools, hosts, srs = db.table("pool"), db.table("host"), db.table("SR")
    for field in ("default_SR", "suspend_image_SR", "crash_dump_SR"):
        if pools.get_field(pool, field) in (NULL_REF, "") or pools.get_field(pool, field) not in srs:
            pools.set_field(pool, field, sr)
    for field in ("suspend_image_sr", "crash_dump_sr"):
        if hosts.get_field(host, field) in (NULL_REF, "") or hosts.get_field(host, field) not in srs:
            hosts.set_field(host, field, sr)
    return sr


def _add(db, cls: str, ref: str, field: str, value: str) -> None:
    t = db.table(cls)
    current = t.get_field(ref, field)
    if value not in current:
        t.set_field(ref, field, [*current, value])
