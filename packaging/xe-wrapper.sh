#!/bin/sh
# /opt/xensource/bin/xe (also /usr/bin/xe) in pyxapi's RPM.
# The xe client itself (module xapi.cli.xe) comes in a later release from its own work; until
# it is in the package this wrapper says so. Stock `xe` (package xapi-xe) talks to pyxapi's
# /cli endpoint as it does to the OCaml xapi.
PYTHON=@PYTHON@
LIBDIR=@LIBDIR@
if [ ! -e "$LIBDIR/xapi/cli/xe.py" ] && [ ! -d "$LIBDIR/xapi/cli/xe" ]; then
    echo "xe: this pyxapi release has no xe client yet (module xapi.cli.xe)" >&2
    exit 1
fi
export PYTHONPATH="$LIBDIR${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m xapi.cli.xe "$@"
