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
    assert len(d.method_names) == n + 1            # and system.listMethods
    assert d.entries["VM_get_record"] is d.entries["VM.get_record"]
    login = d.entries["session.login_with_password"]
    assert login.min_params == 2 and login.nparams == 4 and login.is_async
