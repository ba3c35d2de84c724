#!/usr/bin/env bash
# Turns a fresh arm64 Debian root (from mmdebstrap) into the intercom appliance root:
# the firmware compiled inside the root (qemu-user), the service, the read-only layout.
# Usage: images/customize.sh ROOT REPO
set -euo pipefail
ROOT=$1
REPO=$2
HERE=$(cd "$(dirname "$0")" && pwd)
in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
  DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"; }
# /proc inside the root: maintainer scripts (raspi-firmware's kernel hook) detect the chroot
mount -t proc proc "$ROOT/proc"
trap 'umount "$ROOT/proc" 2>/dev/null || true' EXIT

# 1. the firmware, built by the root's own python3 and Cython, installed as a system package
rm -rf "$ROOT/usr/src/intercom"
mkdir -p "$ROOT/usr/src/intercom"
cp -r "$REPO/firmware" "$REPO/hw" "$REPO/pyproject.toml" "$REPO/setup.py" "$REPO/README.md" \
  "$ROOT/usr/src/intercom/"
find "$ROOT/usr/src/intercom" \( -name '*.so' -o -name '*.c' -o -name __pycache__ \) \
  -exec rm -rf {} + 2>/dev/null || true
in_root apt-get install -y -q --no-install-recommends $(grep -v '^#' "$HERE/build-packages.txt")
in_root sh -c 'cd /usr/src/intercom && pip3 install --no-deps --no-build-isolation \
  --break-system-packages --root-user-action=ignore --prefix=/usr .'
in_root python3 -c "import firmware._rtpcore, firmware._srtp, firmware.gpiocdev, firmware.app; print(\"firmware OK\")"
# Debian's pip puts a --prefix=/usr install under /usr/local: the unit runs /usr/bin/intercom
[ -e "$ROOT/usr/bin/intercom" ] || ln -s ../local/bin/intercom "$ROOT/usr/bin/intercom"
in_root apt-get purge -y -q --auto-remove $(grep -v '^#' "$HERE/build-packages.txt")
rm -rf "$ROOT/usr/src/intercom"
install -d "$ROOT/usr/share/intercom/hw"
cp -r "$REPO/hw/profiles" "$ROOT/usr/share/intercom/hw/"
install -m 0644 "$REPO/examples/intercom.yaml" "$ROOT/usr/share/intercom/intercom.yaml.example"
install -m 0644 "$REPO/systemd/intercom.service" "$ROOT/etc/systemd/system/intercom.service"

# 2. overlay files, the user, services
cp -r "$HERE/overlay/." "$ROOT/"
in_root sh -c 'getent group gpio >/dev/null || groupadd --system gpio'
in_root sh -c 'id intercom >/dev/null 2>&1 || useradd --system --no-create-home \
  --home-dir /nonexistent --shell /usr/sbin/nologin --groups gpio,audio intercom'
cat > "$ROOT/etc/udev/rules.d/60-gpio.rules" <<'RULES'
SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"
RULES
in_root systemctl enable intercom.service intercom-boot.service intercom-selftest.service \
  intercom-firewall.service intercom-firewall.path systemd-networkd systemd-resolved
# our own table only: Debian's nftables.service would flush it with /etc/nftables.conf
in_root systemctl disable nftables.service 2>/dev/null || true
in_root systemctl disable ssh.service ssh.socket 2>/dev/null || true
in_root systemctl mask systemd-firstboot.service apt-daily.timer apt-daily-upgrade.timer \
  e2scrub_all.timer fstrim.timer man-db.timer 2>/dev/null || true
sed -i 's/^root:[^:]*:/root:*:/' "$ROOT/etc/shadow"  # no password: no login except SSH keys
ln -sf ../run/systemd/resolve/stub-resolv.conf "$ROOT/etc/resolv.conf"
echo intercom > "$ROOT/etc/hostname"
ln -sf /proc/self/mounts "$ROOT/etc/mtab"
systemd-machine-id-setup --root="$ROOT" >/dev/null 2>&1 || true
: > "$ROOT/etc/machine-id"  # uninitialized: systemd creates a transient one in /run

# 3. the read-only root: fstab from images/writable-paths
{
  echo "# generated from images/writable-paths: the root is read-only"
  echo "LABEL=rootfs  /              ext4   ro,noatime,errors=remount-ro  0 1"
  # intercom.yaml holds the SIP password: readable by root and the intercom group only
  gid=$(awk -F: '$1 == "intercom" {print $3}' "$ROOT/etc/group")
  echo "LABEL=BOOT    /boot/firmware vfat   rw,noatime,gid=$gid,fmask=0137,dmask=0027,flush  0 2"
  grep -v '^#' "$HERE/writable-paths" | while read -r path size; do
    [ -n "$path" ] && echo "tmpfs  $path  tmpfs  rw,nosuid,nodev,size=$size,mode=1777  0 0"
  done
} > "$ROOT/etc/fstab"

# 4. a small initramfs (MODULES=list, see overlay/etc/initramfs-tools/modules) and boot files
sed -i 's/^MODULES=.*/MODULES=list/' "$ROOT/etc/initramfs-tools/initramfs.conf"
kver=$(ls "$ROOT/lib/modules" | sort -V | tail -n 1)
missing=""
for m in $(grep -v '^#' "$HERE/overlay/etc/initramfs-tools/modules"); do
  in_root modinfo -k "$kver" -F name "$m" >/dev/null 2>&1 || missing="$missing $m"
done
if [ -n "$missing" ]; then
  echo "customize.sh: not modules of linux $kver (nor built in):$missing" >&2
  exit 1
fi
in_root update-initramfs -u -k all
# the SD host drivers must be in the initramfs, or Pi 3B+/Zero 2 W (bcm2835) and Pi 4
# (sdhci-iproc) never see their root
initrd_files=$("$HERE/initrd-list" "$ROOT/boot/initrd.img-$kver")
for m in bcm2835 sdhci-iproc; do
  file=$(in_root modinfo -k "$kver" -F filename "$m")
  case "$file" in *builtin*) continue ;; esac
  grep -q "/$m\.ko" <<<"$initrd_files" || {
    echo "customize.sh: $m.ko is not in the initramfs" >&2; exit 1; }
done
in_root apt-get clean
rm -rf "$ROOT/var/lib/apt/lists/"* "$ROOT/usr/share/doc/"* "$ROOT/usr/share/man/"* \
  "$ROOT/var/log/"* "$ROOT/tmp/"*
