"""X1 xml_decode_bulk: decoding xapi's VM.get_all_records reply (1,000 VMs, ~10 MB).

Ours (``xapi.rpc.loads``) against ``xmlrpc.client.loads`` on the same bytes, with
the pure-Python reference and two floors for context: pyexpat with no handlers
(tokenizing only) and ``pickle.loads`` of the same object graph (building it).
Target: >= 10x xmlrpc.client, and at most 3x the pickle floor.
"""
import os
import pickle
import sys
import xmlrpc.client
from xml.parsers import expat

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import workload  # noqa: E402
from bench.common import best_and_median, pin, report  # noqa: E402
from xapi import rpc, rpc_ref  # noqa: E402


def main() -> None:
    pin(0)
    doc = workload.xml_reply()
    mb = len(doc) / 1e6
    n = workload.N_RECORDS
    ours_value = rpc.loads(doc)
    assert ours_value == xmlrpc.client.loads(doc), "decoders disagree"
    pickled = pickle.dumps(ours_value, protocol=pickle.HIGHEST_PROTOCOL)

    def expat_only():
        expat.ParserCreate().Parse(doc, True)

    _, ours = best_and_median(lambda: rpc.loads(doc), inner=3)
    _, base = best_and_median(lambda: xmlrpc.client.loads(doc))
    _, ref = best_and_median(lambda: rpc_ref.loads(doc))
    _, tok = best_and_median(expat_only, inner=3)
    _, pick = best_and_median(lambda: pickle.loads(pickled), inner=3)

    print(f"     {n:,} VM records, {mb:.1f} MB; ours is {rpc.IMPLEMENTATION}: "
          f"{mb / ours:,.0f} MB/s, {n / ours:,.0f} records/s")
    report("X1", "loads vs xmlrpc.client", ours, base, "xmlrpc.client.loads", target=">=10x")
    report("X1", "pure-Python reference vs xmlrpc.client", ref, base, "xmlrpc.client.loads")
    report("X1", "loads vs floor: pyexpat, no handlers", ours, tok, "pyexpat")
    report("X1", "loads vs floor: pickle.loads", ours, pick, "pickle.loads", target=">=0.33x (<=3x pickle)")


if __name__ == "__main__":
    main()
