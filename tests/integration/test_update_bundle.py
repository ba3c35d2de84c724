"""The box's refusal of bad bundles (firmware.update.bundle) with this host's real ``rauc info``
(RAUC 1.8) on real bundles made by devtools/bundles.py: each refusal is one line and one reason
code, and the good bundle passes. ``rauc info`` checks the signature only: the tampered bundle
passes it and is caught by the payload check, which recomputes the dm-verity tree."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from devtools import bundles
from firmware.update import bundle as b
from firmware.update.state import UpdateError

from .test_bundles import keys, root_ext4  # noqa: F401 - the bundle maker's own fixtures

pytestmark = pytest.mark.integration

INSTALLED = "0.2.0"


def future_cert(folder: Path) -> tuple[Path, Path]:
    """A signing key whose certificate becomes valid tomorrow (a box whose clock is behind)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intercom signing key, later")])
    start = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    (folder / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return folder / "key.pem", folder / "cert.pem"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, root_ext4: Path,  # noqa: F811
         keys: dict[str, tuple[Path, Path]]) -> dict[str, Path]:  # noqa: F811
    out = tmp_path_factory.mktemp("update-bundles")
    key, cert = keys["ours"]
    good = bundles.make_bundle(root_ext4, out / "good.raucb", "0.3.0", key, cert)
    later = future_cert(out / "later")
    return {
        "good": good,
        "older": bundles.make_bundle(root_ext4, out / "older.raucb", "0.1.0", key, cert),
        "same": bundles.make_bundle(root_ext4, out / "same.raucb", INSTALLED, key, cert),
        "device": bundles.make_bundle(root_ext4, out / "device.raucb", "0.3.0", key, cert,
                                      compatible="intercom-rpi-armhf"),
        "other key": bundles.make_bundle(root_ext4, out / "other.raucb", "0.3.0",
                                         *keys["other"]),
        "cert later": bundles.make_bundle(root_ext4, out / "later.raucb", "0.3.0",
                                          later[0], later[1]),
        "tampered": bundles.tamper(good, out / "tampered.raucb"),
        "tampered start": bundles.tamper(good, out / "tampered0.raucb", offset=0),
        "truncated": bundles.truncate(good, out / "truncated.raucb"),
        "unsigned": bundles.unsigned(good, out / "unsigned.raucb"),
        "bare": bundles.unsigned(good, out / "bare.raucb", envelope=False),
        "later cert": later[1],
    }


def test_the_good_bundle_passes_every_check(made: dict[str, Path],
                                            keys: dict[str, tuple[Path, Path]]) -> None:  # noqa: F811
    found = b.check(made["good"], str(keys["ours"][1]), INSTALLED, [])
    assert (found.version, found.compatible, found.format, found.images) == \
        ("0.3.0", b.COMPATIBLE, "verity", ("rootfs",))
    assert len(found.verity_hash) == 64 and found.verity_size % 4096 == 0


@pytest.mark.parametrize("name,reason,words", [
    ("unsigned", b.UNSIGNED, "not signed"),
    ("bare", b.UNSIGNED, "not signed"),
    ("other key", b.OTHER_KEY, "signed by another key"),
    ("tampered", b.TAMPERED, "tampered"),
    ("tampered start", b.TAMPERED, "tampered"),
    ("truncated", b.TAMPERED, "cut short"),
    ("device", b.OTHER_DEVICE, "'intercom-rpi-armhf', this box is 'intercom-rpi-arm64'"),
    ("older", b.OLDER, "older than installed: 0.1.0 < 0.2.0"),
    ("same", b.SAME, "already installed: 0.2.0"),
])
def test_each_bad_bundle_is_refused_in_one_line_with_its_reason(
        made: dict[str, Path], keys: dict[str, tuple[Path, Path]],  # noqa: F811
        name: str, reason: str, words: str) -> None:
    with pytest.raises(UpdateError) as info:
        b.check(made[name], str(keys["ours"][1]), INSTALLED, [])
    assert (info.value.result, info.value.reason) == ("refused", reason), str(info.value)
    assert words in str(info.value)
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)


def test_rauc_info_alone_lets_the_tampered_payload_through(
        made: dict[str, Path], keys: dict[str, tuple[Path, Path]]) -> None:  # noqa: F811
    """Why the payload is read here: the signature still verifies after a flipped byte."""
    found = b.inspect(made["tampered"], str(keys["ours"][1]))
    assert found.version == "0.3.0"
    with pytest.raises(UpdateError, match="tampered"):
        b.verify_payload(found)


def test_the_certificate_check_uses_the_box_clock(made: dict[str, Path]) -> None:
    """The same bundle verifies against its own certificate once that is valid: the refusal
    above is the clock, not the key (rauc 1.8 has no option to move its clock; read the
    signature against the certificate as keyring and see only the time fail)."""
    with pytest.raises(UpdateError) as info:
        b.inspect(made["cert later"], str(made["later cert"]))
    assert (info.value.result, info.value.reason) == ("refused", b.CERT_TIME)
    assert "not valid at this box's time" in str(info.value) and "\n" not in str(info.value)


def test_force_installs_older_and_refused_versions_but_never_a_bad_signature(
        made: dict[str, Path], keys: dict[str, tuple[Path, Path]]) -> None:  # noqa: F811
    keyring = str(keys["ours"][1])
    assert b.check(made["older"], keyring, INSTALLED, [], force=True).version == "0.1.0"
    with pytest.raises(UpdateError) as info:
        b.check(made["good"], keyring, INSTALLED, ["0.3.0"])
    assert info.value.reason == b.REFUSED_BEFORE and "failed its trial" in str(info.value)
    assert b.check(made["good"], keyring, INSTALLED, ["0.3.0"], force=True).version == "0.3.0"
    for name in ("other key", "tampered", "unsigned", "device"):
        with pytest.raises(UpdateError):
            b.check(made[name], keyring, INSTALLED, [], force=True)


def test_a_box_that_cannot_check_says_failed_not_refused(
        made: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UpdateError) as info:
        b.check(made["good"], str(tmp_path / "missing.pem"), INSTALLED, [])
    assert (info.value.result, info.value.reason) == ("failed", "keyring")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(UpdateError) as info:
        b.check(made["good"], str(tmp_path / "junk.pem"), INSTALLED, [])
    assert (info.value.result, info.value.reason) == ("failed", "keyring")
    with pytest.raises(UpdateError) as info:
        b.check(tmp_path / "nothing.raucb", str(tmp_path / "junk.pem"), INSTALLED, [])
    assert info.value.result == "failed"
    with pytest.raises(UpdateError) as info:
        b.inspect(made["good"], str(tmp_path / "junk.pem"), rauc="/nonexistent/rauc")
    assert (info.value.result, info.value.reason) == ("failed", "rauc")
