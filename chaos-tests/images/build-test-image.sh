#!/usr/bin/env bash
# Builds the image the container tests run, without any registry: a root
# filesystem holding Debian's static busybox (with its applets as symlinks
# and a minimal /etc/passwd), loaded with `docker import`.
#
#   chaos-tests/images/build-test-image.sh [IMAGE]   (default rota-test/busybox:1)
#
# Installs the busybox-static package when it is missing (as root, or with
# sudo). Does nothing when the image is already present.
set -euo pipefail
IMAGE="${1:-rota-test/busybox:1}"

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "$IMAGE is present"
  exit 0
fi

BUSYBOX=/bin/busybox
if ! dpkg -s busybox-static >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  echo "installing busybox-static"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static >/dev/null \
    || { $SUDO apt-get update -q >/dev/null && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static >/dev/null; }
fi
if ! "$BUSYBOX" true 2>/dev/null || ldd "$BUSYBOX" >/dev/null 2>&1; then
  echo "$BUSYBOX is not a static busybox (is the busybox package installed instead of busybox-static?)" >&2
  exit 1
fi

ROOT="$(mktemp -d)"
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT/bin" "$ROOT/etc" "$ROOT/tmp" "$ROOT/work" "$ROOT/root"
chmod 1777 "$ROOT/tmp"
cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$ROOT/bin/$applet"
done
cat >"$ROOT/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/tmp:/bin/sh
PASSWD
cat >"$ROOT/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP

tar -C "$ROOT" -c . | docker import \
  --change 'ENV PATH=/bin' \
  --change 'CMD ["/bin/sh"]' \
  - "$IMAGE" >/dev/null
echo "built $IMAGE"
