"""The firewall item: its rendered ruleset, its plan (pure, from parsed facts), and the fact's
parser on what nft 1.0.6 (Debian 12) really prints."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from opskit.facts import firewall as firewall_facts
from opskit.facts.base import Output
from opskit.facts.files import FileState
from opskit.inventory.provisioning import Opening
from opskit.provision import distros, firewall, guard, item
from opskit.steps import LOCAL, SERVER

# `nft -j list ruleset` on a box with Docker 26.1 and the default ruleset loaded, after a few SSH
# connections (the sets hold their sources), cut to Docker's forward chain and our table.
LOADED = """\
{"table":{"family":"ip","name":"filter","handle":2}}
{"chain":{"family":"ip","table":"filter","name":"FORWARD","handle":8,"type":"filter","hook":"forward","prio":0,"policy":"accept"}}
{"rule":{"family":"ip","table":"filter","chain":"FORWARD","handle":18,"expr":[{"counter":{"packets":25,"bytes":1364}},{"jump":{"target":"DOCKER-USER"}}]}}
{"table":{"family":"inet","name":"opskit","handle":10}}
{"set":{"family":"inet","name":"ssh_v4","table":"opskit","type":"ipv4_addr","handle":3,"size":65535,"flags":["timeout"],"timeout":60,"elem":[{"elem":{"val":"10.231.7.3","expires":46,"limit":{"rate":30,"burst":30,"per":"minute","inv":true}}}]}}
{"set":{"family":"inet","name":"ssh_v6","table":"opskit","type":"ipv6_addr","handle":4,"size":65535,"flags":["timeout"],"timeout":60,"elem":[{"elem":{"val":"fd7e:f1a5:1::","expires":48,"limit":{"rate":30,"burst":30,"per":"minute","inv":true}}}]}}
{"chain":{"family":"inet","table":"opskit","name":"input","handle":1,"type":"filter","hook":"input","prio":0,"policy":"drop"}}
{"chain":{"family":"inet","table":"opskit","name":"forward","handle":2,"type":"filter","hook":"forward","prio":0,"policy":"drop"}}
{"rule":{"family":"inet","table":"opskit","chain":"input","handle":5,"expr":[{"match":{"op":"in","left":{"ct":{"key":"state"}},"right":["established","related"]}},{"accept":null}]}}
{"rule":{"family":"inet","table":"opskit","chain":"input","handle":6,"expr":[{"match":{"op":"in","left":{"ct":{"key":"state"}},"right":"invalid"}},{"drop":null}]}}
{"rule":{"family":"inet","table":"opskit","chain":"input","handle":7,"expr":[{"match":{"op":"==","left":{"meta":{"key":"iif"}},"right":"lo"}},{"accept":null}]}}
{"rule":{"family":"inet","table":"opskit","chain":"input","handle":9,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"icmp","field":"type"}},"right":{"set":["destination-unreachable","echo-request","time-exceeded","parameter-problem"]}}},{"accept":null}]}}
{"rule":{"family":"inet","table":"opskit","chain":"input","handle":11,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"icmpv6","field":"type"}},"right":{"set":["destination-unreachable","packet-too-big","time-exceeded","parameter-problem","echo-request","mld-listener-query","nd-router-solicit","nd-router-advert","nd-neighbor-solicit","nd-neighbor-advert"]}}},{"accept":null}]}}
{"rule":{"family":"inet","table":"opskit","chain":"input","handle":12,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":22}},{"match":{"op":"in","left":{"ct":{"key":"state"}},"right":"new"}},{"set":{"op":"update","elem":{"payload":{"protocol":"ip","field":"saddr"}},"set":"@ssh_v4","stmt":[{"limit":{"rate":30,"burst":30,"per":"minute","inv":true}}]}},{"drop":null}]}}
{"rule":{"family":"inet","table":"opskit","chain":"input","handle":13,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":22}},{"match":{"op":"in","left":{"ct":{"key":"state"}},"right":"new"}},{"set":{"op":"update","elem":{"&":[{"payload":{"protocol":"ip6","field":"saddr"}},"ffff:ffff:ffff:ffff::"]},"set":"@ssh_v6","stmt":[{"limit":{"rate":30,"burst":30,"per":"minute","inv":true}}]}},{"drop":null}]}}
{"rule":{"family":"inet","table":"opskit","chain":"input","handle":14,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":22}},{"accept":null}]}}
{"rule":{"family":"inet","table":"opskit","chain":"input","handle":15,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":80}},{"accept":null}]}}
{"rule":{"family":"inet","table":"opskit","chain":"input","handle":16,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":443}},{"accept":null}]}}
{"rule":{"family":"inet","table":"opskit","chain":"input","handle":17,"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"udp","field":"dport"}},"right":443}},{"accept":null}]}}
{"rule":{"family":"inet","table":"opskit","chain":"forward","handle":18,"expr":[{"match":{"op":"in","left":{"ct":{"key":"state"}},"right":["established","related"]}},{"accept":null}]}}
{"rule":{"family":"inet","table":"opskit","chain":"forward","handle":19,"expr":[{"match":{"op":"==","left":{"meta":{"key":"iifname"}},"right":"docker0"}},{"accept":null}]}}
{"rule":{"family":"inet","table":"opskit","chain":"forward","handle":20,"expr":[{"match":{"op":"==","left":{"meta":{"key":"iifname"}},"right":"br-*"}},{"accept":null}]}}
{"rule":{"family":"inet","table":"opskit","chain":"forward","handle":21,"expr":[{"match":{"op":"in","left":{"ct":{"key":"status"}},"right":"dnat"}},{"match":{"op":"==","left":{"meta":{"key":"l4proto"}},"right":"tcp"}},{"match":{"op":"==","left":{"ct":{"key":"proto-dst","dir":"original"}},"right":80}},{"accept":null}]}}
{"rule":{"family":"inet","table":"opskit","chain":"forward","handle":22,"expr":[{"match":{"op":"in","left":{"ct":{"key":"status"}},"right":"dnat"}},{"match":{"op":"==","left":{"meta":{"key":"l4proto"}},"right":"tcp"}},{"match":{"op":"==","left":{"ct":{"key":"proto-dst","dir":"original"}},"right":443}},{"accept":null}]}}
{"rule":{"family":"inet","table":"opskit","chain":"forward","handle":23,"expr":[{"match":{"op":"in","left":{"ct":{"key":"status"}},"right":"dnat"}},{"match":{"op":"==","left":{"meta":{"key":"l4proto"}},"right":"udp"}},{"match":{"op":"==","left":{"ct":{"key":"proto-dst","dir":"original"}},"right":443}},{"accept":null}]}}
"""
META = '{"metainfo":{"version":"1.0.6","release_name":"Lester Gooch #5","json_schema_version":1}}'


def nft_json(lines: list[str]) -> str:
    return json.dumps({"nftables": [json.loads(META)] + [json.loads(x) for x in lines]})


def ours_only(lines: list[str]) -> list[str]:
    """What the ruleset file gives loaded alone (no Docker tables, no handles, no set elements)."""
    out = []
    for line in lines:
        obj = json.loads(line)
        body = next(iter(obj.values()))
        if body.get("family") != "inet":
            continue
        body.pop("elem", None)
        body["handle"] = 100 + len(out)  # another load, other handles
        out.append(json.dumps(obj))
    return out


def fact_output(loaded: list[str] | None = None, unit: str = "enabled=enabled\nactive=active",
                file: list[str] | None = None, raw_loaded: str | None = None, raw_file: str | None = None) -> str:
    loaded_text = raw_loaded if raw_loaded is not None else nft_json(loaded if loaded is not None else
                                                                      LOADED.splitlines())
    file_lines = ours_only(LOADED.splitlines()) if file is None else file
    file_text = raw_file if raw_file is not None else nft_json(file_lines)
    return (f"\n=====opskit:loaded=====\n{loaded_text}\n=====opskit:unit=====\n{unit}\n"
            f"=====opskit:file=====\n{file_text}\n")


def parsed(**kw) -> firewall_facts.Firewall:
    return firewall_facts.parse_firewall(fact_output(**kw))


ABSENT = firewall_facts.parse_firewall("\n=====opskit:loaded=====\n!absent\n"
                                       "=====opskit:unit=====\nenabled=\nactive=inactive\n=====opskit:file=====\n")


@pytest.fixture
def host(make_env):
    env = make_env("production")
    return item.Host(env.provision, env, distros.DISTROS["debian-12"])


def converged_files(host) -> dict:
    return {w.path: FileState(w.path, w.content, w.mode, w.owner, w.group) for w in firewall.wanted(host)}


def titles(plan) -> list[str]:
    return [s.title for s in plan.steps]


# -- the rendered ruleset --------------------------------------------------------------------------


def test_the_default_ruleset_opens_ssh_rate_limited_and_the_web_ports_only(host):
    text = firewall.ruleset(host).decode()
    assert host.env.ssh.port == 22 and host.settings.ssh_new_per_minute == 30
    accepts = re.findall(r"^\t\t(tcp|udp) dport (\d+) accept$", text, re.MULTILINE)
    assert accepts == [("tcp", "22"), ("tcp", "80"), ("tcp", "443"), ("udp", "443")]
    assert text.count("limit rate over 30/minute burst 30 packets } drop") == 2
    assert "tcp dport 22 ct state new update @ssh_v4 { ip saddr limit" in text
    assert "update @ssh_v6 { ip6 saddr & ffff:ffff:ffff:ffff:: limit" in text
    forwarded = re.findall(r"ct status dnat meta l4proto (tcp|udp) ct original proto-dst (\d+) accept", text)
    assert forwarded == [("tcp", "80"), ("tcp", "443"), ("udp", "443")]
    assert "type filter hook input priority filter; policy drop;" in text
    assert "type filter hook forward priority filter; policy drop;" in text


def test_ipv6_neighbour_discovery_and_path_mtu_get_in(host):
    icmpv6 = next(line for line in firewall.ruleset(host).decode().splitlines() if "icmpv6 type" in line)
    for needed in ("nd-neighbor-solicit", "nd-neighbor-advert", "nd-router-advert", "packet-too-big"):
        assert needed in icmpv6


def test_the_file_replaces_only_our_table_and_never_flushes(host):
    text = firewall.ruleset(host).decode()
    assert not [line for line in text.splitlines() if "flush" in line and not line.strip().startswith("#")]
    statements = [line for line in text.splitlines() if line.startswith(("table", "delete"))]
    assert statements == ["table inet opskit", "delete table inet opskit", "table inet opskit {"]
    assert text.startswith("#!/usr/sbin/nft -f\n" + firewall.MARK + "\n")


def test_the_ruleset_follows_the_inventory(make_env):
    def edit(raw):
        raw["environments"]["production"]["ssh"] = {"port": 2200}
        raw["defaults"]["provision"] = {"ssh": {"new_connections_per_minute": 12},
                                        "firewall": {"allow": ["8443/tcp", "80/tcp", "8443/tcp", "53/udp"]}}

    env = make_env("production", edit)
    text = firewall.ruleset(item.Host(env.provision, env, distros.DISTROS["debian-12"])).decode()
    assert re.findall(r"^\t\t(tcp|udp) dport (\d+) accept$", text, re.MULTILINE) == [
        ("tcp", "2200"), ("tcp", "80"), ("tcp", "8443"), ("udp", "53")]  # sorted, each once
    assert "tcp dport 2200 ct state new" in text and "rate over 12/minute burst 12 packets" in text
    assert "proto-dst 8443 accept" in text and "proto-dst 443" not in text


def test_the_simulated_vps_opens_the_port_sshd_listens_on_inside(make_env):
    env = make_env("local")
    host = item.Host(env.provision, env, distros.DISTROS["debian-12"])
    assert env.ssh.port == 2222 and firewall.ssh_port(host) == 22
    assert "tcp dport 22 accept" in firewall.ruleset(host).decode()


def test_rendering_is_deterministic(host):
    assert firewall.ruleset(host) == firewall.ruleset(host)
    shuffled = dataclasses.replace(host, settings=dataclasses.replace(
        host.settings, allow=tuple(reversed(host.settings.allow)) + (Opening(80, "tcp"),)))
    assert firewall.ruleset(shuffled) == firewall.ruleset(host)


def test_stopping_nftables_removes_our_table_only(host):
    dropin = next(w for w in firewall.wanted(host) if w.path == firewall.DROPIN)
    lines = dropin.content.decode().splitlines()
    assert lines[lines.index("[Service]") + 1:] == ["ExecStop=", "ExecStop=-/usr/sbin/nft delete table inet opskit"]


# -- the plan --------------------------------------------------------------------------------------


def test_a_bare_host_gets_everything_under_the_guard(host):
    plan = firewall.plan(host, ABSENT, {})
    assert plan.guarded
    assert plan.changes == (
        f"{firewall.DROPIN}: missing", "/etc/nftables.conf: missing",
        "table inet opskit is not loaded (nft is not installed yet)",
        "nftables.service is not installed, wanted enabled (so that a boot loads /etc/nftables.conf)",
        "nftables.service is inactive, wanted active")
    steps = plan.steps
    assert [s.on for s in steps] == [SERVER] * 5 + [LOCAL] + [SERVER] * 3
    assert guard.is_arm(steps[2]) and steps[2].argv[-2:] == (firewall.REVERT, "/etc/nftables.conf")
    write = steps[3]
    assert write.stdin == firewall.ruleset(host) and write.argv[-1] == "nft -c -f %s"
    assert steps[4].argv == ("nft", "-f", "/etc/nftables.conf")
    assert steps[5].argv[1:3] == ("-m", "opskit.provision.prove")
    assert steps[6].title == "firewall: proven; disarm the revert"
    assert [s.argv for s in steps[7:]] == [("systemctl", "enable", "--quiet", "nftables.service"),
                                          ("systemctl", "start", "nftables.service")]


def test_a_converged_host_plans_nothing(host):
    plan = firewall.plan(host, parsed(), converged_files(host))
    assert plan == item.ItemPlan("firewall")


def test_a_rule_deleted_by_hand_is_found_and_the_file_loaded_again(host):
    without = [x for x in LOADED.splitlines() if '"handle":21,' not in x]  # the forward accept of 80/tcp
    plan = firewall.plan(host, parsed(loaded=without), converged_files(host))
    assert plan.changes == (("the loaded table inet opskit differs from /etc/nftables.conf: chain forward differs "
                             "(5 rules loaded, 6 in the file)"),)
    assert plan.guarded and [s.argv for s in plan.steps[1:2]] == [("nft", "-f", "/etc/nftables.conf")]
    assert len(plan.steps) == 4  # arm, load, prove, disarm: the file is not rewritten


@pytest.mark.parametrize("change", ["policy", "chain", "table", "set"])
def test_other_hand_edits_are_found_too(host, change):
    lines = LOADED.splitlines()
    if change == "policy":
        lines = [x.replace('"hook":"forward","prio":0,"policy":"drop"', '"hook":"forward","prio":0,"policy":"accept"')
                 for x in lines]
    elif change == "chain":
        lines = [x for x in lines if '"chain":"forward"' not in x and '"name":"forward"' not in x]
    elif change == "table":
        lines = lines[:3]
    else:
        lines = [x.replace('"timeout":60', '"timeout":600') if '"ssh_v4"' in x else x for x in lines]
    plan = firewall.plan(host, parsed(loaded=lines), converged_files(host))
    assert len(plan.changes) == 1 and plan.guarded and plan.steps[1].argv == ("nft", "-f", "/etc/nftables.conf")


def test_set_elements_handles_and_other_tables_are_not_differences(host):
    lines = [x.replace('"packets":25', '"packets":99').replace('"10.231.7.3"', '"10.9.9.9"')
             for x in LOADED.splitlines() if '"chain":"FORWARD"' not in x]
    assert not firewall.plan(host, parsed(loaded=lines), converged_files(host)).changes


def test_a_new_file_is_written_and_loaded_without_comparing_the_old_table(host):
    files = converged_files(host)
    files[firewall.CONF] = FileState(firewall.CONF, b"#!/usr/sbin/nft -f\nflush ruleset\n", 0o755, "root", "root")
    without = [x for x in LOADED.splitlines() if '"handle":21,' not in x]  # and the old table was edited too
    for loaded in (LOADED.splitlines(), without):
        assert firewall.plan(host, parsed(loaded=loaded), files).changes == ("/etc/nftables.conf: content differs",)
    plan = firewall.plan(host, parsed(), files)
    assert [s.title for s in plan.steps][1:3] == [
        "write /etc/nftables.conf (checked with `nft -c` first)",
        "load /etc/nftables.conf (replaces table inet opskit only; Docker's rules stay)"]


def test_an_unreadable_file_or_ruleset_means_load_again(host):
    broken = parsed(raw_file="!failed /etc/nftables.conf:3:1-5: Error: syntax error")
    plan = firewall.plan(host, broken, converged_files(host))
    assert plan.changes == (("/etc/nftables.conf could not be compared with the loaded table "
                             "(/etc/nftables.conf:3:1-5: Error: syntax error)"),)
    unreadable = parsed(raw_loaded="!failed Operation not permitted")
    assert firewall.plan(host, unreadable, converged_files(host)).changes == (
        "the loaded ruleset could not be read (Operation not permitted): it will be loaded again",)


def test_enabling_and_starting_need_no_guard(host):
    plan = firewall.plan(host, parsed(unit="enabled=disabled\nactive=inactive"), converged_files(host))
    assert not plan.guarded
    assert [s.argv for s in plan.steps] == [("systemctl", "enable", "--quiet", "nftables.service"),
                                           ("systemctl", "start", "nftables.service")]


def test_a_changed_drop_in_is_written_and_systemd_told(host):
    files = converged_files(host)
    files[firewall.DROPIN] = FileState(firewall.DROPIN, b"[Service]\n", 0o644, "root", "root")
    plan = firewall.plan(host, parsed(), files)
    assert plan.changes == (f"{firewall.DROPIN}: content differs",) and not plan.guarded
    assert plan.steps[-1].argv == ("systemctl", "daemon-reload")


def test_the_revert_loads_an_older_file_of_ours_and_otherwise_removes_our_table():
    assert firewall.REVERT.startswith(f"if grep -qxF '{firewall.MARK}' /etc/nftables.conf")
    assert "then nft -f /etc/nftables.conf;" in firewall.REVERT
    assert "else nft delete table inet opskit" in firewall.REVERT and "flush" not in firewall.REVERT


# -- the fact's parser ------------------------------------------------------------------------------


def test_the_loaded_table_reads_as_the_smoke_suite_needs():
    table = parsed().table("inet", "opskit")
    assert table.input_policy == "drop" and table.forward_policy == "drop"
    assert table.open_ports() == ("22/tcp", "80/tcp", "443/tcp", "443/udp")
    assert table.forwarded_ports() == ("80/tcp", "443/tcp", "443/udp")
    assert table.ssh_limits() == ((22, 30, "minute", 30), (22, 30, "minute", 30))


def test_other_tables_are_not_ours():
    fw = parsed()
    assert fw.table("ip", "filter").hooked("forward").policy == "accept"
    assert fw.table("inet", "filter") is None
    assert all("elem" not in next(iter(o.values())) and "handle" not in next(iter(o.values()))
               for o in fw.table("inet", "opskit").objects)


def test_no_table_means_no_policy():
    fw = parsed(loaded=LOADED.splitlines()[:3])
    assert fw.table("inet", "opskit") is None and fw.installed and fw.file_table("inet", "opskit") is not None


def test_no_nft_is_a_fact_not_a_failure():
    assert ABSENT == firewall_facts.Firewall(False, None, "", "inactive")
    fact = firewall_facts.firewall("/etc/nftables.conf")
    assert fact.argv[-2:] == ("nftables.service", "/etc/nftables.conf")
    assert fact.parse(Output(fact_output())).enabled == "enabled"


def test_a_port_open_to_some_sources_only_is_not_open():
    dport = {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 8080}}
    source = {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "10.0.0.1"}}
    assert firewall_facts._plain_accept((dport, {"accept": None})) == ["8080/tcp"]
    assert firewall_facts._plain_accept((dport, source, {"accept": None})) == []


def test_only_dnat_traffic_counts_as_forwarded_to_a_port():
    def rule(status):
        return ({"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": status}},
                {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
                {"match": {"op": "==", "left": {"ct": {"key": "proto-dst", "dir": "original"}}, "right": 8080}},
                {"accept": None})

    assert firewall_facts._dnat_accept(rule("dnat")) == ["8080/tcp"]
    assert firewall_facts._dnat_accept(rule("snat")) == []
    assert firewall_facts._dnat_accept(rule("dnat")[1:]) == []


def test_a_set_of_ports_counts_each_one():
    rule = ({"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                       "right": {"set": [80, 443]}}}, {"accept": None})
    assert firewall_facts._plain_accept(rule) == ["80/tcp", "443/tcp"]
    assert firewall_facts._plain_accept((rule[0], {"drop": None})) == []


def test_garbage_instead_of_json_is_refused():
    with pytest.raises(ValueError, match="did not print nft's JSON"):
        parsed(raw_loaded="table inet opskit {")
