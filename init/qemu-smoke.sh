#!/bin/bash
# Boots init alone (with the stand-in machined example) in QEMU/TCG on the Debian cloud kernel
# and checks the console: module loading, root switch, machined restart after SIGKILL, orphan
# reaping, power-off over the control socket, Ctrl-Alt-Del reboot, the ACPI power button, and a
# boot without a root image. Every QEMU is stopped by PID. Needs (Debian): qemu-system-x86 squashfs-tools cpio kmod.
# Usage: init/qemu-smoke.sh [WORKDIR]   (default: target/init-smoke)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$ROOT/target/init-smoke}"
for tool in qemu-system-x86_64 mksquashfs cpio depmod apt-get dpkg-deb python3; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool (install qemu-system-x86 squashfs-tools cpio kmod)" >&2; exit 1; }
done
mkdir -p "$WORK"
cd "$WORK"

# The kernel: linux-image-cloud-amd64 is a metapackage; the image package is its dependency.
if [ ! -d kernel/boot ]; then
  rm -rf kernel debs && mkdir -p debs && (cd debs && apt-get download linux-image-cloud-amd64 >/dev/null 2>&1)
  dep=$(dpkg-deb -f debs/linux-image-cloud-amd64_*.deb Depends | grep -o 'linux-image-[0-9][^ ,]*')
  (cd debs && apt-get download "$dep" >/dev/null 2>&1)
  dpkg-deb -x debs/"$dep"_*.deb kernel
fi
KVER=$(ls kernel/lib/modules)
[ -f "kernel/lib/modules/$KVER/modules.dep" ] || depmod -b kernel "$KVER"
VMLINUZ=kernel/boot/vmlinuz-$KVER

(cd "$ROOT" && RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build -q --release --target x86_64-unknown-linux-gnu -p init --bins --examples)
BIN="$ROOT/target/x86_64-unknown-linux-gnu/release"

MODULES="loop squashfs virtio_pci virtio_blk virtio_net virtio_rng button evdev"

# build NAME [--no-root]: an initramfs as the imager lays it out (contracts section 3).
build() {
  local d="$1" noroot="${2:-}" m f
  rm -rf "$d" && mkdir -p "$d/rootfs" "$d/initrd/dev" "$d/initrd/etc/ros" "$d/initrd/sbin"
  mkdir -p "$d"/rootfs/{sbin,proc,sys,dev,run,tmp,var,system/state,etc/ros}
  cp "$BIN/init" "$d/rootfs/sbin/init"
  cp "$BIN/examples/stand_in_machined" "$d/rootfs/sbin/machined"
  cp "$BIN/init" "$d/initrd/init"
  cp "$BIN/examples/stand_in_machined" "$d/initrd/sbin/machined"
  mknod "$d/initrd/dev/console" c 5 1
  [ -n "$noroot" ] || mksquashfs "$d/rootfs" "$d/initrd/rootfs.sqsh" -comp zstd -noappend -quiet -all-root >/dev/null
  printf '%s\n' $MODULES > "$d/initrd/etc/ros/modules"
  local mods="kernel/lib/modules/$KVER" out="$d/initrd/lib/modules/$KVER"
  mkdir -p "$out" && cp "$mods/modules.dep" "$mods/modules.builtin" "$out/"
  for m in $MODULES; do
    # the module and its dependencies, as listed in modules.dep
    for f in $(grep -E "(^|/)${m//_/[-_]}\.ko:" "$mods/modules.dep" | tr -d ':'); do
      mkdir -p "$out/$(dirname "$f")" && cp "$mods/$f" "$out/$f"
    done
  done
  (cd "$d/initrd" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -1 > "$d/initrd.img"
}

# boot NAME APPEND [WAIT_FOR_LINE MONITOR_COMMAND]: boots; once WAIT_FOR_LINE shows on the
# console, sends MONITOR_COMMAND to the QEMU monitor.
boot() {
  local d="$1" append="$2" cad="${3:-}" command="${4:-}" qpid i
  qemu-system-x86_64 -accel tcg -m 512 -nographic -no-reboot -device virtio-rng-pci \
    -monitor "unix:$d/monitor.sock,server,nowait" -kernel "$VMLINUZ" -initrd "$d/initrd.img" \
    -append "console=ttyS0 ros.platform=qemu ros.debug panic=-1 $append" >"$d/console.log" 2>&1 &
  qpid=$!
  trap "kill $qpid 2>/dev/null || true" EXIT
  if [ -n "$cad" ]; then
    for i in $(seq 1 240); do grep -qs "$cad" "$d/console.log" && break; sleep 0.5; done
    python3 - "$d/monitor.sock" "$command" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); time.sleep(0.3); s.recv(4096)
s.sendall(sys.argv[2].encode() + b"\n"); time.sleep(0.5)
PY
  fi
  for i in $(seq 1 240); do kill -0 "$qpid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$qpid" 2>/dev/null; then kill "$qpid"; echo "FAIL $d: QEMU did not exit by itself" >&2; FAILED=1; fi
  wait "$qpid" || true
  trap - EXIT
}

expect() {
  local d="$1"; shift
  for pattern in "$@"; do
    grep -qE "$pattern" "$d/console.log" || { echo "FAIL $d: no line matching: $pattern" >&2; FAILED=1; }
  done
}

FAILED=0
build poweroff && boot poweroff "standin.stubborn"
expect poweroff 'modules: 1[0-9] loaded, 0 already present, 0 built in, 0 failed, 0 not found' \
  'root: switched to the read-only squashfs root' 'boot timing: init_start=' \
  'machined \(pid [0-9]+\) killed by signal SIGKILL' 'reaped pid' 'control: poweroff requested' \
  'stand-in machined: write to /: Err\(Some\(30\)\)' 'stand-in machined: write to /var: true' \
  'stand-in machined: SigBlk:[[:space:]]+0+[[:space:]]*$' \
  'sending SIGKILL to the processes left' '11 unmounted, 0 remounted read-only, 0 left' 'reboot: Power down'
[ "$(grep -c 'machined: started' poweroff/console.log)" -ge 2 ] || { echo "FAIL poweroff: machined not restarted" >&2; FAILED=1; }

build cad && boot cad "standin.stay" "standin.stay: waiting" "sendkey ctrl-alt-delete"
expect cad 'shutdown: reboot requested' 'reboot: Restarting system'

build button && boot button "standin.stay" "standin.stay: waiting" "system_powerdown"
expect button 'power button: watching 1 device' 'power button pressed' 'shutdown: poweroff requested' 'reboot: Power down'

build noroot --no-root && boot noroot ""
expect noroot 'no root image at /rootfs.sqsh' 'machined: started /sbin/machined' 'reboot: Power down'

grep -h 'boot timing' poweroff/console.log cad/console.log button/console.log noroot/console.log || true
if [ "$FAILED" = 0 ]; then echo "init QEMU smoke: all boots passed (logs in $WORK/*/console.log)"; else exit 1; fi
