"""VM.set_is_default_template, which xapi serves without documenting it: over the SDK and through
`xe template-param-set is-default-template=`, with xapi's side effects."""
from __future__ import annotations

from tests.contract.xe_client import ok, xe
from tests.fixtures import own_daemon, root_xenapi
from tests.helpers import failure, new_vm

host = own_daemon("--request-timeout", "10")
x = root_xenapi("host")


def test_a_default_template_is_a_template(host, x):
    vm = new_vm(x, "to-be-default")
    assert not x.VM.get_is_a_template(vm)
    x.VM.set_is_default_template(vm, True)
    rec = x.VM.get_record(vm)
    assert rec["is_default_template"] and rec["is_a_template"]
    assert rec["other_config"]["default_template"] == "true"
    x.VM.set_is_default_template(vm, False)
    rec = x.VM.get_record(vm)
    assert not rec["is_default_template"] and rec["is_a_template"]      # still a template
    assert rec["other_config"]["default_template"] == "false"
    assert failure(x.VM.set_is_default_template, "OpaqueRef:nope", True)[0] == "HANDLE_INVALID"
    x.VM.destroy(vm)


def test_xe_template_param_set(host, x):
    vm = new_vm(x, "xe-default")
    x.VM.set_is_a_template(vm, True)
    uuid = x.VM.get_uuid(vm)
    ok(xe(host, "template-param-set", f"uuid={uuid}", "is-default-template=true"))
    assert x.VM.get_is_default_template(vm)
    assert ok(xe(host, "template-param-get", f"uuid={uuid}", "param-name=is-default-template")) == "true"
    ok(xe(host, "template-param-set", f"uuid={uuid}", "is-default-template=false"))
    assert not x.VM.get_is_default_template(vm)
    x.VM.destroy(vm)

