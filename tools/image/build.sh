#!/usr/bin/env bash
# make image: mnist-serving/model-server:<project version>, a drop-in for the tensorflow/serving
# image that runs the project's embedded server. No base image can be pulled, so the root
# filesystem is built from Debian packages:
#
#   1. debootstrap --variant=minbase from the apt sources this machine already uses (read from
#      its apt configuration with `apt-get indextargets`; no host is named in this repository)
#   2. security/updates upgrade, Python 3 + venv, by chroot
#   3. `pip install '.[serving]'` into /opt/mnist-serving by chroot, pip configured through the
#      environment only: this machine's pip configuration (`pip config list`: files and PIP_*
#      variables) becomes PIP_* variables for that one command; local paths it names (wheel
#      dirs, file:// indexes, CA bundle, constraints) are bind-mounted under /.build-host for
#      the install and unmounted after, so no pip configuration enters the image
#   4. strip what a server never needs (pip, setuptools, C headers, tests, docs, apt lists)
#   5. `docker import` with the tensorflow/serving interface (entrypoint, env, ports)
#
# Skips when the image for the current version exists and was built from the same sources
# (labels mnist-serving.deps-digest and .source-digest); when only the project's code changed
# it refreshes that layer instead of rebuilding; FORCE=1 rebuilds. Root only.
# Prints the build time and the image size at the end.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
HERE=$ROOT/tools/image
PYTHON=${PYTHON:-python3}
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n1)
IMAGE=${IMAGE:-mnist-serving/model-server:$VERSION}
BUILD=${IMAGE_BUILD_DIR:-$ROOT/build/image}
TREE=$BUILD/rootfs
HOSTDIR=/.build-host
VENV=/opt/mnist-serving
START=$SECONDS

say() { echo "make image: $*"; }
die() { echo "make image: $*" >&2; exit 1; }

[[ -n $VERSION ]] || die "no version in pyproject.toml"
docker version >/dev/null 2>&1 || die "no Docker engine answers (run: make docker-engine)"
# What goes into the image, hashed in two parts: the recipe and the dependencies
# (tools/image/, the dependencies pyproject.toml declares) and the project's code. A tag of this version whose code
# moved on without a version bump never serves stale code: with the same recipe and
# dependencies only the code layer is refreshed (about a minute), else the image is rebuilt.
digest() {
    find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | LC_ALL=C sort -z \
        | xargs -0 sha256sum | sha256sum | cut -c1-16
}
PACKAGES=(clients export serving)
# The dependencies as pyproject.toml declares them (not its other tables: a new dev tool
# must not cost a rebuild), plus the recipe.
deps_declared() {
    "$PYTHON" -c 'import tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
print(p["version"], p.get("requires-python"), sorted(p["dependencies"]),
      sorted(p.get("optional-dependencies", {}).get("serving", [])))' 2>/dev/null || cat pyproject.toml
}
DEPS_DIGEST=$({ deps_declared; digest tools/image; } | sha256sum | cut -c1-16)
SOURCE_DIGEST=$(digest "${PACKAGES[@]}")
label() { docker image inspect --format "{{index .Config.Labels \"$1\"}}" "$IMAGE"; }
if [[ -z ${FORCE:-} ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    have_deps=$(label mnist-serving.deps-digest)
    have_source=$(label mnist-serving.source-digest)
    if [[ $have_deps == "$DEPS_DIGEST" && $have_source == "$SOURCE_DIGEST" ]]; then
        say "$IMAGE is present for these sources ($(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')); skipping the build (FORCE=1 rebuilds)"
        exit 0
    fi
    if [[ $have_deps == "$DEPS_DIGEST" ]]; then
        say "$IMAGE is present with these dependencies but other code: refreshing the code layer"
        # Replace the installed packages with this tree's, compile them, commit; the image's
        # interface is restated because `docker commit` takes the helper container's.
        name=mnist-serving-image-refresh-$$
        docker rm -f "$name" >/dev/null 2>&1 || true
        tar -C "$ROOT" --exclude='__pycache__' --exclude='*.pyc' -cf - "${PACKAGES[@]}" \
            | docker run -i --name "$name" --network none --user 0 --entrypoint /bin/sh "$IMAGE" -c "
                set -e
                site=\$($VENV/bin/python -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])')
                cd \"\$site\" && rm -rf ${PACKAGES[*]} && tar -xf - --no-same-owner
                $VENV/bin/python -m compileall -q ${PACKAGES[*]} >/dev/null" \
            || { docker rm -f "$name" >/dev/null 2>&1; die "refreshing the code layer failed"; }
        docker commit \
            --change 'ENTRYPOINT ["/usr/bin/tf_serving_entrypoint.sh"]' \
            --change 'CMD []' \
            --change 'USER root' \
            --change "LABEL mnist-serving.source-digest=$SOURCE_DIGEST" \
    --change "LABEL mnist-serving.deps-digest=$DEPS_DIGEST" \
            "$name" "$IMAGE" >/dev/null
        docker rm -f "$name" >/dev/null
        SIZE=$(docker image inspect --format '{{.Size}}' "$IMAGE")
        REPORT="$IMAGE code layer refreshed in $((SECONDS - START)) s, $((SIZE / 1000000)) MB"
        mkdir -p "$BUILD" && echo "$REPORT" >"$BUILD/report.txt"
        say "$REPORT"
        exit 0
    fi
    say "$IMAGE is present but was built from other dependencies or recipe: rebuilding"
fi
[[ $(id -u) -eq 0 ]] || die "building the root filesystem needs root (debootstrap, chroot)"
if ! command -v debootstrap >/dev/null; then
    say "installing debootstrap"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; } >/dev/null
fi

# --- mounts inside the tree are always undone, also on failure ---
MOUNTS=()
cleanup_mounts() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" 2>/dev/null || true
    done
    MOUNTS=()
    BOUND_SET=()
    if grep -q " $TREE$HOSTDIR" /proc/mounts; then
        # Never delete through a mount that did not go away: it is the host's own files.
        echo "make image: mounts under $TREE$HOSTDIR remain; not deleting it" >&2
        return 0
    fi
    rm -rf "${TREE:?}$HOSTDIR"
}
declare -A BOUND_SET=()
bind_into_tree() {  # bind_into_tree HOST_PATH: visible read-only at $HOSTDIR/HOST_PATH
    local src=$1 dst=$TREE$HOSTDIR$1
    [[ -n ${BOUND_SET[$src]:-} ]] && return 0  # named twice (a config file and PIP_*)
    BOUND_SET[$src]=1
    if [[ -d $src ]]; then mkdir -p "$dst"; else mkdir -p "$(dirname "$dst")"; : >"$dst"; fi
    mount --bind "$src" "$dst"
    MOUNTS+=("$dst")
    mount -o remount,bind,ro "$dst"
}
trap cleanup_mounts EXIT

# --- 1. root filesystem from this machine's own apt sources ---
# shellcheck disable=SC1091
CODENAME=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[[ -n $CODENAME ]] || die "cannot tell the Debian release from /etc/os-release"
mapfile -t SOURCES < <(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' \
    'Identifier: Packages' | sort -u | awk -v c="$CODENAME" '$2 ~ "^"c"(-updates|-security)?$" && $3 == "main"')
MIRROR=$(printf '%s\n' "${SOURCES[@]}" | awk -v c="$CODENAME" '$2 == c {print $1; exit}')
[[ -n $MIRROR ]] || die "no apt source for $CODENAME main in this machine's apt configuration (apt-get update first?)"

if [[ -d $TREE ]]; then
    # A tree left by an interrupted build: undo any mount in it before deleting it.
    grep -o " $TREE[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$TREE"
fi
mkdir -p "$BUILD"
say "debootstrap --variant=minbase $CODENAME (from this machine's apt sources)"
debootstrap --variant=minbase --include=python3,python3-venv "$CODENAME" "$TREE" "$MIRROR" \
    >"$BUILD/debootstrap.log" 2>&1 || die "debootstrap failed (see $BUILD/debootstrap.log)"

mount -t proc proc "$TREE/proc"
MOUNTS+=("$TREE/proc")
cp /etc/resolv.conf "$TREE/etc/resolv.conf"
printf 'deb %s %s %s\n' $(printf '%s\n' "${SOURCES[@]}") >"$TREE/etc/apt/sources.list"
in_tree() { env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }
say "apt-get upgrade in the tree (security and updates)"
in_tree chroot "$TREE" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -y -qq upgrade' \
    >"$BUILD/apt.log" 2>&1 || die "apt-get in the tree failed (see $BUILD/apt.log)"

# --- 3. the project, with pip configured by environment only ---
PIP_ENV=()
while IFS= read -r line; do
    # `global.find-links='/opt/wheels'` or `:env:.cert='...'` -> PIP_FIND_LINKS / PIP_CERT
    key=${line%%=*}
    value=${line#*=}
    value=${value#\'}
    value=${value%\'}
    key=${key##*.}
    name=PIP_$(echo "$key" | tr 'a-z-' 'A-Z_')
    [[ $name == PIP_CACHE_DIR || $name == PIP_NO_CACHE_DIR ]] && continue
    out=()
    for token in $value; do
        path=${token#file://}
        if [[ $path == /* ]]; then
            # a local path the tree cannot see: bind it in, or leave it out if it is not there
            [[ -e $path ]] || continue
            # A local PEP 503 index (<root>/simple) links its files relatively (../../files/):
            # the tree needs the whole index root.
            root=$path
            [[ $token == file://* && $(basename "$path") == simple ]] && root=$(dirname "$path")
            bind_into_tree "$root"
            inside=$HOSTDIR$path
            [[ $token == file://* ]] && inside=file://$inside
            out+=("$inside")
        else
            out+=("$token")
        fi
    done
    ((${#out[@]})) && PIP_ENV+=("$name=${out[*]}")
done < <(
    # Variables override files (pip's own order): emit the files' settings first, so the
    # later PIP_* assignment of the same name wins in `env`.
    listing=$("$PYTHON" -m pip config list 2>/dev/null | grep -E '^[^=]+=')
    grep -v '^:env:' <<<"$listing"
    grep '^:env:' <<<"$listing"
)
say "pip configuration passed by environment: ${PIP_ENV[*]%%=*}"

SRC=$TREE/tmp/src
mkdir -p "$SRC"
tar -C "$ROOT" --exclude='__pycache__' --exclude='*.pyc' -cf - pyproject.toml README.md \
    clients export serving | tar -C "$SRC" -xf -
say "python3 -m venv $VENV + pip install '.[serving]' in the tree"
in_tree chroot "$TREE" python3 -m venv "$VENV"
in_tree "${PIP_ENV[@]}" PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
    chroot "$TREE" "$VENV/bin/python" -m pip install -q '/tmp/src[serving]' \
    >"$BUILD/pip.log" 2>&1 || die "pip install failed (see $BUILD/pip.log)"
cleanup_mounts
mount -t proc proc "$TREE/proc"
MOUNTS+=("$TREE/proc")

# --- 4. what a model server never needs ---
# libclang (a TensorFlow requirement for its code generators, 60 MB) is never imported by a
# server; pip, setuptools and wheel only install things.
in_tree chroot "$TREE" "$VENV/bin/python" -m pip uninstall -q -y libclang pip setuptools wheel >/dev/null 2>&1 || true
in_tree chroot "$TREE" dpkg --purge python3-venv python3.11-venv python3-pip-whl python3-setuptools-whl >/dev/null
SITE=$(echo "$TREE$VENV"/lib/python3*/site-packages)
rm -rf "$SITE/tensorflow/include"  # C++ headers for building custom ops
find "$SITE" -depth -type d \( -name tests -o -name testing_data \) -prune -exec rm -rf {} +
rm -rf "$TREE"/usr/lib/python3*/test  # CPython's own regression-test helpers
rm -rf "$SRC" "$TREE"/root/.cache "$TREE"/root/.config "$TREE"/var/lib/apt/lists/* \
    "$TREE"/var/cache/apt/* "$TREE"/var/cache/debconf/*-old "$TREE"/var/log/* \
    "$TREE"/usr/share/doc/* "$TREE"/usr/share/man/* "$TREE"/usr/share/info/* \
    "$TREE"/usr/share/locale/* "$TREE"/etc/apt/sources.list "$TREE"/etc/resolv.conf \
    "$TREE"/etc/hostname "$TREE"/etc/pip.conf "$TREE"/etc/xdg/pip
: >"$TREE/etc/resolv.conf"  # the engine bind-mounts its own

# The unprivileged user the Kubernetes Deployment runs as (65532, as in distroless images).
echo 'nonroot:x:65532:65532:nonroot:/tmp:/usr/sbin/nologin' >>"$TREE/etc/passwd"
echo 'nonroot:x:65532:' >>"$TREE/etc/group"
install -m 0755 "$HERE/tf_serving_entrypoint.sh" "$TREE/usr/bin/tf_serving_entrypoint.sh"
install -m 0755 "$HERE/tensorflow_model_server" "$TREE/usr/bin/tensorflow_model_server"
mkdir -p "$TREE/models" "$TREE/config"

say "smoke test in the tree: tensorflow_model_server --version"
in_tree TF_CPP_MIN_LOG_LEVEL=2 chroot --userspec=65532:65532 "$TREE" /usr/bin/tensorflow_model_server --version \
    || die "the server does not start in the tree"
cleanup_mounts
trap - EXIT

# --- 5. import with the tensorflow/serving image's interface ---
say "docker import -> $IMAGE"
tar --numeric-owner -C "$TREE" -cf - . | docker import \
    --change 'ENTRYPOINT ["/usr/bin/tf_serving_entrypoint.sh"]' \
    --change 'ENV MODEL_NAME=model' \
    --change 'ENV MODEL_BASE_PATH=/models' \
    --change 'ENV PYTHONDONTWRITEBYTECODE=1' \
    --change 'ENV TF_CPP_MIN_LOG_LEVEL=1' \
    --change 'EXPOSE 8500' \
    --change 'EXPOSE 8501' \
    --change "LABEL org.opencontainers.image.version=$VERSION" \
    --change 'LABEL mnist-serving.bind-address=true' \
    --change "LABEL mnist-serving.source-digest=$SOURCE_DIGEST" \
    --change "LABEL mnist-serving.deps-digest=$DEPS_DIGEST" \
    --change 'LABEL org.opencontainers.image.title="mnist-serving model server (embedded TF Serving stand-in)"' \
    - "$IMAGE" >/dev/null
[[ -n ${KEEP_TREE:-} ]] || rm -rf "$TREE"

SIZE=$(docker image inspect --format '{{.Size}}' "$IMAGE")
ELAPSED=$((SECONDS - START))
REPORT="$IMAGE built in ${ELAPSED} s, $((SIZE / 1000000)) MB"
echo "$REPORT" >"$BUILD/report.txt"
say "$REPORT"
