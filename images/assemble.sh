#!/usr/bin/env bash
# Packs a customized arm64 root into a flashable SD-card image without loop devices or mounts:
# a FAT32 boot partition (firmware, kernel, initrd, config.txt, cmdline.txt, the example YAML)
# and an ext4 root (mounted read-only at boot), MBR partition table, xz-compressed.
# Usage: images/assemble.sh ROOT OUTDIR VERSION [EXTRA_BOOT_FILES_DIR]
set -euo pipefail
ROOT=$1
OUT=$2
VERSION=$3
EXTRA=${4:-}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
BOOT=$WORK/boot
mkdir -p "$BOOT"

# boot partition contents: the Pi firmware (raspi-firmware), the kernel's upstream device trees
# for every board we name, our kernel, initrd, config.txt and cmdline.txt. Nothing optional.
cp -a "$ROOT/boot/firmware/." "$BOOT/"
kernel=$(ls "$ROOT"/boot/vmlinuz-* | sort -V | tail -n 1)
kver=${kernel##*/vmlinuz-}
initrd=$ROOT/boot/initrd.img-$kver
cp "$kernel" "$BOOT/vmlinuz"
cp "$initrd" "$BOOT/initrd.img"
cp "$ROOT/usr/lib/linux-image-$kver/broadcom/"bcm2*-rpi-*.dtb "$BOOT/"
cp "$HERE/boot/config.txt" "$HERE/boot/cmdline.txt" "$HERE/boot/README.txt" "$BOOT/"
cp "$ROOT/usr/share/intercom/intercom.yaml.example" "$BOOT/intercom.yaml.example"
if [ -n "$EXTRA" ]; then cp -a "$EXTRA/." "$BOOT/"; fi
# Pi 3B+ / Zero 2 W: bootcode.bin, start.elf, fixup.dat; Pi 4 / 400: start4.elf, fixup4.dat;
# with upstream_kernel=1 the firmware loads these device-tree names (bcm2837-rpi-3-b.dtb: QEMU)
missing=""
for f in bootcode.bin start.elf fixup.dat start4.elf fixup4.dat bcm2837-rpi-3-b-plus.dtb \
    bcm2837-rpi-zero-2-w.dtb bcm2711-rpi-4-b.dtb bcm2711-rpi-400.dtb bcm2837-rpi-3-b.dtb \
    vmlinuz initrd.img config.txt cmdline.txt; do
  [ -s "$BOOT/$f" ] || missing="$missing $f"
done
if [ -n "$missing" ]; then
  echo "assemble.sh: the boot partition would lack:$missing" >&2
  exit 1
fi

# root partition: the root without /boot/firmware's contents
ROOTCOPY=$WORK/root
mkdir -p "$ROOTCOPY"
cp -a "$ROOT/." "$ROOTCOPY/"
rm -rf "${ROOTCOPY:?}/boot/firmware/"*
root_kib=$(du -sk "$ROOTCOPY" | cut -f1)
root_mib=$(( root_kib / 1024 * 13 / 10 + 64 ))
boot_mib=256
mkfs.vfat -n BOOT -F 32 -C "$WORK/boot.img" $(( boot_mib * 1024 )) >/dev/null
mcopy -s -i "$WORK/boot.img" "$BOOT"/* ::
mke2fs -q -t ext4 -L rootfs -d "$ROOTCOPY" -E root_owner=0:0 "$WORK/root.img" "${root_mib}M"

IMG=$WORK/intercom-$VERSION-arm64.img
start=8192  # 4 MiB alignment (sectors)
boot_sectors=$(( boot_mib * 2048 ))
root_start=$(( start + boot_sectors ))
root_sectors=$(( root_mib * 2048 ))
truncate -s $(( (root_start + root_sectors) * 512 )) "$IMG"
sfdisk -q "$IMG" <<TABLE
label: dos
start=$start, size=$boot_sectors, type=c, bootable
start=$root_start, size=$root_sectors, type=83
TABLE
dd if="$WORK/boot.img" of="$IMG" bs=512 seek=$start conv=notrunc status=none
dd if="$WORK/root.img" of="$IMG" bs=512 seek=$root_start conv=notrunc status=none
cp "$IMG" "$OUT/intercom-$VERSION-arm64.img"
xz -T0 -3 -c "$IMG" > "$OUT/intercom-$VERSION-arm64.img.xz"
(cd "$OUT" && sha256sum "intercom-$VERSION-arm64.img.xz" > "intercom-$VERSION-arm64.img.xz.sha256")
echo "$OUT/intercom-$VERSION-arm64.img.xz"
