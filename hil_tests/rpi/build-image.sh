#!/bin/sh
# Build (once, cached) a Debian 12 arm64 disk image for the gateway install test
# (hil_tests/test_rpi_install.py): the Raspberry Pi OS base, booted in
# qemu-system-aarch64 -M virt. Debian packages only:
#   apt-get install qemu-system-arm qemu-user-static binfmt-support debootstrap
#
#   hil_tests/rpi/build-image.sh [CACHE_DIR]     (default .cache/rpi-arm64)
#
# Writes CACHE_DIR/rootfs.img (ext4, 4 GB sparse), vmlinuz, initrd.img. Needs
# root (debootstrap, chroot) and binfmt_misc for arm64 binaries (qemu-user-static).
# The image logs root in on the serial console without a password: it is a
# test image and must never be reachable from a network.
set -eu
CACHE=${1:-.cache/rpi-arm64}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
if [ -f "$CACHE/rootfs.img" ] && [ -f "$CACHE/vmlinuz" ] && [ -f "$CACHE/initrd.img" ]; then
    echo "cached: $CACHE/rootfs.img"
    exit 0
fi
for tool in debootstrap qemu-aarch64-static mkfs.ext4 qemu-system-aarch64; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "missing $tool: apt-get install qemu-system-arm qemu-user-static binfmt-support debootstrap" >&2
        exit 2
    }
done
# arm64 binaries in the chroot run through qemu-user-static.
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
update-binfmts --enable qemu-aarch64 2>/dev/null || true

ROOT="$CACHE/rootfs.tmp"
# debootstrap mounts /proc (and more) inside the tree; never rm -rf through a mount.
unmount_tree() {
    grep -o " $ROOT/[^ ]*" /proc/mounts 2>/dev/null | sort -r | while read -r m; do umount -l "$m"; done
}
trap unmount_tree EXIT
unmount_tree
rm -rf "$ROOT"
debootstrap --arch=arm64 --variant=minbase --keep-debootstrap-dir \
    --include=systemd-sysv,udev,procps,linux-image-arm64,initramfs-tools,kmod,iproute2,ca-certificates,curl,python3,python3-venv,python3-pip,python3-dev,build-essential,mosquitto,mosquitto-clients \
    "$SUITE" "$ROOT" "$MIRROR"

# Serial console: root logged in on ttyAMA0 (the test drives the shell there).
mkdir -p "$ROOT/etc/systemd/system/serial-getty@ttyAMA0.service.d"
cat > "$ROOT/etc/systemd/system/serial-getty@ttyAMA0.service.d/autologin.conf" <<'UNIT'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200 %I vt220
UNIT
# Network: systemd-networkd, DHCP on the virtio NIC (QEMU's user network).
printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n' > "$ROOT/etc/systemd/network/20-wired.network"
chroot "$ROOT" systemctl enable systemd-networkd
echo terrapin-rpi > "$ROOT/etc/hostname"
echo 'nameserver 10.0.2.3' > "$ROOT/etc/resolv.conf"  # QEMU user-network DNS
echo '/dev/vda / ext4 defaults 0 1' > "$ROOT/etc/fstab"
chroot "$ROOT" passwd -d root
# virtio drivers in the initramfs (the -M virt disk and network).
printf 'virtio_pci\nvirtio_blk\nvirtio_net\next4\n' >> "$ROOT/etc/initramfs-tools/modules"
chroot "$ROOT" update-initramfs -u
cp "$ROOT"/boot/vmlinuz-* "$CACHE/vmlinuz"
cp "$ROOT"/boot/initrd.img-* "$CACHE/initrd.img"
unmount_tree
rm -f "$CACHE/rootfs.img"
mkfs.ext4 -q -d "$ROOT" -L rootfs "$CACHE/rootfs.img" 4G
rm -rf "$ROOT"
echo "built: $CACHE/rootfs.img"
