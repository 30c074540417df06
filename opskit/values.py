"""Parsers for the small value types an inventory holds. Each returns the value or raises
`ValueError` with a plain-words description of what was expected."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass

#: how much of a value an error message may quote: messages never grow with the input
SHOWN = 60


def shown(value) -> str:
    """`repr(value)`, cut to a short length."""
    text = repr(value)
    return text if len(text) <= SHOWN else f"{text[:SHOWN - 5]}...' ({len(text)} characters)"


def plain_text(value) -> str:
    """Text of one line with no control character: it lands in files and commands unchanged."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected text, got {shown(value)}")
    if has_control(value):
        raise ValueError(f"{shown(value)} holds a newline or another control character")
    if not is_utf8(value):
        raise ValueError(f"{shown(value)} is not valid UTF-8 text")
    return value


def has_control(value: str) -> bool:
    """True when `value` holds a C0 control character (NUL, tab, newline, ...) or DEL."""
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)


def is_utf8(value: str) -> bool:
    """False for text that cannot be written as UTF-8 (lone surrogates, e.g. from undecodable bytes
    in an environment variable): no file or command could carry it."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


#: the longest secret opskit carries: secret files, Redis's config line and HTTP headers take it
#: whole (and a program that exports one to its own environment meets the kernel's 128 KiB cap)
SECRET_MAX_BYTES = 4096
#: bcrypt, which hashes the Flower password for Caddy's basic_auth, reads only this many bytes
BCRYPT_MAX_BYTES = 72


def secret(value, max_bytes: int = SECRET_MAX_BYTES) -> str:
    """A secret's value, exactly as given, or ValueError saying why a service could not read it
    back byte for byte. The message never quotes the value."""
    if not isinstance(value, str) or not value:
        raise ValueError("is empty (expected text)")
    if has_control(value):
        raise ValueError("holds a newline, a tab, a NUL or another control character, which services "
                         "read as the end of the secret (initdb's password file, HTTP headers); remove it "
                         "(a trailing newline often comes from `echo` or an editor)")
    if not is_utf8(value):
        raise ValueError("is not valid UTF-8 text (undecodable bytes); give the secret as UTF-8")
    size = len(value.encode())
    if size > max_bytes:
        raise ValueError(f"is {size} bytes long (at most {max_bytes})")
    return value


def bcrypt_password(value) -> str:
    """A secret that is hashed with bcrypt (the Flower password): at most 72 bytes, because bcrypt
    ignores the rest (and the bcrypt module refuses it)."""
    secret(value)
    size = len(value.encode())
    if size > BCRYPT_MAX_BYTES:
        raise ValueError(f"is {size} bytes long, but bcrypt (which hashes it for Caddy's basic_auth) reads "
                         f"only the first {BCRYPT_MAX_BYTES}; choose one of at most {BCRYPT_MAX_BYTES} bytes "
                         "(e.g. 32 random letters and digits)")
    return value

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$")
_SIZE = re.compile(r"^(\d+)([kmg])$")
_PY_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*)?$")
_NODE_MODULE = re.compile(r"^(@[a-z0-9~][a-z0-9._~-]*/)?[a-z0-9~][a-z0-9._~-]*(/[A-Za-z0-9._~-]+)*$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# a Caddyfile token: no quote, brace, #, space or placeholder can start a new token or block
_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))+$")
# letters, digits and . _ - + @ between slashes: no colon (it splits a Compose volume spec), no
# space or quote (commands on the server), no $ (Compose interpolation)
_SERVER_PATH = re.compile(r"^(/[A-Za-z0-9._@+-]+)+/?$|^/$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_IMAGE = re.compile(r"^[a-z0-9]+([._/:@-][A-Za-z0-9_.-]+)*$")


def hostname(value) -> str:
    """A DNS name of at least two labels, lower-case, e.g. api.example.com."""
    if not isinstance(value, str):
        raise ValueError(f"expected a hostname such as api.example.com, got {type(value).__name__}")
    labels = value.split(".")
    if len(labels) < 2 or len(value) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{shown(value)} is not a hostname (expected lower-case labels joined by dots, e.g. api.example.com)")
    return value


def host(value) -> str:
    """An SSH host: an IP address or a hostname (single-label names such as `localhost` too)."""
    if not isinstance(value, str) or not value:
        raise ValueError("expected an IP address or a hostname")
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if all(_LABEL.fullmatch(label) for label in value.split(".")):
        return value
    raise ValueError(f"{shown(value)} is neither an IP address nor a hostname")


def port(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a port number from 1 to 65535, got {shown(value)}")
    if not 1 <= value <= 65535:
        raise ValueError(f"port {value} is out of range (expected 1 to 65535)")
    return value


def positive_int(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a whole number of at least 1, got {shown(value)}")
    return value


@dataclass(frozen=True, order=True)
class Duration:
    """A span of time, kept as milliseconds; prints the way Caddy and Compose read it."""

    ms: int

    @property
    def seconds(self) -> float:
        return self.ms / 1000

    def __str__(self) -> str:
        if self.ms % 1000:
            return f"{self.ms}ms"
        return f"{self.ms // 1000}s"


def duration(value) -> Duration:
    """`600s`, `10m`, `1h30m`, `250ms`, or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 600s or 10m, got {shown(value)}")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ValueError(f"a duration must be positive, got {shown(value)}")
        return Duration(int(round(value * 1000)))
    if isinstance(value, str):
        m = _DURATION.fullmatch(value)
        if m and any(m.groups()):
            h, mi, s, ms = (int(g or 0) for g in m.groups())
            total = ((h * 60 + mi) * 60 + s) * 1000 + ms
            if total > 0:
                return Duration(total)
    raise ValueError(f"{shown(value)} is not a duration (expected e.g. 600s, 10m, 1h30m or 250ms)")


def size(value) -> str:
    """A size in Docker's notation: 512m, 1g, 10m (k, m or g)."""
    if isinstance(value, str) and _SIZE.fullmatch(value.lower()):
        return value.lower()
    raise ValueError(f"{shown(value)} is not a size (expected a number with k, m or g, e.g. 512m or 1g)")


def cpus(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"expected a positive number of CPUs such as 0.5 or 2, got {shown(value)}")
    return float(value)


def import_check(value, language: str) -> str:
    """A module path to import inside the image: `alembic.config:Config` (python) or `pg` (node)."""
    pattern = _PY_MODULE if language == "python" else _NODE_MODULE
    example = "alembic.config or alembic.config:Config" if language == "python" else "pg or @prisma/client"
    if isinstance(value, str) and pattern.fullmatch(value):
        return value
    raise ValueError(f"{shown(value)} is not a {language} module path (expected e.g. {example})")


def unix_user(value) -> str:
    if isinstance(value, str) and _USER.fullmatch(value):
        return value
    raise ValueError(f"{shown(value)} is not a user name (expected lower-case letters, digits, _ or -)")


def email(value) -> str:
    """An email address as ACME and the Caddyfile take it: ops@example.com."""
    if isinstance(value, str) and _EMAIL.fullmatch(value):
        return value
    raise ValueError(f"{shown(value)} is not an email address (expected e.g. ops@example.com: letters, digits "
                     "and . _ % + - before the @, a domain name after it)")


def server_path(value) -> str:
    """An absolute folder on the server, such as /srv/jobagent (without a trailing slash). It lands
    in Compose volume specs and in commands run there, so its characters are few."""
    if isinstance(value, str) and _SERVER_PATH.fullmatch(value) and ".." not in value.split("/"):
        return value.rstrip("/") or "/"
    raise ValueError(f"{shown(value)} is not an absolute path of letters, digits and . _ - + @ between "
                     "slashes (expected e.g. /srv/opskit; a colon, space, quote or $ cannot reach the server "
                     "unchanged)")


def image(value) -> str:
    if isinstance(value, str) and _IMAGE.fullmatch(value):
        return value
    raise ValueError(f"{shown(value)} is not an image reference (expected e.g. postgres:16 or registry.example.com/team/api)")


def loopback_address(value) -> tuple[str, int]:
    """`127.0.0.1:5433`: an address on the loopback interface only (never a public one)."""
    if not isinstance(value, str) or value.count(":") != 1:
        raise ValueError(f"{shown(value)} is not HOST:PORT (expected e.g. 127.0.0.1:5433)")
    addr, _, raw_port = value.partition(":")
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise ValueError(f"{shown(addr)} is not an IP address (expected e.g. 127.0.0.1:5433)") from None
    if not ip.is_loopback:
        raise ValueError(f"{shown(value)} is not on loopback (expected e.g. 127.0.0.1:5433; Postgres must never listen on a public address)")
    if not raw_port.isdigit():
        raise ValueError(f"{shown(raw_port)} is not a port number")
    return addr, port(int(raw_port))


def env_var_name(value) -> str:
    if isinstance(value, str) and _ENV_NAME.fullmatch(value):
        return value
    raise ValueError(f"{shown(value)} is not an environment variable name")


def argv(value) -> tuple[str, ...]:
    """A command as a list of words (never a shell string). Any text but NUL: Compose gets each word
    escaped (`$` included) and runs it without a shell, so it arrives as written."""
    if isinstance(value, list) and value and all(isinstance(v, (str, int, float)) for v in value):
        words = tuple(str(v) for v in value)
        if not words[0]:
            raise ValueError("the first word (the program) is empty")
        for i, word in enumerate(words):
            if "\0" in word or not is_utf8(word):
                raise ValueError(f"word {i} ({shown(word)}) holds a NUL or is not valid UTF-8 text, which no "
                                 "command can carry")
        return words
    raise ValueError("expected a command as a non-empty list of words, e.g. [uvicorn, app.main:app]")


# one Caddyfile token: a quote, brace, #, space or `{placeholder}` would start another token or block
_ACME_URL = re.compile(r"^https://[A-Za-z0-9.-]+(:\d{1,5})?(/[A-Za-z0-9._~%/+=@-]*)?$")
#: a CA root bundle is a few kB; anything near this is not one
PEM_MAX_BYTES = 64 * 1024


def acme_directory(value) -> str:
    """An ACME directory URL over HTTPS, e.g. https://acme-staging-v02.api.letsencrypt.org/directory.
    It lands in the Caddyfile's global options as one token, so its characters are few."""
    if isinstance(value, str) and _ACME_URL.fullmatch(value):
        return value
    raise ValueError(f"{shown(value)} is not an ACME directory URL (expected https://host[:port]/path, e.g. "
                     "https://acme-staging-v02.api.letsencrypt.org/directory; no query, quote, brace, # or space)")


def pem_certificates(text: str) -> str:
    """PEM text of one or more certificates (a CA root and maybe its intermediates), normalized to
    `\\n` line ends, or ValueError saying what is wrong. Only the certificate blocks are kept."""
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----\s*(.*?)\s*-----END CERTIFICATE-----", text, re.DOTALL)
    if not blocks:
        raise ValueError("holds no PEM certificate (expected -----BEGIN CERTIFICATE----- blocks)")
    if "PRIVATE KEY-----" in text:
        raise ValueError("holds a private key: give the CA's certificate only (it is shipped as a public file)")
    out = []
    for i, body in enumerate(blocks, 1):
        compact = re.sub(r"\s+", "", body)
        try:
            der = base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"certificate {i} is not valid base64") from None
        if not der.startswith(b"\x30"):
            raise ValueError(f"certificate {i} is not a DER certificate")
        lines = [compact[j:j + 64] for j in range(0, len(compact), 64)]
        out.append("-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n")
    return "".join(out)
