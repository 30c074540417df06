"""SCRAM-SHA-256 password verifiers, computed here, in the form Postgres stores in pg_authid.

Why compute them ourselves: `ALTER ROLE ... PASSWORD 'plain'` makes Postgres pick a random salt,
so every deploy would store a new verifier and `invoke db.roles` could never say "no change".
A verifier whose salt derives from the secret and the role name is the same on every run for the
same secret, and different as soon as the secret changes. Postgres takes a string that already
is a SCRAM verifier in `PASSWORD '...'` as is (it never sees the plain text).

RFC 5802 (SCRAM) with SHA-256 (RFC 7677); the password is SASLprep'd (RFC 4013) exactly as
Postgres and libpq do it, so a client logging in with the plain secret matches.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import stringprep
import unicodedata

ITERATIONS = 4096  # Postgres' default scram_iterations
SALT_BYTES = 16  # as long as the salts Postgres makes itself
_SALT_CONTEXT = b"opskit scram salt v1\x00"


def verifier(password: str, role: str, iterations: int = ITERATIONS) -> str:
    """`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` for `password`.

    The salt is PBKDF2(password, context + role): deterministic, different per role (two roles
    with one password get different verifiers), and as slow to compute as the verifier itself,
    so the stored salt is no shortcut for guessing the password (a plain HMAC of it would be).
    """
    secret = saslprep(password)
    salt = hashlib.pbkdf2_hmac("sha256", secret, _SALT_CONTEXT + role.encode(), iterations)[:SALT_BYTES]
    return verifier_with_salt(secret, salt, iterations)


def verifier_with_salt(secret: bytes, salt: bytes, iterations: int = ITERATIONS) -> str:
    """The verifier for an already SASLprep'd password and a given salt (RFC 5802 section 3)."""
    salted = hashlib.pbkdf2_hmac("sha256", secret, salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def is_verifier(text: str) -> bool:
    """Whether `text` has the shape of a SCRAM-SHA-256 verifier (what Postgres would not re-hash)."""
    head, _, keys = text.partition("$")[2].partition("$")
    return text.startswith("SCRAM-SHA-256$") and head.count(":") == 1 and keys.count(":") == 1


def saslprep(password: str) -> bytes:
    """The bytes Postgres hashes for `password` (src/common/saslprep.c).

    Pure ASCII is used as is. Otherwise: map (RFC 3454 B.1 to nothing, non-ASCII spaces to a
    space), NFKC, then the prohibited, unassigned and bidi checks; a password that fails them is
    used as its raw UTF-8 bytes, which is what Postgres and libpq do too (never an error).
    """
    raw = password.encode("utf-8")
    if password.isascii():
        return raw
    mapped = "".join(" " if stringprep.in_table_c12(c) else c for c in password if not stringprep.in_table_b1(c))
    normal = unicodedata.normalize("NFKC", mapped)
    if not normal or any(_prohibited(c) for c in normal) or not _bidi_ok(normal):
        return raw
    return normal.encode("utf-8")


def _prohibited(c: str) -> bool:
    return (stringprep.in_table_c12(c) or stringprep.in_table_c21_c22(c) or stringprep.in_table_c3(c)
            or stringprep.in_table_c4(c) or stringprep.in_table_c5(c) or stringprep.in_table_c6(c)
            or stringprep.in_table_c7(c) or stringprep.in_table_c8(c) or stringprep.in_table_c9(c)
            or stringprep.in_table_a1(c))


def _bidi_ok(text: str) -> bool:
    """RFC 3454 section 6: right-to-left text must not mix in left-to-right characters, and must
    start and end with a right-to-left character."""
    if not any(stringprep.in_table_d1(c) for c in text):
        return True
    if any(stringprep.in_table_d2(c) for c in text):
        return False
    return stringprep.in_table_d1(text[0]) and stringprep.in_table_d1(text[-1])
