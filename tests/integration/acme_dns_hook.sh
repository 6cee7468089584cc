#!/bin/sh
# acme_dns_hook.sh: the acme.dns_hook used by test_acme_engine.py. It
# publishes (present) or removes (cleanup) the TXT record through
# pebble-challtestsrv's management API, whose URL the test puts in
# CHALLTESTSRV_URL. Usage: acme_dns_hook.sh present|cleanup FQDN VALUE
# With ACME_DNS_HOOK_NO_TXT set, "present" succeeds without publishing
# anything (the record never becomes visible).
set -e
[ $# -eq 3 ] || { echo "usage: $0 present|cleanup FQDN VALUE" >&2; exit 2; }
case "$1" in
  present) [ -n "$ACME_DNS_HOOK_NO_TXT" ] || curl -fsS --noproxy '*' -X POST -d "{\"host\":\"$2\",\"value\":\"$3\"}" "$CHALLTESTSRV_URL/set-txt" ;;
  cleanup) curl -fsS --noproxy '*' -X POST -d "{\"host\":\"$2\"}" "$CHALLTESTSRV_URL/clear-txt" ;;
  *) echo "usage: $0 present|cleanup FQDN VALUE" >&2; exit 2 ;;
esac
echo "$1 $2" >> "${CHALLTESTSRV_LOG:-/dev/null}"
