"""J1 json_codec_bulk: the JSON-RPC codec on the same 1,000-VM data (~4 MB as JSON).

Encode: ``json_dumps_success(records, id, 2)`` against bare ``orjson.dumps`` and
stdlib ``json.dumps`` of the same reply object (same default hook for DateTime).
Decode: ``json_loads_request`` of a v2 request carrying the records, against
bare ``orjson.loads`` and ``json.loads``.  Targets: within 1.2x of orjson
(ratio >= 0.83), encode >= 8x and decode >= 1.3x the stdlib.
"""
import json
import os
import sys

import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import workload  # noqa: E402
from bench.common import best_and_median, pin, report  # noqa: E402
from xapi import rpc, rpc_ref  # noqa: E402


def main() -> None:
    pin(0)
    records = workload.vm_records()
    request = workload.json_request()
    # what bare orjson needs for this data: a hook for DateTime, xmlrpc-style datetimes
    default, opts = rpc_ref._json_default, orjson.OPT_PASSTHROUGH_DATETIME
    reply = {"jsonrpc": "2.0", "result": records, "id": 1}

    ours_doc = rpc.json_dumps_success(records, 1, 2)
    assert ours_doc == orjson.dumps(reply, default=default, option=opts)
    assert json.loads(ours_doc) == json.loads(json.dumps(reply, default=default))
    assert rpc.json_loads_request(request)[1] == orjson.loads(request)["params"]
    mb_out, mb_in = len(ours_doc) / 1e6, len(request) / 1e6

    _, enc = best_and_median(lambda: rpc.json_dumps_success(records, 1, 2), inner=10)
    _, enc_oj = best_and_median(lambda: orjson.dumps(reply, default=default, option=opts), inner=10)
    _, enc_std = best_and_median(lambda: json.dumps(reply, default=default), inner=2)
    _, dec = best_and_median(lambda: rpc.json_loads_request(request), inner=5)
    _, dec_oj = best_and_median(lambda: orjson.loads(request), inner=5)
    _, dec_std = best_and_median(lambda: json.loads(request), inner=2)

    print(f"     {workload.N_RECORDS:,} VM records: {mb_out:.1f} MB reply, {mb_in:.1f} MB request; "
          f"ours is {rpc.IMPLEMENTATION}")
    report("J1", "encode vs bare orjson", enc, enc_oj, "orjson.dumps", target=">=0.83x (within 1.2x)")
    report("J1", "encode vs stdlib json", enc, enc_std, "json.dumps", target=">=8x")
    report("J1", "decode vs bare orjson", dec, dec_oj, "orjson.loads", target=">=0.83x (within 1.2x)")
    report("J1", "decode vs stdlib json", dec, dec_std, "json.loads", target=">=1.3x")


if __name__ == "__main__":
    main()
