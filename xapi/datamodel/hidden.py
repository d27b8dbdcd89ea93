"""Messages xapi serves but does not publish in its datamodel documentation.

`<Class>.get_all_records_where(expr)` exists for every class with `get_all_records` (the xe CLI and
Xen Orchestra use it); it takes xapi's filter expressions.
"""
from __future__ import annotations


def add_hidden(classes, Message, Param, parse) -> None:
    for c in classes.values():
        records = c.messages.get("get_all_records")
        if records is None:
            continue
        c.messages["get_all_records_where"] = Message(
            c.name, "get_all_records_where", (Param("expr", parse("string")),), True, records.result,
            records.roles, (), True)

    # Pool-internal messages xapi hides from its documentation (datamodel.ml: session.slave_login,
    # host.is_in_emergency_mode): how a member logs in to the coordinator, and a diagnostics call.
    session = classes["session"]
    session.messages["slave_login"] = Message(
        "session", "slave_login", (Param("host", parse("host ref")), Param("psecret", parse("string"))),
        False, parse("session ref"), frozenset({"pool-admin"}), (), False)
    host = classes["host"]
    readers = host.messages["get_record"].roles
    host.messages["is_in_emergency_mode"] = Message(
        "host", "is_in_emergency_mode", (), True, parse("bool"), readers, (), False)
    # VM.set_is_default_template (hide_from_docs): xe's `template-param-set is-default-template=` and
    # Xen Orchestra's forced deletion of a default template call it.
    vm = classes["VM"]
    vm.messages["set_is_default_template"] = Message(
        "VM", "set_is_default_template", (Param("vm", parse("VM ref")), Param("value", parse("bool"))),
        True, parse("void"), frozenset({"pool-admin"}), (), False)
