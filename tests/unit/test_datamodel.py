"""The datamodel generated from xenapi.json, and the dispatch table built from it."""
import xmlrpc.client

from xapi import datamodel as dm
from xapi.actions.accessors import accessor
from xapi.datamodel import types
from xapi.db.schema import new_database
from xapi.dispatch import Dispatcher
from xapi.forwarding import resolve


def test_every_type_parses_and_prints_back():
    for c in dm.CLASSES.values():
        for f in c.fields.values():
            assert types.parse(str(f.type)) == f.type
        for m in c.messages.values():
            for p in m.params:
                assert types.parse(str(p.type)) == p.type


def test_known_facts():
    vm = dm.CLASSES["VM"]
    assert vm.fields["power_state"].type == types.Type("enum", "vm_power_state")
    assert vm.fields["power_state"].default == "Halted"
    assert dm.ENUMS["vm_power_state"] == ("Halted", "Paused", "Running", "Suspended")
    start = vm.messages["start"]
    assert [p.name for p in start.params] == ["vm", "start_paused", "force"]
    assert start.takes_session and "vm-operator" in start.roles and "read-only" not in start.roles
    login = dm.CLASSES["session"].messages["login_with_password"]
    assert not login.takes_session and [p.name for p in login.params] == ["uname", "pwd", "version", "originator"]
    assert isinstance(vm.fields["snapshot_time"].initial(), xmlrpc.client.DateTime)
    assert vm.fields["other_config"].initial() == {} and vm.fields["other_config"].initial() is not \
        vm.fields["other_config"].initial()


def test_every_implicit_accessor_is_generic_except_constructors():
    db = new_database()
    for c in dm.CLASSES.values():
        for m in c.messages.values():
            if m.implicit and m.name not in ("create", "destroy"):
                assert accessor(m, db) is not None, m.wire_name


def test_dispatch_table_covers_the_datamodel():
    d = Dispatcher(resolve, new_database(), {})
    n = sum(len(c.messages) for c in dm.CLASSES.values())
    assert len(d.method_names) == n + 1            # and system.listMethods; no Async names, as xapi
    assert "Async.VM.start" in d.entries and "Async.VM.get_record" not in d.entries
    assert "Async.session.logout" not in d.entries
    assert d.entries["VM_get_record"] is d.entries["VM.get_record"]
    login = d.entries["session.login_with_password"]
    assert login.min_params == 2 and login.nparams == 4 and login.is_async


# -- generic create / destroy ----------------------------------------------------------------------------
def _call(db, cls, name, *args):
    return accessor(dm.CLASSES[cls].messages[name], db)(None, None, *args)


def _failure(fn, *args):
    import pytest
    from xapi.datamodel.errors import XapiError
    with pytest.raises(XapiError) as e:
        fn(*args)
    return [e.value.code, *e.value.args[1:]]


def test_implicit_constructors_are_the_xapi_fifteen():
    implicit = sorted(c.name for c in dm.CLASSES.values()
                      if "create" in c.messages and c.messages["create"].implicit)
    assert implicit == sorted(["subject", "VM", "VMPP", "VMSS", "VM_appliance", "network", "VIF", "VDI", "VBD",
                               "PBD", "console", "user", "secret", "PVS_cache_storage", "Observer"])
    for name in implicit:
        assert dm.CLASSES[name].messages["destroy"].implicit


def test_create_takes_constructor_fields_and_defaults():
    db = new_database()
    ref = _call(db, "network", "create", {"name_label": "n", "MTU": "9000", "other_config": {"a": "b"},
                                          "uuid": "not-taken", "PIFs": ["OpaqueRef:x"], "bridge": "xenbr7",
                                          "unknown_key": 1})
    row = db.table("network").get(ref)
    assert ref.startswith("OpaqueRef:") and row["uuid"] != "not-taken" and len(row["uuid"]) == 36
    assert row["name_label"] == "n" and row["MTU"] == 9000 and row["bridge"] == "xenbr7"
    assert row["name_description"] == "" and row["managed"] is True and row["tags"] == []   # defaults
    assert row["PIFs"] == [] and row["VIFs"] == []       # RO/runtime: never from the struct
    # a full get_record is a valid constructor argument: its other fields are ignored
    ref2 = _call(db, "network", "create", row)
    assert ref2 != ref and db.table("network").get_field(ref2, "uuid") != row["uuid"]
    assert db.table("network").get_field(ref2, "PIFs") == []


def test_create_errors_are_xapis():
    db = new_database()
    # the first constructor field without a default that the struct lacks, in datamodel order
    assert _failure(_call, db, "network", "create", {"name_label": "n"}) == \
        ["INTERNAL_ERROR", 'Server_helpers.Dispatcher_FieldNotFound("other_config")']
    assert _failure(_call, db, "VM", "create", {}) == \
        ["INTERNAL_ERROR", 'Server_helpers.Dispatcher_FieldNotFound("user_version")']
    assert _failure(_call, db, "network", "create", {"other_config": {}, "MTU": "big"}) == \
        ["FIELD_TYPE_ERROR", "MTU"]
    assert _failure(_call, db, "network", "create", {"other_config": []}) == ["FIELD_TYPE_ERROR", "other_config"]
    assert len(db.table("network")) == 0


def test_create_and_destroy_keep_relations():
    from xapi.db.schema import insert
    db = new_database()
    vm = insert(db, "VM", name_label="vm")
    net = _call(db, "network", "create", {"other_config": {}})
    vif = _call(db, "VIF", "create", {"device": "0", "network": net, "VM": vm, "MAC": "", "MTU": "1500",
                                      "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {},
                                      "locking_mode": "NETWORK_DEFAULT"})
    assert db.table("VIF").get_field(vif, "locking_mode") == "network_default"      # enums in any case
    assert db.table("VM").get_field(vm, "VIFs") == [vif] and db.table("network").get_field(net, "VIFs") == [vif]
    assert _call(db, "VIF", "destroy", vif) == ""
    assert vif not in db.table("VIF")
    assert db.table("VM").get_field(vm, "VIFs") == [] and db.table("network").get_field(net, "VIFs") == []
    assert _failure(_call, db, "VIF", "destroy", vif) == ["HANDLE_INVALID", "VIF", vif]
    assert _failure(_call, db, "network", "destroy", "OpaqueRef:nope") == \
        ["HANDLE_INVALID", "network", "OpaqueRef:nope"]
    _call(db, "network", "destroy", net)
    assert len(db.table("network")) == 0


def test_forwarding_class_of_every_message():
    """The datamodel's forwarding class is what xapi.forwarding does with the call on a member: only
    "master" calls get the coordinator-only check (HOST_IS_SLAVE on a member)."""
    from xapi.datamodel import flags

    db = new_database()
    seen = set()
    for c in dm.CLASSES.values():
        for m in c.messages.values():
            kind = flags.forwarding(m)
            seen.add(kind)
            fn = resolve(m, db)
            if fn is not None:
                checked = getattr(getattr(fn, "__code__", None), "co_name", "").startswith("coordinator_only")
                assert checked == (kind == "master"), m.wire_name
    assert seen == {"master", "local", "emergency"}
    vm = dm.CLASSES["VM"].messages
    assert [flags.forwarding(vm[n]) for n in ("get_record", "get_name_label", "get_all_records_where",
                                             "set_name_label", "start", "create")] == \
        ["local", "local", "local", "master", "master", "master"]
    assert flags.forwarding(dm.CLASSES["pool"].messages["emergency_transition_to_master"]) == "emergency"
    # a read without a session (none exists) is not a replica read
    assert flags.forwarding(dm.CLASSES["session"].messages["login_with_password"]) == "master"


def test_parameter_defaults_are_trailing_parameters_of_their_message():
    from xapi.datamodel.defaults import PARAM_DEFAULTS

    for wire, defaults in PARAM_DEFAULTS.items():
        cls, name = wire.split(".")
        params = [p.name for p in dm.CLASSES[cls].messages[name].params]
        assert params[-len(defaults):] == [n for n, _ in defaults], wire


def test_async_forms_follow_xapis_flags():
    from xapi.datamodel import flags

    msgs = {m.wire_name: m for c in dm.CLASSES.values() for m in c.messages.values()}
    listed = [msgs[n] for n in flags._NO_ASYNC_CALLS if n in msgs]
    assert len(listed) > 30 and not any(flags.has_async(m) for m in listed)
    for wire in ("VM.start", "VM.clean_shutdown", "host.evacuate", "pool.join", "pool.sync_database",
                 "VM.create", "VM.destroy", "network.create", "host.dmesg", "task.cancel", "event.register",
                 "event.unregister", "message.destroy_many", "session.logout_subject_identifier",
                 "user.create", "VDI.snapshot", "VDI.set_name_label", "VDI.set_on_boot", "SR.scan",
                 "SR.set_name_label", "SR.create_new_blob", "PBD.plug", "VBD.plug", "VIF.move", "PIF.plug",
                 "Bond.create", "VMSS.create", "subject.create", "secret.create", "VM_appliance.start",
                 "DR_task.create", "Cluster.pool_resync", "Cluster_host.force_destroy", "Observer.set_hosts",
                 "Repository.introduce", "GPU_group.get_remaining_capacity", "PUSB.scan"):
        assert flags.has_async(msgs[wire]), wire
    for wire in ("VM.get_record", "VM.set_name_label", "VM.add_to_other_config", "host.get_servertime",
                 "host.shutdown_agent", "host.emergency_ha_disable", "VM.set_VCPUs_max",
                 "VM.set_memory_static_max", "VM.get_allowed_VBD_devices", "session.login_with_password",
                 "session.logout", "task.create", "task.destroy", "event.from", "event.next", "message.create",
                 "message.get_since", "blob.create", "SR.get_supported_types", "SR.set_physical_size",
                 "SR.get_data_sources", "VDI.set_sharable", "VDI.set_read_only", "VDI.get_nbd_info",
                 "subject.add_to_roles", "VMSS.snapshot_now", "VMSS.set_frequency", "VMPP.protect_now",
                 "role.get_permissions", "auth.get_group_membership"):
        assert not flags.has_async(msgs[wire]), wire
