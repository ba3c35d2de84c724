"""intercom-fleet: an inventory -> per-box YAMLs the box's own parser accepts, PJSIP and dial
plan for Asterisk, passwords kept across runs; every bad row one line naming file:line and the
column, and then nothing written. The real command line on real files in tmp_path."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from firmware.config import ConfigError, load_config, read_yaml
from firmware.fleet import cli, render, secret_store
from firmware.fleet.inventory import (
    InventoryError,
    normalise_mac,
    pbx_numbers,
    read_inventory,
)

REPO = Path(__file__).resolve().parents[2]
HEADER = "mac,name,extension,buttons,door_code,profile,transport,extra\n"
CSV = HEADER + (
    "B8:27:EB:10:00:01,entrance-a,5201,call=5101 flat2@24=5102,,plain,udp,\n"
    "b8-27-eb-10-00-02,Entrance B,5202,call=5104,73915482,,,calls.ring_tone=true\n"
    "dca632100003,garage,5203,call=5001,-,,tls,\n")


def run(tmp: Path, text: str, *extra: str, name: str = "inventory.csv",
        capsys: pytest.CaptureFixture[str] | None = None) -> tuple[int, str, str]:
    inv = tmp / name
    inv.write_text(text)
    rc = cli.main(["build", str(inv), "--out", str(tmp / "out"), "--pbx-host", "192.168.1.10",
                   *extra])
    if capsys is None:
        return rc, "", ""
    out, err = capsys.readouterr()
    return rc, out, err


def secrets_of(tmp: Path) -> dict[str, dict[str, str]]:
    return read_yaml((tmp / "out" / "secrets.yaml").read_text())[0]["boxes"]


def test_macs_normalise_and_refuse_what_no_box_has() -> None:
    for text in ("B8:27:EB:12:34:56", "b8-27-eb-12-34-56", "b827.eb12.3456", " b827eb123456 "):
        assert normalise_mac(text) == "b827eb123456"
    for text in ("b827eb12345", "b827eb1234567", "g827eb123456", "01:00:5e:00:00:01",
                 "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", ""):
        assert normalise_mac(text) is None, text


def test_the_pbx_configuration_names_the_reserved_numbers() -> None:
    pbx = pbx_numbers(REPO / "pbx")
    assert {"5001", "5002", "5003", "5004"} <= pbx.endpoints
    assert {"5001", "600"} <= pbx.routed and "600" in pbx.used


def test_every_box_file_is_what_the_box_itself_loads(tmp_path: Path, capsys) -> None:
    rc, out, err = run(tmp_path, CSV, "--pbx-port", "5070", capsys=capsys)
    assert rc == 0, err
    secrets = secrets_of(tmp_path)
    a = load_config(tmp_path / "out/www/b827eb100001.yaml")
    assert (a.sip.server, a.sip.port, a.sip.username) == ("192.168.1.10", 5070, "5201")
    assert a.sip.password == secrets["b827eb100001"]["sip_password"]
    assert a.calls.door_code == secrets["b827eb100001"]["door_code"]  # generated
    assert re.fullmatch(r"[0-9]{8}", a.calls.door_code)
    buttons = {b.name: b for b in a.gpio.buttons}
    assert buttons["call"].target == "5101" and buttons["call"].pin == 17  # the profile's pin
    assert (buttons["flat2"].pin, buttons["flat2"].target) == (24, "5102")
    assert a.calls.default_target == "5101" and a.system.hostname == "entrance-a"
    b = load_config(tmp_path / "out/www/b827eb100002.yaml")
    assert b.calls.door_code == "73915482" and b.calls.ring_tone is True
    assert b.system.hostname == "entrance-b" and b.sip.display_name == "Entrance B"
    assert "door_code" not in secrets["b827eb100002"]  # the inventory's own code
    c = load_config(tmp_path / "out/www/dca632100003.yaml")
    assert c.calls.door_code == "" and c.sip.transport == "tls" and c.media.srtp == "required"
    # passwords: never on stdout without --show-secrets, strong and all different
    passwords = [s["sip_password"] for s in secrets.values()]
    assert len(set(passwords)) == 3
    for pw in passwords:
        assert len(pw) >= 22 and pw not in out and pw not in err  # >= 128 bits of base64url
    assert "73915482" not in out + err


def test_asterisk_files_match_the_boxes(tmp_path: Path) -> None:
    assert run(tmp_path, CSV)[0] == 0
    secrets = secrets_of(tmp_path)
    pjsip = (tmp_path / "out/pbx/pjsip_fleet.conf").read_text()
    for ext, mac in (("5201", "b827eb100001"), ("5202", "b827eb100002"),
                     ("5203", "dca632100003")):
        block = pjsip.split(f"[{ext}](phone-endpoint)")[1].split("[", 1)[0]
        assert "context=door-fleet" in block and f"aors={ext}" in block
        assert f"[{ext}](phone-auth)\nusername={ext}\npassword=" in pjsip
        assert f"password={secrets[mac]['sip_password']}\n" in pjsip
        assert f"[{ext}](phone-aor)" in pjsip
        assert ("media_encryption=sdes" in block) == (ext == "5203")  # the TLS box's SRTP
    dialplan = (tmp_path / "out/pbx/extensions_fleet.conf").read_text()
    door = dialplan.split("[door-fleet]")[1].split("\n[", 1)[0]
    for target in ("5101", "5102", "5104"):
        assert f"exten => {target},1,Dial(PJSIP/{target},25)\n same => n,Hangup(20)" in door
    assert "exten => 5001" not in dialplan  # routed by pbx/ already: the reception ring group
    assert "Answer" not in dialplan
    assert "include => door\n" in door and "include => fleet-boxes" in door
    boxes = dialplan.split("[fleet-boxes]")[1]
    assert all(f"exten => {e},1,Dial(PJSIP/{e},25)" in boxes for e in ("5201", "5202", "5203"))
    assert "[intercom](+)\ninclude => fleet-boxes" in dialplan


def test_files_with_secrets_are_private(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        assert run(tmp_path, CSV)[0] == 0
    finally:
        os.umask(old)
    out = tmp_path / "out"
    for f in [out / "secrets.yaml", out / "pbx/pjsip_fleet.conf", *(out / "www").iterdir()]:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert stat.S_IMODE((out / "pbx/extensions_fleet.conf").stat().st_mode) == 0o644
    assert not [f for f in out.rglob(".*")], "temporary files left behind"


def test_a_rerun_keeps_passwords_adds_boxes_and_reports_removed_ones(tmp_path: Path,
                                                                     capsys) -> None:
    assert run(tmp_path, CSV, capsys=capsys)[0] == 0
    first = secrets_of(tmp_path)
    pjsip = (tmp_path / "out/pbx/pjsip_fleet.conf").read_text()
    rc, out, _ = run(tmp_path, CSV, capsys=capsys)
    assert rc == 0 and secrets_of(tmp_path) == first
    assert (tmp_path / "out/pbx/pjsip_fleet.conf").read_text() == pjsip  # same bytes
    assert out.count("password kept") == 3
    # garage leaves, a new box arrives
    lines = CSV.splitlines()
    text = "\n".join(lines[:3] + ["b8:27:eb:10:00:09,cellar,5209,call=5001,24681357,,,"]) + "\n"
    rc, out, _ = run(tmp_path, text, capsys=capsys)
    assert rc == 0
    now = secrets_of(tmp_path)
    assert now["dca632100003"] == first["dca632100003"], "a removed box's secret is kept"
    assert now["b827eb100001"] == first["b827eb100001"]
    assert "b827eb100009" in now and "new password" in out
    assert "dca632100003  left the inventory" in out and "stays in" in out
    assert not (tmp_path / "out/www/dca632100003.yaml").exists()
    assert "[5203]" not in (tmp_path / "out/pbx/pjsip_fleet.conf").read_text()
    assert load_config(tmp_path / "out/www/b827eb100001.yaml").sip.password == \
        first["b827eb100001"]["sip_password"]


def test_yaml_and_csv_inventories_give_the_same_boxes(tmp_path: Path) -> None:
    csv_dir, yaml_dir = tmp_path / "c", tmp_path / "y"
    csv_dir.mkdir()
    yaml_dir.mkdir()
    assert run(csv_dir, (REPO / "examples/fleet/inventory.csv").read_text())[0] == 0
    (yaml_dir / "out").mkdir()
    (yaml_dir / "out/secrets.yaml").write_text((csv_dir / "out/secrets.yaml").read_text())
    assert run(yaml_dir, (REPO / "examples/fleet/inventory.yaml").read_text(),
               name="inventory.yaml")[0] == 0
    names = sorted(f.name for f in (csv_dir / "out/www").iterdir())
    assert names == sorted(f.name for f in (yaml_dir / "out/www").iterdir()) and len(names) == 3
    for name in names:
        assert replace(load_config(csv_dir / "out/www" / name), path="") == \
            replace(load_config(yaml_dir / "out/www" / name), path="")
    for name in ("pjsip_fleet.conf", "extensions_fleet.conf"):
        assert (csv_dir / "out/pbx" / name).read_text().replace("inventory.csv", "X") == \
            (yaml_dir / "out/pbx" / name).read_text().replace("inventory.yaml", "X")


def test_show_secrets_prints_them_on_request(tmp_path: Path, capsys) -> None:
    rc, out, _ = run(tmp_path, CSV, "--show-secrets", capsys=capsys)
    assert rc == 0
    for entry in secrets_of(tmp_path).values():
        assert entry["sip_password"] in out
    assert "73915482" in out


BAD_ROWS = [
    ("zz:27:eb:10:00:05,x5,5205,call=5101,,,,", ":3: mac: 'zz:27:eb:10:00:05' is not"),
    ("01:00:5e:00:00:01,x5,5205,call=5101,,,,", ":3: mac: '01:00:5e:00:00:01' is not"),
    ("b8:27:EB:10:00:01,x5,5205,call=5101,,,,", ":3: mac: duplicate 'b827eb100001' "
     "(already at"),
    ("b8:27:eb:10:00:05,Entrance-A,5205,call=5101,,,,", ":3: name: duplicate 'Entrance-A'"),
    ("b8:27:eb:10:00:05,x5,5201,call=5101,,,,", ":3: extension: duplicate '5201'"),
    ("b8:27:eb:10:00:05,x5,52a5,call=5101,,,,", ":3: extension: '52a5' must be 2-10 digits"),
    ("b8:27:eb:10:00:05,x5,5001,call=5101,,,,", ":3: extension: 5001 is already used by the "
     "PBX"),
    ("b8:27:eb:10:00:05,x5,600,call=5101,,,,", ":3: extension: 600 is already used"),
    ("b8:27:eb:10:00:05,x5,5205,flat1=5101,,,,", ":3: buttons: unknown button 'flat1': "
     "profile 'plain' has the call buttons call, talk"),
    ("b8:27:eb:10:00:05,x5,5205,answer=5101,,,,", ":3: buttons: unknown button 'answer'"),
    ("b8:27:eb:10:00:05,x5,5205,call=reception,,,,", ":3: buttons: call: target 'reception'"),
    ("b8:27:eb:10:00:05,x5,5205,call,,,,", ":3: buttons: 'call' is not NAME=VALUE"),
    ("b8:27:eb:10:00:05,x5,5205,,,,,", ":3: buttons: missing"),
    ("b8:27:eb:10:00:05,x5,5205,call=5101,12x4,,,", ":3: door_code: may only hold the DTMF"),
    ("b8:27:eb:10:00:05,x5,5205,call=5101,123,,,", ":3: door_code: 3 keys is too short"),
    ("b8:27:eb:10:00:05,x5,5205,call=5101,,nosuch,,", ":3: profile: gpio.profile 'nosuch' "
     "not found"),
    ("b8:27:eb:10:00:05,x5,5205,call=5101,,,sctp,", ":3: transport: 'sctp' must be one of"),
    ("b8:27:eb:10:00:05,x5,5205,call=5101,,,,sip.password=x", ":3: extra: sip.password comes "
     "from the inventory"),
    ("b8:27:eb:10:00:05,x5,5205,call=5101,,,,provisioning.url=x", ":3: extra: provisioning "
     "is set on the box's boot partition only"),
    ("b8:27:eb:10:00:05,x5,5205,call=5101,,,,calls.ring_timout=3",
     ":3: the box's configuration does not validate: unknown key calls.ring_timout"),
    ("b8:27:eb:10:00:05,x5,5205,call=5101 flat2@26=5102,,,,",
     ":3: the box's configuration does not validate: GPIO 26 is used twice"),
    ("b8:27:eb:10:00:05,x5,5205,call=5101 flat2@24=5102 flat3@24=5103,,,,",
     ":3: buttons: flat3 and flat2 share pin 24"),
    ("b8:27:eb:10:00:05,x 5!,5205,call=5101,,,,", ":3: name: 'x 5!' must be"),
    ("b8:27:eb:10:00:05,x5,5205,call=5101,,,,,", ":3: 9 cells for 8 columns"),
]


@pytest.mark.parametrize("row,expected", BAD_ROWS)
def test_a_bad_row_is_one_line_naming_it_and_nothing_is_written(tmp_path: Path, capsys,
                                                                row: str, expected: str) -> None:
    text = HEADER + "B8:27:EB:10:00:01,entrance-a,5201,call=5101,,,,\n" + row + "\n"
    rc, out, err = run(tmp_path, text, capsys=capsys)
    assert rc == 2
    assert f"inventory.csv{expected}" in err, err
    assert "nothing written" in err and not (tmp_path / "out").exists()


def test_every_bad_row_is_reported_at_once(tmp_path: Path, capsys) -> None:
    text = HEADER + "nope,a,5201,call=5101,,,,\nb8:27:eb:10:00:05,b,5001,call=5101,12,,,\n"
    rc, _, err = run(tmp_path, text, capsys=capsys)
    assert rc == 2
    assert "inventory.csv:2: mac:" in err and "inventory.csv:3: extension:" in err
    assert "inventory.csv:3: door_code:" in err and "3 error(s)" in err


def test_a_short_door_code_is_a_warning(tmp_path: Path, capsys) -> None:
    rc, _, err = run(tmp_path, HEADER + "b8:27:eb:10:00:05,a,5205,call=5101,13579,,,\n",
                     capsys=capsys)
    assert rc == 0
    assert "warning: " in err and "inventory.csv:2: door_code: 5 keys fall to guessing" in err


def test_a_target_nobody_defines_is_a_warning(tmp_path: Path, capsys) -> None:
    rc, _, err = run(tmp_path, HEADER + "b8:27:eb:10:00:05,a,5205,call=5101 flat2@24=5003,,,,\n",
                     capsys=capsys)
    assert rc == 0
    assert "inventory.csv:2: buttons: 5101: neither a PJSIP endpoint" in err
    assert "5003" not in err  # pbx/ has it


def test_header_problems_name_the_line(tmp_path: Path) -> None:
    for header, expected in (("mac,name,extension,buttons,colour\n", "unknown column 'colour'"),
                             ("mac,name,buttons\n", "missing column 'extension'")):
        inv = tmp_path / "i.csv"
        inv.write_text("# comment\n" + header)
        with pytest.raises(InventoryError) as err:
            read_inventory(inv)
        assert f"i.csv:2: header: {expected}" in str(err.value)


YAML_BAD = [
    ("  - {mac: 12:34:56:10:20:30, name: a, extension: 5205, buttons: {call: 5101}}",
     ":3: mac: must be quoted text, got int (put the MAC in quotes)"),
    ("  - {mac: 'b8:27:eb:10:00:05', name: a, extension: 5205, buttons: {call: 5101},\n"
     "     door_code: 0123}", ":4: door_code: must be quoted text"),
    ("  - {mac: 'b8:27:eb:10:00:05', name: a, extension: 5205, buttons: {call: 5101},\n"
     "     colour: red}", ":4: unknown key 'colour'"),
    ("  - {mac: 'b8:27:eb:10:00:05', name: a, extension: 5205,\n"
     "     buttons: {flat2: {pin: 24}}}", ":4: buttons: flat2: a mapping takes target"),
    ("  - {mac: 'b8:27:eb:10:00:05', name: a, extension: 5205, buttons: {call: 5101},\n"
     "     extra: {calls: {door_code: '1234'}}}", ":4: extra: calls.door_code comes from"),
    ("  - 5", ":3: a box must be a mapping"),
]


@pytest.mark.parametrize("item,expected", YAML_BAD)
def test_yaml_rows_are_named_by_their_line(tmp_path: Path, capsys, item: str,
                                           expected: str) -> None:
    text = ("boxes:\n  - {mac: 'b8:27:eb:10:00:01', name: e, extension: '5201', "
            "buttons: {call: '5101'}}\n" + item + "\n")
    rc, _, err = run(tmp_path, text, name="inventory.yaml", capsys=capsys)
    assert rc == 2 and f"inventory.yaml{expected}" in err, err
    assert not (tmp_path / "out").exists()


def test_a_damaged_secrets_file_stops_the_run(tmp_path: Path, capsys) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out/secrets.yaml").write_text("boxes:\n  b827eb100001:\n"
                                               "    sip_password: 'short; x'\n")
    rc, _, err = run(tmp_path, CSV, capsys=capsys)
    assert rc == 2 and "secrets.yaml:2: sip_password must be" in err
    assert not (tmp_path / "out/www").exists()


def test_bad_command_line_values_are_refused(tmp_path: Path, capsys) -> None:
    inv = tmp_path / "i.csv"
    inv.write_text(CSV)
    for extra, expected in ((["--pbx-host", "010.0.0.1"], "sip.server"),
                            (["--pbx-host", "pbx", "--pbx-port", "0"], "sip.port"),
                            (["--pbx-host", "pbx", "--provisioning-base", "http://x/"],
                             "https://")):
        assert cli.main(["build", str(inv), "--out", str(tmp_path / "o"), *extra]) == 2
        assert expected in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_generated_file_that_reads_back_wrong_is_a_bug(tmp_path: Path) -> None:
    inv = tmp_path / "i.csv"
    inv.write_text(CSV)
    box = read_inventory(inv).boxes[0]
    site = render.Site("192.168.1.10")
    text = render.box_yaml(box, site, "p" * 32, "12345678")
    render.check_box_yaml(box, text, "x.yaml", "p" * 32, "12345678")
    with pytest.raises(RuntimeError, match="bug"):
        render.check_box_yaml(box, text.replace('"5102"', '"5103"'), "x.yaml", "p" * 32,
                              "12345678")
    garage = read_inventory(inv).boxes[2]  # nothing of its own (no extra, no new pins)
    text = render.box_yaml(garage, site, "p" * 32, "")
    with pytest.raises(RuntimeError, match="bug"):
        render.check_box_yaml(garage, text.replace("system:", "sytem:"), "x.yaml", "p" * 32, "")
    with pytest.raises(render.RowError, match="unknown section sytem"):  # a row's own fault
        render.check_box_yaml(box, render.box_yaml(box, site, "p" * 32, "12345678").replace(
            "system:", "sytem:"), "x.yaml", "p" * 32, "12345678")


def test_secrets_are_written_atomically_and_privately(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("old")
    os.chmod(f, 0o644)
    secret_store.write_private(f, "new")
    assert f.read_text() == "new" and stat.S_IMODE(f.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["s.yaml"]
    store = secret_store.load(tmp_path / "none.yaml")
    pw = store.password("b827eb100001")
    assert store.password("b827eb100001") == pw and store.created == ["b827eb100001"]
    store.save()
    again = secret_store.load(tmp_path / "none.yaml")
    assert again.entries["b827eb100001"].sip_password == pw and again.created == []
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML at line 2"):
        (tmp_path / "bad.yaml").write_text("boxes: [\n")
        secret_store.load(tmp_path / "bad.yaml")
