"""For ``benchmarks/cpu.py``'s kernel-paced phases only, never the firmware: this VM's kernel
has no ``fq``, so the box would pace its packets in the loop (a second wake-up a period). On
the box's PYTHONPATH, this makes ``firmware.media.pacing`` count loopback's ``noqueue`` as a
qdisc that holds stamped packets, so the box runs the kernel-paced loop it runs over fq (the
image's default): one wake-up a period, each packet handed to the kernel stamped with its
time. Its CPU and wake-ups are then the kernel-paced box's — an upper bound, as the packet's
transmission is in its ``sendmsg`` here where fq would do it from its timer — while its packets
leave when handed over (the wire's timing is not fq's: ``tests/kernel`` shows that)."""

import firmware.media.pacing as pacing

pacing._PACING_QDISCS = frozenset({"fq", "noqueue"})
