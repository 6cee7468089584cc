#!/bin/sh
# pebble-entrypoint: start Pebble, the ACME test CA, for docker/compose.yaml
# (the "pebble" stage of docker/Dockerfile). Pebble serves its ACME API
# over HTTPS and Debian ships it without a certificate, so on first start
# this makes a throwaway CA and a leaf for Pebble's names in
# $PEBBLE_DEMO_CA_DIR, a volume Gatehouse mounts to trust that CA
# (GATEHOUSE_ACME_CA_ROOT=/pebble-ca/ca.pem). Then it writes Pebble's config
# and runs Pebble with pebble-challtestsrv as its DNS server.
#
# Settings (environment), with the compose file's values as defaults:
#   PEBBLE_DEMO_CA_DIR       /pebble-ca
#   PEBBLE_DEMO_NAMES        "pebble localhost"  names in Pebble's HTTPS cert
#   PEBBLE_DEMO_LISTEN       0.0.0.0:14000       ACME directory at /dir
#   PEBBLE_DEMO_MGMT_LISTEN  0.0.0.0:15000       /roots/0: the issuing root
#   PEBBLE_DEMO_HTTP_PORT    80                  where HTTP-01 is validated
#   PEBBLE_DEMO_TLS_PORT     443                 where TLS-ALPN-01 is validated
#   PEBBLE_DEMO_DNS          172.28.0.3:8053     pebble-challtestsrv
# Pebble's own knobs (PEBBLE_VA_NOSLEEP, ...) pass through.
set -eu

dir=${PEBBLE_DEMO_CA_DIR:-/pebble-ca}
names=${PEBBLE_DEMO_NAMES:-pebble localhost}
mkdir -p "$dir"

if [ ! -s "$dir/ca.pem" ] || [ ! -s "$dir/pebble.pem" ]; then
  tmp=$(mktemp -d "$dir/.new.XXXXXX")
  san=""
  for n in $names; do san="${san:+$san,}DNS:$n"; done
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
    -subj "/CN=Pebble HTTPS demo CA" -keyout "$tmp/ca.key" -out "$tmp/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=${names%% *}" -keyout "$tmp/pebble.key" -out "$tmp/pebble.csr" 2>/dev/null
  printf 'subjectAltName=%s\n' "$san" > "$tmp/pebble.ext"
  openssl x509 -req -in "$tmp/pebble.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" \
    -CAcreateserial -days 365 -extfile "$tmp/pebble.ext" -out "$tmp/pebble.pem" 2>/dev/null
  chmod 0644 "$tmp/ca.pem" "$tmp/pebble.pem"
  chmod 0600 "$tmp/ca.key" "$tmp/pebble.key"
  # The key before the certificates, and ca.pem last: a reader that sees
  # ca.pem sees everything.
  for f in ca.key pebble.key pebble.pem ca.pem; do mv "$tmp/$f" "$dir/$f"; done
  rm -rf "$tmp"
fi

cat > "$dir/pebble.json" <<JSON
{"pebble": {"listenAddress": "${PEBBLE_DEMO_LISTEN:-0.0.0.0:14000}",
            "managementListenAddress": "${PEBBLE_DEMO_MGMT_LISTEN:-0.0.0.0:15000}",
            "certificate": "$dir/pebble.pem", "privateKey": "$dir/pebble.key",
            "httpPort": ${PEBBLE_DEMO_HTTP_PORT:-80}, "tlsPort": ${PEBBLE_DEMO_TLS_PORT:-443},
            "ocspResponderURL": ""}}
JSON
exec pebble -config "$dir/pebble.json" -dnsserver "${PEBBLE_DEMO_DNS:-172.28.0.3:8053}"
