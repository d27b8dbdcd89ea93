"""Per-message facts the published datamodel leaves out: whether a message has an `Async.` form,
and its forwarding class (where it runs in a pool)."""
from __future__ import annotations

# Calls a member still answers itself when it cannot reach the coordinator (xapi's emergency_calls).
EMERGENCY_CALLS = frozenset({
    "pool.emergency_transition_to_master", "pool.emergency_reset_master", "pool.ping_slave",
    "session.slave_local_login", "session.slave_local_login_with_password", "session.local_logout",
    "host.propose_new_master", "host.commit_new_master", "host.abort_new_master",
    "host.local_management_reconfigure", "host.emergency_ha_disable", "host.management_disable",
    "host.is_in_emergency_mode", "host.shutdown_agent",
    # acting on this host's own TLS (xapi: local root only, answered without a coordinator)
    "host.emergency_reset_server_certificate", "host.emergency_disable_tls_verification",
    "host.emergency_reenable_tls_verification",
})

# Classes whose messages have no Async form, but for the listed exceptions (as xapi's generated SDKs
# show: Async.task.cancel, Async.event.register, Async.message.destroy_many, ...).
_NO_ASYNC_CLASSES = frozenset({"session", "event", "task", "blob", "auth", "role", "message"})
_ASYNC_EXCEPTIONS = frozenset({
    "session.create_from_db_file", "session.get_all_subject_identifiers",
    "session.logout_subject_identifier", "task.cancel", "event.register", "event.unregister",
    "message.destroy_many",
})


# Explicit messages xapi declares with `~flags:[`Session]` (no Async form), as read in its datamodel
# sources (datamodel.ml, datamodel_pool.ml, datamodel_host.ml, datamodel_vm.ml; the cluster,
# cluster_host, observer and repository files declare none). Every other explicit call keeps the
# default [`Session; `Async].
_NO_ASYNC_CALLS = frozenset({
    *("SR." + name for name in (
        "set_virtual_allocation", "set_physical_size", "set_physical_utilisation", "get_supported_types",
        "get_data_sources", "record_data_source", "query_data_source", "forget_data_source_archives")),
    *("VDI." + name for name in (
        "set_missing", "set_read_only", "set_sharable", "set_managed", "set_virtual_size",
        "set_physical_utilisation", "set_is_a_snapshot", "set_snapshot_of", "set_snapshot_time",
        "set_metadata_of_pool", "get_nbd_info")),
    "subject.add_to_roles", "subject.remove_from_roles", "subject.get_permissions_name_label",
    "secret.introduce",
    *("VMSS." + name for name in (
        "snapshot_now", "set_retained_snapshots", "set_frequency", "set_schedule", "set_last_run_time",
        "add_to_schedule", "remove_from_schedule", "set_type")),
    *("VMPP." + name for name in (
        "protect_now", "archive_now", "create_alert", "get_alerts", "set_backup_retention_value",
        "set_is_backup_running", "set_is_archive_running", "set_backup_frequency", "set_backup_schedule",
        "set_archive_frequency", "set_archive_schedule", "set_archive_target_type",
        "set_archive_target_config", "set_is_alarm_enabled", "set_alarm_config", "add_to_backup_schedule",
        "add_to_archive_target_config", "add_to_archive_schedule", "add_to_alarm_config",
        "remove_from_backup_schedule", "remove_from_archive_target_config", "remove_from_archive_schedule",
        "remove_from_alarm_config", "set_backup_last_run_time", "set_archive_last_run_time")),
    *("VM." + name for name in (
        "get_boot_record", "get_data_sources", "record_data_source", "query_data_source",
        "forget_data_source_archives", "set_ha_always_run", "set_ha_restart_priority",
        "get_allowed_VBD_devices", "get_allowed_VIF_devices", "set_memory_dynamic_max",
        "set_memory_dynamic_min", "set_memory_static_max", "set_memory_static_min", "set_VCPUs_max",
        "set_VCPUs_at_startup", "set_HVM_shadow_multiplier", "set_protection_policy",
        "set_snapshot_schedule", "set_domain_type", "set_HVM_boot_policy")),
    *("host." + name for name in (
        "local_assert_healthy", "request_backup", "request_config_file_sync", "propose_new_master",
        "abort_new_master", "commit_new_master", "is_in_emergency_mode", "signal_networking_change",
        "local_management_reconfigure", "ha_xapi_healthcheck", "management_disable", "shutdown_agent",
        "get_data_sources", "record_data_source", "query_data_source", "forget_data_source_archives",
        "get_diagnostic_timing_stats", "call_extension", "list_methods", "get_system_status_capabilities",
        "set_hostname_live", "tickle_heartbeat", "sync_data", "backup_rrds", "get_servertime",
        "get_server_localtime", "emergency_ha_disable", "emergency_reset_server_certificate",
        "enable_external_auth", "disable_external_auth", "apply_edition", "set_cpu_features",
        "reset_cpu_features", "enable_local_storage_caching", "disable_local_storage_caching",
        "get_sm_diagnostics", "get_thread_diagnostics", "sm_dp_destroy", "sync_vlans", "sync_tunnels",
        "sync_pif_currently_attached", "emergency_disable_tls_verification",
        "emergency_reenable_tls_verification")),
    "pool.emergency_reset_master", "pool.emergency_transition_to_master",
    "pool.ha_prevent_restarts_for", "pool.ha_failover_plan_exists",
    "pool.ha_compute_max_host_failures_to_tolerate",
    "pool.ha_compute_hypothetical_max_host_failures_to_tolerate", "pool.ha_compute_vm_failover_plan",
    "pool.enable_external_auth", "pool.disable_external_auth", "pool.detect_nonhomogeneous_external_auth",
    "pool.enable_tls_verification", "pool.test_archive_target",
})


def has_async(message) -> bool:
    """xapi gives an Async form to explicit calls (unless declared without one) and to
    constructors/destructors, not to accessors."""
    if message.wire_name in _ASYNC_EXCEPTIONS:
        return True
    if message.cls in _NO_ASYNC_CLASSES or message.wire_name in _NO_ASYNC_CALLS:
        return False
    if message.implicit:
        return message.name in ("create", "destroy")
    return True


# Explicit messages that only read; with the implicit get_* accessors they are answered locally.
_READS = frozenset({"get_all", "get_all_records", "get_record", "get_by_uuid", "get_by_name_label",
                    "get_all_records_where"})


def forwarding(message) -> str:
    """"emergency": answered by any host even without a coordinator; "local" (normally-local): reads
    a member answers from its replica of the pool database; "master": the coordinator's.
    The one place this is decided: xapi.forwarding (HOST_IS_SLAVE), xapi.pool.relay (which calls a
    member relays) and the API reference (docs/api.md) all read it from here."""
    if message.wire_name in EMERGENCY_CALLS:
        return "emergency"
    if message.takes_session and (readonly(message) or message.name in _READS):
        return "local"
    return "master"


def readonly(message) -> bool:
    """Calls that cannot change the database: no event delivery needed after them."""
    return message.implicit and message.name.startswith("get_")
