#!/usr/bin/env bash
# Builds the `rota` image (rota-server, rota-worker and rotactl) without any
# registry or base image: a root filesystem holding the binaries (stripped),
# the shared libraries they load, and a static busybox (a shell, and wget
# for health checks), loaded with `docker import`.
#
#   deploy/image/build.sh [--bin DIR] [IMAGE]      (default image: rota:dev)
#
# --bin DIR takes the binaries from DIR; without it they are built with
# `cargo build --release` (target/release). Installs Debian's busybox-static
# when it is missing. For machines with a registry, deploy/image/Dockerfile
# is the conventional multi-stage build of the same image.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN=""
IMAGE="rota:dev"
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN="${2:?--bin needs a directory}"; shift 2 ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    -*) echo "unknown option $1 (accepted: --bin DIR)" >&2; exit 2 ;;
    *) IMAGE="$1"; shift ;;
  esac
done
if [ -z "$BIN" ]; then
  (cd "$ROOT" && cargo build --release --bins -p rota-server -p rota-worker -p rota-client)
  BIN="$ROOT/target/release"
fi
for b in rota-server rota-worker rotactl; do
  [ -x "$BIN/$b" ] || { echo "$BIN/$b is missing" >&2; exit 1; }
done

BUSYBOX=/bin/busybox
if ! dpkg -s busybox-static >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static >/dev/null \
    || { $SUDO apt-get update -q >/dev/null && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static >/dev/null; }
fi

FS="$(mktemp -d)"
trap 'rm -rf "$FS"' EXIT
chmod 755 "$FS"
mkdir -p "$FS/usr/local/bin" "$FS/bin" "$FS/etc" "$FS/tmp" "$FS/var/lib/rota" "$FS/var/lib/rota-worker"
chmod 1777 "$FS/tmp"
for b in rota-server rota-worker rotactl; do
  strip -o "$FS/usr/local/bin/$b" "$BIN/$b"
done
# The libraries the binaries load (and the loader), at the same paths.
libs() { for b in rota-server rota-worker rotactl; do ldd "$BIN/$b"; done | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u; }
for lib in $(libs); do
  mkdir -p "$FS$(dirname "$lib")"
  cp -L "$lib" "$FS$lib"
done
cp "$BUSYBOX" "$FS/bin/busybox"
for applet in sh wget cat ls ps kill sleep; do
  ln -s busybox "$FS/bin/$applet"
done
cat >"$FS/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$FS/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
echo "hosts: files dns" >"$FS/etc/nsswitch.conf"

tar -C "$FS" --numeric-owner --owner=0 --group=0 -c . | docker import \
  --change 'ENV PATH=/usr/local/bin:/bin' \
  --change 'WORKDIR /var/lib/rota' \
  --change 'EXPOSE 7400 9400 9500' \
  --change 'ENTRYPOINT ["/usr/local/bin/rota-server"]' \
  --message "rota from $BIN" - "$IMAGE" >/dev/null
echo "built $IMAGE"
