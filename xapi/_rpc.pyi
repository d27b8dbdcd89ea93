"""Typed stub for the compiled XenAPI wire codec (same API as xapi.rpc_ref)."""
from typing import Any, Literal

from xapi.rpc_errors import CodecError as CodecError

MAX_DEPTH: int
MAX_SIZE: int

def loads(data: bytes | bytearray | memoryview | str) -> tuple[tuple[Any, ...], str | None]: ...
def dumps(
    params: tuple[Any, ...] | list[Any] | Any,
    methodname: str | None = None,
    methodresponse: bool = False,
    allow_none: bool = True,
    *,
    ints_as_strings: bool = False,
) -> bytes: ...
def dumps_success(value: Any, ints_as_strings: bool = True) -> bytes: ...
def dumps_failure(description: list[Any] | tuple[Any, ...]) -> bytes: ...
def json_loads_request(
    data: bytes | bytearray | memoryview | str,
) -> tuple[str, list[Any] | dict[str, Any], str | int | None, Literal[1, 2]]: ...
def json_dumps_success(result: Any, id: str | int | None, version: int) -> bytes: ...
def json_dumps_failure(description: list[Any] | tuple[Any, ...], id: str | int | None, version: int) -> bytes: ...
