#!/bin/sh
# /opt/xensource/libexec/pyxapi-cookies: xapi's startup cookies, for xapi.service.
# The OCaml xapi writes them itself (-writereadyfile, -writeinitcomplete); pyxapi's daemon
# does not, so the unit runs this script:
#   clear  (ExecStartPre, ExecStopPost): removes both cookies.
#   wait   (ExecStartPost): waits for the daemon's local socket <data>/xapi, then writes
#          /var/run/xapi_startup.cookie; waits for <data>/xapi.pid to hold the daemon's pid
#          ($MAINPID; the daemon writes it once listeners and storage are up), then writes
#          /var/run/xapi_init_complete.cookie, which xapi-wait-init-complete.service polls for.
#          Fails (and so does the start) if the daemon exits first or after $XAPI_COOKIE_TIMEOUT
#          seconds (default 300).
DATA=${XAPI_DATA_DIR:-/var/lib/xcp}
RUN=${XAPI_RUN_DIR:-/var/run}
STARTUP=$RUN/xapi_startup.cookie
INIT=$RUN/xapi_init_complete.cookie
TIMEOUT=${XAPI_COOKIE_TIMEOUT:-300}

alive() { [ -z "$MAINPID" ] || kill -0 "$MAINPID" 2>/dev/null; }

wait_for() {    # wait_for <test...>: until the test holds, the daemon dies or time runs out
    i=0
    while ! "$@"; do
        alive || { echo "pyxapi-cookies: xapi (pid $MAINPID) exited" >&2; return 1; }
        [ $i -ge $((TIMEOUT * 10)) ] && { echo "pyxapi-cookies: timed out after ${TIMEOUT}s" >&2; return 1; }
        sleep 0.1
        i=$((i + 1))
    done
}

pid_ready() {
    [ -r "$DATA/xapi.pid" ] || return 1
    [ -z "$MAINPID" ] && return 0
    [ "$(cat "$DATA/xapi.pid" 2>/dev/null)" = "$MAINPID" ]
}

case "$1" in
    clear) rm -f "$STARTUP" "$INIT" ;;
    wait)
        wait_for test -S "$DATA/xapi" || exit 1
        touch "$STARTUP"
        wait_for pid_ready || exit 1
        touch "$INIT" ;;
    *) echo "usage: $0 clear|wait" >&2; exit 2 ;;
esac
