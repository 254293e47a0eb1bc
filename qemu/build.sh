#!/bin/sh
# Build the SliceRT TCG plugin: build/qemu/libslicert_cycles.so (repo root relative).
#
#   qemu/build.sh            fetch qemu-plugin.h if needed, build if out of date
#   qemu/build.sh --force    rebuild even if up to date
#
# Idempotent; a no-op (a few ms) when the header matches the installed QEMU and the
# library is newer than its source. Env: CC (default gcc), OUT_DIR (default build/qemu).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
out_dir=${OUT_DIR:-"$root/build/qemu"}
lib="$out_dir/libslicert_cycles.so"
src="$here/slicert_cycles.c"
hdr="$here/include/qemu/qemu-plugin.h"
cc=${CC:-gcc}

"$here/fetch_header.sh"

if [ "${1:-}" != "--force" ] && [ -f "$lib" ] && [ "$lib" -nt "$src" ] && [ "$lib" -nt "$hdr" ]; then
    exit 0
fi

mkdir -p "$out_dir"
# Strict flags: any warning is an error. No glib: only the plugin header.
$cc -O2 -shared -fPIC -Wall -Wextra -Werror -std=gnu11 \
    -I"$here/include/qemu" -o "$lib.tmp" "$src"
mv "$lib.tmp" "$lib"
echo "build.sh: built $lib" >&2
