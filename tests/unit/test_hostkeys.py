"""Host keys from the console (real-world shapes) and the key the server presents in its KEX reply."""
from __future__ import annotations

import base64
import os
import struct

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from eic_proxy.tunnel.hostkeys import KexSniffer, fingerprint, key_from_line, parse_console


def _line(private) -> str:
    return private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                             serialization.PublicFormat.OpenSSH).decode()


ED = _line(ed25519.Ed25519PrivateKey.generate())
EC = _line(ec.generate_private_key(ec.SECP256R1()))
RSA = _line(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def _fp(line: str) -> str:
    return fingerprint(base64.b64decode(line.split()[1]))


AMAZON_LINUX = f"""[    9.812345] cloud-init[1600]: Cloud-init v. 22.2.2 running 'modules:final'
ec2:
ec2: #############################################################
ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----
ec2: 256 {_fp(EC)} no comment (ECDSA)
ec2: 256 {_fp(ED)} no comment (ED25519)
ec2: -----END SSH HOST KEY FINGERPRINTS-----
ec2: #############################################################
-----BEGIN SSH HOST KEY KEYS-----
{EC}
{ED}
-----END SSH HOST KEY KEYS-----
[   10.001000] cloud-init[1600]: Cloud-init v. 22.2.2 finished
"""

UBUNTU = f"""<14>Dec  2 03:00:00 cloud-init: #############################################################
<14>Dec  2 03:00:00 cloud-init: -----BEGIN SSH HOST KEY FINGERPRINTS-----
<14>Dec  2 03:00:00 cloud-init: 256 {_fp(EC)} root@ip-10-0-1-5 (ECDSA)
<14>Dec  2 03:00:00 cloud-init: 256 {_fp(ED)} root@ip-10-0-1-5 (ED25519)
<14>Dec  2 03:00:01 cloud-init: 3072 {_fp(RSA)} root@ip-10-0-1-5 (RSA)
<14>Dec  2 03:00:01 cloud-init: -----END SSH HOST KEY FINGERPRINTS-----
<14>Dec  2 03:00:01 cloud-init: #############################################################
-----BEGIN SSH HOST KEY KEYS-----
{EC} root@ip-10-0-1-5
{ED} root@ip-10-0-1-5
{RSA} root@ip-10-0-1-5
-----END SSH HOST KEY KEYS-----
"""


def _types(result):
    return sorted(k.key_type for k in result.keys)


def test_amazon_linux_console():
    got = parse_console(AMAZON_LINUX)
    assert _types(got) == ["ecdsa-sha2-nistp256", "ssh-ed25519"]
    assert {k.line for k in got.keys} == {" ".join(EC.split()[:2]), " ".join(ED.split()[:2])}


def test_ubuntu_console_with_crlf():
    got = parse_console(UBUNTU.replace("\n", "\r\n"))
    assert _types(got) == ["ecdsa-sha2-nistp256", "ssh-ed25519", "ssh-rsa"]


def test_prefixed_key_lines_are_found():
    text = "\n".join(["ec2: -----BEGIN SSH HOST KEY KEYS-----", f"ec2: {ED}", "ec2: -----END SSH HOST KEY KEYS-----"])
    assert _types(parse_console(text)) == ["ssh-ed25519"]


def test_the_last_complete_boot_wins():
    other = _line(ed25519.Ed25519PrivateKey.generate())
    old = f"-----BEGIN SSH HOST KEY KEYS-----\n{other}\n-----END SSH HOST KEY KEYS-----\n"
    new = f"-----BEGIN SSH HOST KEY KEYS-----\n{ED}\n-----END SSH HOST KEY KEYS-----\n"
    assert [k.line for k in parse_console(old + "reboot\n" + new).keys] == [" ".join(ED.split()[:2])]


def test_truncated_block_keeps_only_whole_keys():
    text = f"-----BEGIN SSH HOST KEY KEYS-----\n{ED}\n{RSA[:120]}"
    assert _types(parse_console(text)) == ["ssh-ed25519"]
    assert parse_console("-----BEGIN SSH HOST KEY KEYS-----\n" + ED[:40]).why_none


def test_keys_missing_from_the_fingerprint_block_are_dropped():
    text = AMAZON_LINUX.replace(_fp(ED), "SHA256:" + "A" * 43)
    assert _types(parse_console(text)) == ["ecdsa-sha2-nistp256"]


@pytest.mark.parametrize("text", ["", "Windows is starting\r\n", "random\nconsole\n"])
def test_no_block_says_why(text):
    got = parse_console(text)
    assert got.keys == [] and "no SSH host key block" in got.why_none


def test_key_lines_must_be_whole_and_self_consistent():
    assert key_from_line(ED) is not None
    assert key_from_line("ssh-rsa " + ED.split()[1]) is None  # the blob says ed25519
    assert key_from_line("ssh-ed25519 not-base64!") is None


def _string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def _packet(payload: bytes) -> bytes:
    padding = 8 - (len(payload) + 5) % 8 + 8
    return struct.pack(">IB", len(payload) + padding + 1, padding) + payload + os.urandom(padding)


def test_sniffer_finds_the_host_key_in_the_kex_reply_split_anywhere():
    blob = base64.b64decode(ED.split()[1])
    kexinit = bytes([20]) + os.urandom(16) + _string(b"curve25519-sha256") + b"\0" * 40
    reply = bytes([31]) + _string(blob) + _string(os.urandom(32)) + _string(os.urandom(83))
    stream = b"SSH-2.0-OpenSSH_9.2\r\n" + _packet(kexinit) + _packet(reply) + _packet(bytes([21]))
    for cut in (1, 7, 64):
        s = KexSniffer()
        for i in range(0, len(stream), cut):
            s.feed(stream[i:i + cut])
        assert s.host_key is not None and s.host_key.blob == blob and s.host_key.key_type == "ssh-ed25519"


def test_sniffer_skips_the_group_exchange_group_message():
    blob = base64.b64decode(RSA.split()[1])
    group = bytes([31]) + _string(b"\x00" + os.urandom(256)) + _string(b"\x02")
    reply = bytes([33]) + _string(blob) + _string(os.urandom(257)) + _string(os.urandom(100))
    s = KexSniffer()
    s.feed(b"SSH-2.0-x\r\n" + _packet(group) + _packet(reply))
    assert s.host_key is not None and s.host_key.key_type == "ssh-rsa"


def test_sniffer_gives_up_on_what_is_not_ssh():
    s = KexSniffer()
    s.feed(b"SSH-2.0-x\r\n" + b"\xff" * 64)
    assert s.done and s.host_key is None
