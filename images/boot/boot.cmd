# The A/B boot script (U-Boot; compiled to boot.scr by images/assemble.sh with mkimage).
# The same script runs on every Pi (Debian's u-boot-rpi, rpi_arm64) and on QEMU -M virt
# (u-boot-qemu, qemu_arm64) in the tests; only the block device and the console differ.
#
# It keeps RAUC's "uboot" boot-chooser state: BOOT_ORDER ("A B"), BOOT_A_LEFT, BOOT_B_LEFT
# (attempts left, hex). The state lives in abenv1.bin and abenv2.bin on this FAT partition, two
# 0x4000-byte copies in libubootenv's redundant format (crc32 LE, a flag byte, the data), which
# Linux reads and writes with fw_printenv/fw_setenv (/etc/fw_env.config). The newer valid copy
# is read; the older one is overwritten as a whole file (fatwrite at an offset would truncate
# it), so a power cut while writing leaves the other copy intact.
#
# Each boot takes one attempt from the first slot of BOOT_ORDER that has one; RAUC's mark-good
# (the intercom healthy after boot) gives the slot its attempts back. A slot that used all its
# attempts without being marked good is skipped: the box falls back to the other slot.
# Partitions: 1 this FAT, 2 root A, 3 root B, 4 /data (MBR disk identifier 1c0ffee0).
setenv abdev "${devtype} ${devnum}:${distro_bootpart}"
if test "${board}" = "rpi"; then
  # Debian's rpi defaults load the kernel at 0x80000, where a 38 MB Image would overwrite this
  # script and the device tree the firmware placed; keep everything below 256 MiB (Zero 2 W)
  setenv kernel_addr_r 0x03000000
  setenv ramdisk_addr_r 0x0a000000
  setenv abbuf 0x02500000
  setenv abconsole "console=tty1 console=ttyS1,115200 quiet"
else
  setenv fdt_addr ${fdtcontroladdr}
  setexpr abbuf ${kernel_addr_r} - 0x80000
  setenv abconsole "console=ttyAMA0 systemd.show_status=1"
fi
setexpr abtmp ${abbuf} + 0x8000
setexpr ab1 ${abbuf}
setexpr ab2 ${abbuf} + 0x4000
setenv BOOT_ORDER
setenv BOOT_A_LEFT
setenv BOOT_B_LEFT
setenv abnewer none
setenv abf1 -1
setenv abf2 -1
if load ${abdev} ${ab1} abenv1.bin && test ${filesize} = 4000 && load ${abdev} ${ab2} abenv2.bin && test ${filesize} = 4000; then
  setexpr abp ${ab1} + 4
  setexpr.b abf1 *${abp}
  setexpr abp ${ab2} + 4
  setexpr.b abf2 *${abp}
  # the newer copy: its flag is the other's + 1 (mod 256), as U-Boot and libubootenv decide
  setexpr abn ${abf1} + 1
  setexpr abn ${abn} \& 0xff
  if test "${abf2}" = "${abn}"; then setenv abtry "2 1"; else setenv abtry "1 2"; fi
  for c in ${abtry}; do
    if test "${abnewer}" = "none"; then
      setexpr abs ${abbuf} + 0
      if test ${c} = 2; then setexpr abs ${abbuf} + 0x4000; fi
      # copy N as a plain (crc32, data) block at abtmp: "env import -c" checks the CRC
      cp.b ${abs} ${abtmp} 4
      setexpr abp ${abs} + 5
      setexpr abq ${abtmp} + 4
      cp.b ${abp} ${abq} 3ffb
      if env import -c ${abtmp} 3fff BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT; then setenv abnewer ${c}; fi
    fi
  done
fi
echo "A/B state: copy ${abnewer} (flags ${abf1} ${abf2}): BOOT_ORDER=${BOOT_ORDER} A=${BOOT_A_LEFT} B=${BOOT_B_LEFT}"
test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A B"
test -n "${BOOT_A_LEFT}" || setenv BOOT_A_LEFT 3
test -n "${BOOT_B_LEFT}" || setenv BOOT_B_LEFT 3

# abwrite: the three variables into the older copy (flag = newer's + 1, modulo 0x100: "% 100",
# as "\&" is a syntax error inside a run string); the newer copy is not touched. After it the
# written copy is the newer one.
setenv abwrite '
setenv abdst 2; setenv abflag 1;
if test "${abnewer}" = "2"; then setenv abdst 1; setexpr abflag ${abf2} + 1; fi;
if test "${abnewer}" = "1"; then setexpr abflag ${abf1} + 1; fi;
setexpr abflag ${abflag} % 100;
env export -c -s 3fff ${abtmp} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT;
setexpr abd ${abbuf} + 0;
if test ${abdst} = 2; then setexpr abd ${abbuf} + 0x4000; fi;
cp.b ${abtmp} ${abd} 4;
setexpr abp ${abd} + 4;
mw.b ${abp} ${abflag} 1;
setexpr abp ${abd} + 5;
setexpr abq ${abtmp} + 4;
cp.b ${abq} ${abp} 3ffb;
fatwrite ${devtype} ${devnum}:${distro_bootpart} ${abd} abenv${abdst}.bin 4000;
echo "A/B: wrote copy ${abdst} flag ${abflag}";
if test ${abdst} = 2; then setenv abf2 ${abflag}; setenv abnewer 2; else setenv abf1 ${abflag}; setenv abnewer 1; fi'

setenv abslot
for s in ${BOOT_ORDER}; do
  if test -z "${abslot}"; then
    if test ${s} = A && test 0x${BOOT_A_LEFT} -gt 0; then
      setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
      setenv abslot A
      setenv abroot 2
    elif test ${s} = B && test 0x${BOOT_B_LEFT} -gt 0; then
      setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
      setenv abslot B
      setenv abroot 3
    fi
  fi
done
if test -z "${abslot}"; then
  # every slot used its attempts: start again rather than leave the door dead
  echo "A/B: no slot has attempts left: both get 3 again"
  setenv BOOT_A_LEFT 3
  setenv BOOT_B_LEFT 3
  run abwrite
  reset
fi
run abwrite

echo "A/B: booting slot ${abslot} (partition ${abroot}), attempts left A=${BOOT_A_LEFT} B=${BOOT_B_LEFT}"
part uuid ${devtype} ${devnum}:${abroot} abpartuuid
setenv bootargs "${abconsole} root=PARTUUID=${abpartuuid} rootfstype=ext4 ro rootwait fsck.repair=yes panic=10 rauc.slot=${abslot}"
if load ${devtype} ${devnum}:${abroot} ${kernel_addr_r} /boot/vmlinuz && load ${devtype} ${devnum}:${abroot} ${ramdisk_addr_r} /boot/initrd.img; then
  booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdt_addr}
fi
# the slot has no bootable kernel (a write that never finished): none of its attempts can help
echo "A/B: slot ${abslot} cannot be booted: its attempts go to 0"
if test ${abslot} = A; then setenv BOOT_A_LEFT 0; else setenv BOOT_B_LEFT 0; fi
run abwrite
reset
