#!/usr/bin/env bash
# Build the sidecar image from the Dockerfile (`make image`).
#
#   IMAGE=fraudstream:0.1.0                tag of the result
#   BUILDER=buildah|podman|docker          default: the first one installed
#   BASE_IMAGE=python:3.11-slim-bookworm   the Python base of both stages; `local` builds a
#                                          stand-in from Debian packages (debootstrap + python3,
#                                          root only) for hosts that cannot pull images
#   OFFLINE=1                              download the wheels here with pip, build with no network
#   PYTHON=.venv/bin/python                the pip used for OFFLINE (a CPython 3.11 on the image's
#                                          platform: linux x86_64 or aarch64, glibc)
#
# BASE_IMAGE=local implies OFFLINE=1: the stand-in only trusts Debian's CA bundle.
# Seen working with buildah 1.28 and podman 4.3 (Debian bookworm) as root, BASE_IMAGE=local. On a
# host with hybrid cgroups v1/v2 crun refuses to start containers, so runc is used when present;
# a host whose root may not raise resource limits needs lower default ulimits for `podman run`
# (containers.conf: default_ulimits = ["nofile=1024:1024", "nproc=1000:1000"]).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-fraudstream:$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)}
BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim-bookworm}
OFFLINE=${OFFLINE:-}
PYTHON=${PYTHON:-.venv/bin/python}
[[ -x $PYTHON ]] || PYTHON=python3
LOCAL_BASE=localhost/fraudstream-python:3.11-bookworm
WHEELHOUSE=build/wheelhouse

if [[ -z ${BUILDER:-} ]]; then
    BUILDER=$(command -v buildah || command -v podman || command -v docker || true)
    [[ -n $BUILDER ]] || { echo "need buildah, podman or docker" >&2; exit 1; }
fi
BUILDER=$(basename "$BUILDER")

# crun refuses hybrid cgroup v1/v2 hosts ("cgroups in hybrid mode not supported"); runc copes.
if [[ $BUILDER != docker && -z ${BUILDAH_RUNTIME:-} && -d /sys/fs/cgroup/unified ]] \
    && command -v runc >/dev/null; then
    export BUILDAH_RUNTIME=runc
fi

build() {
    case $BUILDER in
        buildah) buildah build "$@" ;;
        *) "$BUILDER" build "$@" ;;
    esac
}

image_exists() {
    case $BUILDER in
        buildah) buildah inspect --type image "$1" >/dev/null 2>&1 ;;
        *) "$BUILDER" image inspect "$1" >/dev/null 2>&1 ;;
    esac
}

if [[ $BASE_IMAGE == local ]]; then
    OFFLINE=1
    BASE_IMAGE=$LOCAL_BASE
    if ! image_exists "$BASE_IMAGE"; then
        command -v debootstrap >/dev/null || { echo "BASE_IMAGE=local needs debootstrap" >&2; exit 1; }
        work=$(mktemp -d)
        trap 'rm -rf "$work"' EXIT
        # What python:3.11-slim-bookworm holds for us: the interpreter, venv, CA certificates.
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            bookworm "$work/rootfs" ${DEBIAN_MIRROR:+"$DEBIAN_MIRROR"}
        rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
        tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
        printf 'FROM scratch\nADD rootfs.tar /\nCMD ["python3"]\n' > "$work/Containerfile"
        build -t "$BASE_IMAGE" -f "$work/Containerfile" "$work"
    fi
fi

args=(--build-arg "PYTHON_IMAGE=$BASE_IMAGE" -t "$IMAGE")
case $BUILDER in
    buildah | podman) args+=(--format docker) ;; # keeps HEALTHCHECK (OCI images have none)
esac
if [[ -n $OFFLINE ]]; then
    rm -rf "$WHEELHOUSE" && mkdir -p "$WHEELHOUSE"  # under build/, ignored by git
    # the runtime dependencies as pinned in pyproject.toml, and the build backend
    "$PYTHON" -c 'import sys, tomllib; print(*tomllib.load(sys.stdin.buffer)["project"]
        ["dependencies"], sep="\n")' < pyproject.toml > build/requirements.txt
    "$PYTHON" -m pip download --quiet --only-binary=:all: --dest "$WHEELHOUSE" \
        'setuptools>=69' wheel
    "$PYTHON" -m pip wheel --quiet --wheel-dir "$WHEELHOUSE" -r build/requirements.txt
    args+=(--network none --build-context "wheelhouse=$WHEELHOUSE" --build-arg PIP_NO_INDEX=1)
fi

build "${args[@]}" .
echo "built $IMAGE (base $BASE_IMAGE)"
