#!/bin/sh
# fleet_dns_hook.sh: the acme.dns_hook of test_fleet.py's nodes, a wrapper
# around acme_dns_hook.sh that lets a test hold an order still at a known
# point. On "present" it creates $FLEET_HOOK_DIR/present-$FLEET_NODE-FQDN
# (the test polls for it: this node is mid-order), then waits until
# $FLEET_HOOK_DIR/release-$FLEET_NODE exists before publishing the TXT
# record. The wait is bounded (FLEET_HOOK_WAIT seconds, default 60; then
# it fails) and ends early (failing) when the node that ran the hook is
# gone, so a killed node leaves no hook behind. "cleanup" is passed on.
# Usage: fleet_dns_hook.sh present|cleanup FQDN VALUE
set -e
[ $# -eq 3 ] || { echo "usage: $0 present|cleanup FQDN VALUE" >&2; exit 2; }
here=$(dirname "$0")
if [ "$1" = present ]; then
  : > "$FLEET_HOOK_DIR/present-$FLEET_NODE-$2"
  parent=$PPID
  n=$(( ${FLEET_HOOK_WAIT:-60} * 20 ))
  while [ ! -e "$FLEET_HOOK_DIR/release-$FLEET_NODE" ]; do
    kill -0 "$parent" 2>/dev/null || exit 1
    n=$((n - 1))
    [ "$n" -gt 0 ] || { echo "fleet_dns_hook: not released" >&2; exit 1; }
    sleep 0.05
  done
fi
exec "$here/acme_dns_hook.sh" "$@"
