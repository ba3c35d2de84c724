"""The provisioned document's detached signature, with the real ``openssl`` command and keys it
makes: a good signature is accepted; another key, a changed document, a missing or empty
``.sig`` are refused and the last good configuration kept; the cache keeps the signature and is
checked again when it is read (a key changed on the card refuses what the old key signed);
``intercom-fleet --sign`` writes signatures the box accepts."""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware import provisioning_io as pio
from firmware.config import BootConfig, ConfigError, parse_boot
from firmware.fleet import cli
from firmware.provisioning import CACHE_NAME, digest, signature_url
from firmware.runner import run_provisioned

from .test_provisioning import GOOD, GOOD2, Fleet, _run, _until, boot_text

URL = "https://prov.test/intercom/b827eb123456.yaml"


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("signing")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "rsa.key"),
            "-out", str(d / "rsa.crt"), "-subj", "/CN=provisioning signer", "-days", "30")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(d / "ec.key"), "-out", str(d / "ec.crt"), "-subj", "/CN=another",
            "-days", "30")
    openssl("pkey", "-in", str(d / "ec.key"), "-pubout", "-out", str(d / "ec.pub"))
    openssl("genpkey", "-algorithm", "ed25519", "-out", str(d / "ed.key"))
    return {p.stem + p.suffix: p for p in d.iterdir()}


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    f = tmp_path / "ca.crt"
    f.write_text("-----BEGIN CERTIFICATE-----\n")
    return f


def test_good_other_key_changed_document_and_empty_signature(keys: dict[str, Path]) -> None:
    sig = pio.sign(GOOD, str(keys["rsa.key"]))
    pio.verify(GOOD, sig, str(keys["rsa.crt"]))  # nothing said: it verifies
    with pytest.raises(pio.SignatureError, match="does not verify with provisioning."
                                                 "signing_cert"):
        pio.verify(GOOD, sig, str(keys["ec.crt"]))  # another key's certificate
    with pytest.raises(pio.SignatureError, match="does not verify"):
        pio.verify(GOOD + b"# one more line\n", sig, str(keys["rsa.crt"]))  # tampered
    with pytest.raises(pio.SignatureError, match="does not verify"):
        pio.verify(GOOD, b"<html>404 Not Found</html>", str(keys["rsa.crt"]))
    with pytest.raises(pio.SignatureError, match="the signature is empty"):
        pio.verify(GOOD, b"", str(keys["rsa.crt"]))
    with pytest.raises(pio.SignatureError, match="larger than 8192 bytes"):
        pio.verify(GOOD, b"x" * 9000, str(keys["rsa.crt"]))
    # ECDSA, and a bare public key in place of the certificate
    ec = pio.sign(GOOD2, str(keys["ec.key"]))
    pio.verify(GOOD2, ec, str(keys["ec.pub"]))
    pio.verify(GOOD2, ec, str(keys["ec.crt"]))


def test_what_openssl_cannot_do_is_one_line(keys: dict[str, Path], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(pio.SignatureError, match=r"cannot sign with .*ed\.key: .*"
                                                 r"\(an RSA or ECDSA private key in PEM"):
        pio.sign(GOOD, str(keys["ed.key"]))
    junk = tmp_path / "junk.crt"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(pio.SignatureError, match="is not a PEM certificate"):
        pio.verify(GOOD, b"sig", str(junk))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pio.SignatureError, match="the openssl command is missing"):
        pio.verify(GOOD, b"sig", str(keys["rsa.crt"]))


def test_the_signing_cert_setting_is_checked_with_its_line(ca: Path, keys: dict[str, Path],
                                                           tmp_path: Path) -> None:
    boot = parse_boot(boot_text(ca, extra=f"  signing_cert: {keys['rsa.crt']}\n"))
    assert boot.provisioning.signing_cert == str(keys["rsa.crt"])
    with pytest.raises(ConfigError, match=r"boot.yaml: provisioning.signing_cert \(line 17\) "
                                          r"must name the PEM certificate .*No such file"):
        parse_boot(boot_text(ca, extra="  signing_cert: /nonexistent.crt\n"), "boot.yaml")
    with pytest.raises(ConfigError, match=r"provisioning.signing_cert \(line 17\) must be a "
                                          r"PEM certificate \(or public key\)"):
        parse_boot(boot_text(ca, extra=f"  signing_cert: {keys['rsa.key']}\n"), "boot.yaml")


def test_signature_url_keeps_the_query() -> None:
    assert signature_url(URL) == URL + ".sig"
    assert signature_url("https://p/i/x.yaml?t=1") == "https://p/i/x.yaml.sig?t=1"


class Server:
    """What the injected fetch serves: path -> body; a missing path is the server's 404."""

    def __init__(self) -> None:
        self.docs: dict[str, bytes] = {}
        self.asked: list[str] = []

    async def fetch(self, url: str) -> bytes:
        self.asked.append(url)
        if url not in self.docs:
            raise pio.FetchError("the server answered HTTP 404 Not Found")
        return self.docs[url]


@pytest.fixture
def signed_boot(ca: Path, keys: dict[str, Path], tmp_path: Path) -> Iterator[tuple[Path, str]]:
    yield tmp_path / "cache", boot_text(ca, extra=f"  signing_cert: {keys['rsa.crt']}\n"
                                        f"  cache_dir: {tmp_path / 'cache'}\n"
                                        "  interval: 1\n  retry: 1\n")


def test_only_signed_documents_are_applied_and_the_cache_keeps_the_signature(
        keys: dict[str, Path], signed_boot: tuple[Path, str],
        caplog: pytest.LogCaptureFixture) -> None:
    folder, text = signed_boot
    boot = parse_boot(text)
    server = Server()
    fleet = Fleet()

    def status() -> dict:
        return fleet.apps[-1].status()["provisioning"]

    async def refused_with(needle: str) -> None:
        before = status()["refused"]
        await _until(lambda: status()["refused"] > before)
        assert needle in (status()["last_error"] or ""), status()["last_error"]
        assert status()["applied"] == digest(GOOD) and len(fleet.apps) == 2

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_provisioned(boot, stop, fetch=server.fetch,
                                                   make_app=fleet.make))
        # no .sig on the server: refused, the card's YAML keeps running
        server.docs[URL] = GOOD
        await _until(lambda: fleet.apps and status()["last_result"] == "refused")
        assert f"{URL}: no signature: {URL}.sig: the server answered HTTP 404" in \
            status()["last_error"] and len(fleet.apps) == 1 and status()["applied"] is None
        # signed: applied, and kept with its signature
        server.docs[URL + ".sig"] = pio.sign(GOOD, str(keys["rsa.key"]))
        await _until(lambda: len(fleet.apps) == 2 and fleet.apps[1].ua is not None)
        assert fleet.apps[1].cfg.sip.password == "door-s3cret" and status()["signed"]
        await _until(lambda: (folder / CACHE_NAME).exists())
        assert pio.read_cache(folder, CACHE_NAME, 65536, str(keys["rsa.crt"])) == \
            (GOOD, server.docs[URL + ".sig"])
        # a changed document under the old signature, a signature by another key
        server.docs[URL] = GOOD2
        await refused_with("does not verify with provisioning.signing_cert")
        server.docs[URL + ".sig"] = pio.sign(GOOD2, str(keys["ec.key"]))
        await refused_with("does not verify with provisioning.signing_cert")
        stop.set()
        await task

    caplog.set_level(logging.INFO)
    _run(scenario)
    assert "door-s3cret" not in caplog.text and "other-s3cret" not in caplog.text

    # the next start, the server gone: the kept document is checked again and runs
    restart = Fleet()

    async def down(url: str) -> bytes:
        raise pio.FetchError("cannot reach the server: Connection refused")

    async def again(boot_now: BootConfig) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_provisioned(boot_now, stop, fetch=down,
                                                   make_app=restart.make))
        await _until(lambda: restart.apps and restart.apps[-1].ua is not None
                     and restart.apps[-1].status()["provisioning"]["last_result"])
        stop.set()
        await task

    _run(lambda: again(boot))
    assert restart.apps[0].cfg.sip.password == "door-s3cret"
    assert restart.apps[0].status()["provisioning"]["source"] == "cache"

    # the card now names another signing certificate: what the old key signed is not used
    other = parse_boot(text.replace(str(keys["rsa.crt"]), str(keys["ec.crt"])))
    restart.apps.clear()
    caplog.clear()
    _run(lambda: again(other))
    assert restart.apps[0].cfg is other.config
    lines = [r.getMessage() for r in caplog.records if "is ignored" in r.getMessage()]
    assert len(lines) == 1 and "does not verify with provisioning.signing_cert" in lines[0]


def test_fleet_sign_writes_signatures_the_box_accepts(keys: dict[str, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    inv = tmp_path / "inventory.csv"
    inv.write_text("mac,name,extension,buttons,door_code\n"
                   "B8:27:EB:10:00:01,entrance-a,5201,call=5101,\n"
                   "b8-27-eb-10-00-02,Entrance B,5202,call=5104,73915482\n")
    out = tmp_path / "out"
    argv = ["build", str(inv), "--out", str(out), "--pbx-host", "192.168.1.10"]
    assert cli.main([*argv, "--sign", str(keys["ed.key"])]) == 2
    assert "--sign: cannot sign with" in capsys.readouterr().err and not out.exists(), \
        "nothing written"
    assert cli.main([*argv, "--sign", str(keys["rsa.key"])]) == 0
    for mac in ("b827eb100001", "b827eb100002"):
        doc = (out / "www" / f"{mac}.yaml").read_bytes()
        pio.verify(doc, (out / "www" / f"{mac}.yaml.sig").read_bytes(), str(keys["rsa.crt"]))
    capsys.readouterr()
    assert cli.main(argv) == 0  # a run without --sign leaves the old ones and says so
    assert "holds .sig files of an earlier --sign run" in capsys.readouterr().err
