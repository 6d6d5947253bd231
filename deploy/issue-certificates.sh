#!/usr/bin/env bash
# Issues a CA, a server certificate and client certificates with openssl, for deployments that
# do not use the development PKI. Run it on the machine that keeps the CA key, not on the server.
#
#   deploy/issue-certificates.sh OUT_DIR SERVER_DNS_NAME [PRINCIPAL_URI ...]
#
# Example:
#   deploy/issue-certificates.sh ./pki mpi.example.jp \
#     urn:kouiki-mpi:network:13-0001 \
#     urn:kouiki-mpi:clinician:13-0001:1310123458 \
#     urn:kouiki-mpi:operator:ops-1
#
# The server needs OUT_DIR/ca.pem (as tls.client_ca), server.pem and server.key; each client
# needs ca.pem, its NAME.pem and NAME.key. A client certificate names its principal in exactly
# one URI subject alternative name (see ARCHITECTURE.md, "Identity").
set -euo pipefail
out=${1:?usage: issue-certificates.sh OUT_DIR SERVER_DNS_NAME [PRINCIPAL_URI ...]}
server_name=${2:?usage: issue-certificates.sh OUT_DIR SERVER_DNS_NAME [PRINCIPAL_URI ...]}
shift 2
mkdir -p "$out"
umask 077
cd "$out"

if [ ! -f ca.key ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/O=kouiki-mpi/CN=kouiki-mpi CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout ca.key -out ca.pem 2>/dev/null
fi

issue() { # name subject extensions
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$2" \
    -keyout "$1.key" -out "$1.csr" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 \
    -extfile <(printf '%s\n' "$3") -out "$1.pem" 2>/dev/null
  rm -f "$1.csr"
}

issue server "/O=kouiki-mpi/CN=$server_name" \
  "subjectAltName=DNS:$server_name
extendedKeyUsage=serverAuth
keyUsage=critical,digitalSignature"

for uri in "$@"; do
  name=$(printf '%s' "${uri#urn:kouiki-mpi:}" | tr ':' '-')
  issue "$name" "/O=kouiki-mpi/CN=$name" \
    "subjectAltName=URI:$uri
extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature"
  echo "issued $out/$name.pem for $uri"
done
chmod 644 ca.pem ./*.pem
echo "server: $out/server.pem, $out/server.key; client CA: $out/ca.pem"
