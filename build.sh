#!/usr/bin/env bash
# The one entry point: ./build.sh run | test | bench | soak | card-soak | image | bundle | setup. Orchestration only: every apt and pip step
# of the project lives here, so a fresh Debian machine (as root) needs nothing else.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${INTERCOM_CACHE:-/var/cache/intercom}
export INTERCOM_ASTERISK_ROOT=${INTERCOM_ASTERISK_ROOT:-$CACHE/asterisk-root}
VENV=$ROOT/.venv
APT_OPTS=(-o Acquire::Check-Valid-Until=false -o Acquire::Retries=3)
# Debian packages: the Asterisk chroot builder, the Python toolchain for the Cython core, ALSA's
# headers (pyalsaaudio builds against them), libsrtp2's (the SRTP transform links it), and the
# real peers the tests talk to (baresip with jackd's paced dummy driver, SIPp); git: the install test
# copies the tracked files; the echo cancellers' libraries (speexdsp; WebRTC's module through a C++
# shim, found by pkg-config); espeak-ng, which speaks the room and PESQ tests' speech at test time;
# libasound2-plugins: alsa-lib's jack PCM, a paced 8 kHz ALSA device for the card-path tests and
# benchmarks.
# nftables: the firewall test loads the image's ruleset inside a network namespace.
# dnsmasq-base and systemd-networkd (in systemd): a real DHCP exchange hands the provisioning
# tests option 43; openssl: the provisioned documents' signatures. mosquitto, mosquitto-clients:
# the broker the events tests and ./build.sh run publish to (mosquitto_passwd, mosquitto_sub).
# linphone-cli: linphonec, the seed's SIP client, as a peer; kamailio: registrar/proxy in front
# of Asterisk (tests/integration/test_linphone.py, test_kamailio.py). valgrind: callgrind's
# instruction counts per call-second (benchmarks/callgrind_card.py); gdb: the CPU benchmark tells
# the jack plugin's threads in the box from the box's own by their backtraces. curl, make: the
# box's own speexdsp (speexdsp_build below).
# qemu-system-x86, kmod: tests/kernel boot Debian's x86 kernel under TCG on this machine's root
# (devtools/kguest.py; depmod makes the modules.dep the kernel package leaves to its postinst).
# The fixture fetches that kernel and busybox-static into $CACHE itself with apt-get download
# (~70 MB once; nothing is installed, no cpio: the initrd is written in Python).
DEB_PACKAGES=(mmdebstrap python3 python3-venv python3-dev gcc make curl iproute2 baresip-core
  sip-tester jackd2 libasound2-dev alsa-utils libsrtp2-dev git
  libspeexdsp-dev libwebrtc-audio-processing-dev g++ pkg-config espeak-ng libasound2-plugins
  nftables dnsmasq-base systemd openssl mosquitto mosquitto-clients linphone-cli kamailio
  valgrind gdb qemu-system-x86 kmod)

log() { printf '\n==> %s\n' "$*"; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "build.sh: run as root (it installs Debian packages and builds a chroot)" >&2
    exit 1
  fi
}

install_debs() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    need_root
    apt-get "${APT_OPTS[@]}" update -q
    DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y -q --no-install-recommends \
      "${missing[@]}"
  fi
}

apt_deps() {
  install_debs "${DEB_PACKAGES[@]}"
}

venv() {
  local py=${PYTHON:-python3}
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$py" -m venv "$VENV"
  fi
  # the stamp holds the speexdsp _aec was linked with (INTERCOM_SPEEXDSP, set by setup)
  local stamp=$VENV/.installed
  if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ] || [ "$ROOT/setup.py" -nt "$stamp" ] \
     || [ -n "$(find "$ROOT/firmware" "$ROOT/firmware/core" -maxdepth 1 -name '*.p[xy][xd]' -newer "$stamp")" ] \
     || [ "$(cat "$stamp")" != "${INTERCOM_SPEEXDSP:-}" ]; then
    log "installing the firmware and its test tools into $VENV (speexdsp: ${INTERCOM_SPEEXDSP:-the system library})"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -e "$ROOT[test]"
    echo "${INTERCOM_SPEEXDSP:-}" > "$stamp"
  fi
}

asterisk_root() {
  if [ ! -x "$INTERCOM_ASTERISK_ROOT/usr/sbin/asterisk" ]; then
    log "building the Asterisk 22 root (Debian unstable) in $INTERCOM_ASTERISK_ROOT"
    need_root
    local tmp=$INTERCOM_ASTERISK_ROOT.tmp
    rm -rf "$tmp"
    mkdir -p "$(dirname "$INTERCOM_ASTERISK_ROOT")"
    mmdebstrap --variant=apt --aptopt='Acquire::Check-Valid-Until "false"' \
      --include=asterisk,asterisk-modules sid "$tmp"
    mv "$tmp" "$INTERCOM_ASTERISK_ROOT"
  fi
  "$INTERCOM_ASTERISK_ROOT/usr/sbin/asterisk" -V >/dev/null 2>&1 || \
    chroot "$INTERCOM_ASTERISK_ROOT" asterisk -V
}

# The browser console (web/): Debian's Chromium for its tests (Playwright drives it; nothing is
# downloaded), openssl for the certificate of ./build.sh run, npm for SIP.js (pinned by
# web/package-lock.json; no install scripts run).
WEB_PACKAGES=(chromium openssl)

web_deps() {
  install_debs "${WEB_PACKAGES[@]}"
  command -v npm >/dev/null 2>&1 || install_debs npm
  local stamp=$ROOT/web/node_modules/.package-lock.json
  if [ ! -f "$stamp" ] || [ "$ROOT/web/package-lock.json" -nt "$stamp" ]; then
    log "npm ci in web/ (SIP.js)"
    (cd "$ROOT/web" && npm ci --ignore-scripts --no-audit --no-fund)
  fi
}

# speexdsp, the box's default echo canceller, built here rather than taken from Debian's
# libspeexdsp1: Debian compiles it -O2, and the same source -O3 runs a third fewer instructions a
# frame on x86 and 43 % fewer on arm64, the Pi's ISA, with the same output (docs/notes/cpu.md).
# Debian's own source (its orig tarball from the archive apt uses, over http as apt, pinned by
# its sha256), configured as Debian's package is (debian/rules: plain ./configure, so float,
# smallft FFT, SSE2/NEON as detected) with bookworm's hardening flags, -O3 for -O2 and no -g: a
# static -fPIC library that _aec links (setup.py: INTERCOM_SPEEXDSP names its prefix).
SPEEXDSP_URL=http://deb.debian.org/debian/pool/main/s/speexdsp/speexdsp_1.2.1.orig.tar.gz
SPEEXDSP_SHA256=8c777343e4a6399569c72abc38a95b24db56882c83dbdb6c6424a5f4aeb54d3d
SPEEXDSP_CFLAGS="-O3 -fstack-protector-strong -Wformat -Werror=format-security"
SPEEXDSP_CPPFLAGS="-D_FORTIFY_SOURCE=2"
SPEEXDSP_CONFIGURE=(--disable-shared --enable-static --with-pic --disable-examples)

# the tarball in $CACHE/src, downloaded once and checked against SPEEXDSP_SHA256 on every use
speexdsp_source() {
  local tarball=$CACHE/src/${SPEEXDSP_URL##*/}
  if [ ! -f "$tarball" ]; then
    log "downloading $SPEEXDSP_URL"
    mkdir -p "$CACHE/src"
    curl -fsSL --retry 3 -o "$tarball.tmp" "$SPEEXDSP_URL" || {
      rm -f "$tarball.tmp"
      echo "build.sh: could not download $SPEEXDSP_URL" >&2
      exit 1
    }
    mv "$tarball.tmp" "$tarball"
  fi
  if [ "$(sha256sum < "$tarball" | cut -d' ' -f1)" != "$SPEEXDSP_SHA256" ]; then
    echo "build.sh: $tarball is not speexdsp 1.2.1 as pinned (sha256 differs from $SPEEXDSP_SHA256): remove it to download it again" >&2
    exit 1
  fi
  SPEEXDSP_TARBALL=$tarball
}

# speexdsp_build DIR CC [HOST SYSROOT]: the static library for CC (a cross compiler: its GNU
# HOST triplet and the root it builds against), in DIR/speexdsp-<key>, the key hashing the
# tarball, the flags, this recipe, the compiler and the (sys)root's C library headers; built
# once. Sets SPEEXDSP_PREFIX.
speexdsp_build() {
  local dir=$1 cc=$2 host=${3:-} sysroot=${4:-} key prefix src
  command -v "${cc%% *}" >/dev/null || {
    echo "build.sh: no ${cc%% *} to build speexdsp with" >&2; exit 1; }
  speexdsp_source
  key=$( { echo "$SPEEXDSP_SHA256 $SPEEXDSP_CFLAGS $SPEEXDSP_CPPFLAGS ${SPEEXDSP_CONFIGURE[*]} $host"
    declare -f speexdsp_build
    $cc --version | head -n 1
    dpkg-query --admindir="$sysroot/var/lib/dpkg" -W libc6-dev || true; } | sha256sum | cut -c1-16)
  prefix=$dir/speexdsp-$key
  if [ ! -f "$prefix/lib/libspeexdsp.a" ]; then
    log "building speexdsp 1.2.1 -O3 ${host:-for this machine} (cached in $prefix)"
    rm -rf "$prefix.tmp"
    mkdir -p "$prefix.tmp/src"
    src=$prefix.tmp/src
    tar -xzf "$SPEEXDSP_TARBALL" -C "$src" --strip-components=1
    if ! (cd "$src" && ./configure --prefix="$prefix" ${host:+--host="$host"} \
        "${SPEEXDSP_CONFIGURE[@]}" CC="$cc" CFLAGS="$SPEEXDSP_CFLAGS" \
        CPPFLAGS="$SPEEXDSP_CPPFLAGS" > build.log 2>&1 \
        && make -j "$(nproc)" >> build.log 2>&1 && make install prefix="$prefix.tmp" >> build.log 2>&1)
    then
      tail -n 20 "$src/build.log" >&2
      echo "build.sh: speexdsp did not build for ${host:-this machine} (log: $src/build.log)" >&2
      exit 1
    fi
    cp "$src/config.h" "$prefix.tmp/config.h"  # what configure chose (float, smallft, SIMD)
    rm -rf "$src" "$prefix.tmp/share" "$prefix.tmp/lib/pkgconfig" "$prefix.tmp/lib/"*.la
    rm -rf "$prefix"
    mv "$prefix.tmp" "$prefix"
    # the three newest stay
    ls -dt "$dir"/speexdsp-* | tail -n +4 | while read -r old; do rm -rf "$old"; done
  fi
  SPEEXDSP_PREFIX=$prefix
}

setup() {
  apt_deps
  web_deps
  speexdsp_build "$CACHE" gcc
  export INTERCOM_SPEEXDSP=$SPEEXDSP_PREFIX  # setup.py links _aec with it; the tests check it
  venv
  asterisk_root
}

cmd_run() {
  setup
  cd "$ROOT"
  exec "$VENV/bin/python" -m devtools.devrun
}

cmd_test() {
  setup
  bundle_deps  # the bundle tests sign and check real RAUC bundles
  cd "$ROOT"
  local rc=0 image_pid="" image_log=""
  if [ "$#" -gt 0 ]; then  # a selection of tests: the image first when it is wanted, one run
    if [ "${INTERCOM_SKIP_IMAGE:-0}" != 1 ]; then
      INTERCOM_IMAGE_XZ=0 cmd_image
    fi
    pytest_run "tests" --cov=firmware --cov-report= "$@" || rc=$?
    [ "$rc" = 0 ] || exit "$rc"
    exit 0
  fi
  # The SD-card image is built in the background at idle CPU and I/O priority while the tests
  # that need no image run (from nothing its base root alone takes ~25 min of qemu-user), then
  # tests/image boots it in QEMU. The tests boot the .img: no xz (./build.sh image makes one).
  if [ "${INTERCOM_SKIP_IMAGE:-0}" != 1 ]; then
    image_deps
    image_log=$CACHE/image-build.log
    mkdir -p "$CACHE"
    log "building the SD-card image in the background, idle priority (log: $image_log)"
    (
      chrt --idle -p 0 "$BASHPID" >/dev/null || true
      ionice -c 3 -p "$BASHPID" || true
      INTERCOM_IMAGE_XZ=0 cmd_image
    ) > "$image_log" 2>&1 &
    image_pid=$!
  fi
  log "ruff"
  "$VENV/bin/ruff" check firmware tests devtools benchmarks || rc=$?
  log "pytest: everything but the image"
  pytest_run "the tests" --cov=firmware --cov-report= --ignore=tests/image || rc=$?
  if [ -n "$image_pid" ]; then
    log "waiting for the image build"
    if ! wait "$image_pid"; then
      tail -n 60 "$image_log" >&2
      echo "build.sh: the image build failed (whole log: $image_log)" >&2
      exit 1
    fi
    tail -n 1 "$image_log"
    log "pytest: the image in QEMU"
    pytest_run "tests/image" --cov=firmware --cov-append --cov-report= tests/image || rc=$?
  fi
  [ "$rc" = 0 ] || exit "$rc"
  log "coverage of the SIP core (firmware/sip, target 90 %)"
  "$VENV/bin/python" -m coverage report --include='firmware/sip/*' --fail-under=90
}

# pytest with the compiled core required (tests/compiled.py: a missing extension stops the run,
# never a silent skip); WHAT names the selection in the message when nothing was collected
pytest_run() {
  local what=$1 rc=0
  shift
  INTERCOM_REQUIRE_BUILD=1 "$VENV/bin/python" -m pytest --durations=15 "$@" || rc=$?
  if [ "$rc" = 5 ]; then
    echo "build.sh: pytest collected nothing in $what: that is a failure" >&2
  fi
  return "$rc"
}

# arch-test: mmdebstrap needs it for a foreign architecture (a Recommends that
# --no-install-recommends skips); device-tree-compiler: the QEMU boot test edits the virt DTB
# u-boot-tools: mkimage (boot.scr) and mkenvimage (the A/B state files)
# gcc/g++-aarch64-linux-gnu: customize.sh compiles the Cython core for the arm64 root on the
# host (--sysroot) rather than under qemu-user (2 minutes of CPU instead of 20)
IMAGE_PACKAGES=(mmdebstrap arch-test qemu-user-static binfmt-support qemu-system-arm dosfstools
  mtools e2fsprogs fdisk xz-utils device-tree-compiler u-boot-tools gcc-aarch64-linux-gnu
  g++-aarch64-linux-gnu)

image_deps() {
  install_debs "${IMAGE_PACKAGES[@]}"
  # arm64 binaries run through qemu-user inside the root while it is built
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
}

cmd_image() {
  local started=$SECONDS
  image_deps
  local version key base work
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml")
  # the package names only: a comment or the order does not cost a new base root
  key=$(grep -hv '^#' "$ROOT/images/packages.txt" "$ROOT/images/build-packages.txt" | LC_ALL=C sort \
    | sha256sum | cut -c1-12)
  base=$CACHE/img/base-$key
  work=$CACHE/img/work
  mkdir -p "$CACHE/img"
  if [ ! -d "$base" ]; then
    log "mmdebstrap: Debian trixie arm64 base root (cached in $base)"
    rm -rf "$base.tmp"
    mmdebstrap --architectures=arm64 --variant=minbase \
      --components="main contrib non-free non-free-firmware" \
      --aptopt='Acquire::Check-Valid-Until "false"' \
      --include="$(grep -hv '^#' "$ROOT/images/packages.txt" "$ROOT/images/build-packages.txt" \
        | paste -sd, -)" trixie "$base.tmp"
    mv "$base.tmp" "$base"
  fi
  log "customizing a copy of the base root"
  rm -rf "$work"
  cp -a "$base" "$work"
  cp /etc/resolv.conf "$work/etc/resolv.conf" 2>/dev/null || true
  signing_key
  rm -f "$work.u-boot-qemu.bin"
  # the image's speexdsp: the same source and flags, cross-built against the root
  speexdsp_build "$CACHE/img" "aarch64-linux-gnu-gcc --sysroot=$work" aarch64-linux-gnu "$work"
  INTERCOM_SIGNING_CERT=$SIGNING_CERT INTERCOM_SPEEXDSP=$SPEEXDSP_PREFIX \
    "$ROOT/images/customize.sh" "$work" "$ROOT"
  log "assembling the SD-card image"
  "$ROOT/images/assemble.sh" "$work" "$ROOT/images/out" "$version"
  log "image built in $(( SECONDS - started )) s"
}

# The key that signs update bundles. INTERCOM_SIGNING_KEY and INTERCOM_SIGNING_CERT (both or
# neither; the key may be a PKCS#11 URL) name a real one; else a development pair is made on
# first use in $CACHE/keys (key 0600), never inside the repository. Sets SIGNING_KEY and
# SIGNING_CERT; an image carries only the certificate (RAUC's keyring).
signing_key() {
  local root_real key_real dir
  root_real=$(realpath -m "$ROOT")
  if [ -n "${INTERCOM_SIGNING_KEY:-}" ] || [ -n "${INTERCOM_SIGNING_CERT:-}" ]; then
    if [ -z "${INTERCOM_SIGNING_KEY:-}" ] || [ -z "${INTERCOM_SIGNING_CERT:-}" ]; then
      echo "build.sh: set both INTERCOM_SIGNING_KEY and INTERCOM_SIGNING_CERT, or neither (a development key in $CACHE/keys is then used)" >&2
      exit 1
    fi
    SIGNING_KEY=$INTERCOM_SIGNING_KEY
    SIGNING_CERT=$INTERCOM_SIGNING_CERT
  else
    dir=$CACHE/keys
    SIGNING_KEY=$dir/dev.key.pem
    SIGNING_CERT=$dir/dev.cert.pem
  fi
  if [[ $SIGNING_KEY != pkcs11:* ]]; then
    key_real=$(realpath -m "$SIGNING_KEY")
    if [[ $key_real == "$root_real"/* ]]; then
      echo "build.sh: the signing key must live outside the repository, not in $key_real (move INTERCOM_CACHE or INTERCOM_SIGNING_KEY)" >&2
      exit 1
    fi
  fi
  if [ -z "${dir:-}" ]; then
    if [[ $SIGNING_KEY != pkcs11:* ]] && [ ! -f "$SIGNING_KEY" ]; then
      echo "build.sh: INTERCOM_SIGNING_KEY: no such file: $SIGNING_KEY" >&2
      exit 1
    fi
    if [ ! -f "$SIGNING_CERT" ]; then
      echo "build.sh: INTERCOM_SIGNING_CERT: no such file: $SIGNING_CERT" >&2
      exit 1
    fi
    return 0
  fi
  if [ -f "$SIGNING_KEY" ] && [ -f "$SIGNING_CERT" ]; then
    return 0
  fi
  if [ -e "$SIGNING_KEY" ] || [ -e "$SIGNING_CERT" ]; then
    echo "build.sh: $dir holds only one of dev.key.pem and dev.cert.pem: remove it to make a new pair (images with the old certificate then refuse the new bundles)" >&2
    exit 1
  fi
  log "creating a development signing key in $dir (INTERCOM_SIGNING_KEY/_CERT name a real one)"
  mkdir -p "$dir"
  chmod 700 "$dir"
  local tmp
  tmp=$(mktemp -d "$dir/.new.XXXXXX")
  (umask 077 && openssl req -x509 -newkey rsa:3072 -nodes -sha256 -days 3650 \
    -subj "/CN=intercom development signing key" -keyout "$tmp/key" -out "$tmp/cert" 2>/dev/null)
  chmod 600 "$tmp/key"
  chmod 644 "$tmp/cert"
  mv "$tmp/cert" "$SIGNING_CERT"
  mv "$tmp/key" "$SIGNING_KEY"
  rmdir "$tmp"
}

# rauc (bundle), squashfs-tools (rauc's mksquashfs), openssl (keys), e2fsprogs (debugfs writes
# /etc/intercom-version into the bundle's copy of the root), python3 (devtools/bundles.py);
# the update-health tests' RAUC host (devtools/rauc_host.py): libubootenv-tool (fw_setenv,
# fw_printenv), u-boot-tools (mkenvimage), dbus-daemon (rauc's service bus):
# a run from nothing found fw_setenv missing (earlier machines had it from before).
BUNDLE_PACKAGES=(rauc squashfs-tools openssl e2fsprogs python3 libubootenv-tool u-boot-tools dbus-daemon)

bundle_deps() {
  install_debs "${BUNDLE_PACKAGES[@]}"
}

# ./build.sh bundle [--version V] [--root ROOT.ext4] [--out DIR]: the image's root, the very
# ext4 that assemble.sh writes into slot A (images/out/rootfs-<version>.ext4; the image is built
# first when it is missing), signed as a RAUC bundle (verity) DIR/intercom-V.raucb. V defaults
# to pyproject.toml's version and is written into the bundle's copy of /etc/intercom-version.
cmd_bundle() {
  local version="" root="" out=$ROOT/images/out image_version
  while [ $# -gt 0 ]; do
    case $1 in
      --version|--root|--out)
        if [ $# -lt 2 ] || [ -z "$2" ]; then
          echo "build.sh bundle: $1 needs a value" >&2
          exit 2
        fi
        case $1 in --version) version=$2 ;; --root) root=$2 ;; --out) out=$2 ;; esac
        shift 2 ;;
      *)
        echo "build.sh bundle: unknown argument $1 (usage: ./build.sh bundle [--version V] [--root ROOT.ext4] [--out DIR])" >&2
        exit 2 ;;
    esac
  done
  signing_key
  bundle_deps
  image_version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml")
  version=${version:-$image_version}
  if [ -z "$root" ]; then
    root=$ROOT/images/out/rootfs-$image_version.ext4
    if [ ! -f "$root" ]; then
      log "no $root yet: building the image first"
      setup
      cmd_image
    fi
  fi
  local bundle=$out/intercom-$version.raucb started=$SECONDS
  log "signing $root as $bundle (version $version, certificate $SIGNING_CERT)"
  PYTHONPATH=$ROOT python3 -m devtools.bundles make "$root" "$bundle" --version "$version" \
    --key "$SIGNING_KEY" --cert "$SIGNING_CERT"
  (cd "$out" && sha256sum "intercom-$version.raucb" > "intercom-$version.raucb.sha256")
  log "bundle built in $(( SECONDS - started )) s"
}

cmd_bench() {
  setup
  cd "$ROOT"
  "$VENV/bin/python" -m benchmarks "$@"
}

# 1,000 calls back to back against Asterisk (benchmarks/soak.py): failures and growth of the box's
# RSS, descriptors, threads and CPU per call; --calls N for another count. Not part of test.
cmd_soak() {
  setup
  cd "$ROOT"
  "$VENV/bin/python" -m benchmarks.soak "$@"
}

# ten minutes of one call on the jack-plugin card with 2 busy cores and real-time priority
# (benchmarks/card_soak.py): xruns, send interval p99 on the wire, drift; --minutes M for
# another length. Not part of test.
cmd_card_soak() {
  setup
  cd "$ROOT"
  "$VENV/bin/python" -m benchmarks.card_soak "$@"
}

# the long loops ./build.sh test leaves out (pytest's `slow` marker, see pyproject.toml): the
# hour of clock drift simulated, the session-timer refresh 45 s into a call (RFC 4028's floor)
cmd_slow() {
  setup
  cd "$ROOT"
  local rc=0
  pytest_run "the slow tests" -m slow "$@" || rc=$?
  exit "$rc"
}

# long fuzz run: hypothesis with many examples, then atheris (coverage-guided) on every target;
# FUZZ_SECONDS per atheris target (default 120)
cmd_fuzz() {
  setup
  cd "$ROOT"
  "$VENV/bin/pip" install -q -e "$ROOT[test,fuzz]"
  INTERCOM_FUZZ_EXAMPLES=${INTERCOM_FUZZ_EXAMPLES:-20000} INTERCOM_REQUIRE_BUILD=1 \
    "$VENV/bin/python" -m pytest -q tests/fuzz
  local t
  mkdir -p "$ROOT/.cache"
  for t in sip_message sip_uri sdp stream_framing ua_datagram ua_fresh rtp jitter trusted_call; do
    log "atheris: $t"
    "$VENV/bin/python" -m tests.fuzz.run_atheris "$t" -max_total_time="${FUZZ_SECONDS:-120}" \
      -artifact_prefix="$ROOT/.cache/fuzz-$t-"
  done
}

case "${1:-help}" in
  run) shift; cmd_run "$@" ;;
  test) shift; cmd_test "$@" ;;
  bench) shift; cmd_bench "$@" ;;
  slow) shift; cmd_slow "$@" ;;
  soak) shift; cmd_soak "$@" ;;
  card-soak) shift; cmd_card_soak "$@" ;;
  fuzz) shift; cmd_fuzz "$@" ;;
  image) shift; setup; cmd_image "$@" ;;
  bundle) shift; cmd_bundle "$@" ;;
  setup) setup ;;
  *)
    echo "usage: ./build.sh run | test [pytest args] | slow [pytest args] | bench [--quick] [--only storm [--boxes N]] | soak [--calls N] | card-soak [--minutes M] | fuzz | image | bundle [--version V] | setup"
    exit 2 ;;
esac
