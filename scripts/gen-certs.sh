#!/bin/sh
# Makes a small CA, a server certificate for the gateway's TLS listener and,
# optionally, client certificates for mutual TLS (the CN is the identity),
# with openssl. Keys are EC P-256, written with mode 600.
#
#   scripts/gen-certs.sh DIR SAN [CLIENT_CN ...]
#   scripts/gen-certs.sh /etc/splitpoint/tls IP:192.168.1.10,DNS:gateway.local pi1 cloud1
#
# DIR gets ca.crt, ca.key (keep it offline), server.crt, server.key and
# <cn>.crt, <cn>.key per client. An existing ca.crt/ca.key is reused, so
# clients can be added later.
set -eu
[ $# -ge 2 ] || { echo "usage: $0 DIR SAN [CLIENT_CN ...]  (SAN e.g. IP:192.168.1.10,DNS:gateway.local)" >&2; exit 2; }
dir=$1 san=$2
shift 2
mkdir -p "$dir"
umask 077
cd "$dir"
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
if [ ! -f ca.key ]; then
	openssl req -x509 $ec -days 3650 -subj "/CN=splitpoint CA" -keyout ca.key -out ca.crt 2>/dev/null
fi
sign() { # name cn extensions
	openssl req $ec -subj "/CN=$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
	printf '%s\n' "$3" >"$1.ext"
	openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
	rm -f "$1.csr" "$1.ext"
}
sign server "${san#*:}" "subjectAltName=$san
extendedKeyUsage=serverAuth"
for cn in "$@"; do
	sign "$cn" "$cn" "extendedKeyUsage=clientAuth"
done
chmod 644 ca.crt server.crt
echo "wrote $dir: ca.crt server.crt server.key${*:+ and client certificates for: $*}"
