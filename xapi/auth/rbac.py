"""Role-based access control as xapi has it: six static roles, one permission per message, per
protected map key and per HTTP action, and the checks every call goes through.

The facts (carried over from xen-api, not its code):
- a message's permission is its lowercase wire name (`vm.start`); it belongs to every role allowed to
  call the message (the datamodel's roles, read from our generated model);
- protected map keys (the datamodel's `map_keys_roles`) give `add_to_<map>`/`remove_from_<map>` one
  more permission per key, `<message>/key:<key>` (lowercase; a trailing `*` matches any suffix), which
  replaces the message's own permission when the call's `key` argument matches;
- HTTP handlers have `http/<action>` permissions (and `http/<action>/<sub-action>`);
- `task.destroy/any` is the one permission no message owns;
- a session's permissions are the union, over its roles, of the role's name and its permissions;
  the local superuser is never checked;
- a refusal is RBAC_PERMISSION_DENIED [permission, "No permission in user session. (Roles with this
  permission: a, b)"], the roles most privileged first.

Roles and permissions are `role` rows (`roles.ensure_roles`); their refs are `OpaqueRef:<uuid>` where
the uuid is the MD5 of the name (pool-admin has a fixed one), so they are the same on every host.
"""
from __future__ import annotations

import functools
import hashlib
import uuid as _uuid

from xapi import datamodel as dm
from xapi.datamodel.errors import XapiError

ROLES: tuple[str, ...] = tuple(dm.ROLES)        # most privileged first
POOL_ADMIN, POOL_OPERATOR, VM_POWER_ADMIN, VM_ADMIN, VM_OPERATOR, READ_ONLY = ROLES

# pool-admin's uuid is fixed: it is the default of subject.roles in the datamodel
POOL_ADMIN_UUID = "0165f154-ba3e-034e-6b27-5d271af109ba"
PERMISSION_DESCRIPTION = "A basic permission"
ROLE_DESCRIPTIONS = {
    POOL_ADMIN: "Everything, including the control domain, subjects, roles and external authentication",
    POOL_OPERATOR: "Host- and pool-wide resources: storage, pools, updates, HA and workload balancing",
    VM_POWER_ADMIN: "All of VM and template management, choosing where VMs start, dynamic memory and "
                    "snapshots",
    VM_ADMIN: "Managing VMs and templates",
    VM_OPERATOR: "Using VMs and their consoles",
    READ_ONLY: "Logging in and reading",
}


def roles_from(role: str | None) -> frozenset[str]:
    """The roles at least as privileged as `role` (None: local root only, no role)."""
    if role is None:
        return frozenset()
    return frozenset(ROLES[:ROLES.index(role) + 1])


# -- protected map keys (xen-api datamodel: map_keys_roles) -----------------------------------------
MAP_KEYS_ROLES: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {
    ("VM", "other_config"): (("pci", POOL_ADMIN), ("folder", VM_OPERATOR),
                             ("XenCenter.CustomFields.*", VM_OPERATOR)),
    ("host", "other_config"): (("folder", VM_OPERATOR), ("XenCenter.CustomFields.*", VM_OPERATOR)),
    ("pool", "other_config"): (("folder", VM_OPERATOR), ("XenCenter.CustomFields.*", VM_OPERATOR),
                               ("EMPTY_FOLDERS", VM_OPERATOR)),
    ("SR", "other_config"): (("folder", VM_OPERATOR), ("XenCenter.CustomFields.*", VM_OPERATOR)),
    ("VDI", "other_config"): (("folder", VM_OPERATOR), ("XenCenter.CustomFields.*", VM_OPERATOR)),
    ("network", "other_config"): (("folder", VM_OPERATOR), ("XenCenter.CustomFields.*", VM_OPERATOR),
                                  ("XenCenterCreateInProgress", VM_OPERATOR)),
    ("task", "other_config"): (("applies_to", VM_OPERATOR), ("XenCenterUUID", VM_OPERATOR),
                               ("XenCenterMeddlingActionTitle", VM_OPERATOR)),
}

# -- HTTP actions (xen-api datamodel: http_actions): name, least role (None: local root only),
#    sub-actions with their least role ---------------------------------------------------------------
HTTP_ACTIONS: tuple[tuple[str, str | None, tuple[tuple[str, str], ...]], ...] = (
    ("get_services", READ_ONLY, ()),
    ("post_services", POOL_ADMIN, ()),
    ("put_services", POOL_ADMIN, ()),
    ("post_remote_db_access", POOL_ADMIN, ()),
    ("post_remote_db_access_v2", POOL_ADMIN, ()),
    ("get_services_xenops", VM_POWER_ADMIN, ()),
    ("post_services_xenops", VM_POWER_ADMIN, ()),
    ("put_services_xenops", VM_POWER_ADMIN, ()),
    ("get_services_sm", VM_POWER_ADMIN, ()),
    ("post_services_sm", VM_POWER_ADMIN, ()),
    ("put_services_sm", VM_POWER_ADMIN, ()),
    ("put_import", VM_ADMIN, ()),
    ("put_import_metadata", VM_ADMIN, ()),
    ("put_import_raw_vdi", VM_ADMIN, ()),
    ("get_export", VM_ADMIN, ()),
    ("get_export_metadata", VM_ADMIN, ()),
    ("get_export_raw_vdi", VM_ADMIN, ()),
    ("connect_console", VM_OPERATOR, (("host_console", POOL_ADMIN),)),
    ("connect_console_ws", VM_OPERATOR, (("host_console_ws", POOL_ADMIN),)),
    ("get_root", READ_ONLY, ()),
    ("post_cli", READ_ONLY, ()),
    ("get_host_backup", POOL_ADMIN, ()),
    ("put_host_restore", POOL_ADMIN, ()),
    ("get_host_logs_download", POOL_OPERATOR, ()),
    ("put_pool_patch_upload", POOL_OPERATOR, ()),
    ("get_vncsnapshot", VM_OPERATOR, (("host_console", POOL_ADMIN),)),
    ("get_pool_xml_db_sync", POOL_ADMIN, ()),
    ("put_pool_xml_db_sync", POOL_ADMIN, ()),
    ("get_config_sync", POOL_ADMIN, ()),
    ("get_system_status", POOL_OPERATOR, ()),
    ("vm_rrd", READ_ONLY, ()),
    ("host_rrd", READ_ONLY, ()),
    ("sr_rrd", READ_ONLY, ()),
    ("rrd_updates", READ_ONLY, ()),
    ("rrd", POOL_ADMIN, ()),
    ("get_blob", READ_ONLY, ()),
    ("put_blob", VM_POWER_ADMIN, ()),
    ("put_messages", VM_POWER_ADMIN, ()),
    ("connect_remotecmd", POOL_ADMIN, ()),
    ("get_wlb_report", READ_ONLY, ()),
    ("get_wlb_diagnostics", READ_ONLY, ()),
    ("get_audit_log", READ_ONLY, ()),
    ("post_root", READ_ONLY, ()),
    ("post_RPC2", READ_ONLY, ()),
    ("post_json", READ_ONLY, ()),
    ("post_root_options", READ_ONLY, ()),
    ("post_json_options", READ_ONLY, ()),
    ("post_jsonrpc", READ_ONLY, ()),
    ("post_jsonrpc_options", READ_ONLY, ()),
    ("get_pool_update_download", READ_ONLY, ()),
    ("get_repository", None, ()),
    ("get_enabled_repository", POOL_OPERATOR, ()),
    ("get_host_updates", POOL_OPERATOR, ()),
    ("get_updates", POOL_OPERATOR, ()),
    ("put_bundle", POOL_OPERATOR, ()),
)
# HTTP actions that check RBAC themselves (the API endpoints) or need none (public blobs, preflight)
HTTP_ACTIONS_WITHOUT_RBAC = frozenset({
    "post_root", "post_RPC2", "post_cli", "post_json", "get_root", "get_blob", "post_root_options",
    "post_json_options", "post_jsonrpc", "post_jsonrpc_options", "get_pool_update_download",
})
HTTP_PREFIX = "http/"

# Permissions no message owns
TASK_DESTROY_ANY = "task.destroy/any"
EXTRA_PERMISSIONS: tuple[tuple[str, str], ...] = ((TASK_DESTROY_ANY, POOL_OPERATOR),)


# -- the permission table ------------------------------------------------------------------------------
def _build() -> dict[str, tuple[str, frozenset[str]]]:
    """label -> (name as spelled in the datamodel, roles holding it). Permissions no role holds (local
    root only) are left out, as xapi leaves them out of its static roles."""
    table: dict[str, tuple[str, frozenset[str]]] = {}

    def add(name: str, roles) -> None:
        roles = frozenset(roles) & frozenset(ROLES)
        if roles:
            table[name.lower()] = (name, roles)

    for cls in dm.CLASSES.values():
        for m in cls.messages.values():
            add(m.wire_name, m.roles)
            if m.name.startswith(("add_to_", "remove_from_")):
                field = m.name[len("add_to_"):] if m.name.startswith("add_to_") else m.name[len("remove_from_"):]
                for key, least in MAP_KEYS_ROLES.get((cls.name, field), ()):
                    add(f"{m.wire_name}/key:{key}", roles_from(least))
    for action, least, subs in HTTP_ACTIONS:
        add(HTTP_PREFIX + action, roles_from(least))
        for sub, sub_least in subs:
            add(f"{HTTP_PREFIX}{action}/{sub}", roles_from(sub_least))
    for name, least in EXTRA_PERMISSIONS:
        add(name, roles_from(least))
    return table


PERMISSIONS: dict[str, tuple[str, frozenset[str]]] = _build()

# role name -> the labels of its permissions
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    role: frozenset(label for label, (_, roles) in PERMISSIONS.items() if role in roles) for role in ROLES}


def uuid_of(name: str) -> str:
    """A role's or permission's uuid: the MD5 of its name (as the datamodel spells it) as a uuid."""
    if name == POOL_ADMIN:
        return POOL_ADMIN_UUID
    return str(_uuid.UUID(bytes=hashlib.md5(name.encode()).digest()))


def ref_of(name: str) -> str:
    """The ref of a role (by name) or permission (by label or datamodel spelling)."""
    if name not in ROLE_PERMISSIONS:
        name = PERMISSIONS[name.lower()][0]
    return "OpaqueRef:" + uuid_of(name)


ROLE_REFS: dict[str, str] = {role: ref_of(role) for role in ROLES}
ROLE_BY_REF: dict[str, str] = {ref: role for role, ref in ROLE_REFS.items()}
# permission ref -> label
PERMISSION_BY_REF: dict[str, str] = {"OpaqueRef:" + uuid_of(name): label for label, (name, _) in PERMISSIONS.items()}


def roles_with(permission: str) -> list[str]:
    """The roles holding a permission, most privileged first (role.get_by_permission_name_label)."""
    entry = PERMISSIONS.get(permission)
    return [r for r in ROLES if entry is not None and r in entry[1]]


def denied(permission: str) -> XapiError:
    return XapiError("RBAC_PERMISSION_DENIED", permission,
                     "No permission in user session. (Roles with this permission: "
                     f"{', '.join(roles_with(permission))})")


def labels_of(ref: str) -> frozenset[str]:
    """What holding a role ref gives a session: the role's name and its permissions (a permission
    held directly gives itself). Unknown refs give nothing."""
    role = ROLE_BY_REF.get(ref)
    if role is not None:
        return ROLE_PERMISSIONS[role] | {role}
    label = PERMISSION_BY_REF.get(ref)
    return frozenset((label,)) if label is not None else frozenset()


@functools.lru_cache(maxsize=256)
def session_permissions(role_refs: frozenset[str]) -> frozenset[str]:
    """A session's permissions: the union over its role refs (cached: few distinct role sets exist)."""
    out: set[str] = set()
    for ref in role_refs:
        out |= labels_of(ref)
    return frozenset(out)


def role_names(role_refs) -> frozenset[str]:
    return frozenset(ROLE_BY_REF[r] for r in role_refs if r in ROLE_BY_REF)


# -- per-call checks (built once per dispatcher entry) ---------------------------------------------------
def permission_of(message: dm.Message) -> str:
    """A message's permission: its whole wire name in lowercase (`vm.set_vcpus_max`), as xapi's."""
    return message.permission


def _key_matcher(message: dm.Message, keys):
    """key -> its key permission for this message, or None when the key is not protected."""
    base = permission_of(message)
    exact = {k: f"{base}/key:{k.lower()}" for k, _ in keys if not k.endswith("*")}
    prefixes = tuple((k[:-1], f"{base}/key:{k.lower()}") for k, _ in keys if k.endswith("*"))

    def match(key):
        perm = exact.get(key)
        if perm is None and type(key) is str:
            for prefix, p in prefixes:
                if key.startswith(prefix):
                    return p
        return perm
    return match


def key_check(message: dm.Message, db):
    """For messages whose map has protected keys, a `check(session, args)` that raises when the call is
    not allowed (the message's own permission alone doesn't decide); None for every other message.

    add_to_/remove_from_: xapi's rule, the key's permission replaces the message's when the key is
    protected. set_<map>: the whole map is replaced, so the caller needs the message's permission and,
    for each protected key whose entry changes, that key's add_to/remove_from permission (a stricter
    form of xapi's task.set_other_config rule: entries the caller could not change are kept as they were).
    """
    if message is None or not message.takes_session:
        return None
    cls, name = message.cls, message.name
    for prefix in ("add_to_", "remove_from_", "set_"):
        if name.startswith(prefix):
            field = name[len(prefix):]
            break
    else:
        return None
    keys = MAP_KEYS_ROLES.get((cls, field))
    if not keys:
        return None
    permission = permission_of(message)
    if prefix != "set_":
        match = _key_matcher(message, keys)

        def check_key(session, args):
            perm = match(args[1]) or permission
            if perm not in session.permissions:
                raise denied(perm)
        return check_key

    table = db.table(cls)
    add_match = _key_matcher(dm.CLASSES[cls].messages[f"add_to_{field}"], keys)
    remove_match = _key_matcher(dm.CLASSES[cls].messages[f"remove_from_{field}"], keys)

    def check_map(session, args):
        perms = session.permissions
        if permission not in perms:
            raise denied(permission)
        ref, new = args[0], args[1]
        try:
            old = table.get_field(ref, field)
        except (KeyError, TypeError):
            return                          # the action answers HANDLE_INVALID
        for key in set(old) | set(new):
            if key in new and (key not in old or old[key] != new[key]):
                perm = add_match(key)
            elif key not in new:
                perm = remove_match(key)
            else:
                continue
            if perm is not None and perm not in perms:
                raise denied(perm)
    return check_map


def check_http(session, action: str, sub_action: str | None = None) -> None:
    """For HTTP handlers: raises RBAC_PERMISSION_DENIED unless the session may use the action."""
    if session.superuser or action in HTTP_ACTIONS_WITHOUT_RBAC:
        return
    perm = HTTP_PREFIX + action.lower() + (f"/{sub_action.lower()}" if sub_action else "")
    if perm not in session.permissions:
        raise denied(perm)
