"""The bundle maker (devtools/bundles.py) and ``./build.sh bundle``, against this host's real
rauc, mksquashfs, debugfs and openssl.

What is tested here is the *build* side: that the bundles are what they claim (signed by the
right key, the version in the manifest and in the root's /etc/intercom-version, the files
written, the source root untouched), that each broken bundle is broken the way the box must see
it (another key, tampered payload, truncated, unsigned, another compatible, older version), and
that ``./build.sh bundle`` keeps its signing key out of the repository. The box's refusal of
each (firmware/update) has its own tests; RAUC's ``rauc info`` and ``rauc extract`` stand in
for the box here.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from devtools import bundles

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def rauc(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rauc", *map(str, args)], capture_output=True, text=True)


def rauc_info(bundle: Path, keyring: Path) -> tuple[int, dict, str]:
    done = rauc("info", "--output-format=json", f"--keyring={keyring}", bundle)
    manifest = json.loads(done.stdout) if done.returncode == 0 else {}
    return done.returncode, manifest, done.stderr


def sha256(path: Path) -> str:
    return bundles.info(path)[1]


@pytest.fixture(scope="module")
def root_ext4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny root: /etc/intercom-version 0.1.0, an intercom that starts, 64 KiB of noise (a
    squashfs of almost nothing is too small for RAUC's verity format)."""
    tmp = tmp_path_factory.mktemp("root")
    tree = tmp / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "etc/intercom-version").write_text("0.1.0\n")
    intercom = tree / "usr/bin/intercom"
    intercom.write_text("#!/bin/sh\nexit 0\n")
    intercom.chmod(0o755)
    (tree / "etc/noise").write_bytes(os.urandom(65536))
    image = tmp / "rootfs-0.1.0.ext4"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(tree), "-E", "root_owner=0:0",
                    str(image), "8M"], check=True, capture_output=True)
    return image


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    tmp = tmp_path_factory.mktemp("keys")
    return {"ours": bundles.make_key_pair(tmp / "ours", "intercom test signing key"),
            "other": bundles.make_key_pair(tmp / "other", "someone else")}


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory, root_ext4: Path,
         keys: dict[str, tuple[Path, Path]]) -> Path:
    key, cert = keys["ours"]
    out = tmp_path_factory.mktemp("bundles") / "intercom-0.2.0.raucb"
    return bundles.make_bundle(root_ext4, out, "0.2.0", key, cert)


def extract_root(bundle: Path, keyring: Path, into: Path) -> Path:
    done = rauc("extract", f"--keyring={keyring}", bundle, into)
    assert done.returncode == 0, done.stderr
    return into / "rootfs.ext4"


def test_key_pair_is_private_and_named(keys: dict[str, tuple[Path, Path]]) -> None:
    key, cert = keys["ours"]
    assert key.stat().st_mode & 0o777 == 0o600
    subject = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-subject"],
                             capture_output=True, text=True, check=True).stdout
    assert "intercom test signing key" in subject


def test_good_bundle_verifies_and_its_root_reports_its_version(
        good: Path, root_ext4: Path, keys: dict[str, tuple[Path, Path]],
        tmp_path: Path) -> None:
    before = sha256(root_ext4)
    rc, manifest, err = rauc_info(good, keys["ours"][1])
    assert rc == 0, err
    assert "Verified inline signature" in err
    assert manifest["compatible"] == "intercom-rpi-arm64"
    assert manifest["version"] == "0.2.0"
    assert [list(image) for image in manifest["images"]] == [["rootfs"]]
    root = extract_root(good, keys["ours"][1], tmp_path / "x")
    assert bundles.read_file(root, "/etc/intercom-version") == b"0.2.0\n"
    assert bundles.read_file(root, "/usr/bin/intercom") == b"#!/bin/sh\nexit 0\n"
    # the source root is never written: the image's slot A and the bundle share it
    assert sha256(root_ext4) == before
    assert bundles.read_file(root_ext4, "/etc/intercom-version") == b"0.1.0\n"


def test_files_land_in_the_bundles_root_with_their_modes(
        root_ext4: Path, keys: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    """A v3 whose intercom cannot start: the replaced program stays executable, a new file in
    new folders is created, and the version file follows the bundle's version."""
    key, cert = keys["ours"]
    broken = bundles.make_bundle(root_ext4, tmp_path / "v3.raucb", "0.3.0", key, cert, files={
        "/usr/bin/intercom": "#!/bin/sh\necho broken on purpose >&2\nexit 1\n",
        "/usr/share/intercom/new/marker": b"\x00\x01marker"})
    root = extract_root(broken, cert, tmp_path / "x")
    assert bundles.read_file(root, "/etc/intercom-version") == b"0.3.0\n"
    assert bundles.read_file(root, "/usr/bin/intercom") == \
        b"#!/bin/sh\necho broken on purpose >&2\nexit 1\n"
    assert bundles._mode(root, "/usr/bin/intercom") == (True, 0o755)
    assert bundles.read_file(root, "/usr/share/intercom/new/marker") == b"\x00\x01marker"
    assert bundles._mode(root, "/usr/share/intercom/new/marker") == (True, 0o644)
    assert bundles._mode(root, "/usr/share/intercom/new") == (False, 0o755)


def test_bundle_signed_by_another_key_fails_verification(
        good: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    rc, _, err = rauc_info(good, keys["other"][1])
    assert rc != 0
    assert "signature verification failed" in err
    rc, _, err = rauc_info(good, keys["ours"][1])
    assert rc == 0, err


def test_tampered_bundle_keeps_its_signature_but_not_its_payload(
        good: Path, keys: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    """Notes §3: the signature covers the manifest and the verity root hash, so ``rauc info``
    passes; reading the payload (extract here, dm-verity on the box) fails."""
    cert = keys["ours"][1]
    bad = bundles.tamper(good, tmp_path / "tampered.raucb")
    assert bad.stat().st_size == good.stat().st_size
    assert sha256(bad) != sha256(good)
    rc, manifest, err = rauc_info(bad, cert)
    assert rc == 0, err
    assert manifest["version"] == "0.2.0"
    done = rauc("extract", f"--keyring={cert}", bad, tmp_path / "x")
    assert done.returncode != 0
    assert "corrupted" in done.stderr
    assert not (tmp_path / "x" / "rootfs.ext4").exists()


def test_truncated_bundle_is_no_bundle(good: Path, keys: dict[str, tuple[Path, Path]],
                                       tmp_path: Path) -> None:
    cert = keys["ours"][1]
    for keep in (None, good.stat().st_size - 1, 100):
        cut = bundles.truncate(good, tmp_path / "cut.raucb", keep)
        rc, _, err = rauc_info(cut, cert)
        assert rc != 0, keep
        assert "Invalid bundle format" in err or "signature" in err, err


def test_unsigned_bundle_has_its_manifest_but_no_signer(
        good: Path, keys: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    cert = keys["ours"][1]
    bare = bundles.unsigned(good, tmp_path / "unsigned.raucb")
    rc, _, err = rauc_info(bare, cert)
    assert rc != 0
    assert "no signers" in err
    # the same manifest is inside: only the signature is missing
    done = rauc("info", "--no-verify", "--output-format=json", bare)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["version"] == "0.2.0"
    payload = bundles.unsigned(good, tmp_path / "payload.raucb", envelope=False)
    assert payload.stat().st_size == bundles.Layout(good).payload
    rc, _, err = rauc_info(payload, cert)
    assert rc != 0
    assert "Verified" not in err


def test_other_compatible_and_older_version_are_told_apart(
        root_ext4: Path, keys: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    """Both verify (RAUC refuses them only when installing, against system.conf): the manifest
    says which device and which version they are for."""
    key, cert = keys["ours"]
    other = bundles.make_bundle(root_ext4, tmp_path / "other.raucb", "0.2.0", key, cert,
                                compatible="someone-elses-board")
    older = bundles.make_bundle(root_ext4, tmp_path / "older.raucb", "0.0.9", key, cert)
    rc, manifest, err = rauc_info(other, cert)
    assert rc == 0, err
    assert (manifest["compatible"], manifest["version"]) == ("someone-elses-board", "0.2.0")
    rc, manifest, err = rauc_info(older, cert)
    assert rc == 0, err
    assert (manifest["compatible"], manifest["version"]) == ("intercom-rpi-arm64", "0.0.9")
    root = extract_root(older, cert, tmp_path / "x")
    assert bundles.read_file(root, "/etc/intercom-version") == b"0.0.9\n"


def test_maker_refuses_bad_input_in_one_line(root_ext4: Path,
                                             keys: dict[str, tuple[Path, Path]],
                                             tmp_path: Path) -> None:
    key, cert = keys["ours"]
    out = tmp_path / "b.raucb"
    for version in ("1.2", "v1.2.3", "1.2.3 ", "1.2.3-"):
        with pytest.raises(bundles.BundleError, match="MAJOR.MINOR.PATCH"):
            bundles.make_bundle(root_ext4, out, version, key, cert)
    with pytest.raises(bundles.BundleError, match="plain absolute path"):
        bundles.make_bundle(root_ext4, out, "1.0.0", key, cert, files={"etc/x": "y"})
    with pytest.raises(bundles.BundleError, match="does not exist"):
        bundles.make_bundle(tmp_path / "nothing.ext4", out, "1.0.0", key, cert)
    # a key that does not match the certificate: rauc refuses to sign
    with pytest.raises(bundles.BundleError, match="rauc failed"):
        bundles.make_bundle(root_ext4, out, "1.0.0", key, keys["other"][1])
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle-")]


# --- ./build.sh bundle -----------------------------------------------------------------------


def build_bundle(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("INTERCOM_SIGNING_KEY", "INTERCOM_SIGNING_CERT", "INTERCOM_CACHE")}
    return subprocess.run([str(REPO / "build.sh"), "bundle", *map(str, args)],
                          capture_output=True, text=True, env={**clean, **env}, cwd=REPO)


def test_build_sh_bundle_makes_a_development_key_outside_the_repository(
        root_ext4: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    done = build_bundle({"INTERCOM_CACHE": str(cache)}, "--root", root_ext4, "--out", out,
                        "--version", "0.4.0")
    assert done.returncode == 0, done.stdout + done.stderr
    key, cert = cache / "keys/dev.key.pem", cache / "keys/dev.cert.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    assert (cache / "keys").stat().st_mode & 0o777 == 0o700
    subject = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-subject"],
                             capture_output=True, text=True, check=True).stdout
    assert "intercom development signing key" in subject
    bundle = out / "intercom-0.4.0.raucb"
    size, digest = bundles.info(bundle)
    assert f"{size} bytes" in done.stdout and digest in done.stdout
    assert (out / "intercom-0.4.0.raucb.sha256").read_text().split() == \
        [digest, "intercom-0.4.0.raucb"]
    rc, manifest, err = rauc_info(bundle, cert)
    assert rc == 0, err
    assert manifest["version"] == "0.4.0"
    root = extract_root(bundle, cert, tmp_path / "x")
    assert bundles.read_file(root, "/etc/intercom-version") == b"0.4.0\n"
    # the box's own check (firmware/update, tested on its own) takes the release bundle: the
    # release compression and the development certificate as the image's keyring
    from firmware.update import bundle as box

    assert box.check(bundle, str(cert), installed="0.1.0", refused_versions=[]).version == \
        "0.4.0"
    # the second run signs with the same key: images already flashed keep accepting bundles
    first = cert.read_bytes()
    done = build_bundle({"INTERCOM_CACHE": str(cache)}, "--root", root_ext4, "--out", out,
                        "--version", "0.4.1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "creating a development signing key" not in done.stdout
    assert cert.read_bytes() == first
    rc, _, err = rauc_info(out / "intercom-0.4.1.raucb", cert)
    assert rc == 0, err


def test_build_sh_bundle_never_puts_a_key_in_the_repository(root_ext4: Path,
                                                            tmp_path: Path) -> None:
    inside = REPO / ".cache" / f"bundle-test-{os.getpid()}"
    assert not inside.exists()
    done = build_bundle({"INTERCOM_CACHE": str(inside)}, "--root", root_ext4,
                        "--out", tmp_path / "out")
    assert done.returncode == 1
    assert "outside the repository" in done.stderr
    assert not inside.exists()
    assert not (tmp_path / "out").exists()
    # a real key inside the repository is refused the same way (it would be one `git add -A`
    # away from being published)
    key = REPO / ".cache" / f"bundle-test-{os.getpid()}.key.pem"
    done = build_bundle({"INTERCOM_CACHE": str(tmp_path / "cache"),
                         "INTERCOM_SIGNING_KEY": str(key),
                         "INTERCOM_SIGNING_CERT": str(tmp_path / "nothing.pem")},
                        "--root", root_ext4, "--out", tmp_path / "out")
    assert done.returncode == 1
    assert "outside the repository" in done.stderr
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("alone", ["INTERCOM_SIGNING_KEY", "INTERCOM_SIGNING_CERT"])
def test_build_sh_bundle_refuses_one_of_the_two_signing_variables(
        alone: str, root_ext4: Path, keys: dict[str, tuple[Path, Path]],
        tmp_path: Path) -> None:
    key, cert = keys["ours"]
    value = key if alone == "INTERCOM_SIGNING_KEY" else cert
    done = build_bundle({"INTERCOM_CACHE": str(tmp_path / "cache"), alone: str(value)},
                        "--root", root_ext4, "--out", tmp_path / "out")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "INTERCOM_SIGNING_KEY and INTERCOM_SIGNING_CERT" in lines[0]
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "cache").exists()  # no development key made instead


def test_build_sh_bundle_signs_with_the_given_key(
        root_ext4: Path, keys: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    key, cert = keys["ours"]
    done = build_bundle({"INTERCOM_CACHE": str(tmp_path / "cache"),
                         "INTERCOM_SIGNING_KEY": str(key), "INTERCOM_SIGNING_CERT": str(cert)},
                        "--root", root_ext4, "--out", tmp_path / "out", "--version", "1.0.0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (tmp_path / "cache").exists()
    bundle = tmp_path / "out/intercom-1.0.0.raucb"
    rc, manifest, err = rauc_info(bundle, cert)
    assert rc == 0, err
    assert manifest["version"] == "1.0.0"
    rc, _, err = rauc_info(bundle, keys["other"][1])
    assert rc != 0


def test_build_sh_bundle_refuses_a_bad_version_or_argument(
        root_ext4: Path, tmp_path: Path) -> None:
    env = {"INTERCOM_CACHE": str(tmp_path / "cache")}
    done = build_bundle(env, "--root", root_ext4, "--out", tmp_path / "out", "--version", "2")
    assert done.returncode == 1
    assert "version '2' is not MAJOR.MINOR.PATCH" in done.stderr
    assert not list((tmp_path / "out").glob("*.raucb"))
    done = build_bundle(env, "--frobnicate")
    assert done.returncode == 2
    assert "unknown argument --frobnicate" in done.stderr
    done = build_bundle(env, "--version")
    assert done.returncode == 2
    assert "--version needs a value" in done.stderr
