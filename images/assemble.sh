#!/usr/bin/env bash
# Packs a customized arm64 root into a flashable A/B SD-card image without loop devices or
# mounts, MBR with a fixed disk identifier (1c0ffee0: stable PARTUUIDs for U-Boot, RAUC, fstab):
#   1  BOOT   FAT32  256 MiB  Pi firmware, device trees, U-Boot, boot.scr, the A/B state files
#                             (abenv1.bin, abenv2.bin), config.txt, the installer's files
#   2  root A ext4  1024 MiB  the root (read-only when booted), kernel and initrd in /boot
#   3  root B       1024 MiB  empty until the first update (RAUC writes a whole root into it)
#   4  data   ext4   512 MiB  /data: what survives an update (RAUC's and the updater's state,
#                             the provisioned configuration, SSH host keys); never the logs
# Writes OUTDIR/intercom-VERSION-arm64.img (sparse) + .img.xz + .sha256 (not with
# INTERCOM_IMAGE_XZ=0, as ./build.sh test runs it), rootfs-VERSION.ext4
# (the very root written into slot A: what ./build.sh bundle signs), and u-boot-qemu.bin when
# the root's customize step left one (the QEMU tests boot the same boot.scr with it).
# Usage: images/assemble.sh ROOT OUTDIR VERSION
set -euo pipefail
ROOT=$1
OUT=$2
VERSION=$3
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
BOOT=$WORK/boot
mkdir -p "$BOOT"
DISK_ID=0x1c0ffee0
BOOT_MIB=256
SLOT_MIB=1024
DATA_MIB=512

# boot partition: the Pi firmware (raspi-firmware) and the kernel's upstream device trees for
# every board we name; U-Boot (customize.sh put it there) starts the kernel of a root slot, so
# no kernel, initrd or cmdline.txt lives here
cp -a "$ROOT/boot/firmware/." "$BOOT/"
rm -f "$BOOT/vmlinuz" "$BOOT/initrd.img" "$BOOT/cmdline.txt"
kver=$(ls "$ROOT/lib/modules" | sort -V | tail -n 1)
cp "$ROOT/usr/lib/linux-image-$kver/broadcom/"bcm2*-rpi-*.dtb "$BOOT/"
cp "$HERE/boot/config.txt" "$HERE/boot/README.txt" "$BOOT/"
cp "$ROOT/usr/share/intercom/intercom.yaml.example" "$BOOT/intercom.yaml.example"
mkimage -A arm64 -O linux -T script -C none -n "intercom A/B boot" \
  -d "$HERE/boot/boot.cmd" "$BOOT/boot.scr" >/dev/null
# the A/B state: both copies valid, copy 1 the newer (flag 1 = copy 2's 0 + 1)
printf 'BOOT_ORDER=A B\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\n' > "$WORK/abenv.txt"
mkenvimage -r -s 0x4000 -o "$BOOT/abenv1.bin" "$WORK/abenv.txt"
cp "$BOOT/abenv1.bin" "$BOOT/abenv2.bin"
printf '\000' | dd of="$BOOT/abenv2.bin" bs=1 seek=4 conv=notrunc status=none
# Pi 3B+ / Zero 2 W: bootcode.bin, start.elf, fixup.dat; Pi 4 / 400: start4.elf, fixup4.dat;
# with upstream_kernel=1 the firmware loads these device-tree names (bcm2837-rpi-3-b.dtb: QEMU)
missing=""
for f in bootcode.bin start.elf fixup.dat start4.elf fixup4.dat bcm2837-rpi-3-b-plus.dtb \
    bcm2837-rpi-zero-2-w.dtb bcm2711-rpi-4-b.dtb bcm2711-rpi-400.dtb bcm2837-rpi-3-b.dtb \
    u-boot.bin boot.scr abenv1.bin abenv2.bin config.txt; do
  [ -s "$BOOT/$f" ] || missing="$missing $f"
done
for f in boot/vmlinuz boot/initrd.img etc/intercom-version etc/rauc/system.conf \
    etc/rauc/keyring.pem etc/fw_env.config; do
  [ -s "$ROOT/$f" ] || missing="$missing /$f"
done
if [ -n "$missing" ]; then
  echo "assemble.sh: the image would lack:$missing" >&2
  exit 1
fi

# root slot: the root without /boot/firmware's contents (that is the FAT partition)
ROOTCOPY=$WORK/root
mkdir -p "$ROOTCOPY"
cp -a "$ROOT/." "$ROOTCOPY/"
rm -rf "${ROOTCOPY:?}/boot/firmware/"*
root_kib=$(du -sk "$ROOTCOPY" | cut -f1)
root_mib=$(( root_kib / 1024 * 13 / 10 + 64 ))
if [ "$root_mib" -gt "$SLOT_MIB" ]; then
  echo "assemble.sh: the root needs $root_mib MiB, a slot holds $SLOT_MIB MiB" >&2
  exit 1
fi
mkfs.vfat -n BOOT -F 32 -C "$WORK/boot.img" $(( BOOT_MIB * 1024 )) >/dev/null
mcopy -s -i "$WORK/boot.img" "$BOOT"/* ::
mke2fs -q -t ext4 -L rootfs -d "$ROOTCOPY" -E root_owner=0:0 "$WORK/root.ext4" "${root_mib}M"

# data: RAUC's and the updater's state (root), the provisioned configuration (the intercom
# user's), SSH host keys (root, 0700)
DATA=$WORK/data
uid=$(awk -F: '$1 == "intercom" {print $3}' "$ROOT/etc/passwd")
gid=$(awk -F: '$1 == "intercom" {print $3}' "$ROOT/etc/group")
install -d -m 0755 "$DATA/rauc" "$DATA/update"
install -d -m 0700 "$DATA/ssh" "$DATA/intercom"
mke2fs -q -t ext4 -L data -d "$DATA" -E root_owner=0:0 "$WORK/data.ext4" "${DATA_MIB}M"
# mke2fs -d copies owners from the folder, which this build owns: give /intercom its user
debugfs -w -R "set_inode_field /intercom uid $uid" "$WORK/data.ext4" >/dev/null 2>&1
debugfs -w -R "set_inode_field /intercom gid $gid" "$WORK/data.ext4" >/dev/null 2>&1

IMG=$WORK/intercom-$VERSION-arm64.img
sector_mib=2048
p1=8192  # 4 MiB alignment (sectors)
p2=$(( p1 + BOOT_MIB * sector_mib ))
p3=$(( p2 + SLOT_MIB * sector_mib ))
p4=$(( p3 + SLOT_MIB * sector_mib ))
end=$(( p4 + DATA_MIB * sector_mib ))
truncate -s $(( end * 512 )) "$IMG"
sfdisk -q "$IMG" <<TABLE
label: dos
label-id: $DISK_ID
start=$p1, size=$(( BOOT_MIB * sector_mib )), type=c, bootable
start=$p2, size=$(( SLOT_MIB * sector_mib )), type=83
start=$p3, size=$(( SLOT_MIB * sector_mib )), type=83
start=$p4, size=$(( DATA_MIB * sector_mib )), type=83
TABLE
dd if="$WORK/boot.img" of="$IMG" bs=1M seek=$(( p1 / sector_mib )) conv=notrunc,sparse status=none
dd if="$WORK/root.ext4" of="$IMG" bs=1M seek=$(( p2 / sector_mib )) conv=notrunc,sparse status=none
dd if="$WORK/data.ext4" of="$IMG" bs=1M seek=$(( p4 / sector_mib )) conv=notrunc,sparse status=none
rm -f "$OUT"/intercom-*-arm64.img "$OUT"/intercom-*-arm64.img.xz* "$OUT"/rootfs-*.ext4
cp --sparse=always "$IMG" "$OUT/intercom-$VERSION-arm64.img"
cp --sparse=always "$WORK/root.ext4" "$OUT/rootfs-$VERSION.ext4"
if [ -s "$ROOT.u-boot-qemu.bin" ]; then cp "$ROOT.u-boot-qemu.bin" "$OUT/u-boot-qemu.bin"; fi
if [ "${INTERCOM_IMAGE_XZ:-1}" = 0 ]; then
  # ./build.sh test boots the .img and never flashes it: the 4 minutes of xz are skipped
  echo "$OUT/intercom-$VERSION-arm64.img"
  exit 0
fi
xz -T0 -3 -c "$IMG" > "$OUT/intercom-$VERSION-arm64.img.xz"
(cd "$OUT" && sha256sum "intercom-$VERSION-arm64.img.xz" > "intercom-$VERSION-arm64.img.xz.sha256")
echo "$OUT/intercom-$VERSION-arm64.img.xz"
