"""The driver side of the SMAPIv1 protocol: what every executable in ``xapi/sm/drivers`` shares.

A driver is run once per operation with the whole XML-RPC request as its only argument: a
``methodCall`` whose method name is the command and whose one parameter is a struct (``host_ref``,
``command``, ``args``, ``device_config``, and, depending on the command, ``session_ref``,
``sr_ref``, ``sr_uuid``, ``vdi_ref``, ``vdi_uuid``, ``vdi_location``, ``vdi_sm_config``,
``vdi_type``, ``driver_params``, ``new_uuid``, ``sr_sm_config``, ``subtask_of``...). It answers on
stdout with a ``methodResponse`` holding one value, or a fault ``(code, message)`` whose codes are
SM's (``XE_SR_ERRORCODES.xml``), and exits 0 either way. Anything on stderr is a log.

Drivers write what they find into the database themselves, through the session they are given,
over the daemon's local socket (``XAPI_SOCKET``): ``VDI.db_introduce``, ``VDI.db_forget``,
``VDI.set_virtual_size`` and so on, as SM's drivers do.

This module imports nothing of the daemon, nor xmlrpc.client (xapi.sm.smrpc instead): it starts fast
and runs anywhere the package is.
"""
from __future__ import annotations

import os
import sys
import time

from xapi.sm import smrpc

NULL_REF = "OpaqueRef:NULL"
NEVER = "19700101T00:00:00Z"

# SM's error names -> (code, description), from XE_SR_ERRORCODES.xml (the ones these drivers raise).
ERRORS: dict[str, tuple[int, str]] = {
    "InvalidArg": (1, "Invalid argument"),
    "SRInUse": (16, "The SR device is currently in use"),
    "InvalidDev": (19, "No such device"),
    "VDIInUse": (24, "The VDI is currently in use"),
    "Unimplemented": (38, "The requested method is not supported/implemented"),
    "SRNotEmpty": (39, "The SR is not empty"),
    "SRScan": (40, "The SR scan failed "),
    "SRExists": (42, "The SR already exists"),
    "VDIExists": (43, "The VDI already exists"),
    "SRNoSpace": (44, "There is insufficient space"),
    "VDIUnavailable": (46, "The VDI is not available"),
    "SRUnavailable": (47, "The SR is not available"),
    "FileSRCreate": (61, "File SR creation error"),
    "FileSRDelete": (63, "File SR deletion error"),
    "VDIRemove": (64, "Failed to remove VDI"),
    "VDILoad": (65, "Failed to load VDI"),
    "NFSVersion": (72, "Required NFS server version unsupported"),
    "NFSMount": (73, "NFS mount error"),
    "NFSUnMount": (74, "NFS unmount error"),
    "NFSAttached": (75, "NFS mount point already attached"),
    "VDICreate": (78, "VDI Creation failed"),
    "VDISize": (79, "VDI Invalid size"),
    "VDIDelete": (80, "Failed to mark VDI hidden"),
    "VDIClone": (81, "Failed to clone VDI"),
    "VDISnapshot": (82, "Failed to snapshot VDI"),
    "NFSCreate": (88, "NFS SR creation error"),
    "ConfigDeviceMissing": (90, "The request is missing the device parameter"),
    "ConfigDeviceInvalid": (91, "The device is not a valid path"),
    "ConfigLocationMissing": (94, "The request is missing the location parameter"),
    "ConfigServerPathMissing": (101, "The request is missing the serverpath parameter"),
    "ConfigServerMissing": (102, "The request is missing the server parameter"),
    "ConfigServerPathBad": (103, "The serverpath argument is not valid"),
    "NFSTarget": (108, "Unable to detect an NFS service on this target."),
    "SnapshotChainTooLong": (109, "The snapshot chain is too long"),
    "VDIResize": (110, "VDI resize failed"),
    "DNSError": (140, "Incorrect DNS name, unable to resolve."),
    "BadRequest": (143, "Failed to parse the request"),
    "VDIMissing": (144, "VDI could not be found"),
    "APIFailure": (153, "A Failure occurred accessing an API object"),
    "EIO": (200, "General IO error"),
    "SMGeneral": (202, "General backend error"),
    "ISODconfMissingLocation": (220, "'Location' parameter must be specified in Device Configuration"),
    "ISOMountFailure": (222, "Could not mount the directory specified in Device Configuration"),
    "ISOUnmountFailure": (223, "Could not unmount the directory specified in Device Configuration"),
    "ISOLocationStringError": (225, "Incorrect Location string format. String must be in the format "
                                    "SERVER:PATH for NFS targets, or \\\\SERVER\\PATH for CIFS targets"),
    "ISOLocalPath": (226, "Invalid local path"),
}


class SMError(Exception):
    """A failure the driver reports as an XML-RPC fault: SM's code and its message (with opterr)."""

    def __init__(self, name: str, opterr: str | None = None) -> None:
        code, description = ERRORS[name]
        message = f"{description} [opterr={opterr}]" if opterr else description
        super().__init__(message)
        self.name, self.code, self.message = name, code, message


class XenAPIFailure(Exception):
    def __init__(self, details) -> None:
        super().__init__(details)
        self.details = list(details)


# -- the XenAPI client over the daemon's local socket ---------------------------------------------
class _Method:
    def __init__(self, api: "API", name: str) -> None:
        self._api, self._name = api, name

    def __getattr__(self, name: str) -> "_Method":
        return _Method(self._api, f"{self._name}.{name}")

    def __call__(self, *args):
        return self._api.call(self._name, *args)


class API:
    """``api.VDI.get_record(ref)``: XenAPI calls with the driver's session prepended."""

    def __init__(self, socket_path: str, session_ref: str, timeout: float = 60.0) -> None:
        self._session = session_ref
        self._http = smrpc.UnixHTTP(socket_path, timeout)

    def call(self, method: str, *args):
        body = smrpc.dumps_call(method, (self._session, *args)).encode("utf-8")
        reply = self._http.post(body, "Content-Type: text/xml\r\nUser-Agent: sm\r\n")
        (result,), _ = smrpc.loads(reply)
        if result.get("Status") != "Success":
            raise XenAPIFailure(result.get("ErrorDescription", ["UNKNOWN"]))
        return result.get("Value")

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Method(self, name)


# -- the request ---------------------------------------------------------------------------------
class Request:
    """The request struct, with the fields every command may look at."""

    def __init__(self, params: dict) -> None:
        self.params = params
        self.command: str = params.get("command", "")
        self.args: list[str] = list(params.get("args", []))
        self.device_config: dict[str, str] = dict(params.get("device_config", {}))
        self.host_ref: str = params.get("host_ref", NULL_REF)
        self.session_ref: str | None = params.get("session_ref")
        self.sr_ref: str = params.get("sr_ref", NULL_REF)
        self.sr_uuid: str = params.get("sr_uuid", "")
        self.sr_sm_config: dict = dict(params.get("sr_sm_config", {}))
        self.vdi_ref: str = params.get("vdi_ref", NULL_REF)
        self.vdi_uuid: str = params.get("vdi_uuid", "")
        self.vdi_location: str | None = params.get("vdi_location")
        self.vdi_sm_config: dict = dict(params.get("vdi_sm_config", {}))
        self.vdi_type: str = params.get("vdi_type", "user")
        self.driver_params: dict = dict(params.get("driver_params", {}))
        self.new_uuid: str | None = params.get("new_uuid")

    @property
    def is_master(self) -> bool:
        return self.device_config.get("SRmaster", "false") == "true"


def parse_request(argv: list[str]) -> Request:
    if len(argv) != 2:
        raise SMError("BadRequest", f"expected one argument, got {len(argv) - 1}")
    try:
        params, method = smrpc.loads(argv[1])
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad request
        raise SMError("BadRequest", str(e)) from None
    if len(params) != 1 or not isinstance(params[0], dict):
        raise SMError("BadRequest", "one struct parameter expected")
    req = Request(params[0])
    req.command = method or req.command
    return req


# -- drivers -------------------------------------------------------------------------------------
class Driver:
    """A storage driver: one method per command (``sr_scan``, ``vdi_create``...). Methods return the
    command's result as a plain value (None for nil); SMError becomes a fault."""

    DRIVER_INFO: dict = {}

    def __init__(self, req: Request) -> None:
        self.req = req
        self.dconf = req.device_config
        self._api: API | None = None

    @property
    def api(self) -> API:
        if self._api is None:
            if not self.req.session_ref:
                raise SMError("APIFailure", "no session given for this command")
            path = os.environ.get("XAPI_SOCKET", "")
            if not path:
                raise SMError("APIFailure", "XAPI_SOCKET is not set")
            self._api = API(path, self.req.session_ref)
        return self._api

    def sr_get_driver_info(self):
        return self.DRIVER_INFO

    def dispatch(self):
        fn = getattr(self, self.req.command, None) if self.req.command.startswith(("sr_", "vdi_")) else None
        if fn is None:
            raise SMError("Unimplemented", self.req.command)
        return fn()

    # helpers shared by the drivers
    @staticmethod
    def log(*parts) -> None:
        print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr)


def driver_info(spec: dict, configuration: dict[str, str] | None = None) -> dict:
    """sr_get_driver_info's struct from a driver description (xapi.first_boot_data's form)."""
    config = {**spec.get("configuration", {}), **(configuration or {})}
    return {
        "name": spec["name_label"], "description": spec["name_description"], "vendor": spec["vendor"],
        "copyright": spec["copyright"], "driver_version": spec["version"],
        "required_api_version": spec["required_api_version"],
        "capabilities": list(spec["capabilities"]),
        "configuration": [{"key": k, "description": v} for k, v in config.items()],
    }


def respond(value) -> str:
    return smrpc.dumps_response(value)


def fault(code: int, message: str) -> str:
    return smrpc.dumps_fault(code, message)


def run(driver_cls, argv: list[str] | None = None) -> int:
    """The whole life of a driver process: parse, run the command, answer on stdout, exit 0."""
    argv = sys.argv if argv is None else argv
    try:
        req = parse_request(argv)
        out = respond(driver_cls(req).dispatch())
    except SMError as e:
        print(f"{type(e).__name__}: {e.name}: {e.message}", file=sys.stderr)
        out = fault(e.code, e.message)
    except XenAPIFailure as e:
        import traceback
        traceback.print_exc(file=sys.stderr)
        out = fault(*_code("APIFailure", str(e.details)))
    except Exception as e:  # noqa: BLE001 - the answer must be a fault, not a traceback
        import traceback
        traceback.print_exc(file=sys.stderr)
        out = fault(*_code("SMGeneral", f"{type(e).__name__}: {e}"))
    sys.stdout.write(out)
    sys.stdout.flush()
    return 0


def _code(name: str, opterr: str) -> tuple[int, str]:
    e = SMError(name, opterr)
    return e.code, e.message
