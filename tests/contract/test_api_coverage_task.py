"""task.set_status, set_progress, set_result, set_error_info with the XenAPI SDK: the values a client
reports land in the record and raise events; only the task's owner or a holder of task.destroy/any may
set them (xapi's TaskHelper.assert_op_valid), checked with PAM users of two roles."""
import pytest

from tests import helpers
from tests.contract.pam_accounts import login, needs_pam
from tests.helpers import failure


def test_setters_as_root(xapi_daemon):
    s = helpers.login(xapi_daemon)
    x = s.xenapi
    try:
        task = x.task.create("import", "driven by the client")
        token = x.event_from(["task"], "", 0.0)["token"]
        x.task.set_progress(task, 0.5)
        x.task.set_result(task, "<value>OpaqueRef:abc</value>")
        x.task.set_error_info(task, ["SR_FULL", "12", "3"])
        x.task.set_status(task, "failure")
        rec = x.task.get_record(task)
        assert (rec["progress"], rec["result"], rec["error_info"], rec["status"]) == \
            (0.5, "<value>OpaqueRef:abc</value>", ["SR_FULL", "12", "3"], "failure")
        events = x.event_from(["task"], token, 5.0)["events"]
        assert any(e["ref"] == task and e["snapshot"]["status"] == "failure" for e in events)
        assert failure(x.task.set_status, task, "finished")[0] == "FIELD_TYPE_ERROR"
        assert failure(x.task.set_progress, "OpaqueRef:nope", 0.1) == ["HANDLE_INVALID", "task", "OpaqueRef:nope"]
        x.task.destroy(task)
    finally:
        x.session.logout()


@pytest.mark.usefixtures("accounts")
class TestOwnership:
    pytestmark = needs_pam

    def test_owner_or_task_destroy_any(self, pam):
        op = login(pam, "op").xenapi
        ro = login(pam, "ro").xenapi
        try:
            mine = op.task.create("op's", "")
            op.task.set_progress(mine, 0.25)
            op.task.set_status(mine, "success")
            assert op.task.get_status(mine) == "success"
            denied = failure(ro.task.set_progress, mine, 0.9)
            assert denied[:2] == ["RBAC_PERMISSION_DENIED", "task.destroy/any"]
            assert ro.task.get_progress(mine) == 0.25
            theirs = ro.task.create("ro's", "")
            ro.task.set_result(theirs, "done")            # read-only may still report on its own task
            assert failure(op.task.set_result, theirs, "x")[0] == "RBAC_PERMISSION_DENIED"
            pam["root"].xenapi.task.set_result(theirs, "root may")   # root holds every permission
            assert ro.task.get_result(theirs) == "root may"
        finally:
            op.session.logout()
            ro.session.logout()
