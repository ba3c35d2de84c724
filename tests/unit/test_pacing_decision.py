"""Which root qdiscs hold a stamped datagram to its time (``firmware.media.pacing``): fq, and
a multi-queue root only when every queue under it is fq. The kernel's own answers for real
interfaces are ``tests/integration/test_pacing.py`` (this host) and
``tests/kernel/test_kernel_pacing.py`` (Debian's kernel with fq)."""

from __future__ import annotations

from firmware.media.pacing import TC_H_ROOT, _root_pacing

MQ = 0x8001_0000


def test_fq_at_the_root_paces() -> None:
    assert _root_pacing([(0x8002_0000, TC_H_ROOT, "fq")]) == ("fq", True)


def test_every_queue_of_a_multi_queue_root_must_be_fq() -> None:
    queues = [(0, MQ + 1, "fq"), (0, MQ + 2, "fq")]
    assert _root_pacing([(MQ, TC_H_ROOT, "mq"), *queues]) == ("mq(fq)", True)
    mixed = [(MQ, TC_H_ROOT, "mq"), (0, MQ + 1, "fq"), (0, MQ + 2, "pfifo_fast")]
    assert _root_pacing(mixed) == ("mq(fq,pfifo_fast)", False)
    assert _root_pacing([(MQ, TC_H_ROOT, "mq")]) == ("mq()", False)  # no queue seen: unknown


def test_everything_else_sends_a_stamped_packet_at_once() -> None:
    for kind in ("noqueue", "pfifo_fast", "fq_codel", "etf", "netem", "htb"):
        assert _root_pacing([(0, TC_H_ROOT, kind)]) == (kind, False)
    # a child fq under another root does not pace the root's traffic
    assert _root_pacing([(0x1_0000, TC_H_ROOT, "htb"), (0, 0x1_0001, "fq")]) == ("htb", False)
    assert _root_pacing([]) == ("none", False)
