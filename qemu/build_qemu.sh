#!/bin/sh
# Build the patched qemu-system-arm that SliceRT-Farm runs (QEMU 10.0.2, arm-softmmu only)
# from Debian's bookworm-backports source with the patches in qemu/patches/, into a cache
# keyed by the QEMU version and the patches' hash; then link build/qemu/qemu-system-arm
# and build/qemu/include/qemu-plugin.h to it.
#
#   qemu/build_qemu.sh            build if the cache has no such build (seconds if it has)
#   qemu/build_qemu.sh --print    print the path of the cached binary (empty if none)
#
# Env: SLICERT_QEMU_CACHE (default /var/cache/slicert/qemu, else ~/.cache/slicert/qemu
# when that is not writable), JOBS (default: nproc).
#
# Why a patched QEMU: the simulated core must run on its own clock (virtual time =
# modelled cycles), which QEMU's plugin API cannot do under -icount; see
# qemu/patches/README.md.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
DEB_VERSION="1:10.0.2+ds-2+deb13u1~bpo12+1"
UPSTREAM="10.0.2"
MESON="meson==1.5.0"

die() { echo "build_qemu.sh: error: $*" >&2; exit 1; }
log() { echo "build_qemu.sh: $*" >&2; }

cache=${SLICERT_QEMU_CACHE:-/var/cache/slicert/qemu}
if ! mkdir -p "$cache" 2>/dev/null || [ ! -w "$cache" ]; then
    cache="${HOME:-/tmp}/.cache/slicert/qemu"
    mkdir -p "$cache"
fi
patch_hash=$(cat "$here"/patches/*.patch | sha256sum | cut -c1-12)
key="$UPSTREAM-$patch_hash"
dest="$cache/$key"

if [ "${1:-}" = "--print" ]; then
    [ -x "$dest/bin/qemu-system-arm" ] && echo "$dest/bin/qemu-system-arm"
    exit 0
fi

link_build() {
    mkdir -p "$root/build/qemu/include"
    ln -sfn "$dest/bin/qemu-system-arm" "$root/build/qemu/qemu-system-arm"
    ln -sfn "$dest/include/qemu-plugin.h" "$root/build/qemu/include/qemu-plugin.h"
}

if [ -x "$dest/bin/qemu-system-arm" ] && [ -f "$dest/include/qemu-plugin.h" ]; then
    link_build
    exit 0
fi

t0=$(date +%s)
set -- "$here"/patches/*.patch
log "building QEMU $UPSTREAM with $# patch(es) into $dest"

# --- build dependencies (Debian) ------------------------------------------------------
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo -n"
deps="ninja-build libglib2.0-dev libpixman-1-dev libfdt-dev zlib1g-dev pkg-config
      python3-venv bzip2 xz-utils dpkg-dev gcc make"
missing=""
for p in $deps; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $p"
done
if [ -n "$missing" ]; then
    log "installing build dependencies:$missing"
    $sudo apt-get update -qq >&2 || die "apt-get update failed"
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        $missing >/dev/null || die "apt-get install$missing failed"
fi

# --- the source: Debian's orig tarball of the backport ------------------------------------
src_dir="$cache/src"
mkdir -p "$src_dir"
tarball="$src_dir/qemu_$UPSTREAM+ds.orig.tar.xz"
if [ ! -f "$tarball" ]; then
    list=/etc/apt/sources.list.d/slicert-backports-src.sources
    if ! grep -qs "bookworm-backports" /etc/apt/sources.list.d/*.sources /etc/apt/sources.list \
            2>/dev/null || ! grep -qs "deb-src" "$list" 2>/dev/null; then
        uri=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/debian.sources \
              2>/dev/null | head -n 1)
        [ -n "$uri" ] || uri="http://deb.debian.org/debian"
        tmp=$(mktemp)
        printf 'Types: deb-src\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$uri" > "$tmp"
        $sudo install -m 0644 "$tmp" "$list" || { rm -f "$tmp"; die "cannot write $list"; }
        rm -f "$tmp"
        $sudo apt-get update -qq >&2 || die "apt-get update failed"
    fi
    work=$(mktemp -d)
    if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$work"; fi
    # The backport's .dsc and Debian tarball are not served; the orig tarball is all we use.
    (cd "$work" && apt-get source -qq --download-only "qemu=$DEB_VERSION" >/dev/null 2>&1) || true
    [ -f "$work/$(basename "$tarball")" ] || { rm -rf "$work"; \
        die "could not download the QEMU $DEB_VERSION source (apt-get source)"; }
    mv "$work/$(basename "$tarball")" "$tarball.tmp" && mv "$tarball.tmp" "$tarball"
    rm -rf "$work"
fi

# --- unpack, patch, configure, build --------------------------------------------------------
build_root=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$build_root"' EXIT INT TERM
tar -C "$build_root" -xf "$tarball"
srcdir="$build_root/qemu-$UPSTREAM"
[ -d "$srcdir" ] || die "unexpected tarball layout (no qemu-$UPSTREAM/)"
for p in "$here"/patches/*.patch; do
    (cd "$srcdir" && patch -p1 -s < "$p") || die "patch $(basename "$p") does not apply"
done
python3 -m venv "$build_root/pyvenv"
"$build_root/pyvenv/bin/pip" install -q "$MESON" "pycotap==1.3.1" \
    || die "pip install $MESON failed"
mkdir "$build_root/build"
(cd "$build_root/build" && PATH="$build_root/pyvenv/bin:$PATH" "$srcdir/configure" \
    --python="$build_root/pyvenv/bin/python3" --target-list=arm-softmmu --enable-plugins \
    --disable-docs --disable-tools --disable-user --disable-werror --disable-gtk \
    --disable-sdl --disable-vnc --disable-opengl --disable-spice --disable-curl \
    --disable-libusb --disable-capstone --disable-slirp --disable-install-blobs \
    --disable-rust --disable-gnutls --disable-nettle --disable-gcrypt --disable-png \
    --disable-curses --disable-bzip2 --disable-gio --disable-libudev --disable-seccomp \
    --disable-cap-ng --disable-zstd --disable-lzo --disable-snappy --disable-numa \
    --disable-linux-aio --disable-linux-io-uring --disable-vde --disable-attr \
    --disable-libssh --disable-tpm --disable-fuse --disable-selinux \
    >"$build_root/configure.log" 2>&1) \
    || { tail -20 "$build_root/configure.log" >&2; die "configure failed"; }
jobs=${JOBS:-$(nproc)}
(cd "$build_root/build" && ninja -j"$jobs" qemu-system-arm >"$build_root/ninja.log" 2>&1) \
    || { tail -30 "$build_root/ninja.log" >&2; die "build failed"; }

stage="$cache/.stage.$$"
rm -rf "$stage"
mkdir -p "$stage/bin" "$stage/include"
cp "$build_root/build/qemu-system-arm" "$stage/bin/"
cp "$srcdir/include/qemu/qemu-plugin.h" "$stage/include/"
cp "$here"/patches/*.patch "$stage/"
"$stage/bin/qemu-system-arm" --version | head -n 1 > "$stage/VERSION"
rm -rf "$dest"
mv "$stage" "$dest"
link_build
log "built $(cat "$dest/VERSION") in $(( $(date +%s) - t0 )) s"
