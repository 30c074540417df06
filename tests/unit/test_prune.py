"""Which of this machine's images a deploy leaves behind (opskit/prune.py, pure)."""

from __future__ import annotations

from opskit import dockerfile, images, prune
from opskit.images import LocalImage

REL, DEPS = images.LABEL_RELEASE, images.LABEL_DEPENDENCY_DIGEST


def _image(tag, created, release=None, deps=None, layers=("l0",)):
    # a final image carries its own digest, and the dependency label of the image it was built on
    labels = {**({REL: release, images.LABEL_DIGEST: "b" + tag, DEPS: "inherited"} if release else {}),
              **({DEPS: deps} if deps else {})}
    return LocalImage("sha256:" + tag, labels, layers, (tag,), created)


def test_the_newest_releases_their_dependency_images_and_what_is_being_built_stay():
    have = [_image(f"a:r{i}", f"2026-12-0{i}T00:00:00Z", release=f"r{i}", layers=("l0", "d1", f"c{i}"))
            for i in range(1, 6)]
    have += [_image("a:deps-old", "2026-11-01T00:00:00Z", deps="x", layers=("l0", "dX")),
             _image("a:deps-new", "2026-11-02T00:00:00Z", deps="y", layers=("l0", "d1")),
             _image("a:deps-next", "2026-11-03T00:00:00Z", deps="z", layers=("l0", "d2")),
             _image("a:unchecked-r5", "2026-12-06T00:00:00Z", release="r5"),
             _image("a:r0", "2026-11-30T00:00:00Z", release="r0")]
    split = dockerfile.split("FROM a\nCOPY x /x\n", {})
    gone = prune.local_leftovers(have, 3, {"a:r0"}, {"api": images.Layered("a:deps-next", "z", split)})
    # r3..r5 newest; r0 is this deploy's; deps-new under the kept ones; deps-next this deploy's
    assert gone == ["a:deps-old", "a:r1", "a:r2", "a:unchecked-r5"]


def test_nothing_to_remove_plans_no_step():
    assert prune.local_images_step([]) is None
    step = prune.local_images_step(["a:1"])
    assert step.on == "local" and step.argv[-1] == "a:1"
