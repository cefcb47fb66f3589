# Shared helpers for the scripts in this folder. Sourced, not run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# apt_need PKG:TOOL ... installs each Debian package whose tool is missing.
# Without root (or apt-get) it names what is missing and stops.
apt_need() {
  local missing=() pair pkg tool
  for pair in "$@"; do
    pkg="${pair%%:*}"; tool="${pair#*:}"
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -e "$tool" ]; then missing+=("$pkg"); fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    die "missing Debian packages: ${missing[*]} (install them: sudo apt-get install ${missing[*]})"
  fi
  say "installing ${missing[*]}"
  if [ -z "${ROS_APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || die "apt-get update failed"
    export ROS_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
}

need_rust() {
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain (https://rustup.rs)"
}

# Host tools the build and the tests use, as Debian package:command pairs.
# protoc: only containerd-client's build script still needs it; our own protos (machine API,
# etcd API) compile with protox. Drop it once the containerd protos are ours too.
BUILD_PACKAGES=(
  protobuf-compiler:protoc
)
TEST_PACKAGES=(
  "${BUILD_PACKAGES[@]}"
  etcd-server:etcd
  qemu-system-x86:qemu-system-x86_64
  squashfs-tools:mksquashfs
  cpio:cpio
  zstd:zstd
  iproute2:ip
  kmod:depmod
  kubectl:kubectl
  python3-kubernetes:/usr/lib/python3/dist-packages/kubernetes
  containerd:containerd
  runc:runc
  busybox-static:busybox
  docker-registry:docker-registry
  nftables:nft
  dnsutils:dig
  qemu-utils:qemu-img
  grub-common:grub-mkimage
  grub-efi-amd64-bin:/usr/lib/grub/x86_64-efi
  grub-pc-bin:/usr/lib/grub/i386-pc
  xorriso:xorriso
  ovmf:/usr/share/ovmf/OVMF.fd
  fdisk:sfdisk
  mtools:mcopy
  ca-certificates:/etc/ssl/certs/ca-certificates.crt
)
