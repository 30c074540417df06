"""Find secret values in what the server shows (container logs, `docker inspect`, the process
list, the release's files) without any value travelling or being printed: this side sends the
sha256 of each form a secret may take (itself, URL-encoded, JSON-escaped, base64), the server
hashes every substring of those lengths in what it reads and answers with the indexes that
matched, and only the secret's NAME reaches a report.

Every substring, not every word: a value glued to other text ("key=abc...", a URL, a JSON
string) is found too. The cost is one sha256 per byte of text per distinct length (a few
lengths: generated secrets share theirs), so logs are read from their recent end (`tail`) and
identical lines are hashed once.

    hits = scan(remote, env, [logs(env.project, 3000), inspect(env.project)])
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

from opskit.layout import ONEOFF_LABEL, SERVICE_LABEL, project_filter

#: shorter forms are skipped: a few characters match ordinary text by chance (facts.release.secrets_in)
MIN_LENGTH = 8

# Runs on the server (`python3 -c`, stdin: the request as JSON). Prints one JSON line per match:
# {"where": label, "what": index}; then {"done": counts}. Never a byte of what it read.
SERVER_SCRIPT = r'''
import hashlib, json, os, subprocess, sys
req = json.load(sys.stdin)
targets = {bytes.fromhex(h): i for i, h in enumerate(req["hashes"])}
lengths = sorted({int(n) for n in req["lengths"]})
sha = hashlib.sha256
seen = set()
counts = {"sources": 0, "lines": 0, "bytes": 0}

def scan(where, blob):
    counts["sources"] += 1
    for line in set(blob.splitlines()):
        counts["lines"] += 1
        counts["bytes"] += len(line)
        view = memoryview(line)
        for n in lengths:
            for i in range(len(line) - n + 1):
                hit = targets.get(sha(view[i:i + n]).digest())
                if hit is not None and (where, hit) not in seen:
                    seen.add((where, hit))
                    print(json.dumps({"where": where, "what": hit}), flush=True)

def run(argv):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout

def containers(filt):
    ids = run(["docker", "ps", "-aq", *filt]).split()
    out = []
    for cid in ids:
        fmt = '{{index .Config.Labels "%s"}}|{{.Name}}|{{index .Config.Labels "%s"}}' % (
            req["service_label"], req["oneoff_label"])
        service, name, oneoff = run(["docker", "inspect", "--format", fmt, cid.decode()]).decode().strip().split("|")
        out.append((cid.decode(), service, name.lstrip("/"), oneoff.lower() == "true"))
    return out

for source in req["sources"]:
    kind = source["kind"]
    if kind in ("logs", "inspect"):
        for cid, service, name, oneoff in containers(source["filter"]):
            where = "%s|%s|%s" % (service, name, "oneoff" if oneoff else "")
            if kind == "logs":
                scan(where, run(["docker", "logs", "--tail", str(int(source["tail"])), cid]))
            else:
                scan(where, run(["docker", "inspect", cid]))
    elif kind == "ps":
        scan("process list", run(["ps", "-eww", "-o", "args"]))
    elif kind == "files":
        skip = set(source.get("skip", []))
        for root in source["roots"]:
            for folder, dirs, files in os.walk(root):
                dirs[:] = sorted(d for d in dirs if os.path.relpath(os.path.join(folder, d), root) not in skip)
                for f in sorted(files):
                    path = os.path.join(folder, f)
                    if os.path.relpath(path, root) in skip:
                        continue
                    try:
                        with open(path, "rb") as fh:
                            scan(path, fh.read())
                    except OSError as exc:
                        print(json.dumps({"unreadable": path, "why": exc.strerror}), flush=True)
print(json.dumps({"done": counts}), flush=True)
'''


@dataclass(frozen=True)
class Hit:
    where: str  # container "service|name|oneoff", "process list", or a file's path
    secret: str  # the secret's name, never its value
    form: str  # plain, url-encoded, json-escaped, base64, basic-auth

    @property
    def service(self) -> str:
        return self.where.split("|")[0]

    @property
    def container(self) -> str:
        parts = self.where.split("|")
        return parts[1] if len(parts) > 1 else self.where


@dataclass(frozen=True)
class Result:
    hits: tuple
    unreadable: tuple  # paths the scan could not read (a check on files fails on them)
    counts: dict  # sources, lines, bytes: what the scan read, so a check can tell it read something


def forms(env) -> list[tuple[str, str, bytes]]:
    """(secret name, form, bytes) for every form of every secret that a leak may show."""
    out = []
    for name, secret in sorted(env.secrets.items()):
        value = secret.reveal()
        variants = {
            "plain": value,
            "url-encoded": quote(value, safe=""),
            "url-encoded (path)": quote(value),
            "form-encoded": quote_plus(value),
            "json-escaped": json.dumps(value)[1:-1],
            "json-escaped (ascii)": json.dumps(value, ensure_ascii=False)[1:-1],
            "base64": base64.b64encode(value.encode()).decode(),
        }
        if name == "flower_password":
            variants["basic-auth"] = base64.b64encode(f"{env.flower_user}:{value}".encode()).decode()
        seen = set()
        for form, text in variants.items():
            data = text.encode()
            if len(data) >= MIN_LENGTH and data not in seen:
                seen.add(data)
                out.append((name, form, data))
    return out


def request(env, sources) -> tuple[bytes, list[tuple[str, str]]]:
    """The JSON the server script reads (hashes and lengths only), and index -> (name, form)."""
    table = forms(env)
    body = {
        "hashes": [hashlib.sha256(data).hexdigest() for _, _, data in table],
        "lengths": sorted({len(data) for _, _, data in table}),
        "sources": list(sources),
        "service_label": SERVICE_LABEL,
        "oneoff_label": ONEOFF_LABEL,
    }
    return json.dumps(body).encode(), [(name, form) for name, form, _ in table]


def parse(output: str, names: list[tuple[str, str]]) -> Result:
    hits, unreadable, counts = [], [], None
    for line in output.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if "what" in item:
            name, form = names[int(item["what"])]
            hits.append(Hit(item["where"], name, form))
        elif "unreadable" in item:
            unreadable.append(f"{item['unreadable']} ({item.get('why')})")
        elif "done" in item:
            counts = item["done"]
    if counts is None:
        raise RuntimeError("the secret scan did not finish on the server: " + output.strip()[-300:])
    return Result(tuple(hits), tuple(unreadable), counts)


def logs(project: str, tail: int = 3000) -> dict:
    """The recent log of every container of the project (one-off ones included)."""
    return {"kind": "logs", "filter": project_filter(project, oneoff=None), "tail": tail}


def inspect(project: str) -> dict:
    """`docker inspect` of every container of the project: its config (Env, Cmd, labels, mounts)
    as it is stored on disk."""
    return {"kind": "inspect", "filter": project_filter(project, oneoff=None)}


def processes() -> dict:
    """The argv of every process on the server (containers' processes included)."""
    return {"kind": "ps"}


def files(roots, skip=()) -> dict:
    """Every file under `roots`, but the paths (relative to their root) in `skip`."""
    return {"kind": "files", "roots": list(roots), "skip": list(skip)}


def argv() -> list[str]:
    return ["python3", "-c", SERVER_SCRIPT]


def scan(remote, env, sources, timeout: float = 300) -> Result:
    """Run the scan on the server over `remote` (`run(argv, stdin=, timeout=)`)."""
    body, names = request(env, sources)
    done = remote.run(argv(), stdin=body, timeout=timeout)
    stdout, stderr = (_text(b) for b in (done.stdout, done.stderr))
    if done.returncode != 0:
        # stderr of the script: a traceback names code lines, never what was scanned
        raise RuntimeError(f"the secret scan failed on the server (exit {done.returncode}): {stderr.strip()[-300:]}")
    return parse(stdout, names)


def _text(data) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")
