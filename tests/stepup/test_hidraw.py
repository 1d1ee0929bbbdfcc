"""A security key that is plugged in but cannot be opened (hidraw permissions), against a fake sysfs tree."""

import os

import pytest

from opsgate.console.stepup import hidraw
from opsgate.console.stepup.hidraw import fido_hidraw_nodes, is_fido, permission_problem, usage_pages
from opsgate.console.stepup.securitykey import NoSecurityKey, discover_all_hid, discover_hid

# A YubiKey's FIDO interface: Usage Page (FIDO Alliance 0xF1D0), Usage (CTAPHID), Collection, 64-byte reports.
FIDO_DESCRIPTOR = bytes.fromhex("06d0f1 0901 a101 0920 1500 26ff00 7508 9540 8102 0921 1500 26ff00 7508 9540 9102 c0"
                                .replace(" ", ""))
KEYBOARD_DESCRIPTOR = bytes.fromhex("0501 0906 a101 0507 19e0 29e7 1500 2501 7501 9508 8102 c0".replace(" ", ""))


def fake_tree(tmp_path, nodes: dict[str, bytes], names: dict[str, str] | None = None):
    """/sys/class/hidraw/<node>/device/{report_descriptor,uevent} and /dev/<node> under tmp_path."""
    sysfs, dev = tmp_path / "sys" / "class" / "hidraw", tmp_path / "dev"
    dev.mkdir(parents=True)
    for node, descriptor in nodes.items():
        device = sysfs / node / "device"
        device.mkdir(parents=True)
        (device / "report_descriptor").write_bytes(descriptor)
        name = (names or {}).get(node)
        (device / "uevent").write_text("DRIVER=hid-generic\nHID_ID=0003:00001050:00000407\n"
                                       + (f"HID_NAME={name}\n" if name else ""))
        (dev / node).write_bytes(b"")
    return sysfs, dev


def no_access(path, mode):
    return False


def test_the_fido_usage_page_is_found_in_a_report_descriptor():
    assert is_fido(FIDO_DESCRIPTOR) and not is_fido(KEYBOARD_DESCRIPTOR)
    assert usage_pages(KEYBOARD_DESCRIPTOR) == {0x01, 0x07}
    # A 4-byte Usage Page and a long item before it are read right; a truncated item is not a page.
    assert usage_pages(bytes([0xFE, 2, 0x10, 0xAA, 0xBB]) + bytes([0x07, 0xD0, 0xF1, 0, 0])) == {0xF1D0}
    assert usage_pages(bytes([0x06, 0xD0])) == set()


def test_a_key_we_may_not_open_is_named_with_the_fix(tmp_path):
    sysfs, dev = fake_tree(tmp_path, {"hidraw0": KEYBOARD_DESCRIPTOR, "hidraw1": FIDO_DESCRIPTOR},
                           {"hidraw1": "Yubico YubiKey OTP+FIDO+CCID"})
    keys = fido_hidraw_nodes(sysfs, dev, access=no_access)
    assert [(k.node, k.name, k.accessible) for k in keys] == [(dev / "hidraw1", "Yubico YubiKey OTP+FIDO+CCID", False)]
    message = permission_problem(keys)
    assert f"you may not open {dev / 'hidraw1'} (Yubico YubiKey OTP+FIDO+CCID)" in message
    assert "70-u2f.rules" in message and "60-fido-id.rules" in message and "udevadm" in message
    assert 'MODE="0660"' in message  # the node belongs to root here: the rule to write, not a group to join


def test_the_group_that_owns_the_node_is_named(tmp_path):
    sysfs, dev = fake_tree(tmp_path, {"hidraw3": FIDO_DESCRIPTOR})
    os.chown(dev / "hidraw3", -1, 46)  # plugdev on Debian and Ubuntu
    message = permission_problem(fido_hidraw_nodes(sysfs, dev, access=no_access))
    group = hidraw._group(dev / "hidraw3")
    assert f"`sudo usermod -aG {group} $USER`" in message


def test_nothing_to_say_when_a_key_can_be_opened_or_none_is_there(tmp_path):
    sysfs, dev = fake_tree(tmp_path, {"hidraw0": FIDO_DESCRIPTOR, "hidraw1": FIDO_DESCRIPTOR})
    accessible = {str(dev / "hidraw1")}
    keys = fido_hidraw_nodes(sysfs, dev, access=lambda path, mode: path in accessible)
    assert [k.accessible for k in keys] == [False, True] and permission_problem(keys) is None
    assert permission_problem(fido_hidraw_nodes(*fake_tree(tmp_path / "kbd", {"hidraw0": KEYBOARD_DESCRIPTOR}),
                                                access=no_access)) is None
    assert fido_hidraw_nodes(tmp_path / "nowhere", dev) == []  # not Linux, or no hidraw at all


def test_a_node_missing_from_dev_says_so(tmp_path):
    sysfs, dev = fake_tree(tmp_path, {"hidraw2": FIDO_DESCRIPTOR})
    (dev / "hidraw2").unlink()
    message = permission_problem(fido_hidraw_nodes(sysfs, dev, access=no_access))
    assert "missing from /dev" in message


def test_the_real_access_check(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root may open any node")
    sysfs, dev = fake_tree(tmp_path, {"hidraw0": FIDO_DESCRIPTOR})
    os.chmod(dev / "hidraw0", 0)
    assert permission_problem(fido_hidraw_nodes(sysfs, dev)) is not None


def test_discovery_explains_a_key_it_cannot_open(tmp_path, monkeypatch):
    """No key the fido2 library can open (none here), one the kernel lists: the error says why and how to fix it."""
    sysfs, dev = fake_tree(tmp_path, {"hidraw5": FIDO_DESCRIPTOR}, {"hidraw5": "Nitrokey 3"})
    real = hidraw.fido_hidraw_nodes
    monkeypatch.setattr(hidraw, "fido_hidraw_nodes", lambda: real(sysfs, dev, access=no_access))
    from fido2.hid import CtapHidDevice

    if list(CtapHidDevice.list_devices()):
        pytest.skip("a real security key is plugged in")
    with pytest.raises(NoSecurityKey, match=r"hidraw5 \(Nitrokey 3\).*udev"):
        discover_all_hid()
    with pytest.raises(NoSecurityKey, match="you may not open"):
        discover_hid()
    monkeypatch.setattr(hidraw, "fido_hidraw_nodes", lambda: real(sysfs, dev, access=lambda p, m: True))
    with pytest.raises(NoSecurityKey, match="no security key found: plug one in"):
        discover_all_hid()
