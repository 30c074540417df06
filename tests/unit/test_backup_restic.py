"""restic's argv and its container: the repository by URL, the password only as a file, and an
ssh that pins the target's host key. No secret value is ever part of an argv."""

from __future__ import annotations

import shlex

import pytest

from opskit.backup import restic
from opskit.backup.restic import RepositoryError

SFTP = "sftp:u123456@u123456.your-storagebox.de:/backups/jobagent"


def access(url: str = SFTP, **kwargs) -> restic.Access:
    files = {"ssh_key_file": "/srv/app/secrets/restic_ssh_key", "known_hosts_file": "/srv/app/secrets/restic_known_hosts"}
    if url.startswith("s3:"):
        files = {"s3_credentials_file": "/srv/app/secrets/restic_s3"}
    files["password_file"] = "/srv/app/secrets/restic_password"
    return restic.Access(restic.repository(url), "jobagent", **{**files, **kwargs})


@pytest.mark.parametrize("url, kind, user, host, port, path", [
    (SFTP, "sftp", "u123456", "u123456.your-storagebox.de", 22, "/backups/jobagent"),
    ("sftp://u1@box.example:23//restic", "sftp", "u1", "box.example", 23, "/restic"),
    ("sftp:backup@storage:relative/repo", "sftp", "backup", "storage", 22, "relative/repo"),
    ("s3:s3.eu-central-1.amazonaws.com/bucket/jobagent", "s3", None, None, 22, ""),
    ("s3:https://fsn1.your-objectstorage.com/bucket", "s3", None, None, 22, ""),
])
def test_a_repository_is_read_from_its_url(url, kind, user, host, port, path):
    repo = restic.repository(url)
    assert (repo.kind, repo.user, repo.host, repo.port, repo.path, repo.url) == (kind, user, host, port, path, url)


@pytest.mark.parametrize("url", ["", "/local/path", "rest:http://x/", "sftp:host:/p", "sftp:u@h:/",
                                 "sftp:u@h:/a b", "sftp://u@h:99999//p", "sftp:u@h:/p'q", "s3:", "b2:bucket:path"])
def test_a_repository_restic_would_not_take_our_way_is_refused_by_key(url):
    with pytest.raises(RepositoryError, match="backup.repository: "):
        restic.repository(url)


def test_sftp_goes_through_an_ssh_that_pins_the_host_key_and_uses_its_own_key_only():
    argv = restic.restic_argv(access(), "snapshots")
    assert argv[:3] == ["restic", "--repo", SFTP]
    option = argv[argv.index("--option") + 1]
    assert option.startswith("sftp.command=")
    ssh = shlex.split(option[len("sftp.command="):])
    pairs = {ssh[i + 1] for i, part in enumerate(ssh) if part == "-o"}
    assert {"StrictHostKeyChecking=yes", "IdentitiesOnly=yes", "BatchMode=yes", "PasswordAuthentication=no",
            f"UserKnownHostsFile={restic.KNOWN_HOSTS_PATH}", "GlobalKnownHostsFile=/dev/null"} <= pairs
    assert ssh[ssh.index("-i") + 1] == restic.SSH_KEY_PATH
    assert ssh[ssh.index("-F") + 1] == "none"  # no ~/.ssh/config can loosen it
    assert ssh[-5:] == ["-l", "u123456", "u123456.your-storagebox.de", "-s", "sftp"]
    assert ssh[ssh.index("-p") + 1] == "22"


def test_a_storage_box_port_reaches_ssh():
    ssh = shlex.split(restic.restic_argv(access("sftp://u1@box.example:23//restic"))[4][len("sftp.command="):])
    assert ssh[ssh.index("-p") + 1] == "23"


def test_the_password_reaches_restic_as_a_file_path_only():
    argv = restic.run_argv(access(), "snapshots")
    env = [argv[i + 1] for i, part in enumerate(argv) if part == "--env"]
    assert env == [f"RESTIC_PASSWORD_FILE={restic.PASSWORD_PATH}"]
    assert f"type=bind,source=/srv/app/secrets/restic_password,target={restic.PASSWORD_PATH},readonly" in argv
    assert not any(part.startswith(("--password", "-p=")) for part in argv)


def test_every_credential_is_mounted_read_only_and_must_exist():
    argv = restic.run_argv(access(), "snapshots")
    mounts = [argv[i + 1] for i, part in enumerate(argv) if part == "--mount"]
    assert len(mounts) == 3 and all(m.startswith("type=bind,") and m.endswith(",readonly") for m in mounts)
    # --mount, never -v: a missing file fails instead of Docker making an empty folder in its place
    assert "-v" not in argv and argv.count("--volume") == 1
    assert argv[argv.index("--volume") + 1] == f"opskit-restic-cache:{restic.CACHE_PATH}"  # a named volume only


def test_s3_reads_its_keys_from_a_mounted_credentials_file():
    argv = restic.run_argv(access("s3:s3.example.com/bucket/p"), "snapshots")
    assert f"AWS_SHARED_CREDENTIALS_FILE={restic.S3_CREDENTIALS_PATH}" in argv
    assert not any("sftp.command" in part for part in argv)
    assert not any(part.startswith(("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")) for part in argv)


def test_the_container_runs_on_the_network_asked_for_with_a_cache_or_none():
    argv = restic.run_argv(access(network="opskit-bk-net", cache_volume=None), "snapshots")
    assert argv[argv.index("--network") + 1] == "opskit-bk-net" and "--no-cache" in argv and "--volume" not in argv
    cached = restic.run_argv(access(), "snapshots")
    assert "--network" not in cached and f"opskit-restic-cache:{restic.CACHE_PATH}" in cached
    assert cached[cached.index("--cache-dir") + 1] == restic.CACHE_PATH
    assert cached[:3] == ["docker", "run", "--rm"] and cached[cached.index(restic.IMAGE) + 1] == "restic"
    # an image's own entrypoint (restic/restic has one) would run before our command: none
    assert cached[cached.index("--entrypoint") + 1] == ""


@pytest.mark.parametrize("changes, message", [
    ({"ssh_key_file": None}, "needs an ssh key file and a pinned known_hosts"),
    ({"known_hosts_file": None}, "needs an ssh key file and a pinned known_hosts"),
])
def test_sftp_without_a_key_or_a_pinned_host_key_is_refused(changes, message):
    with pytest.raises(RepositoryError, match=message):
        access(**changes)


def test_a_relative_or_comma_path_is_never_mounted():
    with pytest.raises(RepositoryError):
        restic.run_argv(access(password_file="secrets/pw"), "snapshots")
    with pytest.raises(RepositoryError):
        restic.run_argv(access(password_file="/srv/a,readonly=false"), "snapshots")


def test_forget_applies_restics_own_policy_to_this_stack_only():
    assert restic.forget_args(access(), 7, 4) == ["forget", "--host", "jobagent", "--group-by", "host,paths",
                                                  "--keep-daily", "7", "--keep-weekly", "4", "--prune"]
    assert restic.forget_args(access(), 7, 4, keep_last=10)[5:9] == ["--keep-last", "10", "--keep-daily", "7"]
    with pytest.raises(ValueError):
        restic.forget_args(access(), 0, 4)  # keep daily 0 would forget every snapshot


def test_snapshots_are_read_as_json_for_this_stacks_set_path():
    assert restic.snapshots_args(access()) == ["snapshots", "--json", "--host", "jobagent", "--path", "/backup"]
