#!/bin/sh
# dns-hook.sh: a stub of the acme.dns_hook interface, for the examples.
#
# Gatehouse runs the hook for DNS-01 challenges as
#
#   dns-hook.sh present FQDN VALUE   publish a TXT record FQDN with VALUE
#   dns-hook.sh cleanup FQDN VALUE   remove that record again
#
# where FQDN is "_acme-challenge.<name>." and VALUE the base64url digest
# the CA expects. Exit 0 on success; anything else fails the challenge,
# and what the hook wrote to stderr is logged. Gatehouse then waits up to
# acme.dns_propagation_timeout for the record to be visible at
# acme.dns_resolvers (default: the nameservers of /etc/resolv.conf).
#
# This stub changes nothing: replace it with a call to your DNS provider.
case "$1" in
  present|cleanup) [ $# -eq 3 ] || { echo "usage: $0 present|cleanup FQDN VALUE" >&2; exit 2; } ;;
  *) echo "usage: $0 present|cleanup FQDN VALUE" >&2; exit 2 ;;
esac
exit 0
