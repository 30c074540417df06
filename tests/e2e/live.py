"""The one way the e2e tier reaches the simulated VPS: `Live`, the `local` environment over one
pinned SSH connection, brought up and deployed when it is missing (never skipped for want of it).

Paths, the compose argv and the container filter come from `opskit.layout`, as the deploy's do.
"""

from __future__ import annotations

import copy
import json
import shlex
import shutil
import time

from opskit import ROOT, deploy, inventory, render
from opskit import facts
from opskit.facts import docker as docker_facts
from opskit.layout import SERVICE_LABEL, Layout, compose_argv, project_filter
from opskit.runner import Runner
from opskit.sim import kit, vps
from opskit.sim.secrets import load as load_with_secrets
from opskit.sources import source_revision
from opskit.ssh import Completed, Connection
from tests.smoke.remote import Remote
from tests.smoke.web import SseResult, Web, sse_check

CADDY_ROOT_CERT = "/data/caddy/pki/authorities/local/root.crt"


class Live:
    """The simulated VPS of `env` and what the tests do on it, over one connection."""

    def __init__(self, inventory_path=None):
        self.inventory_path = inventory_path
        self.outcome = None  # the last deploy's, when this session made one
        self.reload()

    def reload(self) -> "Live":
        """Read the inventory and its secrets again, and connect anew (after something outside this
        object, such as README's deploy command, made a new VPS and new secrets)."""
        if getattr(self, "connection", None) is not None:
            self.connection.close()
        self.env = local_env(self.inventory_path)
        self.layout = Layout(self.env.remote_dir)
        self.connection = Connection(self.env.ssh, timeout=10)
        self.remote = Remote(self.connection)
        self._web: tuple | None = None  # (caddy data volume's creation time, Web)
        return self

    # -- bringing it up

    def ensure(self) -> "Live":
        """A VPS with the current sources deployed: built, started and deployed as needed (a
        no-op deploy when all is there)."""
        kit.build_kit()
        vps.up_provisioned(self.env)
        self.deploy(self.env)
        return self

    def deploy(self, env, out=None, **options) -> deploy.Outcome:
        """`invoke deploy` of `env` (the local one, or an edited copy) over this connection; its
        progress to `out` (stderr)."""
        self.remote.client()  # (re)connects when the link is down, host key checked
        self.outcome = deploy.deploy(env, render.render(env), self.connection, Runner(self.connection, out=out),
                                     deploy.Options(**options), source_revision(ROOT))
        return self.outcome

    def close(self) -> None:
        self.connection.close()

    # -- commands

    def run(self, argv, stdin: bytes | None = None, timeout: float = 120, check: bool = True) -> Completed:
        """Run argv on the VPS, reading its output to EOF; `check` fails the test on a non-zero exit."""
        done = self.remote.run(argv, stdin=stdin, timeout=timeout)
        if check and done.returncode != 0:
            command = argv if isinstance(argv, str) else shlex.join(argv)
            raise AssertionError(f"on the VPS, `{command[:300]}` exited {done.returncode}: {done.output[-1500:]}")
        return done

    def out(self, argv, **kw) -> str:
        return self.run(argv, **kw).stdout.decode(errors="replace")

    def sh(self, script: str, **kw) -> Completed:
        return self.run(["sh", "-c", script], **kw)

    def psql(self, sql: str) -> str:
        """`sql` run by the admin role in the app's database (unaligned, `|` between columns)."""
        pg = self.env.postgres
        return self.out(["docker", "exec", self.container("postgres"), "psql", "-X", "-At", "-U", pg.admin_role,
                         "-d", pg.database, "-c", sql]).strip()

    # -- the current release

    @property
    def path(self) -> str:
        """The current release's folder (the link resolved)."""
        return self.out(["readlink", "-f", self.layout.current]).strip()

    @property
    def manifest(self) -> dict:
        return json.loads(self.out(["cat", f"{self.layout.current}/manifest.json"]))

    def compose(self, *args: str, files=()) -> list[str]:
        """`docker compose` on the current release's file (as the deploy ran it), plus `files`."""
        return compose_argv(self.path, *(a for f in files for a in ("-f", f)), *args)

    def containers(self, service: str) -> list[str]:
        """The full ids of the service's containers, stopped ones too, newest first."""
        return self.out(["docker", "ps", "-aq", "--no-trunc", *project_filter(self.env.project, service)]).split()

    def container(self, service: str) -> str:
        ids = self.containers(service)
        assert ids, f"no container for service {service} on the VPS"
        return ids[0]

    def services(self) -> dict[str, tuple[str, str]]:
        """{service: (state, health)} of the project's containers (one-off ones left out), read
        through the same fact as `invoke status` and the smoke suite."""
        found = facts.read(self.remote, docker_facts.containers(self.env.project))
        return {c.service: (c.status, c.health or "none") for c in found if not c.oneoff}

    def wait_healthy(self, timeout: float = 120) -> None:
        """Until every container of the project is running and healthy (after a state is restored)."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.services()
            bad = {s: st for s, st in states.items() if st != ("running", "healthy")}
            if states and not bad:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the stack did not come back healthy within {timeout:.0f}s: {bad}")
            time.sleep(1)

    def snapshot(self) -> dict:
        """What a failed deploy must leave alone: current release, lock, releases, each service's container."""
        lay = self.layout
        out = self.out(["sh", "-c", f"readlink {shlex.quote(lay.current)}; echo; cat {shlex.quote(lay.lock_info)} "
                                    f"2>/dev/null; echo; ls {shlex.quote(lay.releases)}"])
        current, lock, releases = (out.split("\n", 2) + ["", ""])[:3]
        ids = self.out(["docker", "ps", *project_filter(self.env.project),
                        "--format", f'{{{{.ID}}}} {{{{.Label "{SERVICE_LABEL}"}}}}'])
        containers = {svc: cid for cid, svc in (line.split() for line in ids.splitlines())}
        return {"current": current.strip().rsplit("/", 1)[-1], "lock": lock.strip(),
                "releases": sorted(releases.split()), "containers": containers}

    # -- HTTPS through Caddy

    def web(self) -> Web:
        """HTTPS to the VPS's published 443 as a browser for each domain would reach it, verified
        against Caddy's local CA, read again whenever Caddy's data volume is new (a new CA)."""
        created = self.out(["docker", "volume", "inspect", "--format", "{{.CreatedAt}}",
                            f"{self.env.project}_caddy_data"])
        if self._web is None or self._web[0] != created:
            pem = self.out(self.compose("exec", "-T", "caddy", "cat", CADDY_ROOT_CERT))
            self._web = (created, Web("127.0.0.1", self.env.vps.http_port, self.env.vps.https_port, root_pem=pem))
        return self._web[1]

    def https(self, domain: str, path: str, headers=None):
        """One GET through Caddy: (status, lower-case headers, body)."""
        response = self.web().request(domain, path, headers)
        return response.status, response.headers, response.body

    def keepalives(self, path: str, headers: dict) -> SseResult:
        """An SSE stream on the API domain, read until two `: keep-alive` comments came (or it failed)."""
        return sse_check(self.web(), self.env.domains.api, path, headers, self.env.sse.heartbeat.seconds, bound=0.1,
                         trigger=lambda: None, run_id="no event expected")


def local_env(path=None):
    """The `local` environment, its generated secrets made first (as `invoke deploy` does)."""
    return load_with_secrets("local", path=path)


def inventory_copy(folder, edit=None):
    """The repository's inventory written to `folder` with every relative path made absolute (so it
    reads the same from there), after `edit(raw)`; its path, for OPSKIT_INVENTORY."""
    import yaml

    raw = yaml.safe_load((ROOT / "inventory.yaml").read_text())
    for build in raw["defaults"]["builds"].values():
        build["context"] = str(ROOT / build["context"])
    local = raw["environments"]["local"]
    local["ssh"] = {k: (str(ROOT / v) if k in ("key_file", "known_hosts") else v) for k, v in local["ssh"].items()}
    local["secrets_file"] = str(ROOT / local["secrets_file"])
    if edit:
        edit(raw)
    path = folder / "inventory.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def edited(edit) -> inventory.Environment:
    """The `local` environment of the repository's inventory after `edit(raw)` (its secrets as
    `invoke deploy` made them)."""
    import yaml

    raw = copy.deepcopy(yaml.safe_load((ROOT / "inventory.yaml").read_text()))
    edit(raw)
    return inventory.parse(raw, "local", base=ROOT)


def copy_api(folder):
    """A copy of the API's build context in `folder`/api."""
    api = folder / "api"
    shutil.copytree(ROOT / "tests/fixtures/app/api", api, ignore=shutil.ignore_patterns("__pycache__"))
    return api


def code_change(folder, edit=None) -> inventory.Environment:
    """`local` with the API built from a copy whose main.py has one comment more, after `edit(raw)`."""
    api = copy_api(folder)
    # a new text each run: an image of the same inputs, built by an earlier run, would not be built again
    (api / "app/main.py").write_text((api / "app/main.py").read_text() + f"\n# e2e code-only change {time.time_ns()}\n")

    def change(raw):
        raw["defaults"]["builds"]["api"].update(context=str(api))
        if edit:
            edit(raw)
    return edited(change)
