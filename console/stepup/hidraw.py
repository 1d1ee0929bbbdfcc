"""Why no security key answers on Linux: one is plugged in, but its ``/dev/hidrawN`` cannot be opened.

The fido2 library opens every ``/dev/hidraw*`` node to read its report descriptor and silently skips the
ones it may not open, so a key without access looks like no key at all. The kernel also publishes each
node's report descriptor in sysfs (``/sys/class/hidraw/hidrawN/device/report_descriptor``, readable by
everyone): a FIDO authenticator declares the FIDO Alliance usage page 0xF1D0 there. A node with that
page that we cannot open for reading and writing is a key we are not allowed to use, and the fix is
the udev rule that gives the logged-in user (or a group) access to it.
"""

from __future__ import annotations

import grp
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

FIDO_USAGE_PAGE = 0xF1D0
SYSFS_HIDRAW = Path("/sys/class/hidraw")
DEV = Path("/dev")


@dataclass(frozen=True)
class HidrawKey:
    """A FIDO HID node the kernel lists."""

    node: Path  # /dev/hidrawN
    name: str  # HID_NAME from the device's uevent ("Yubico YubiKey OTP+FIDO+CCID"), or ""
    accessible: bool  # we may open it for reading and writing
    group: str | None  # the node's group (plugdev, ...), None when it does not exist or has no name


def usage_pages(descriptor: bytes) -> set[int]:
    """Every Usage Page a HID report descriptor declares (its global items; long items skipped)."""
    pages, i = set(), 0
    while i < len(descriptor):
        prefix = descriptor[i]
        if prefix == 0xFE:  # a long item: bDataSize, bLongItemTag, data
            if i + 1 >= len(descriptor):
                break
            i += 3 + descriptor[i + 1]
            continue
        size = (0, 1, 2, 4)[prefix & 0x03]
        data = descriptor[i + 1:i + 1 + size]
        if prefix & 0xFC == 0x04 and len(data) == size and size:  # global item, tag 0: Usage Page
            pages.add(int.from_bytes(data, "little"))
        i += 1 + size
    return pages


def is_fido(descriptor: bytes) -> bool:
    return FIDO_USAGE_PAGE in usage_pages(descriptor)


def fido_hidraw_nodes(sysfs: Path = SYSFS_HIDRAW, dev: Path = DEV,
                      access: Callable[[str, int], bool] = os.access) -> list[HidrawKey]:
    """The FIDO authenticators the kernel sees, whether or not we may open them (none off Linux)."""
    try:
        entries = sorted(sysfs.iterdir(), key=lambda p: (len(p.name), p.name))
    except OSError:
        return []
    found = []
    for entry in entries:
        try:
            descriptor = (entry / "device" / "report_descriptor").read_bytes()
        except OSError:
            continue
        if not is_fido(descriptor):
            continue
        node = dev / entry.name
        found.append(HidrawKey(node, _hid_name(entry), access(str(node), os.R_OK | os.W_OK), _group(node)))
    return found


def _hid_name(entry: Path) -> str:
    try:
        for line in (entry / "device" / "uevent").read_text(errors="replace").splitlines():
            if line.startswith("HID_NAME="):
                return line.partition("=")[2].strip()
    except OSError:
        pass
    return ""


def _group(node: Path) -> str | None:
    try:
        gid = node.stat().st_gid
    except OSError:
        return None
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


UDEV_RULE = ('KERNEL=="hidraw*", SUBSYSTEM=="hidraw", ATTRS{idVendor}=="VVVV", ATTRS{idProduct}=="PPPP", '
             'TAG+="uaccess", GROUP="plugdev", MODE="0660"')


def permission_problem(keys: list[HidrawKey]) -> str | None:
    """What to say when every FIDO node is out of reach (None when there is none, or one we can open)."""
    if not keys or any(k.accessible for k in keys):
        return None
    nodes = ", ".join(f"{k.node}" + (f" ({k.name})" if k.name else "") for k in keys)
    missing = [k for k in keys if k.group is None]
    if len(missing) == len(keys):
        where = f"{nodes} {'is' if len(keys) == 1 else 'are'} listed by the kernel but missing from /dev"
        return f"a security key is plugged in, but {where}: check udev, then unplug the key and plug it in again"
    groups = sorted({k.group for k in keys if k.group})
    group_fix = (f"add yourself to the {groups[0]!r} group that owns it (`sudo usermod -aG {groups[0]} $USER`, "
                 f"then log in again)" if groups and groups[0] != "root" else
                 "add a rule that gives a group access (libfido2's udev/70-u2f.rules has one per vendor: "
                 f"{UDEV_RULE}) and join that group")
    return (f"a security key is plugged in, but you may not open {nodes}: install the udev rules that give "
            f"the logged-in user access (systemd 244+ ships 60-fido-id.rules; else libfido2's 70-u2f.rules, "
            f"e.g. the libfido2-1 or libu2f-udev package), or, for an SSH session (uaccess covers only the "
            f"local seat's user), {group_fix}; then run `sudo udevadm control --reload && sudo udevadm trigger` "
            f"or unplug the key and plug it in again")
