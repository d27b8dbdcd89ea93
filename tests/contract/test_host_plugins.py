"""host.call_plugin and host.call_extension with the XenAPI SDK against a real daemon: the plugin
(tests/plugins/echo, a XenAPIPlugin-style script) copied into the daemon's <data>/plugins runs as a
subprocess with the XML-RPC call as its argument; its answers and failures come back as xapi's."""
import os
import shutil
import stat
import time
import xmlrpc.client

import pytest

from tests.fixtures import own_daemon, root_session
from tests.helpers import failure

PLUGIN = os.path.join(os.path.dirname(os.path.dirname(__file__)), "plugins", "echo")

host = own_daemon(env={"XAPI_PLUGIN_TIMEOUT": "1"})
session = root_session("host")


@pytest.fixture(scope="module")
def x(host, session):
    os.makedirs(os.path.join(host.data_dir, "plugins"), exist_ok=True)
    shutil.copy(PLUGIN, os.path.join(host.data_dir, "plugins", "echo"))
    return session.xenapi


@pytest.fixture(scope="module")
def h(x):
    return x.host.get_all()[0]


def test_plugin_answers_its_value(x, h):
    assert x.host.call_plugin(h, "echo", "echo", {"b": "2", "a": "1"}) == "a=1\nb=2"
    assert x.host.call_plugin(h, "echo", "echo", {}) == ""


def test_plugin_gets_the_callers_session(x, session, h):
    assert x.host.call_plugin(h, "echo", "session", {}) == session._session


def test_missing_plugin(x, host, h):
    assert failure(x.host.call_plugin, h, "nope", "echo", {}) == ["XENAPI_MISSING_PLUGIN", "nope"]
    # only names in the folder: no way out of it
    assert failure(x.host.call_plugin, h, "../plugins/echo", "echo", {}) == \
        ["XENAPI_MISSING_PLUGIN", "../plugins/echo"]
    for name in ("..", ".", "", "/bin/true", os.path.join(host.data_dir, "plugins", "echo")):
        assert failure(x.host.call_plugin, h, name, "echo", {}) == ["XENAPI_MISSING_PLUGIN", name]
    # an extension's name is the XML-RPC call's method name: no path either
    call = xmlrpc.client.dumps((), "../plugins/echo")
    assert failure(x.host.call_extension, h, call) == ["MESSAGE_METHOD_UNKNOWN", "../plugins/echo"]
    assert x.host.has_extension(h, "../plugins/echo") is False


def test_plugin_failures(x, h):
    assert failure(x.host.call_plugin, h, "echo", "fail", {"code": "SR_BACKEND_FAILURE_1"}) == \
        ["SR_BACKEND_FAILURE_1", "from", "plugin"]
    assert failure(x.host.call_plugin, h, "echo", "other", {}) == ["UNKNOWN_XENAPI_PLUGIN_FUNCTION", "other"]
    assert failure(x.host.call_plugin, h, "echo", "fault", {}) == ["XENAPI_PLUGIN_FAILURE", "fault", "42",
                                                                  "plugin fault"]
    assert failure(x.host.call_plugin, h, "echo", "crash", {}) == \
        ["XENAPI_PLUGIN_FAILURE", "non-zero exit", "partial output\n", "something broke\n"]
    code, reason, out, _ = failure(x.host.call_plugin, h, "echo", "garbage", {})
    assert (code, reason, out) == ("XENAPI_PLUGIN_FAILURE", "failed to parse plugin output", "not xml at all\n")


def test_plugin_timeout_kills_it(x, h):
    start = time.monotonic()
    assert failure(x.host.call_plugin, h, "echo", "sleep", {"seconds": "30"})[:2] == \
        ["XENAPI_PLUGIN_FAILURE", "timeout"]
    assert time.monotonic() - start < 10
    # the daemon answers others meanwhile and after
    assert x.host.call_plugin(h, "echo", "echo", {"k": "v"}) == "k=v"


def test_bad_host(x):
    assert failure(x.host.call_plugin, "OpaqueRef:nope", "echo", "echo", {}) == \
        ["HANDLE_INVALID", "host", "OpaqueRef:nope"]


def test_extension(x, host, h):
    assert x.host.has_extension(h, "Test.hello") is False
    call = xmlrpc.client.dumps(("world",), "Test.hello")
    assert failure(x.host.call_extension, h, call) == ["MESSAGE_METHOD_UNKNOWN", "Test.hello"]
    folder = os.path.join(host.data_dir, "extensions")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "Test.hello")
    with open(path, "w") as f:
        f.write("#!/usr/bin/env python3\n"
                "import sys, xmlrpc.client\n"
                "params, name = xmlrpc.client.loads(sys.argv[1])\n"
                "print(xmlrpc.client.dumps(({'Status': 'Success', 'Value': 'hello ' + params[0]},), "
                "methodresponse=True))\n")
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    assert x.host.has_extension(h, "Test.hello") is True
    (answer,), _ = xmlrpc.client.loads(x.host.call_extension(h, call))
    assert answer == {"Status": "Success", "Value": "hello world"}
    assert failure(x.host.call_extension, h, "<not a call")[0] == "INTERNAL_ERROR"
