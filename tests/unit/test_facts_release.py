"""The release facts' parsers: the releases on disk and the lock, the current release's files."""

from __future__ import annotations

import json

from opskit.facts import release
from opskit.facts.release import Lock
from opskit.layout import Layout
from opskit.secrets import Secret


def test_releases_on_disk_leave_unfinished_uploads_out():
    text = ("=====opskit:current=====\nreleases/abc\n=====opskit:releases=====\nold\nabc\nnew.partial\n"
            '=====opskit:lock=====\n{"holder": "me@laptop", "since": 100,\n "release": "abc"}\n')
    disk = release.parse_on_disk(text)
    assert (disk.current, disk.releases) == ("abc", ("old", "abc"))
    assert disk.lock == Lock("me@laptop", 100.0, "abc")
    empty = release.parse_on_disk("=====opskit:current=====\n=====opskit:releases=====\n=====opskit:lock=====\n")
    assert (empty.current, empty.releases, empty.lock) == (None, (), None)


def test_an_unreadable_lock_is_still_a_lock():
    assert release.parse_lock("{not json") == Lock("unreadable lock file", 0.0, "?")
    assert release.parse_lock("[1, 2]") == Lock("unreadable lock file", 0.0, "?")
    assert release.parse_lock("  \n") is None


def test_the_release_facts_are_given_the_layout_paths():
    layout = Layout("/srv/app")
    assert release.on_disk(layout).argv[-4:] == (layout.current, layout.releases, layout.lock_info, layout.caddy)
    assert release.current(layout).argv[-5:] == (layout.current, layout.releases, layout.caddy, layout.lock_info,
                                                  layout.secrets)


def test_the_current_release_in_detail():
    manifest = {"release": "abc", "files": {}}
    text = ("=====opskit:current=====\nreleases/abc\n=====opskit:real=====\n/srv/app/releases/abc\n"
            f"=====opskit:manifest=====\n{json.dumps(manifest)}\n"
            "=====opskit:stat=====\n700|deploy|deploy|directory|/srv/app/releases/abc/env\n"
            f"=====opskit:live_caddyfile_sha256=====\n{'c' * 64}  /srv/app/caddy/Caddyfile\n"
            "=====opskit:lock=====\n")
    facts = release.parse_current(text)
    assert (facts.id, facts.link, facts.manifest, facts.lock) == ("abc", "releases/abc", manifest, "")
    assert facts.live_caddyfile_sha256 == "c" * 64 and facts.stats["/srv/app/releases/abc/env"].octal == "0700"
    broken = release.parse_current("=====opskit:manifest=====\ncat: manifest.json: No such file or directory\n")
    assert broken.manifest is None and "No such file" in broken.manifest_error and broken.id == ""


def test_stats_and_hashes():
    stat = "600|deploy|deploy|regular file|/srv/r/env/api.env\nstat: cannot statx '/x': No such file\n"
    [(path, st)] = release.stats(stat).items()
    assert (path, st.mode, st.user, st.octal) == ("/srv/r/env/api.env", 0o600, "deploy", "0600")
    sums = f"{'a' * 64}  ./env/api.env\n{'b' * 64}  /srv/jobagent/caddy/Caddyfile\n"
    assert release.sha256_lines(sums) == {"env/api.env": "a" * 64, "/srv/jobagent/caddy/Caddyfile": "b" * 64}


def test_secrets_in_finds_plain_and_url_encoded_values():
    secrets = {"a": Secret("p@ss/word+long"), "b": Secret("short"), "c": Secret("never-there-value")}
    assert release.secrets_in("url: redis://:p%40ss%2Fword%2Blong@redis", secrets) == ["a"]
    assert release.secrets_in("short short", secrets) == []  # too short to tell from ordinary text
    assert release.secrets_in("x p@ss/word+long", secrets) == ["a"]


def test_the_files_caddy_was_given_are_read_by_name_and_digest():
    text = ("=====opskit:current=====\nreleases/r1\n=====opskit:releases=====\nr1\n=====opskit:lock=====\n"
            "=====opskit:lock_renewed=====\n=====opskit:caddy_files=====\n" + "a" * 64 + "  ./Caddyfile\n"
            + "b" * 64 + "  ./acme_ca_root.pem\n")
    assert release.parse_on_disk(text).caddy_files == {"Caddyfile": "a" * 64, "acme_ca_root.pem": "b" * 64}
