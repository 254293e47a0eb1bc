#!/bin/sh
# Build the SliceRT TCG plugin: build/qemu/libslicert_cycles.so (repo root relative),
# against the plugin header of the patched QEMU (qemu/build_qemu.sh builds both).
#
#   qemu/build.sh            build the patched QEMU if needed, the plugin if out of date
#   qemu/build.sh --force    rebuild the plugin even if up to date
#
# Env: CC (default gcc), OUT_DIR (default build/qemu).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
out_dir=${OUT_DIR:-"$root/build/qemu"}
lib="$out_dir/libslicert_cycles.so"
hdr="$root/build/qemu/include/qemu-plugin.h"
cc=${CC:-gcc}

# A worker image carries the host's build as plain files; elsewhere keep the cache link fresh.
if [ -L "$root/build/qemu/qemu-system-arm" ] || [ ! -e "$root/build/qemu/qemu-system-arm" ] \
        || [ ! -e "$hdr" ]; then
    "$here/build_qemu.sh"
fi

# `test -nt` is not in POSIX but every /bin/sh we run on has it (dash, bash, busybox ash)
# shellcheck disable=SC3013
if [ "${1:-}" != "--force" ] && [ -f "$lib" ] && [ "$lib" -nt "$here/slicert_cycles.c" ] \
        && [ "$lib" -nt "$here/thumb_decode.h" ] && [ "$lib" -nt "$hdr" ]; then
    exit 0
fi

mkdir -p "$out_dir"
# Strict flags: any warning is an error. glib only for GByteArray (qemu-plugin.h needs it).
# shellcheck disable=SC2046
$cc -O2 -shared -fPIC -Wall -Wextra -Werror -std=gnu11 \
    -I"$(dirname "$hdr")" -I"$here" $(pkg-config --cflags glib-2.0) \
    -o "$lib.tmp" "$here/slicert_cycles.c" $(pkg-config --libs glib-2.0)
mv "$lib.tmp" "$lib"
echo "build.sh: built $lib" >&2
