"""Move images to the server without a registry: `docker save` here, drop the layers the server
already has, stream the rest into `docker load` over the SSH connection.

A `--no-cache` build makes every built layer new, but base layers are shared: what a code-only
change ships is the app's own layers. Works with both `docker save` formats (OCI layout from
Engine 25+, and the legacy one): layers are matched by diff ID through the image config.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass


@dataclass(frozen=True)
class ShipImage:
    """Send one image to the server, leaving out the layers whose diff IDs are in `skip`."""

    title: str
    image: str
    skip: frozenset = frozenset()

    def describe(self) -> str:
        return f"{self.title} [local -> server] docker save {self.image} | (minus {len(self.skip)} layers the server has) | docker load"


def layer_paths(tar: tarfile.TarFile) -> dict[str, str]:
    """{member path of a layer: its diff ID}, read from the save's manifest and image config."""
    manifest = json.load(tar.extractfile("manifest.json"))
    out = {}
    for entry in manifest:
        config = json.load(tar.extractfile(entry["Config"]))
        diff_ids = config["rootfs"]["diff_ids"]
        for path, diff_id in zip(entry["Layers"], diff_ids):
            out[path] = diff_id
    return out


def filtered(source_path: str, skip, out) -> tuple[int, int]:
    """Write `source_path` (a `docker save` tar) to `out` without the layers in `skip`.

    Returns (bytes of layers sent, bytes of layers left out). Metadata always goes.
    """
    sent = left_out = 0
    with tarfile.open(source_path, "r:") as src, tarfile.open(fileobj=out, mode="w|") as dst:
        paths = layer_paths(src)
        for member in src:
            diff_id = paths.get(member.name)
            if diff_id is not None and diff_id in skip:
                left_out += member.size
                continue
            if diff_id is not None:
                sent += member.size
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    return sent, left_out


def server_layers(inspect_output: str) -> frozenset:
    """Every diff ID of every image on the server, from `docker image inspect` of all images."""
    layers = set()
    for image in json.loads(inspect_output or "[]"):
        layers.update((image.get("RootFS") or {}).get("Layers") or [])
    return frozenset(layers)
