#!/bin/sh
# slicert-build-net CMD...: run CMD (a `RUN` step that downloads over HTTPS) trusting, besides
# the Debian CA bundle, the extra CAs the build host trusts (copied by images/build.sh from
# /usr/local/share/ca-certificates into /opt/slicert/build-ca: e.g. a TLS-intercepting egress
# proxy's CA). The images' system trust store is NOT changed.
set -eu
bundle=$(mktemp)
cat /etc/ssl/certs/ca-certificates.crt > "$bundle"
for c in /opt/slicert/build-ca/*.crt; do
    [ -f "$c" ] && cat "$c" >> "$bundle"
done
export SSL_CERT_FILE="$bundle" PIP_CERT="$bundle" REQUESTS_CA_BUNDLE="$bundle"
set +e
"$@"
rc=$?
rm -f "$bundle"
exit $rc
