#!/bin/bash
# /opt/xensource/bin/xapi (pyxapi): runs `xapi serve` in the foreground with dom0's paths.
# Arguments, in this order (argparse: the last of a flag wins):
#   1. the fixed defaults below (state in /var/lib/xcp, HTTP 80, HTTPS 443);
#   2. one --key=value per `key = value` line of /etc/xapi.conf, then /etc/xapi.conf.d/*.conf,
#      whose key is a `xapi serve` flag; other keys (the OCaml xapi's) are ignored;
#   3. this script's own arguments.
# @PYTHON@ and @LIBDIR@ are filled in by packaging/xapi.spec's %install.
PYTHON=@PYTHON@
LIBDIR=@LIBDIR@
KEYS=" data-dir address http-port https-port backend sim-config auth auth-failure-delay
 max-request-size request-timeout idle-timeout db-flush-interval session-timeout log-level "

args=(--data-dir /var/lib/xcp --http-port 80 --https-port 443)
for f in /etc/xapi.conf /etc/xapi.conf.d/*.conf; do
    [ -r "$f" ] || continue
    while IFS= read -r line; do
        [[ $line =~ ^[[:space:]]*([A-Za-z0-9_-]+)[[:space:]]*=[[:space:]]*(.*[^[:space:]])[[:space:]]*$ ]] || continue
        key=${BASH_REMATCH[1]//_/-}
        [[ $KEYS == *" $key "* ]] && args+=("--$key=${BASH_REMATCH[2]}")
    done < "$f"
done

export PYTHONPATH="$LIBDIR${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m xapi.cli.main serve "${args[@]}" "$@"
