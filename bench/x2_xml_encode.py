"""X2 xml_encode_bulk: encoding xapi's VM.get_all_records reply (1,000 VMs, ~10 MB).

Ours (``xapi.rpc.dumps``, methodResponse) against ``xmlrpc.client.dumps`` on the
same object graph: the records as a client sees them from xapi, int64s already
strings (xmlrpc.client cannot send ints beyond 32 bits).  Also the server's own
path, ``dumps_success`` on the records with Python ints, and ``orjson.dumps`` of
the same data for context.  Target: >= 8x xmlrpc.client.
"""
import os
import sys
import xmlrpc.client

import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import workload  # noqa: E402
from bench.common import best_and_median, pin, report  # noqa: E402
from xapi import rpc, rpc_ref  # noqa: E402


def main() -> None:
    pin(0)
    records = workload.vm_records()
    reply = {"Status": "Success", "Value": records}
    wire = workload.ints_to_strings(reply)
    n = workload.N_RECORDS

    ours_doc = rpc.dumps((wire,), methodresponse=True)
    base_doc = xmlrpc.client.dumps((wire,), methodresponse=True)
    assert xmlrpc.client.loads(ours_doc) == xmlrpc.client.loads(base_doc), "encoders disagree"
    assert rpc.dumps_success(records) == ours_doc
    mb = len(ours_doc) / 1e6

    _, ours = best_and_median(lambda: rpc.dumps((wire,), methodresponse=True), inner=5)
    _, success = best_and_median(lambda: rpc.dumps_success(records), inner=5)
    _, base = best_and_median(lambda: xmlrpc.client.dumps((wire,), methodresponse=True))
    _, ref = best_and_median(lambda: rpc_ref.dumps((wire,), methodresponse=True))
    _, oj = best_and_median(
        lambda: orjson.dumps(reply, default=rpc_ref._json_default, option=orjson.OPT_PASSTHROUGH_DATETIME), inner=10)

    print(f"     {n:,} VM records, {mb:.1f} MB out; ours is {rpc.IMPLEMENTATION}: {mb / ours:,.0f} MB/s")
    report("X2", "dumps (methodResponse) vs xmlrpc.client", ours, base, "xmlrpc.client.dumps", target=">=8x")
    report("X2", "dumps_success (ints as strings) vs xmlrpc", success, base, "xmlrpc.client.dumps", target=">=8x")
    report("X2", "pure-Python reference vs xmlrpc.client", ref, base, "xmlrpc.client.dumps")
    report("X2", "dumps vs orjson.dumps, same data (context)", ours, oj, "orjson.dumps")


if __name__ == "__main__":
    main()
