#!/usr/bin/env bash
# Installs the Debian packages that the build and the tests use, when run as root and any is missing.
# Without root it only says what is missing: the build still works, with fewer real parts.
set -eu
packages=(build-essential python3-dev python3-venv libxen-dev libpam0g libpam-runtime qemu-utils xenstore-utils rpm
          nfs-common   # mount.nfs, for nfs SRs on a real export
          libnfs-dev libfuse3-dev fuse3 pkg-config   # xapi-nfs-mount, the NFS client where the kernel has none
          nfs-ganesha nfs-ganesha-vfs rpcbind        # a userspace NFS server for tests/system/test_nfs_server.py
          zstd libxxhash0)  # XVA: zstd-compressed archives, .xxhash chunk checksums
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: not root, cannot install: ${missing[*]}" >&2
  exit 0
fi
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
