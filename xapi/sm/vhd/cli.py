"""A ``vhd-util``-like command over :mod:`xapi.sm.vhd`.

    python -m xapi.sm.vhd.cli create -n PATH -s SIZE_MB [-S MAX_MB]
    python -m xapi.sm.vhd.cli snapshot -n NEW -p PARENT [-S MAX_MB]
    python -m xapi.sm.vhd.cli query -n PATH [-v] [-s] [-p] [-f] [-d] [-S] [--json]
    python -m xapi.sm.vhd.cli coalesce -n PATH
    python -m xapi.sm.vhd.cli check -n PATH
    python -m xapi.sm.vhd.cli resize -n PATH -s SIZE_MB [-j JOURNAL]
    python -m xapi.sm.vhd.cli set -n PATH -f hidden -v 0|1
    python -m xapi.sm.vhd.cli modify -n PATH -p NEW_PARENT
    python -m xapi.sm.vhd.cli export -n PATH -o RAW
    python -m xapi.sm.vhd.cli import -n PATH -i RAW [-s SIZE_MB]

Flags and output follow vhd-util's: ``query -v`` prints the virtual size in MiB,
``-s`` the physical size in bytes, ``-p`` the parent path (or "PATH has no
parent"), ``-f`` "hidden: N", ``-d`` "chain depth: N", ``-S`` the size in MiB the
BAT has room for.  ``coalesce`` prints "Coalesced N sectors"; ``check`` prints
"PATH is valid" or the problems found and exits 1.  Errors go to stderr, exit 1.
"""
import argparse
import json
import sys

from xapi.sm import vhd

MiB = 1024 * 1024


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vhd-util", description="VHD images (a vhd-util work-alike)")
    sub = p.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("create", help="create a dynamic VHD")
    c.add_argument("-n", dest="name", required=True)
    c.add_argument("-s", dest="size", type=int, required=True, help="virtual size (MiB)")
    c.add_argument("-S", dest="max_size", type=int, help="size (MiB) to reserve BAT room for")

    s = sub.add_parser("snapshot", help="create a differencing VHD over a parent")
    s.add_argument("-n", dest="name", required=True)
    s.add_argument("-p", dest="parent", required=True)
    s.add_argument("-S", dest="max_size", type=int, help="size (MiB) to reserve BAT room for")

    q = sub.add_parser("query", help="print facts about a VHD")
    q.add_argument("-n", dest="name", required=True)
    q.add_argument("-v", dest="virtual", action="store_true", help="virtual size (MiB)")
    q.add_argument("-s", dest="physical", action="store_true", help="physical size (bytes)")
    q.add_argument("-p", dest="parent", action="store_true", help="parent path")
    q.add_argument("-f", dest="fields", action="store_true", help="fields (hidden)")
    q.add_argument("-d", dest="depth", action="store_true", help="chain depth")
    q.add_argument("-S", dest="max", action="store_true", help="max virtual size (MiB) of the BAT")
    q.add_argument("--json", action="store_true", help="everything, as JSON")

    co = sub.add_parser("coalesce", help="write a child's data into its parent")
    co.add_argument("-n", dest="name", required=True)

    ch = sub.add_parser("check", help="validate a VHD")
    ch.add_argument("-n", dest="name", required=True)

    r = sub.add_parser("resize", help="grow a VHD")
    r.add_argument("-n", dest="name", required=True)
    r.add_argument("-s", dest="size", type=int, required=True, help="new virtual size (MiB)")
    r.add_argument("-j", dest="journal", help="accepted for vhd-util compatibility; unused")

    st = sub.add_parser("set", help="set a footer field")
    st.add_argument("-n", dest="name", required=True)
    st.add_argument("-f", dest="field", required=True, choices=["hidden"])
    st.add_argument("-v", dest="value", type=int, required=True)

    mo = sub.add_parser("modify", help="change a differencing VHD's parent")
    mo.add_argument("-n", dest="name", required=True)
    mo.add_argument("-p", dest="parent", required=True, help="the new parent")

    ex = sub.add_parser("export", help="write the disk (through its chain) as a sparse raw file")
    ex.add_argument("-n", dest="name", required=True)
    ex.add_argument("-o", dest="output", required=True)

    im = sub.add_parser("import", help="create a dynamic VHD from a raw file (zero blocks skipped)")
    im.add_argument("-n", dest="name", required=True)
    im.add_argument("-i", dest="input", required=True)
    im.add_argument("-s", dest="size", type=int, help="virtual size (MiB); default the raw file's")
    return p


def _query(a) -> int:
    info = vhd.query(a.name)
    if a.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    status = 0
    if a.virtual:
        print(info["virtual_size"] // MiB)
    if a.physical:
        print(info["physical_size"])
    if a.parent:
        if info["parent"] is None:
            print(f"{a.name} has no parent")
        else:
            print(info["parent"])
    if a.fields:
        print(f"hidden: {int(info['hidden'])}")
    if a.depth:
        if info["chain_depth"] is None:
            print("error checking chain depth")
            status = 1
        else:
            print(f"chain depth: {info['chain_depth']}")
    if a.max:
        print(info["max_virtual_size"] // MiB)
    return status


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    try:
        if a.cmd == "create":
            vhd.create(a.name, a.size * MiB, max_size=a.max_size * MiB if a.max_size else None)
        elif a.cmd == "snapshot":
            vhd.snapshot(a.parent, a.name, max_size=a.max_size * MiB if a.max_size else None)
        elif a.cmd == "query":
            return _query(a)
        elif a.cmd == "coalesce":
            print(f"Coalesced {vhd.coalesce(a.name)} sectors")
        elif a.cmd == "check":
            problems = vhd.check(a.name)
            if problems:
                print(f"{a.name} appears invalid:")
                for p in problems:
                    print(f"  {p}")
                return 1
            print(f"{a.name} is valid")
        elif a.cmd == "resize":
            vhd.resize(a.name, a.size * MiB)
        elif a.cmd == "set":
            vhd.set_hidden(a.name, bool(a.value))
        elif a.cmd == "modify":
            vhd.set_parent(a.name, a.parent)
        elif a.cmd == "export":
            vhd.export_raw(a.name, a.output)
        elif a.cmd == "import":
            vhd.import_raw(a.name, a.input, virtual_size=a.size * MiB if a.size else None)
    except (vhd.VHDError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
