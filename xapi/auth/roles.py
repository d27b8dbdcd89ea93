"""The `role` table: the six static roles and one row per permission, as `role.*` shows them.

xapi keeps these rows in a static module of its own rather than its database; here they are ordinary
rows with the refs and uuids xapi gives them (see `rbac`), so the generic accessors, events and
get_all_records serve them like any other class.
"""
from __future__ import annotations

from xapi.datamodel.errors import XapiError
from xapi.db.schema import insert

from . import rbac


def _desired() -> dict[str, dict]:
    """ref -> row for every role and permission."""
    rows: dict[str, dict] = {}
    for label, (name, _) in rbac.PERMISSIONS.items():
        uuid = rbac.uuid_of(name)
        rows["OpaqueRef:" + uuid] = {"uuid": uuid, "name_label": label,
                                     "name_description": rbac.PERMISSION_DESCRIPTION,
                                     "subroles": [], "is_internal": True}
    for role in rbac.ROLES:
        uuid = rbac.uuid_of(role)
        subroles = sorted(rbac.ref_of(label) for label in rbac.ROLE_PERMISSIONS[role])
        rows["OpaqueRef:" + uuid] = {"uuid": uuid, "name_label": role,
                                     "name_description": rbac.ROLE_DESCRIPTIONS[role],
                                     "subroles": subroles, "is_internal": False}
    return rows


def ensure_roles(db) -> None:
    """Makes the role table hold exactly the static roles and permissions. Idempotent: rows already
    there (a database loaded from state.db) are left alone when they match, corrected when they
    don't, and rows of permissions this version no longer has are removed."""
    table = db.table("role")
    desired = _desired()
    for ref in table.refs():
        if ref not in desired:
            table.remove(ref)
    for ref, row in desired.items():
        if ref not in table:
            insert(db, "role", ref, **row)
            continue
        current = table.get(ref)
        changed = {k: v for k, v in row.items() if current.get(k) != v}
        if changed:
            table.update(ref, changed)


# -- reading the tree (role.get_permissions and friends) -----------------------------------------------
def check_role(db, ref) -> None:
    if type(ref) is not str or ref not in db.table("role"):
        raise XapiError("HANDLE_INVALID", "role", ref)


def permissions_of(db, ref: str) -> list[str]:
    """The leaves under a role: its permissions (a permission is its own only leaf)."""
    table = db.table("role")
    out: dict[str, None] = {}
    todo, seen = [ref], set()
    while todo:
        r = todo.pop()
        if r in seen or r not in table:
            continue
        seen.add(r)
        subroles = table.get_field(r, "subroles")
        if subroles:
            todo.extend(subroles)
        else:
            out[r] = None
    return list(out)


def labels(db, refs) -> list[str]:
    get = db.table("role").get_field
    return [get(r, "name_label") for r in refs]
