"""INVITEs through a proxy that challenges them (the scripted registrar of
``devtools.registrar`` acting as the proxy): 401 then 407, a wrong password, endless stale
nonces, and a redirect followed once."""

from __future__ import annotations

from devtools.registrar import ua_with_registrar as make


def test_invite_with_401_then_407() -> None:
    from firmware.sip.sdp import LocalMedia

    ua, reg = make(register=False)
    steps: list[int] = []

    def proxy(req):
        if req.method == "INVITE":
            if "Authorization" not in req.headers:
                steps.append(401)
                return reg.challenge(req, 401)
            if "Proxy-Authorization" not in req.headers:
                steps.append(407)
                return reg.challenge(req, 407)
            return None
        return None

    reg.custom = proxy
    ua.make_call("5001", LocalMedia("127.0.0.1", 4000), reg.now)
    reg.pump(until=1.0)
    invites = list({r.top_via.branch: r for r in reg.received if r.method == "INVITE"}.values())
    assert steps == [401, 407]
    assert len(invites) == 3, "one INVITE per challenge (retransmissions aside)"
    assert reg.check(invites[1]) and reg.check(invites[2])
    assert reg.check(invites[2], "Proxy-Authorization")
    assert [i.cseq.number for i in invites] == [1, 2, 3]
    assert ua.call is not None and ua.call.state == "calling"


def test_invite_wrong_password_ends_call() -> None:
    from firmware.events import CallEnded
    from firmware.sip.sdp import LocalMedia

    ua, reg = make(register=False, password="bad")
    reg.custom = lambda req: reg.challenge(req, 401) if req.method == "INVITE" else None
    ua.make_call("5001", LocalMedia("127.0.0.1", 4000), reg.now)
    reg.pump(until=1.0)
    assert len([r for r in reg.received if r.method == "INVITE"]) == 2
    (ev,) = reg.events()
    assert isinstance(ev, CallEnded) and ev.status == 401


def test_invite_endless_stale_challenges_end_the_call() -> None:
    """A stale challenge to an INVITE is answered, but not forever: a server answering every
    INVITE stale=true ends the call with its 401 instead of driving an INVITE storm."""
    from firmware.events import CallEnded
    from firmware.sip.sdp import LocalMedia

    ua, reg = make(register=False)
    branches: set[str] = set()

    def stale_proxy(req):
        if req.method != "INVITE":
            return None
        branches.add(req.top_via.branch)
        assert len(branches) < 20, "INVITE storm: stale challenges answered forever"
        return reg.challenge(req, 401, stale="Authorization" in req.headers)

    reg.custom = stale_proxy
    ua.make_call("5001", LocalMedia("127.0.0.1", 4000), reg.now)
    reg.pump(until=1.0)
    invites = list({r.top_via.branch: r for r in reg.received if r.method == "INVITE"}.values())
    assert 3 <= len(invites) <= 6, "stale renewals answered, within a bound"
    assert all(reg.check(i) for i in invites[1:]), "each renewal answers its new nonce"
    (ev,) = reg.events()
    assert isinstance(ev, CallEnded) and ev.status == 401


def test_redirect_is_followed_once() -> None:
    from firmware.events import CallEnded
    from firmware.sip.sdp import LocalMedia

    ua, reg = make(register=False)
    reg.custom = lambda req: reg._reply(
        req, "302 Moved Temporarily", "Contact: <sip:reception@127.0.0.1:5062>\r\n") \
        if req.method == "INVITE" else None
    ua.make_call("5001", LocalMedia("127.0.0.1", 4000), reg.now)
    reg.pump(until=1.0)
    invites = list({r.top_via.branch: r for r in reg.received if r.method == "INVITE"}.values())
    assert [i.uri for i in invites] == ["sip:5001@127.0.0.1", "sip:reception@127.0.0.1:5062"]
    assert invites[0].call_id == invites[1].call_id
    (ev,) = reg.events()
    assert isinstance(ev, CallEnded) and ev.status == 302, "a second redirect is not followed"
