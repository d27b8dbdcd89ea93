"""The XenAPI messages of the pool machinery (xapi.forwarding.resolve takes them from here before the
per-class action modules): session.slave_login, host.is_in_emergency_mode, pool.join, pool.join_force,
pool.eject."""
from __future__ import annotations

from xapi.datamodel.errors import XapiError
from xapi.pool import certificates, membership, secret, transitions


async def session_slave_login(ctx, session, host, psecret):
    """A member's session on the coordinator: the member's host ref and the pool secret."""
    app = ctx.app
    if not secret.matches(app.pool_secret, psecret):
        await app.auth.failed("", ctx.peer)
        raise XapiError("SESSION_AUTHENTICATION_FAILED", "", "Pool secret mismatch")
    if type(host) is not str or host not in app.db.table("host"):
        raise XapiError("HANDLE_INVALID", "host", host)
    return app.sessions.create("", superuser=True, pool=True, originator="").ref


def host_is_in_emergency_mode(ctx, session):
    """A member that has lost its coordinator (xapi: slave_emergency_mode)."""
    app = ctx.app
    replica = getattr(app, "replica", None)
    return bool(not app.is_coordinator and (replica is None or not replica.connected))


async def pool_join(ctx, session, master_address, master_username, master_password):
    await membership.join(ctx.app, master_address, master_username, master_password)
    return ""


async def pool_join_force(ctx, session, master_address, master_username, master_password):
    await membership.join(ctx.app, master_address, master_username, master_password, force=True)
    return ""


async def pool_eject(ctx, session, host):
    await membership.eject(ctx.app, host)
    return ""


async def _member_pbd(ctx, pbd, internal: str, attached: bool):
    """PBD.plug/unplug of another host's PBD: that host's storage does it (internal call)."""
    from xapi.sm import rows
    app = ctx.app
    pbds = app.db.table("PBD")
    host = pbds.get_field(pbd, "host")
    await app.pool.call(host, internal, pbd, app.db.generation)
    pbds.set_field(pbd, "currently_attached", attached)
    rows.refresh_sr_and_vdis(app, pbds.get_field(pbd, "SR"))
    return ""


async def pbd_plug(ctx, session, self):
    if not _remote_pbd(ctx, self):
        from xapi.actions import pbd as pbd_actions
        return await pbd_actions.plug(ctx, session, self)
    return await _member_pbd(ctx, self, "storage.plug", True)


async def pbd_unplug(ctx, session, self):
    if not _remote_pbd(ctx, self):
        from xapi.actions import pbd as pbd_actions
        return await pbd_actions.unplug(ctx, session, self)
    return await _member_pbd(ctx, self, "storage.unplug", False)


def _remote_pbd(ctx, pbd) -> bool:
    app = ctx.app
    pbds = app.db.table("PBD")
    return (app.is_coordinator and type(pbd) is str and pbd in pbds
            and pbds.get_field(pbd, "host") != app.host_ref)


async def pool_designate_new_master(ctx, session, host):
    await transitions.designate_new_master(ctx.app, host)
    return ""


async def pool_emergency_transition_to_master(ctx, session):
    await transitions.emergency_transition_to_master(ctx.app)
    return ""


async def pool_emergency_reset_master(ctx, session, master_address):
    await transitions.emergency_reset_master(ctx.app, master_address)
    return ""


async def pool_recover_slaves(ctx, session):
    return await transitions.recover_slaves(ctx.app)


async def host_destroy(ctx, session, self):
    await membership.destroy_host(ctx.app, self)
    return ""


MESSAGES = {
    "host.get_server_certificate": certificates.get_server_certificate,
    "host.reset_server_certificate": certificates.reset_server_certificate,
    "host.destroy": host_destroy,
    "pool.designate_new_master": pool_designate_new_master,
    "pool.emergency_transition_to_master": pool_emergency_transition_to_master,
    "pool.emergency_reset_master": pool_emergency_reset_master,
    "pool.recover_slaves": pool_recover_slaves,
    "PBD.plug": pbd_plug,
    "PBD.unplug": pbd_unplug,
    "session.slave_login": session_slave_login,
    "host.is_in_emergency_mode": host_is_in_emergency_mode,
    "pool.join": pool_join,
    "pool.join_force": pool_join_force,
    "pool.eject": pool_eject,
}
