#!/usr/bin/env bash
# Build a Debian test-host image with systemd as PID 1, from Debian's mirror
# (debootstrap + docker import), because no image registry is reachable here.
#
#   scripts/build-host-image.sh bookworm|trixie
#
# The image is tagged keel-host:<release>-<hash>, where <hash> covers this
# script, so a repeated run finds the image and skips the build, and a changed
# recipe builds anew. keel-host:<release> always names the newest build.
# Prints the full tag on stdout.
set -euo pipefail

release="${1:?usage: build-host-image.sh bookworm|trixie}"
mirror="${KEEL_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security_mirror="${KEEL_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
packages="systemd,systemd-sysv,dbus,python3,sudo,procps,iproute2,ca-certificates"

case "$release" in
  bookworm|trixie) ;;
  *) echo "build-host-image: unsupported release '$release' (bookworm or trixie)" >&2; exit 2 ;;
esac

say() { printf 'build-host-image: %s\n' "$*" >&2; }

recipe_hash=$( { cat "$0"; echo "$release $mirror $security_mirror $packages"; } | sha256sum | cut -c1-12)
tag="keel-host:${release}-${recipe_hash}"

if docker image inspect "$tag" >/dev/null 2>&1; then
  say "$tag is cached: skipping the build"
  docker tag "$tag" "keel-host:${release}"
  echo "$tag"
  exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  say "installing debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

rootfs=$(mktemp -d "/var/tmp/keel-rootfs-${release}.XXXXXX")
trap 'rm -rf "$rootfs"' EXIT

say "debootstrap $release into $rootfs (about a minute)"
debootstrap --variant=minbase --include="$packages" "$release" "$rootfs" "$mirror" \
  >"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"

# A real host's apt sources: the release, its updates and its security suite.
rm -f "$rootfs/etc/apt/sources.list"
cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: $release $release-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security_mirror
Suites: $release-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES

# Each container gets its own machine id at boot; stale apt lists and caches
# are dropped so the roles under test must refresh the cache themselves.
: >"$rootfs/etc/machine-id"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb

say "importing $tag"
tar -C "$rootfs" -c . | docker import \
  --change 'CMD ["/lib/systemd/systemd"]' \
  --change 'ENV container=docker' \
  --message "keel test host: Debian $release minbase with systemd" \
  - "$tag" >/dev/null
docker tag "$tag" "keel-host:${release}"
echo "$tag"
