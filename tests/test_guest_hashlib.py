"""hashlib.pbkdf2_hmac / hashlib.scrypt in the sandbox (host OpenSSL through /dev/pyworkers/kdf)
against the host's hashlib and the RFC 6070 / RFC 7914 test vectors."""
from __future__ import annotations

import hashlib
import json

import pytest

from pyworkers.runtime import GuestError, Isolate
from pyworkers.runtime import kdf

# (args, kwargs) for both sides; RFC 6070 (PBKDF2-HMAC-SHA1), RFC 7914 section 11/12 (scrypt)
PBKDF2 = [
    ("sha1", b"password", b"salt", 1, 20),
    ("sha1", b"password", b"salt", 4096, 20),
    ("sha1", b"passwordPASSWORDpassword", b"saltSALTsaltSALTsaltSALTsaltSALTsalt", 4096, 25),
    ("sha1", b"pass\0word", b"sa\0lt", 4096, 16),
    ("sha256", b"passwd", b"salt", 1, 64),
    ("sha512", b"password", b"NaCl", 1000, None),
]
SCRYPT = [
    dict(password=b"", salt=b"", n=16, r=1, p=1, dklen=64),
    dict(password=b"password", salt=b"NaCl", n=1024, r=8, p=16, dklen=64),
    dict(password=b"pleaseletmein", salt=b"SodiumChloride", n=16384, r=8, p=1, dklen=64),
]
RFC = {
    ("sha1", 4096, 20): "4b007901b765489abead49d926f721d065a429c1",
    ("scrypt", 16384): "7023bdcb3afd7348461c06cd81fd38ebfda8fbba904f8e3ea9b543f6545da1f2"
                       "d5432955613f0fcf62d49705242a9af9e61e85dc0d651e40dfcf017b45575887",
}


@pytest.mark.slow
def test_pbkdf2_and_scrypt_match_the_host_and_the_rfc_vectors(runtime_314):
    iso = Isolate(runtime_314)
    code = "import hashlib, json\nprint(json.dumps([" \
        f"[hashlib.pbkdf2_hmac(*a).hex() for a in {PBKDF2!r}], " \
        f"[hashlib.scrypt(k.pop('password'), **k).hex() for k in {SCRYPT!r}], " \
        "'pbkdf2_hmac' in hashlib.__all__]))"
    got_pbkdf2, got_scrypt, in_all = json.loads(iso.run(code).stdout)
    assert got_pbkdf2 == [hashlib.pbkdf2_hmac(*a).hex() for a in PBKDF2]
    assert got_scrypt == [hashlib.scrypt(k["password"], **{x: v for x, v in k.items() if x != "password"}).hex()
                          for k in SCRYPT]
    assert got_pbkdf2[1] == RFC[("sha1", 4096, 20)]
    assert got_scrypt[2] == RFC[("scrypt", 16384)]
    assert in_all


@pytest.mark.slow
@pytest.mark.parametrize("call, exc, text", [
    ("hashlib.pbkdf2_hmac('nope', b'a', b'b', 1)", "ValueError", "unsupported hash type"),
    ("hashlib.pbkdf2_hmac('sha1', 'str', b'b', 1)", "TypeError", "bytes-like"),
    ("hashlib.pbkdf2_hmac('sha1', b'a', b'b', 0)", "ValueError", "iteration value must be greater than 0"),
    ("hashlib.pbkdf2_hmac('sha1', b'a', b'b', 1.5)", "TypeError", "float"),
    ("hashlib.scrypt(b'a', salt=b'b', n=3, r=1, p=1)", "ValueError", "n must be a power of 2"),
    ("hashlib.scrypt(b'a', salt=b'b', n=2**24, r=8, p=1)", "ValueError", "sandbox limit"),
    ("hashlib.pbkdf2_hmac('sha256', b'a', b'b', 10**9)", "ValueError", "sandbox limit"),
])
def test_bad_arguments_raise_like_cpython(runtime_314, call, exc, text):
    iso = Isolate(runtime_314)
    with pytest.raises(GuestError) as e:
        iso.run(f"import hashlib\n{call}")
    assert e.value.type_name == exc and text in str(e.value)
    assert iso.eval("1") == "1"


def test_service_rejects_garbage_without_raising():
    for req in (b"", b"[]", b"{\"op\": \"nope\", \"password\": \"\", \"salt\": \"\"}", b"x" * (kdf.MAX_REQUEST + 1)):
        reply = json.loads(kdf.handle(req))
        assert reply["error"][0] == "ValueError"


@pytest.mark.slow
def test_kdf_works_in_an_isolate_restored_from_a_snapshot(runtime_314, tmp_path):
    from pyworkers.snapshot import Restorer, take_snapshot

    iso = Isolate(runtime_314)
    iso.run("import hashlib")  # patched before the snapshot
    path = tmp_path / "kdf.pyws"
    take_snapshot(iso, path, snapshot_type="dedicated")
    restored = Restorer(path, expect_type="dedicated", copy=True).new_isolate()
    assert restored.eval("hashlib.pbkdf2_hmac('sha1', b'password', b'salt', 4096, 20).hex()") == \
        repr(hashlib.pbkdf2_hmac("sha1", b"password", b"salt", 4096, 20).hex())
