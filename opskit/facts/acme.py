"""Caddy's ACME outcome per domain, read from its JSON log (`docker logs` of the caddy container).

A certificate that Caddy cannot get shows nowhere but in that log: the site keeps serving no
certificate (a TLS alert), and a browser says only that the connection is not private. Caddy logs
each attempt under the logger `tls.obtain` (`tls.renew` for a renewal) with the domain as
`identifier`: `could not get certificate from issuer` with the CA's answer as `error` (for a
challenge that failed, the ACME problem with the address it tried), then `will retry`; a success
is `certificate obtained successfully` (`certificate renewed successfully`). Pure: text in, dict out.
"""

from __future__ import annotations

import json

from ..layout import project_filter
from .base import Fact, read, script

# Caddy 2.11 (certmagic) messages; an unknown message changes nothing
FAILED = ("could not get certificate from issuer",)
SUCCEEDED = ("certificate obtained successfully", "certificate renewed successfully")
LOGGERS = ("tls.obtain", "tls.renew")


def log_entries(text: str):
    """Every JSON object in `text`, in order; other text (a timestamp prefix, a line that is not
    JSON, two entries run together where stdout and stderr meet) is passed over."""
    decoder = json.JSONDecoder()
    for line in text.splitlines():
        at = line.find("{")
        while at != -1:
            try:
                entry, end = decoder.raw_decode(line, at)
            except ValueError:
                at = line.find("{", at + 1)
                continue
            if isinstance(entry, dict):
                yield entry
            at = line.find("{", end)


def certificate_failures(text: str) -> dict[str, str]:
    """{domain: Caddy's reason} for each domain whose latest ACME attempt in the log failed; a
    domain that got its certificate after a failure is not listed."""
    failures: dict[str, str] = {}
    for entry in log_entries(text):
        if entry.get("logger") not in LOGGERS:
            continue
        domain, message = entry.get("identifier"), entry.get("msg")
        if not isinstance(domain, str):
            continue
        if message in FAILED:
            failures[domain] = str(entry.get("error") or message)
        elif message in SUCCEEDED:
            failures.pop(domain, None)
    return dict(sorted(failures.items()))


def certificates_obtained(text: str) -> list[str]:
    """The domains that the log shows getting (or renewing) a certificate, sorted."""
    return sorted({entry["identifier"] for entry in log_entries(text)
                   if entry.get("logger") in LOGGERS and entry.get("msg") in SUCCEEDED
                   and isinstance(entry.get("identifier"), str)})


def failures(project: str) -> Fact:
    """The fact: {domain: Caddy's reason} from the caddy container's log on the server."""
    return script("acme.sh", *project_filter(project, "caddy"), parse=certificate_failures, name="acme")


def log(project: str) -> Fact:
    """The fact: Caddy's certificate log lines themselves (the parsers above read them)."""
    return script("acme.sh", *project_filter(project, "caddy"), parse=lambda text: text, name="acme")


def gather(connection, project: str, more: str = "") -> dict[str, str]:
    return read(connection, failures(project), what="Caddy's ACME log lines", more=more, timeout=60)
