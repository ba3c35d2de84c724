#!/usr/bin/env bash
# Turns a fresh arm64 Debian root (from mmdebstrap) into the intercom appliance root:
# the firmware compiled inside the root (qemu-user), the service, the read-only layout.
# Usage: INTERCOM_SIGNING_CERT=cert.pem INTERCOM_SPEEXDSP=PREFIX images/customize.sh ROOT REPO
# (the certificate whose key signs update bundles: the image's RAUC keyring; never the key; the
# arm64 speexdsp build.sh cross-built for this root, include/ and lib/libspeexdsp.a)
set -euo pipefail
ROOT=$1
REPO=$2
CERT=${INTERCOM_SIGNING_CERT:?customize.sh: INTERCOM_SIGNING_CERT names the bundle signing certificate}
SPEEXDSP=${INTERCOM_SPEEXDSP:?customize.sh: INTERCOM_SPEEXDSP names the arm64 speexdsp build.sh built for the root}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/pyproject.toml")
HERE=$(cd "$(dirname "$0")" && pwd)
in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
  DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"; }
# /proc inside the root: maintainer scripts (raspi-firmware's kernel hook) detect the chroot
mount -t proc proc "$ROOT/proc"
trap 'umount "$ROOT/proc" 2>/dev/null || true' EXIT

# 1. the firmware, a wheel built for the root's python3 and installed as a system package.
# Nothing of it is compiled under qemu-user when the host can help: the C comes from the .pyx
# by the root's Cython version in a venv of its own in $INTERCOM_CACHE/img (the root's setup.py
# regenerates C that another version wrote), and the host's cross compiler builds it against
# the root (--sysroot), driven by the root's own python3 and setup.py, run under qemu-user
# outside the chroot (QEMU_LD_PREFIX: the root's sysconfig, Cython, setuptools, headers and
# libraries): about 2 minutes of CPU where gcc under qemu-user took 20. Without a cross compiler
# or the host's Cython, the root builds it all itself. The compiled extensions are cached in
# $INTERCOM_CACHE/img/firmware-<key>, the key hashing what they are built from (.pyx/.pxd/C++
# sources, setup.py, the root's packages, this section, the speexdsp build): a firmware change
# that leaves them alone is not recompiled. _aec links speexdsp statically from the copy
# build.sh cross-built -O3 for this root (INTERCOM_SPEEXDSP), copied into the sources so that
# both ways of compiling see it; libspeexdsp1 stays in the root (nothing of the box needs it).
fw_src=$ROOT/usr/src/intercom
fw_dist=$ROOT/usr/src/intercom-dist
rm -rf "$fw_src" "$fw_dist"
mkdir -p "$fw_src" "$fw_dist"
cp -r "$REPO/firmware" "$REPO/hw" "$REPO/pyproject.toml" "$REPO/setup.py" "$REPO/README.md" \
  "$fw_src/"
find "$fw_src" \( -name '*.so' -o -name '*.c' -o -name __pycache__ \) \
  -exec rm -rf {} + 2>/dev/null || true
cp -r "$SPEEXDSP" "$fw_src/speexdsp"
in_root apt-get install -y -q --no-install-recommends $(grep -v '^#' "$HERE/build-packages.txt")
fw_img_cache=${INTERCOM_CACHE:-/var/cache/intercom}/img
fw_cy_version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' \
  "$ROOT/usr/lib/python3/dist-packages/Cython/Shadow.py")
fw_cython=$fw_img_cache/cython-$fw_cy_version
if [ -n "$fw_cy_version" ] && [ ! -x "$fw_cython/bin/python" ]; then
  rm -rf "$fw_cython.tmp"
  if python3 -m venv "$fw_cython.tmp" \
      && "$fw_cython.tmp/bin/pip" install -q --disable-pip-version-check "Cython==$fw_cy_version"
  then
    mv "$fw_cython.tmp" "$fw_cython"
  else
    echo "customize.sh: no Cython $fw_cy_version for the host: the root builds the firmware" >&2
    rm -rf "$fw_cython.tmp"
  fi
fi
fw_key=$( { (cd "$fw_src" && find setup.py firmware firmware/core -maxdepth 1 -type f \( -name setup.py \
    -o -name '*.pyx' -o -name '*.pxd' -o -name '*.cpp' -o -name '*.h' \) -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum)
  cat "$ROOT/var/lib/dpkg/status"
  echo "$(basename "$SPEEXDSP")"
  sed -n '/^# 1\. /,/^# 2\. /p' "${BASH_SOURCE[0]}"; } | sha256sum | cut -c1-16)
fw_cache=$fw_img_cache/firmware-$fw_key
[ ! -x "$fw_cython/bin/python" ] || (cd "$fw_src" && "$fw_cython/bin/python" -m \
  Cython.Build.Cythonize -3 -q -j "$(nproc)" firmware/*.pyx firmware/core/*.pyx)
# a fixed build folder (cached extensions go there, newer than their C: build_ext skips them)
# and one compiler per core
printf '[build]\nbuild_lib = build/lib\n[build_ext]\nparallel = %s\n' "$(nproc)" \
  > "$fw_src/setup.cfg"
if [ -n "$(find "$fw_cache" -name '*.so' 2>/dev/null)" ]; then
  echo "customize.sh: the compiled extensions from $fw_cache"
  mkdir -p "$fw_src/build/lib"
  cp -r "$fw_cache/firmware" "$fw_src/build/lib/"
fi
# the PEP 517 hook, called once (pip runs setup.py three times, each checking the WebRTC shim
# with c++)
fw_build='from setuptools import build_meta; build_meta.build_wheel("../intercom-dist")'
if [ -x "$fw_cython/bin/python" ] && command -v aarch64-linux-gnu-gcc >/dev/null \
    && command -v aarch64-linux-gnu-g++ >/dev/null; then
  fw_bin=$(mktemp -d)
  # setup.py checks the WebRTC shim with `c++`: the cross compiler, against the root's headers
  printf '#!/bin/sh\nexec aarch64-linux-gnu-g++ --sysroot="%s" "$@"\n' "$ROOT" > "$fw_bin/c++"
  chmod 0755 "$fw_bin/c++"
  fw_inc=$(QEMU_LD_PREFIX=$ROOT "$ROOT/usr/bin/python3" -c \
    'import sysconfig; print(sysconfig.get_paths()["include"])')
  (cd "$fw_src" && env QEMU_LD_PREFIX="$ROOT" PATH="$fw_bin:$PATH" \
    CC="aarch64-linux-gnu-gcc --sysroot=$ROOT" CXX="aarch64-linux-gnu-g++ --sysroot=$ROOT" \
    CPPFLAGS="-I$fw_inc" PKG_CONFIG_SYSROOT_DIR="$ROOT" INTERCOM_SPEEXDSP="$fw_src/speexdsp" \
    PKG_CONFIG_LIBDIR="$ROOT/usr/lib/aarch64-linux-gnu/pkgconfig:$ROOT/usr/share/pkgconfig" \
    "$ROOT/usr/bin/python3" -c "$fw_build")
  rm -rf "$fw_bin"
else
  echo "customize.sh: no aarch64-linux-gnu-gcc/g++ (or Cython) on the host: compiling under" \
    "qemu-user" >&2
  in_root sh -c "cd /usr/src/intercom && INTERCOM_SPEEXDSP=/usr/src/intercom/speexdsp \
    python3 -c '$fw_build'"
fi
in_root sh -c 'pip3 install --no-deps --no-index --break-system-packages \
  --root-user-action=ignore --prefix=/usr /usr/src/intercom-dist/*.whl'
rm -rf "$fw_dist"
# the image's echo cancellers are speexdsp and WebRTC: a build that lost WebRTC fails here
in_root python3 -c "import firmware._rtpcore, firmware.core._srtp, firmware.gpiocdev, firmware.app
import firmware.core._aec as aec
assert aec.unavailable('webrtc') is None, aec.unavailable('webrtc')
print('firmware OK, WebRTC', aec.webrtc_version())"
# ... and speexdsp is the -O3 copy inside _aec, not Debian's libspeexdsp.so (a build that fell
# back to the system's library fails here)
fw_aec=$ROOT$(in_root python3 -c 'import firmware.core._aec as aec; print(aec.__file__)')
fw_elf=$(readelf -W -d -s "$fw_aec")
if grep -q 'NEEDED.*libspeexdsp' <<<"$fw_elf"; then
  echo "customize.sh: $fw_aec links Debian's libspeexdsp, not the -O3 copy in $SPEEXDSP" >&2
  exit 1
fi
grep -Eq ' FUNC +LOCAL .* speex_echo_cancellation$' <<<"$fw_elf" \
  || { echo "customize.sh: $fw_aec has no speex_echo_cancellation of its own" >&2; exit 1; }
# kept only once the root has imported them
if [ ! -d "$fw_cache" ]; then
  rm -rf "$fw_cache.tmp"
  mkdir -p "$fw_cache.tmp"
  (cd "$fw_src/build/lib" && find firmware -name '*.so' -exec cp --parents {} "$fw_cache.tmp/" \;)
  mv "$fw_cache.tmp" "$fw_cache"
  # the three newest stay
  ls -dt "$fw_img_cache"/firmware-* | tail -n +4 | while read -r old; do rm -rf "$old"; done
fi
# Debian's pip puts a --prefix=/usr install under /usr/local: the unit runs /usr/bin/intercom
[ -e "$ROOT/usr/bin/intercom" ] || ln -s ../local/bin/intercom "$ROOT/usr/bin/intercom"
# U-Boot (from build-packages.txt, purged below): rpi_arm64 onto the boot partition; qemu_arm64
# beside the root, for assemble.sh to hand to the QEMU tests
install -m 0644 "$ROOT/usr/lib/u-boot/rpi_arm64/u-boot.bin" "$ROOT/boot/firmware/u-boot.bin"
install -m 0644 "$ROOT/usr/lib/u-boot/qemu_arm64/u-boot.bin" "$ROOT.u-boot-qemu.bin"
in_root apt-get purge -y -q --auto-remove $(grep -v '^#' "$HERE/build-packages.txt")
rm -rf "$ROOT/usr/src/intercom"
install -d "$ROOT/usr/share/intercom/hw"
cp -r "$REPO/hw/profiles" "$ROOT/usr/share/intercom/hw/"
install -m 0644 "$REPO/examples/intercom.yaml" "$ROOT/usr/share/intercom/intercom.yaml.example"
install -m 0644 "$REPO/systemd/intercom.service" "$ROOT/etc/systemd/system/intercom.service"

# 2. overlay files, the user, services
cp -r "$HERE/overlay/." "$ROOT/"
# the release this root is (what `status` and RAUC's version limit compare) and the only
# certificate whose bundles it installs
echo "$VERSION" > "$ROOT/etc/intercom-version"
sed -i "s/@VERSION@/$VERSION/" "$ROOT/etc/rauc/system.conf"
install -m 0644 "$CERT" "$ROOT/etc/rauc/keyring.pem"
install -d "$ROOT/data"
in_root sh -c 'getent group gpio >/dev/null || groupadd --system gpio'
in_root sh -c 'id intercom >/dev/null 2>&1 || useradd --system --no-create-home \
  --home-dir /nonexistent --shell /usr/sbin/nologin --groups gpio,audio intercom'
cat > "$ROOT/etc/udev/rules.d/60-gpio.rules" <<'RULES'
SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"
RULES
in_root systemctl enable intercom.service intercom-boot.service intercom-selftest.service \
  intercom-firewall.service intercom-firewall.path intercom-updater.service \
  intercom-health.service systemd-networkd systemd-resolved
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
  echo "# generated by images/customize.sh from images/writable-paths. The root (slot A or B,"
  echo "# PARTUUID 1c0ffee0-02/-03, chosen by boot.scr) is mounted read-only by the kernel and"
  echo "# has no line here; /data survives updates and is optional (nofail): without it the box"
  echo "# runs from the boot partition's intercom.yaml"
  # intercom.yaml holds the SIP password: readable by root and the intercom group only
  gid=$(awk -F: '$1 == "intercom" {print $3}' "$ROOT/etc/group")
  echo "PARTUUID=1c0ffee0-01  /boot/firmware vfat  rw,noatime,gid=$gid,fmask=0137,dmask=0027,flush  0 2"
  echo "PARTUUID=1c0ffee0-04  /data  ext4  rw,noatime,nosuid,nodev,nofail,x-systemd.device-timeout=90s  0 2"
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
# boot.scr loads the slot's own kernel and initrd by these names
ln -f "$ROOT/boot/vmlinuz-$kver" "$ROOT/boot/vmlinuz"
ln -f "$ROOT/boot/initrd.img-$kver" "$ROOT/boot/initrd.img"
in_root apt-get clean
rm -rf "$ROOT/var/lib/apt/lists/"* "$ROOT/usr/share/doc/"* "$ROOT/usr/share/man/"* \
  "$ROOT/var/log/"* "$ROOT/tmp/"*
