#!/bin/sh
# Build the SliceRT-Farm images locally (no registry: nothing is pulled).
#
#   images/build.sh [--no-cache] [--check-network] [TARGET ...]
#
# TARGETs (default: all, in this order; each builds what it needs first):
#   base      slicert-base      debootstrap'ed Debian bookworm minbase, `docker import`ed
#   python    slicert-python    base + Python 3.11 venv (/opt/slicert/venv) from requirements.lock
#   worker    slicert-worker    python + arm-none-eabi-gcc, qemu-system-arm, the TCG plugin,
#                               slicert_ops; runs as the unprivileged user `slicert` (uid 1000)
#   airflow   slicert-airflow   worker + Celery/Redis/Postgres clients, dags/, plugins/
#   mlflow    slicert-mlflow    python + boto3, runs `mlflow server` as user `mlflow`
#   postgres  slicert-postgres  base + Debian postgresql-15 (compose metadata DB)
#   redis     slicert-redis     base + Debian redis-server (compose Celery broker)
#
# Needs a Docker engine: $DOCKER_HOST, else the private one of scripts/dockerd.sh (started when
# nothing answers and we are root), else /var/run/docker.sock. Uses the legacy builder (DOCKER_BUILDKIT=0: BuildKit does not
# work with the engine here). `RUN apt-get` / `RUN pip install` reach the mirrors with
# `--network host` (the private engine runs with --iptables=false, so the default bridge
# has no NAT); override with SLICERT_BUILD_NETWORK.
#
# Cache: $SLICERT_IMAGE_CACHE (default .slicert/cache/images) keeps the debootstrap rootfs
# tarball (reused until deleted or SLICERT_ROOTFS_REFRESH=1); Docker's layer cache keeps the
# rest (a second run with unchanged inputs takes seconds).
# Records: every image carries org.slicert.* labels (git commit, input hashes, build date)
# and /etc/slicert/versions.json (tool versions measured inside); build/images/versions.json
# collects them with image ids and sizes.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cache=${SLICERT_IMAGE_CACHE:-"$root/.slicert/cache/images"}
out="$root/build/images"
tag=${SLICERT_IMAGE_TAG:-latest}
suite=${SLICERT_DEBIAN_SUITE:-bookworm}
mirror=${SLICERT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${SLICERT_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
network=${SLICERT_BUILD_NETWORK:-host}
no_cache=""
check_network=0

log() { echo "build.sh: $*" >&2; }
die() { echo "build.sh: error: $*" >&2; exit 1; }

targets=""
for a in "$@"; do
    case "$a" in
    --no-cache) no_cache="--no-cache" ;;
    --check-network) check_network=1 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    base|python|worker|airflow|mlflow|postgres|redis) targets="$targets $a" ;;
    all) targets="$targets base python worker airflow mlflow postgres redis" ;;
    *) die "unknown argument '$a' (targets: base python worker airflow mlflow postgres redis all)" ;;
    esac
done
[ -n "$targets" ] || targets="base python worker airflow mlflow postgres redis"

# --- engine -----------------------------------------------------------------------------------
if [ -z "${DOCKER_HOST:-}" ]; then
    if h=$("$root/scripts/dockerd.sh" status 2>/dev/null); then
        export DOCKER_HOST="${h#DOCKER_HOST=}"
    fi
fi
command -v docker >/dev/null 2>&1 || die "docker client not found (apt-get install docker.io)"
if ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1 && [ -z "${DOCKER_HOST:-}" ] \
    && [ "$(id -u)" = 0 ] && command -v dockerd >/dev/null 2>&1; then
    log "no Docker engine answers: starting the private one (scripts/dockerd.sh start)"
    h=$("$root/scripts/dockerd.sh" start) || die "scripts/dockerd.sh start failed"
    export DOCKER_HOST="${h#DOCKER_HOST=}"
fi
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 \
    || die "no Docker engine answers (DOCKER_HOST=${DOCKER_HOST:-unset}); start one: scripts/dockerd.sh start"
export DOCKER_BUILDKIT=0

mkdir -p "$cache" "$out"
git_commit=$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
git_dirty=""
if git -C "$root" status --porcelain 2>/dev/null | grep -q .; then git_dirty="-dirty"; fi
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
lock_sha=$(sha256sum "$root/requirements.lock" | cut -c1-16)
started=$(date +%s)

labels() {  # common labels for `docker build`
    printf -- '--label org.slicert.git-commit=%s%s --label org.slicert.build-date=%s ' \
        "$git_commit" "$git_dirty" "$build_date"
    printf -- '--label org.slicert.requirements-lock-sha256=%s --label org.opencontainers.image.source=slicert-farm ' \
        "$lock_sha"
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# --- base: debootstrap rootfs (cached tarball) -> docker import --------------------------------
rootfs_tar="$cache/rootfs-$suite-minbase-$(dpkg --print-architecture 2>/dev/null || uname -m).tar"

make_rootfs() {
    if [ -f "$rootfs_tar" ] && [ "${SLICERT_ROOTFS_REFRESH:-0}" != 1 ]; then
        log "rootfs: cached $rootfs_tar"
        return
    fi
    [ "$(id -u)" = 0 ] || die "debootstrap needs root"
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap not found (apt-get install debootstrap)"
    t0=$(date +%s)
    tmp=$(mktemp -d "$cache/rootfs.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT INT TERM
    log "rootfs: debootstrap --variant=minbase $suite from $mirror (1-2 min)"
    debootstrap --variant=minbase --include=ca-certificates "$suite" "$tmp/rootfs" "$mirror" \
        > "$cache/debootstrap.log" 2>&1 || { tail -n 30 "$cache/debootstrap.log" >&2; die "debootstrap failed (log: $cache/debootstrap.log)"; }
    r="$tmp/rootfs"
    # the same sources as the host kind: main + updates + security
    rm -f "$r/etc/apt/sources.list"
    cat > "$r/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security_mirror
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    # container-friendly apt: no recommends, no docs/man, clean caches
    cat > "$r/etc/apt/apt.conf.d/90slicert" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Retries "3";
EOF
    cat > "$r/etc/dpkg/dpkg.cfg.d/90slicert-nodoc" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
    rm -rf "$r/var/cache/apt/archives/"*.deb "$r/var/lib/apt/lists/"* "$r/usr/share/doc/"* \
        "$r/usr/share/man/"* "$r/usr/share/info/"* "$r/var/log/"*.log "$r/tmp/"*
    tar -C "$r" --numeric-owner -cf "$rootfs_tar.tmp" .
    mv "$rootfs_tar.tmp" "$rootfs_tar"
    rm -rf "$tmp"
    trap - EXIT INT TERM
    log "rootfs: $(du -h "$rootfs_tar" | cut -f1) in $(( $(date +%s) - t0 )) s -> $rootfs_tar"
}

build_base() {
    make_rootfs
    rootfs_sha=$(sha256sum "$rootfs_tar" | cut -c1-16)
    if have_image "slicert-base:$tag" && [ -z "$no_cache" ] \
        && [ "$(docker image inspect -f '{{index .Config.Labels "org.slicert.rootfs-sha256"}}' "slicert-base:$tag")" = "$rootfs_sha" ]; then
        log "slicert-base:$tag up to date (rootfs $rootfs_sha)"
        return
    fi
    log "slicert-base: docker import"
    docker import \
        --change "LABEL org.slicert.rootfs-sha256=$rootfs_sha" \
        --change "LABEL org.slicert.debian-suite=$suite" \
        --change "LABEL org.slicert.debootstrap-variant=minbase" \
        --change "LABEL org.slicert.build-date=$build_date" \
        --change "ENV LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive" \
        --change 'CMD ["/bin/bash"]' \
        --message "slicert-base: debootstrap --variant=minbase $suite" \
        "$rootfs_tar" "slicert-base:$tag" >/dev/null
}

# --- build contexts: only the files an image needs ---------------------------------------------
stage_context() {  # stage_context NAME -> prints the context dir
    ctx="$out/ctx-$1"
    rm -rf "$ctx"
    mkdir -p "$ctx"
    cp "$here/$1/Dockerfile" "$ctx/Dockerfile"
    for f in "$here/$1/"*; do
        case "$(basename "$f")" in Dockerfile) ;; *) cp -R "$f" "$ctx/" ;; esac
    done
    cp "$root/requirements.lock" "$ctx/"
    echo "$ctx"
}

copy_src() {  # copy_src CTX: the repo parts a worker needs at runtime (git-tracked and new files)
    ctx=$1
    mkdir -p "$ctx/src"
    cp "$root/pyproject.toml" "$ctx/src/"
    for d in slicert_ops zephyr qemu expectations mlflow; do
        [ -d "$root/$d" ] || continue
        tar -C "$root" --exclude='__pycache__' --exclude='*.pyc' --exclude='*.so' \
            --exclude='*.tmp-*' -cf - "$d" | tar -C "$ctx/src" -xf -
    done
    # the patched QEMU and its plugin header (qemu/build_qemu.sh), as plain files
    mkdir -p "$ctx/src/build/qemu/include"
    cp -L "$root/build/qemu/qemu-system-arm" "$ctx/src/build/qemu/" \
        || die "build/qemu/qemu-system-arm missing: run make setup first"
    cp -L "$root/build/qemu/include/qemu-plugin.h" "$ctx/src/build/qemu/include/"
}

build() {  # build NAME CONTEXT [extra docker build args...]
    name=$1; ctx=$2; shift 2
    log "slicert-$name: docker build (legacy builder, --network $network)"
    t0=$(date +%s)
    # shellcheck disable=SC2046
    docker build $no_cache --network "$network" --build-arg "TAG=$tag" \
        $(labels) --label "org.slicert.image=slicert-$name" "$@" \
        -t "slicert-$name:$tag" "$ctx" > "$out/build-$name.log" 2>&1 \
        || { tail -n 40 "$out/build-$name.log" >&2; die "slicert-$name failed (log: $out/build-$name.log)"; }
    log "slicert-$name: built in $(( $(date +%s) - t0 )) s, $(docker image inspect -f '{{.Size}}' "slicert-$name:$tag" | awk '{printf "%.0f MB", $1/1e6}')"
}

check_build_network() {
    # Can RUN steps reach the mirrors? (answer recorded in build/images/network.txt)
    ctx="$out/ctx-netcheck"
    rm -rf "$ctx"; mkdir -p "$ctx"
    cat > "$ctx/Dockerfile" <<EOF
FROM slicert-base:$tag
ARG CHECK=apt
RUN if [ "\$CHECK" = apt ]; then \\
      apt-get update -qq --error-on=any -o Acquire::http::Timeout=10 -o Acquire::Retries=0; \\
    else \\
      timeout 10 bash -c 'exec 3<>/dev/tcp/pypi.org/443 && exec 4<>/dev/tcp/files.pythonhosted.org/443'; \\
    fi
EOF
    : > "$out/network.txt"
    for mode in default host none; do
        if [ "$mode" = default ]; then args=""; else args="--network $mode"; fi
        for check in apt pypi; do
            # shellcheck disable=SC2086
            if timeout 120 docker build --no-cache $args --build-arg CHECK=$check -q -t slicert-netcheck "$ctx" \
                >/dev/null 2>&1; then r=reachable; else r=UNREACHABLE; fi
            echo "docker build --network $mode: $check $r" | tee -a "$out/network.txt" >&2
        done
    done
    docker image rm slicert-netcheck >/dev/null 2>&1 || true
}

built=""
want() { case " $built " in *" $1 "*) return 1 ;; esac; built="$built $1"; return 0; }

do_target() {
    case "$1" in
    base) want base || return 0; build_base ;;
    python)
        do_target base
        want python || return 0
        ctx=$(stage_context python)
        cp -R "$here/scripts" "$ctx/scripts"
        # Extra CAs of the build host (e.g. a TLS-intercepting egress proxy): used only by
        # `slicert-build-net` during RUN steps, never added to the images' trust store.
        mkdir -p "$ctx/build-ca"
        ca_dir=${SLICERT_BUILD_CA_DIR-/usr/local/share/ca-certificates}
        if [ -n "$ca_dir" ] && ls "$ca_dir"/*.crt >/dev/null 2>&1; then
            cp "$ca_dir"/*.crt "$ctx/build-ca/"
        fi
        cas=""
        for f in "$ctx"/build-ca/*; do [ -e "$f" ] && cas="$cas${f##*/} "; done
        build python "$ctx" --label "org.slicert.build-ca=$cas" ;;
    worker)
        do_target python
        want worker || return 0
        ctx=$(stage_context worker)
        copy_src "$ctx"
        build worker "$ctx" ;;
    airflow)
        do_target worker
        want airflow || return 0
        ctx=$(stage_context airflow)
        for d in dags plugins experiments; do
            [ -d "$root/$d" ] && tar -C "$root" --exclude='__pycache__' -cf - "$d" | tar -C "$ctx" -xf -
        done
        build airflow "$ctx" ;;
    mlflow)
        do_target python
        want mlflow || return 0
        build mlflow "$(stage_context mlflow)" ;;
    postgres)
        do_target base
        want postgres || return 0
        build postgres "$(stage_context postgres)" ;;
    redis)
        do_target base
        want redis || return 0
        build redis "$(stage_context redis)" ;;
    esac
}

if [ "$check_network" = 1 ]; then
    do_target base
    check_build_network
    exit 0
fi

for t in $targets; do do_target "$t"; done

# --- versions file ------------------------------------------------------------------------------
# $built: a space-separated list of image names, split into arguments on purpose
# shellcheck disable=SC2086
python3 - "$out/versions.json" $built <<'PYEOF'
import json, subprocess, sys
path, names = sys.argv[1], sys.argv[2:]
try:
    with open(path) as fh:
        data = json.load(fh)
except (OSError, ValueError):
    data = {}
tag = __import__("os").environ.get("SLICERT_IMAGE_TAG", "latest")
for n in names:
    ref = f"slicert-{n}:{tag}"
    info = json.loads(subprocess.run(["docker", "image", "inspect", ref], check=True,
                                     capture_output=True, text=True).stdout)[0]
    entry = {"id": info["Id"], "size_bytes": info["Size"], "created": info["Created"],
             "labels": info["Config"].get("Labels") or {}}
    r = subprocess.run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "cat",
                        ref, "/etc/slicert/versions.json"], capture_output=True, text=True)
    if r.returncode == 0:
        try:
            entry["versions"] = json.loads(r.stdout)
        except ValueError:
            entry["versions_raw"] = r.stdout
    data[ref] = entry
with open(path, "w") as fh:
    json.dump(data, fh, indent=2, sort_keys=True)
    fh.write("\n")
PYEOF
log "done in $(( $(date +%s) - started )) s:$built (versions: $out/versions.json)"
docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | grep '^slicert-' >&2 || true
