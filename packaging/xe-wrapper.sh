#!/bin/sh
# /opt/xensource/bin/xe (also /usr/bin/xe) in pyxapi's RPM: the xe client (module xapi.cli.xe),
# run from the package's private tree. @PYTHON@ and @LIBDIR@ are filled in by xapi.spec's %install.
PYTHON=@PYTHON@
LIBDIR=@LIBDIR@
export PYTHONPATH="$LIBDIR${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m xapi.cli.xe "$@"
