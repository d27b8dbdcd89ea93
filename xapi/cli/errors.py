"""How xe prints a XenAPI failure (xapi's Cli_util.server_error): the error's documentation, then one
`name: value` line per parameter, references shown as `uuid (name-label)`. Codes we have no
documentation for go out as the protocol's Error command (`Error code:` / `Error parameters:`).

The documentation and parameter names are xen-api's (ocaml/idl/datamodel_errors.ml), for the errors
the CLI's commands can meet.
"""
from __future__ import annotations

# code -> (parameter names, documentation)
DOCS: dict[str, tuple[tuple[str, ...], str]] = {
    "INTERNAL_ERROR": (("message",), "The server failed to handle your request, due to an internal error. "
                       "The given message may give details useful for debugging the problem."),
    "PERMISSION_DENIED": (("message",), "Caller not allowed to perform this operation."),
    "UUID_INVALID": (("type", "uuid"), "The uuid you supplied was invalid."),
    "MAP_DUPLICATE_KEY": (("type", "param_name", "uuid", "key"),
                          "You tried to add a key-value pair to a map, but that key is already there."),
    "MESSAGE_METHOD_UNKNOWN": (("method",), "You tried to call a method that does not exist. The method name "
                               "that you used is echoed."),
    "VALUE_NOT_SUPPORTED": (("field", "value", "reason"),
                            "You attempted to set a value that is not supported by this implementation. The "
                            "fully-qualified field name and the value that you tried to set are returned. Also "
                            "returned is a developer-only diagnostic reason."),
    "INVALID_VALUE": (("field", "value"), "The value given is invalid"),
    "FIELD_TYPE_ERROR": (("field",), "The value specified is of the wrong type"),
    "OPERATION_NOT_ALLOWED": (("reason",), "You attempted an operation that was not allowed."),
    "OPERATION_BLOCKED": (("ref", "code"), "You attempted an operation that was explicitly blocked (see the "
                          "blocked_operations field of the given object)."),
    "NOT_IMPLEMENTED": (("function",), "The function is not implemented"),
    "HANDLE_INVALID": (("class", "handle"),
                       "You gave an invalid object reference. The object may have recently been deleted. The "
                       "class parameter gives the type of reference given, and the handle parameter echoes the "
                       "bad value given."),
    "SESSION_AUTHENTICATION_FAILED": ((), "The credentials given by the user are incorrect, so access has been "
                                      "denied, and you have not been issued a session handle."),
    "SESSION_INVALID": (("handle",), "You gave an invalid session reference. It may have been invalidated by a "
                        "server restart, or timed out. You should get a new session handle, using one of the "
                        "session.login_ calls. This error does not invalidate the current connection. The "
                        "handle parameter echoes the bad value given."),
    "RBAC_PERMISSION_DENIED": (("permission", "message"), "RBAC permission denied."),
    "CANNOT_CONTACT_HOST": (("host",), "Cannot forward messages because the server cannot be contacted. The "
                            "server may be switched off or there may be network connectivity problems."),
    "OTHER_OPERATION_IN_PROGRESS": (("class", "object"),
                                    "Another operation involving the object is currently in progress"),
    "TASK_CANCELLED": (("task",), "The request was asynchronously canceled."),
    "EVENTS_LOST": ((), "Some events have been lost from the queue and cannot be retrieved."),
    # VM
    "VM_BAD_POWER_STATE": (("vm", "expected", "actual"),
                           "You attempted an operation on a VM that was not in an appropriate power state at "
                           "the time; for example, you attempted to start a VM that was already running. The "
                           "parameters returned are the VM's handle, and the expected and actual VM state at "
                           "the time of the call."),
    "VM_IS_TEMPLATE": (("vm",), "The operation attempted is not valid for a template VM"),
    "VM_CANNOT_DELETE_DEFAULT_TEMPLATE": (("vm",), "You cannot delete the specified default template."),
    "VM_MISSING_PV_DRIVERS": (("vm",), "You attempted an operation on a VM which requires PV drivers to be "
                              "installed but the drivers were not detected."),
    "VM_NO_EMPTY_CD_VBD": (("vm",), "The VM has no empty CD drive (VBD)."),
    "VM_NO_VCPUS": (("vm",), "You need at least 1 VCPU to start a VM"),
    "VM_HVM_REQUIRED": (("vm",), "HVM is required for this operation"),
    "VM_REQUIRES_SR": (("vm", "sr"), "You attempted to run a VM on a host which doesn't have access to an SR "
                       "needed by the VM. The VM has at least one VBD attached to a VDI in the SR."),
    "VM_REQUIRES_NET": (("vm", "network"), "You attempted to run a VM on a host which doesn't have a PIF on a "
                        "Network needed by the VM. The VM has at least one VIF attached to the Network."),
    "VM_NOT_RESIDENT_HERE": (("vm", "host"), "The specified VM is not currently resident on the specified "
                             "server."),
    "VM_HAS_NO_SUSPEND_VDI": (("vm",), "VM cannot be resumed because it has no suspend VDI"),
    "VM_MIGRATE_FAILED": (("vm", "source", "destination", "msg"), "An error occurred during the migration "
                          "process."),
    "VM_REVERT_FAILED": (("vm", "snapshot"), "An error occured while reverting the specified virtual machine "
                         "to the specified snapshot"),
    "VM_SHUTDOWN_TIMEOUT": (("vm", "timeout"), "VM failed to shutdown before the timeout expired"),
    "VM_DUPLICATE_VBD_DEVICE": (("vm", "vbd", "device"), "The specified VM has a duplicate VBD device and "
                                "cannot be started."),
    "CANNOT_RESET_CONTROL_DOMAIN": (("vm",), "The power-state of a control domain cannot be reset."),
    "HOST_NOT_ENOUGH_FREE_MEMORY": (("needed", "available"), "Not enough server memory is available to perform "
                                    "this operation."),
    "MEMORY_CONSTRAINT_VIOLATION": (("constraint",), "The dynamic memory range does not satisfy the following "
                                    "constraint."),
    "MEMORY_CONSTRAINT_VIOLATION_ORDER": ((), "The dynamic memory range violates constraint static_min <= "
                                          "dynamic_min <= dynamic_max <= static_max."),
    "MEMORY_CONSTRAINT_VIOLATION_MAXPIN": (("reason",), "The dynamic memory range violates constraint static_min "
                                           "= dynamic_min = dynamic_max = static_max."),
    "VM_NO_SUSPEND_SR": (("vm",), "This VM does not have a suspend SR specified."),
    "VM_REQUIRES_VDI": (("vm", "vdi"), "VM cannot be started because it requires a VDI which cannot be attached"),
    "VM_MEMORY_SIZE_TOO_LOW": (("vm",), "The specified VM has too little memory to be started."),
    "VM_TO_IMPORT_IS_NOT_NEWER_VERSION": (("vm", "existing_version", "version_to_import"),
                                          "The VM cannot be imported unforced because it is either the same "
                                          "version or an older version of an existing VM."),
    "DUPLICATE_VM": (("vm",), "Cannot restore this VM because it would create a duplicate"),
    "ONLY_PROVISION_TEMPLATE": ((), "The provision call can only be invoked on templates, not regular VMs."),
    "PROVISION_FAILED_OUT_OF_SPACE": ((), "The provision call failed because it ran out of space."),
    # devices
    "VBD_NOT_REMOVABLE_MEDIA": (("vbd",), "Media could not be ejected because it is not removable"),
    "VBD_NOT_EMPTY": (("vbd",), "Operation could not be performed because the drive is not empty"),
    "VBD_IS_EMPTY": (("vbd",), "Operation could not be performed because the drive is empty"),
    "DEVICE_ALREADY_ATTACHED": (("device",), "The device is already attached to a VM"),
    "DEVICE_ALREADY_DETACHED": (("device",), "The device is not currently attached"),
    "DEVICE_ALREADY_EXISTS": (("device",), "A device with the name given already exists on the selected VM"),
    "INVALID_DEVICE": (("device",), "The device name is invalid"),
    "MAC_INVALID": (("MAC",), "The MAC address specified is not valid."),
    # hosts and pools
    "HOST_OFFLINE": (("host",), "You attempted an operation which involves a host which could not be "
                     "contacted."),
    "HOST_DISABLED": (("host",), "The specified server is disabled."),
    "HOST_NOT_DISABLED": ((), "This operation cannot be performed because the host is not disabled. Please "
                          "disable the host and then try again."),
    "HOST_NOT_LIVE": ((), "This operation cannot be completed as the server is not live."),
    "HOST_IN_USE": (("host", "type", "ref"), "This operation cannot be completed as the host is in use by (at "
                    "least) the object of type and ref echoed below."),
    "HOST_CANNOT_DESTROY_SELF": (("host",), "The pool master host cannot be removed."),
    "HOST_IN_EMERGENCY_MODE": ((), "Cannot perform operation as the host is running in emergency mode."),
    "HOST_ITS_OWN_SLAVE": ((), "The host is its own slave. Please use pool-emergency-transition-to-master or "
                           "pool-emergency-reset-master."),
    "HOST_STILL_BOOTING": ((), "The host toolstack is still initialising. Please wait."),
    "HOST_IS_SLAVE": (("Master IP address",), "You cannot make regular API calls directly on a slave. Please "
                      "pass API calls via the master host."),
    "NO_HOSTS_AVAILABLE": ((), "There were no servers available to complete the specified operation."),
    "CANNOT_EVACUATE_HOST": (("errors",), "This server cannot be evacuated."),
    "HOST_EVACUATE_IN_PROGRESS": (("host",), "This host is being evacuated."),
    "POOL_NOT_IN_EMERGENCY_MODE": ((), "This pool is not in emergency mode."),
    "POOL_JOINING_HOST_CANNOT_CONTAIN_SHARED_SRS": ((), "The server joining the pool cannot contain any shared "
                                                    "storage."),
    "POOL_JOINING_HOST_CANNOT_HAVE_RUNNING_OR_SUSPENDED_VMS": ((), "The server joining the pool cannot have any "
                                                               "running or suspended VMs."),
    "POOL_JOINING_HOST_CANNOT_BE_MASTER_OF_OTHER_HOSTS": ((), "The server joining the pool cannot already be a "
                                                          "master of another pool."),
    "POOL_JOINING_HOST_CONNECTION_FAILED": ((), "There was an error connecting to the host while joining it in "
                                            "the pool."),
    "HA_IS_ENABLED": ((), "The operation could not be performed because HA is enabled on the Pool"),
    # storage
    "SR_NOT_ATTACHED": (("sr",), "The SR is not attached."),
    "SR_BACKEND_FAILURE": (("status", "stdout", "stderr"), "There was an SR backend failure."),
    "SR_UUID_EXISTS": (("uuid",), "An SR with that uuid already exists."),
    "SR_NO_PBDS": (("sr",), "The SR has no attached PBDs"),
    "SR_FULL": (("requested", "maximum"), "The SR is full. Requested new size exceeds the maximum size"),
    "SR_HAS_PBD": (("sr",), "The SR is still connected to a host via a PBD. It cannot be destroyed or "
                   "forgotten."),
    "SR_UNKNOWN_DRIVER": (("driver",), "The SR could not be connected because the driver was not recognised."),
    "SR_OPERATION_NOT_SUPPORTED": (("sr",), "The SR backend does not support the operation (check the SR's "
                                   "allowed operations)"),
    "SR_NOT_EMPTY": ((), "The SR operation cannot be performed because the SR is not empty."),
    "PBD_EXISTS": (("sr", "host", "pbd"), "A PBD already exists connecting the SR to the server."),
    "VDI_READONLY": (("vdi",), "The operation required write access but this VDI is read-only"),
    "VDI_TOO_SMALL": (("vdi", "minimum size"), "The VDI is too small. Please resize it to at least the minimum "
                      "size."),
    "VDI_IN_USE": (("vdi", "operation"), "This operation cannot be performed because this VDI is in use by "
                   "some other operation"),
    "VDI_MISSING": (("sr", "vdi"), "This operation cannot be performed because the specified VDI could not be "
                    "found on the storage substrate"),
    "VDI_NOT_MANAGED": (("vdi",), "This operation cannot be performed because the system does not manage this "
                        "VDI"),
    "VDI_IS_NOT_ISO": (("vdi", "type"), "This operation can only be performed on CD VDIs (iso files or CDROM "
                       "drives)"),
    "VDI_INCOMPATIBLE_TYPE": (("vdi", "type"), "This operation cannot be performed because the specified VDI "
                              "is of an incompatible type (eg: an HA statefile cannot be attached to a guest)"),
    # network
    "PIF_IS_PHYSICAL": (("PIF",), "You tried to destroy a PIF, but it represents an aspect of the physical host "
                        "configuration, and so cannot be destroyed. The parameter echoes the PIF handle you "
                        "gave."),
    "PIF_CONFIGURATION_ERROR": (("PIF", "msg"), "An unknown error occurred while attempting to configure an "
                                "interface."),
    "INVALID_IP_ADDRESS_SPECIFIED": (("parameter",), "A required parameter contained an invalid IP address"),
    "NETWORK_CONTAINS_VIF": (("vifs",), "The network contains active VIFs and cannot be deleted."),
    "NETWORK_CONTAINS_PIF": (("pifs",), "The network contains active PIFs and cannot be deleted."),
    # import/export
    "IMPORT_ERROR_GENERIC": (("msg",), "The VM could not be imported."),
    "IMPORT_ERROR_PREMATURE_EOF": ((), "The VM could not be imported; the end of the file was reached "
                                   "prematurely."),
    "IMPORT_ERROR_SOME_CHECKSUMS_FAILED": ((), "Some data checksums were incorrect; the VM may be corrupt."),
    "IMPORT_INCOMPATIBLE_VERSION": ((), "The import failed because this export has been created by a different "
                                    "(incompatible) product version"),
    "EVENT_SUBSCRIPTION_PARSE_FAILURE": (("subscription",), "The server failed to parse your event "
                                         "subscription. Valid values include: *, class-name, "
                                         "class-name/object-reference."),
}


def lines(code: str, params: list[str]) -> list[str] | None:
    """xe's lines for an error, or None when it goes out as a raw Error command. Missing parameters show
    as `<unknown>`, extra ones as `<extra>` (as xapi's pretty-printer does)."""
    entry = DOCS.get(code)
    if entry is None:
        return None
    names, doc = entry
    out = [doc]
    for i in range(max(len(names), len(params))):
        name = names[i] if i < len(names) else "<extra>"
        out.append(f"{name}: {params[i] if i < len(params) else '<unknown>'}")
    return out
