#!/usr/bin/env bash
# Build the service image and the PostgreSQL image with podman, offline:
#   tools/image.sh deps    podman, runc, mmdebstrap, podman-compose from Debian when missing,
#                          and the engine settings these machines need (runc, cgroupfs)
#   tools/image.sh base    the two base images, made by mmdebstrap from the Debian archive
#   tools/image.sh build   both images (the service's from wheelhouse/ with --network none)
# Base images are rebuilt only when missing; podman's layer cache keeps a rebuild of an
# unchanged wheelhouse to seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${XAI_IMAGE:-localhost/xai-sandbox:0.1.0}
PG_IMAGE=${XAI_PG_IMAGE:-localhost/xai-postgres:15}
CACHE=${XAI_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/xai-sandbox-images}

deps() {
  local missing=()
  for p in podman runc mmdebstrap podman-compose; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || { echo "install ${missing[*]} (as root), then run again" >&2; exit 1; }
    echo "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || {
      apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
  fi
  # Debian's crun refuses these machines' hybrid cgroups, and the runtime cannot raise
  # ulimits (see ../shared/CONTAINERS.md).
  if [ ! -e /etc/containers/containers.conf ] && [ "$(id -u)" -eq 0 ]; then
    mkdir -p /etc/containers
    cat > /etc/containers/containers.conf <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF
  fi
}

rootfs() {  # rootfs NAME PACKAGES
  local name=$1 packages=$2 mirror
  podman image exists "localhost/$name:bookworm" && return 0
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null \
           || echo http://deb.debian.org/debian)
  mkdir -p "$CACHE"
  echo "making localhost/$name:bookworm from $mirror"
  mmdebstrap --quiet --variant=minbase --include="$packages" \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/usr/share/doc/* "$1"/usr/share/man/*' \
    bookworm "$CACHE/$name.tar" "$mirror"
  podman import --quiet "$CACHE/$name.tar" "localhost/$name:bookworm" >/dev/null
  rm -f "$CACHE/$name.tar"
}

base() {
  # WeasyPrint loads Pango and HarfBuzz; LightGBM and XGBoost libgomp; the PDF's Chinese
  # text needs a CJK font. No compiler: every wheel is built on the host.
  rootfs xai-base python3,python3-venv,tini,ca-certificates,libgomp1,fonts-dejavu-core,fonts-wqy-microhei,libpango-1.0-0,libpangoft2-1.0-0,libharfbuzz0b,libharfbuzz-subset0
  rootfs xai-postgres-base postgresql-15,tini
}

build() {
  [ -s wheelhouse/SHA256SUMS ] || { echo "wheelhouse/ is empty: run make wheelhouse" >&2; exit 1; }
  base
  podman build --quiet --network none --format docker -f deploy/Containerfile -t "$IMAGE" \
    wheelhouse >/dev/null
  podman build --quiet --network none --format docker -f deploy/Containerfile.postgres \
    -t "$PG_IMAGE" deploy >/dev/null
  podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "xai-(sandbox|postgres):" 
}

"${1:?usage: tools/image.sh deps|base|build}"
