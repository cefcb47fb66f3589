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
# protoc: etcd-client's build script compiles etcd's protos with it (our own protos use protox).
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

# Phases, timed for the table a script prints at its end. `phase NAME WHAT` closes the
# current phase and starts NAME; `phase_failed` marks the current one failed without
# stopping the script; `phase_table` closes the last one and prints them all.
PHASE_ROWS=()
PHASE_NAME=""
PHASE_START=0
PHASE_RESULT=ok
phase() {
  phase_end
  PHASE_NAME="$1"; PHASE_START=$SECONDS; PHASE_RESULT=ok
  say "$1: $2"
}
phase_failed() { PHASE_RESULT=failed; }
phase_end() {
  [ -n "$PHASE_NAME" ] || return 0
  PHASE_ROWS+=("$PHASE_NAME|$((SECONDS - PHASE_START))|$PHASE_RESULT")
  PHASE_NAME=""
}
duration() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
phase_table() {
  local row name secs result total=0
  phase_end
  printf '\n%-12s %9s %7s  %s\n' phase duration seconds result
  for row in "${PHASE_ROWS[@]}"; do
    IFS='|' read -r name secs result <<<"$row"
    printf '%-12s %9s %7d  %s\n' "$name" "$(duration "$secs")" "$secs" "$result"
    total=$((total + secs))
  done
  printf '%-12s %9s %7d\n' total "$(duration "$total")" "$total"
}
# As an EXIT trap: a phase cut short by an error (set -e) shows as failed, then the table.
phase_table_on_exit() {
  local rc=$?
  [ "$rc" -eq 0 ] || [ -z "$PHASE_NAME" ] || PHASE_RESULT=failed
  phase_table >&2
  exit "$rc"
}

# The QEMU tests (nextest filterset): the e2e crate, and test binaries named *qemu* in the
# other crates (rosctl's cluster_qemu). scripts/test runs those not ignored (the smoke set);
# scripts/e2e runs the ignored ones (#[ignore = "e2e tier: scripts/e2e"]).
QEMU_TESTS='package(e2e) or binary(/qemu/)'

# Builds the release binaries and both e2e images once, and exports ROS_E2E_IMAGE and
# ROS_E2E_CLUSTER_IMAGE so every QEMU test boots those without running cargo itself.
# The e2e-images binary must be built already (the test binaries' build builds it).
export_e2e_images() {
  local exports
  exports="$("${CARGO_TARGET_DIR:-$ROOT/target}/debug/e2e-images")" || return 1
  eval "$exports"
  say "e2e images: ROS_E2E_IMAGE=$ROS_E2E_IMAGE ROS_E2E_CLUSTER_IMAGE=$ROS_E2E_CLUSTER_IMAGE"
}

# junit_table FILE: nextest's JUnit report as a table, one line per test: result, duration,
# binary and test name; then the totals.
junit_table() {
  awk '
    function attr(tag, key,   prefix) {
      prefix = " " key "=\""
      if (!match(tag, prefix "[^\"]*\"")) return ""
      return substr(tag, RSTART + length(prefix), RLENGTH - length(prefix) - 1)
    }
    function emit() {
      printf "%-6s %9s  %s %s\n", result, sprintf("%dm%02ds", secs / 60, secs % 60), class, name
      if (result == "PASS") passed++; else failed++
      total += secs; open = 0
    }
    BEGIN { RS = "<"; printf "\n%-6s %9s  %s\n", "result", "duration", "test" }
    /^testcase[ \/>]/ {
      tag = substr($0, 1, index($0, ">"))
      name = attr(tag, "name"); class = attr(tag, "classname"); secs = attr(tag, "time") + 0
      result = "PASS"; open = 1
      if (tag ~ /\/>$/) emit()
      next
    }
    /^(failure|error)[ \/>]/ { if (open) result = "FAIL" }
    /^\/testcase>/ { if (open) emit() }
    END {
      printf "%d passed, %d failed, %dm%02ds in tests\n", passed, failed, total / 60, total % 60
    }
  ' "$1"
}
