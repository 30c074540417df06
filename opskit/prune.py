"""Disk bounded on both sides of a deploy: on the server, this project's images that no kept
release uses; here, this project's images beyond the newest releases, and BuildKit's cache.

Only the build repositories of the inventory are touched (never another project's images, nor
the official images a release pulls). Every step here says what it did and never fails a deploy:
a prune that cannot decide keeps everything.
"""

from __future__ import annotations

import posixpath
import shlex

from .images import LABEL_DEPENDENCY_DIGEST, LABEL_DIGEST, LABEL_RELEASE, Layered, LocalImage
from .layout import Layout
from .steps import LOCAL, SERVER, Run

# BuildKit keeps a record of every --no-cache build too: this machine keeps at most this much
BUILD_CACHE_KEEP = "2gb"

# the images of kept releases (their compose files are the arguments), read from the `image:` lines
# our render writes (not `compose config --images`: one Compose start per kept release was most of
# the step); a file that cannot be read, or names no image, keeps every image
IMAGE_REFS_AWK = '$1 == "image:" { v = $2; gsub(/"/, "", v); print v }'
_SERVER_IMAGES = r"""
keep=$(for f in "$@"; do
  refs=$(awk "$IMAGE_REFS_AWK" "$f") && [ -n "$refs" ] || exit 1
  printf '%s\n' "$refs"
done) || { echo "could not read the images of every kept release: no image removed"; exit 0; }
removed=0
for repo in $REPOS; do
  for ref in $(docker image ls --format '{{.Repository}}:{{.Tag}}' "$repo" | grep -v ':<none>$'); do
    printf '%s\n' "$keep" | grep -qxF -- "$ref" && continue
    if docker image rm -- "$ref" >/dev/null 2>&1; then removed=$((removed + 1)); else echo "kept $ref: in use"; fi
  done
done
echo "removed $removed image(s) that no kept release uses"
"""


def server_images(env, layout: Layout, kept: list) -> Run:
    """Remove this project's built images (its build repositories, nothing else) that no kept
    release's compose file names; an image a container still runs stays."""
    repos = sorted({b.repository for b in env.builds.values()})
    files = [posixpath.join(layout.release(r), "docker-compose.yml") for r in kept]
    script = f"REPOS={shlex.quote(' '.join(repos))}\nIMAGE_REFS_AWK={shlex.quote(IMAGE_REFS_AWK)}\n" + _SERVER_IMAGES
    return Run(f"remove images of {', '.join(repos)} that no kept release uses",
               ["sh", "-c", script, "opskit-prune-images", *files], on=SERVER, timeout=300)


def local_leftovers(have: list[LocalImage], keep: int, building: dict, parts: dict) -> list[str]:
    """The tags of this machine's images of the build repositories (`have`) to remove: all but
    those of the newest `keep` releases (by the images' `opskit.release` label and creation time),
    the images named in `building` (this deploy's, and those the server still has), and the
    dependency images those stand on or this deploy's `parts` name."""
    def dependency_image(i: LocalImage) -> bool:  # a final image inherits the label, and has its own digest
        return LABEL_DEPENDENCY_DIGEST in i.labels and LABEL_DIGEST not in i.labels

    releases: list = []
    for image in sorted(have, key=lambda i: i.created, reverse=True):
        release = image.labels.get(LABEL_RELEASE)
        if release and release not in releases and not dependency_image(image):
            releases.append(release)
    newest = set(releases[:keep])
    kept = [i for i in have if set(i.tags) & set(building) or (
        i.labels.get(LABEL_RELEASE) in newest and not any(t.split(":")[-1].startswith("unchecked-") for t in i.tags))]
    wanted = {p.image for p in parts.values() if isinstance(p, Layered)}
    out = []
    for image in have:
        if image in kept:
            continue
        if dependency_image(image) and (set(image.tags) & wanted or any(
                k.layers[:len(image.layers)] == image.layers for k in kept)):
            continue
        out += image.tags
    return sorted(out)


def local_images_step(tags: list[str]) -> Run | None:
    if not tags:
        return None
    return Run(f"remove {len(tags)} image tag(s) of older builds on this machine",
               ["sh", "-c", 'n=0; for t; do docker image rm "$t" >/dev/null 2>&1 && n=$((n + 1)) || echo "kept $t"; '
                'done; echo "removed $n"', "opskit-prune-local", *tags], on=LOCAL, timeout=300)


def build_cache_step() -> Run:
    """BuildKit's cache on this machine, down to `BUILD_CACHE_KEEP` (oldest records first)."""
    return Run(f"keep this machine's build cache under {BUILD_CACHE_KEEP}",
               ["sh", "-c", f"docker buildx prune --force --keep-storage {BUILD_CACHE_KEEP} || true"], on=LOCAL,
               timeout=300)
