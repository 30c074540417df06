"""The host facts' parsers: versions, disk and inodes, time sync, TCP listeners, sshd_config."""

from __future__ import annotations

from opskit.facts import host, sshd
from opskit.facts.base import Output

PROC_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:1539 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
   3: 0100007F:0016 0100007F:A000 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
"""
PROC_TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue
   0: 00000000000000000000000000000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000
   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000
   2: 0000000000000000FFFF00000100007F:18EB 00000000000000000000000000000000:0000 0A 00000000:00000000
   3: 00000000000000000000000000000000:18EB 00000000000000000000000000000000:0000 0A 00000000:00000000
"""


def test_tcp_listeners_from_proc():
    found = host.tcp_listeners(PROC_TCP, PROC_TCP6)
    assert [str(x) for x in found] == ["0.0.0.0:22", "0.0.0.0:80", "127.0.0.1:5433", "[::]:443", "[::]:6379",
                                       "[::1]:8080", "[::ffff:7f00:1]:6379"]
    public = {str(x) for x in found if x.is_public}
    assert public == {"0.0.0.0:22", "0.0.0.0:80", "[::]:443", "[::]:6379"}  # mapped loopback is loopback


def test_tcp_listeners_ignore_established_connections():
    assert all(x.port != 22 or x.address != "127.0.0.1" for x in host.tcp_listeners(PROC_TCP))


def test_the_listeners_fact_reads_both_tables():
    text = f"=====opskit:tcp=====\n{PROC_TCP}\n=====opskit:tcp6=====\n{PROC_TCP6}"
    assert len(host.listeners().parse(Output(text))) == 7


def test_df_lines():
    section = ("#####path:/srv/jobagent\n/dev/vda 263174212 24000000 83886080 23% /\n"
               "#####path:/var/lib/docker\noverlay 0 0 0 - /var/lib/docker\n")
    spaces = host.df(section)
    assert spaces["/srv/jobagent"].available == 83886080
    assert spaces["/var/lib/docker"].free_percent is None


def test_space_names_each_place_and_the_release_folder_free_mb():
    text = ("=====opskit:folder=====\n/srv\n=====opskit:docker_root=====\n/var/lib/docker\n"
            "=====opskit:disk=====\n#####path:/srv\n/dev/vda 1000 0 4096000 1% /srv\n#####path:/\n/dev/vda 1000 0 20 1% /\n"
            "=====opskit:inodes=====\n#####path:/srv\n/dev/vda 100 10 90 10% /srv\n")
    room = host.parse_space(text)
    assert room.free_mb == 4000 and room.disk["root"].available == 20 and room.disk["docker_root"] is None
    assert room.inodes["remote_dir"].free_percent == 90.0 and room.docker_root == "/var/lib/docker"
    assert host.parse_space("").free_mb is None


def test_versions_keep_what_docker_said_and_the_version_alone():
    v = host.parse_versions("=====opskit:docker=====\n26.1.5\n=====opskit:compose=====\nv2.26.1\n")
    assert (v.docker, v.compose, v.compose_text) == ("26.1.5", "v2.26.1", "v2.26.1")
    down = host.parse_versions("=====opskit:docker=====\nCannot connect to the Docker daemon\n=====opskit:compose=====\n")
    assert down.docker is None and down.compose is None and "Cannot connect" in down.docker_text


def test_time_sync_and_clock():
    sync = host.parse_timesync("=====opskit:timedatectl=====\nyes\n=====opskit:chrony=====\nunavailable\n"
                               "=====opskit:adjtimex=====\n0\n")
    assert (sync.timedatectl, sync.chrony, sync.adjtimex) == ("yes", "unavailable", "0")
    assert host.parse_clock("1700000000.25\n") == 1700000000.25 and host.parse_clock("date: bad") is None


SSHD_MAIN = """\
# Debian's default
Include /etc/ssh/sshd_config.d/*.conf
Port 22
#PasswordAuthentication yes
KbdInteractiveAuthentication no
UsePAM yes
PermitRootLogin yes
Match User backup
    PasswordAuthentication yes
"""


def test_sshd_first_value_wins_and_includes_come_first():
    files = {"/etc/ssh/sshd_config": SSHD_MAIN,
             "/etc/ssh/sshd_config.d/10-opskit.conf": "PasswordAuthentication no\nPermitRootLogin prohibit-password\n"}
    cfg = sshd.sshd_config(files)
    assert cfg.get("PasswordAuthentication") == "no"
    assert cfg.get("PermitRootLogin") == "prohibit-password"
    assert cfg.get("KbdInteractiveAuthentication") == "no"
    assert cfg.ports == ("22",)
    assert ("Match User backup", "passwordauthentication", "yes") in cfg.match_overrides


def test_sshd_defaults_allow_passwords():
    cfg = sshd.sshd_config({"/etc/ssh/sshd_config": "Port 2200\nPort 22\n"})
    assert cfg.get("passwordauthentication") == "yes" and cfg.get("kbdinteractiveauthentication") == "yes"
    assert cfg.get("permitrootlogin") == "prohibit-password"
    assert cfg.ports == ("2200", "22")


def test_sshd_old_keyword_alias_and_equals_sign():
    cfg = sshd.sshd_config({"/etc/ssh/sshd_config": "ChallengeResponseAuthentication=no\nPasswordAuthentication = No\n"})
    assert cfg.get("kbdinteractiveauthentication") == "no" and cfg.get("passwordauthentication") == "no"


def test_sshd_files_section_marks_unreadable_files():
    section = "#####file:/etc/ssh/sshd_config\nPort 22\n#####file:/etc/ssh/sshd_config.d/x.conf\n#####unreadable"
    files = sshd.sshd_files(section)
    assert files == {"/etc/ssh/sshd_config": "Port 22", "/etc/ssh/sshd_config.d/x.conf": None}
    cfg = sshd.sshd_config({**files, "/etc/ssh/sshd_config": "Include sshd_config.d/*.conf\n"})
    assert cfg.unreadable == ("/etc/ssh/sshd_config.d/x.conf",)
