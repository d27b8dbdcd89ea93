"""XenAPI error codes and the names of their parameters, as xapi sends them.

The published datamodel names the errors of each message but not their parameters; these come from
xen-api's datamodel_errors.ml. An error on the wire is [CODE, param, ...], all strings.
"""

ERRORS: dict[str, tuple[str, ...]] = {
    "MESSAGE_METHOD_UNKNOWN": ("method",),
    "MESSAGE_PARAMETER_COUNT_MISMATCH": ("method", "expected", "received"),
    "MESSAGE_DEPRECATED": (),
    "SESSION_AUTHENTICATION_FAILED": ("uname", "msg"),
    "SESSION_INVALID": ("handle",),
    "SESSION_NOT_REGISTERED": ("handle",),
    "HANDLE_INVALID": ("class", "handle"),
    "UUID_INVALID": ("class", "uuid"),
    "FIELD_TYPE_ERROR": ("field",),
    "INVALID_VALUE": ("field", "value"),
    "VALUE_NOT_SUPPORTED": ("field", "value", "reason"),
    "MAP_DUPLICATE_KEY": ("type", "param_name", "uuid", "key"),
    "INTERNAL_ERROR": ("message",),
    "NOT_IMPLEMENTED": ("function",),
    "RBAC_PERMISSION_DENIED": ("permission", "message"),
    "OPERATION_NOT_ALLOWED": ("reason",),
    "HOST_IS_SLAVE": ("master_IP_address",),
    "HOST_STILL_BOOTING": (),
    "EVENTS_LOST": (),
    "EVENT_FROM_TOKEN_PARSE_FAILURE": ("token",),
    "EVENT_SUBSCRIPTION_PARSE_FAILURE": ("subscription",),
    "TASK_CANCELLED": ("task",),
}


class XapiError(Exception):
    """A XenAPI failure: travels to the client as ErrorDescription [code, params...]."""

    __slots__ = ("code", "params")

    def __init__(self, code: str, *params) -> None:
        super().__init__(code, *params)
        self.code = code
        self.params = tuple(str(p) for p in params)

    @property
    def description(self) -> list[str]:
        return [self.code, *self.params]

    def __str__(self) -> str:
        return " ".join(self.description)
