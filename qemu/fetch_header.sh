#!/bin/sh
# Fetch include/qemu/qemu-plugin.h for the *installed* qemu-system-arm from Debian's
# source package and put it at qemu/include/qemu/qemu-plugin.h (git-ignored).
#
# No binary Debian package ships qemu-plugin.h; the source package does. Steps:
#   1. read the installed source version (dpkg-query ${source:Version});
#   2. if qemu/include/qemu/qemu-plugin.h exists and its stamp names that version: done;
#   3. make sure a deb-src twin of /etc/apt/sources.list.d/debian.sources exists
#      (adds /etc/apt/sources.list.d/slicert-debian-src.sources, needs root), apt-get update;
#   4. `apt-get source --download-only qemu=<version>` in a temp dir;
#   5. extract only include/qemu/qemu-plugin.h from the orig tarball; refuse if a Debian
#      patch touches that header (then it would not be the exact header of the binary).
#
# Usage: qemu/fetch_header.sh [DEST_DIR]   (default: qemu/include next to this script)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
dest=${1:-"$here/include"}
hdr="$dest/qemu/qemu-plugin.h"
stamp="$dest/qemu/.qemu-source-version"

die() { echo "fetch_header.sh: error: $*" >&2; exit 1; }

command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found (Debian/Ubuntu host needed)"
version=$(dpkg-query -W -f='${source:Version}' qemu-system-arm 2>/dev/null) \
    || die "qemu-system-arm is not installed (apt-get install qemu-system-arm)"
[ -n "$version" ] || die "could not read the source version of qemu-system-arm"

if [ -f "$hdr" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$version" ]; then
    exit 0
fi

echo "fetch_header.sh: fetching qemu-plugin.h for qemu source version $version" >&2

# --- 3. deb-src entries -------------------------------------------------------------------
has_src() {
    grep -qs '^[[:space:]]*Types:.*deb-src' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        || grep -qs '^[[:space:]]*deb-src[[:space:]]' /etc/apt/sources.list \
            /etc/apt/sources.list.d/*.list 2>/dev/null
}
sudo=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 && sudo="sudo -n" || true
fi
need_update=0
if ! has_src; then
    src=/etc/apt/sources.list.d/debian.sources
    [ -f "$src" ] || die "no deb-src entries and no $src to copy; add deb-src lines for qemu"
    tmp_src=$(mktemp)
    sed 's/^\([[:space:]]*Types:\).*/\1 deb-src/' "$src" > "$tmp_src"
    $sudo install -m 0644 "$tmp_src" /etc/apt/sources.list.d/slicert-debian-src.sources \
        || { rm -f "$tmp_src"; die "cannot write /etc/apt/sources.list.d (run as root)"; }
    rm -f "$tmp_src"
    need_update=1
fi
if [ "$need_update" = 1 ] || ! ls /var/lib/apt/lists/*_Sources* >/dev/null 2>&1; then
    $sudo apt-get update -qq >&2 || die "apt-get update failed"
fi

# --- 4. download the source package (no unpack, no build deps) -----------------------------
work=$(mktemp -d)
# let apt download as its unprivileged _apt user (else it warns and runs unsandboxed)
if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$work"; fi
trap 'rm -rf "$work"' EXIT INT TERM
(cd "$work" && apt-get source -qq --download-only "qemu=$version" >&2) \
    || die "apt-get source --download-only qemu=$version failed"

orig=$(ls "$work"/qemu_*.orig.tar.* 2>/dev/null | head -n 1)
[ -n "$orig" ] || die "no orig tarball downloaded for qemu=$version"
deb=$(ls "$work"/qemu_*.debian.tar.* 2>/dev/null | head -n 1 || true)

# --- 5. extract the header only --------------------------------------------------------------
member=$(tar -tf "$orig" | grep -E '^[^/]+/include/qemu/qemu-plugin\.h$' | head -n 1)
[ -n "$member" ] || die "include/qemu/qemu-plugin.h not found in $(basename "$orig")"
if [ -n "$deb" ]; then
    if tar -xOf "$deb" --wildcards 'debian/patches/*' 2>/dev/null \
        | grep -q '^+++ .*include/qemu/qemu-plugin\.h'; then
        die "a Debian patch modifies qemu-plugin.h; apply debian/patches before use"
    fi
fi
mkdir -p "$dest/qemu"
tar -xOf "$orig" "$member" > "$hdr.tmp"
grep -q 'QEMU_PLUGIN_VERSION' "$hdr.tmp" || { rm -f "$hdr.tmp"; die "extracted header looks wrong"; }
mv "$hdr.tmp" "$hdr"
printf '%s\n' "$version" > "$stamp"
echo "fetch_header.sh: wrote $hdr" >&2
