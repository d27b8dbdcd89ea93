"""role.*: the permission tree of the static roles (the getters of a role row are the generic ones)."""
from __future__ import annotations

from xapi import datamodel as dm
from xapi.actions.accessors import accessor
from xapi.auth import roles


def get_permissions(ctx, session, self):
    roles.check_role(ctx.app.db, self)
    return roles.permissions_of(ctx.app.db, self)


def get_permissions_name_label(ctx, session, self):
    db = ctx.app.db
    roles.check_role(db, self)
    return roles.labels(db, roles.permissions_of(db, self))


def _holders(db, permission_ref: str) -> list[str]:
    """Every role (not the permission itself) whose permissions include `permission_ref`."""
    table = db.table("role")
    return [r for r in table.refs()
            if r != permission_ref and table.get_field(r, "subroles")
            and permission_ref in roles.permissions_of(db, r)]


def get_by_permission(ctx, session, permission):
    db = ctx.app.db
    roles.check_role(db, permission)
    return _holders(db, permission)


def get_by_permission_name_label(ctx, session, label):
    db = ctx.app.db
    refs = db.table("role").find("name_label", label)
    return _holders(db, refs[0]) if refs else []


# xapi answers these two expressions itself (roles only, permissions only); others are filtered as usual
_ROLES_ONLY, _PERMISSIONS_ONLY = "subroles<>[]", "subroles=[]"


def get_all_records_where(ctx, session, expr):
    db = ctx.app.db
    if expr in (_ROLES_ONLY, _PERMISSIONS_ONLY):
        want_roles = expr == _ROLES_ONLY
        return {ref: row for ref, row in db.table("role").all_records().items()
                if bool(row["subroles"]) == want_roles}
    return accessor(dm.CLASSES["role"].messages["get_all_records_where"], db)(ctx, session, expr)
