"""Trailing parameters a client may leave out, with the values xapi then uses.

The published datamodel does not carry these; they are xapi's `param_default`s. Only trailing
parameters can be defaulted, so each list is in parameter order.
"""

PARAM_DEFAULTS: dict[str, tuple[tuple[str, object], ...]] = {
    "session.login_with_password": (("version", "1.1"), ("originator", "")),
    "VM.snapshot": (("ignore_vdis", []),),
    "VM.migrate_send": (("vgpu_map", {}),),     # vdi_format_map is newer than this API version
    "VM.assert_can_migrate": (("vgpu_map", {}),),
    "VM.create_new_blob": (("public", False),),
    "VDI.clone": (("driver_params", {}),),
    "VDI.snapshot": (("driver_params", {}),),
    "VDI.copy": (("base_vdi", "OpaqueRef:NULL"), ("into_vdi", "OpaqueRef:NULL")),
    "host.evacuate": (("network", "OpaqueRef:NULL"), ("evacuate_batch_size", 0)),
    "host.create_new_blob": (("public", False),),
    "host.disable_external_auth": (("config", {}),),
    "host.emergency_ha_disable": (("soft", False),),
    "host.install_server_certificate": (("certificate_chain", ""),),
    "host.apply_edition": (("force", False),),
    "pool.create_new_blob": (("public", False),),
    "pool.disable_external_auth": (("config", {}),),
    "pool.sync_updates": (("token", ""), ("token_id", "")),
    "Bond.create": (("mode", "balance-slb"), ("properties", {})),   # Xen Orchestra sends four
    "tunnel.create": (("protocol", "gre"),),
    "PIF.introduce": (("managed", True),),
}
