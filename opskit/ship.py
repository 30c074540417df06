"""Move images to the server without a registry: `docker save` here, drop the layers the server
already has, stream the rest into `docker load` over the SSH connection.

A `--no-cache` build makes every built layer new, but base layers are shared: what a code-only
change ships is the app's own layers. Works with both `docker save` formats (OCI layout from
Engine 25+, and the legacy one): layers are found through the image config.

A layer is left out only when the server has it *with the same layers below it*: Docker keys
loaded layers by chain ID (a digest over the layer and all its parents), so the same diff ID on
another parent (the empty layer of a WORKDIR, say) is a different layer that must be sent.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import zlib


def chain_ids(diff_ids) -> list[str]:
    """The OCI chain IDs of a layer list: ChainID(L1..n) = sha256(ChainID(L1..n-1) + " " + DiffID(Ln))."""
    out, chain = [], None
    for diff_id in diff_ids:
        chain = diff_id if chain is None else "sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest()
        out.append(chain)
    return out


def layer_paths(tar: tarfile.TarFile) -> dict[str, str]:
    """{member path of a layer: its chain ID}, read from the save's manifest and image config."""
    manifest = json.load(tar.extractfile("manifest.json"))
    out = {}
    for entry in manifest:
        config = json.load(tar.extractfile(entry["Config"]))
        for path, chain in zip(entry["Layers"], chain_ids(config["rootfs"]["diff_ids"])):
            out[path] = chain
    return out


def bytes_to_send(source_path: str, skip) -> int:
    """The bytes of the layers of a `docker save` tar that `filtered` would send (uncompressed:
    what `docker load` unpacks on the server)."""
    with tarfile.open(source_path, "r:") as src:
        paths = layer_paths(src)
        return sum(m.size for m in src.getmembers() if paths.get(m.name) is not None and paths[m.name] not in skip)


# Docker's data root and the KB free there: where loaded layers land
FREE_SPACE = ["sh", "-c", "root=$(docker info --format '{{.DockerRootDir}}') && "
              "printf '%s ' \"$root\" && df -Pk \"$root\" | awk 'NR==2 {print $4}'"]


def room_problem(df_output: str, need: int, margin_mb: int, image: str) -> str | None:
    """Why `image` must not be loaded (None when there is room): its new layers and the margin
    the inventory keeps free (`smoke.min_free_disk_mb`) do not fit in what the server has free."""
    root, _, free_kb = df_output.strip().rpartition(" ")
    if not free_kb.isdigit():
        return f"could not read the free space where Docker keeps images ({df_output.strip()[-200:]!r})"
    free_mb, need_mb = int(free_kb) // 1024, -(-need // (1024 * 1024))
    if free_mb >= need_mb + margin_mb:
        return None
    return (f"not enough room on the server for {image}: {free_mb} MB free under {root}, its new layers take "
            f"{need_mb} MB and {margin_mb} MB must stay free (smoke.min_free_disk_mb). Nothing was loaded; free "
            "space on the server (`docker system df` shows what uses it; each deploy removes this project's "
            "images that no kept release uses)")


def filtered(source_path: str, skip, out) -> tuple[int, int, frozenset]:
    """Write `source_path` (a `docker save` tar) to `out` without the layers in `skip`.

    Returns (bytes of layers sent, bytes of layers left out, every chain ID of the image).
    Metadata always goes.
    """
    sent = left_out = 0
    with tarfile.open(source_path, "r:") as src, tarfile.open(fileobj=out, mode="w|") as dst:
        paths = layer_paths(src)
        for member in src:
            chain = paths.get(member.name)
            if chain is not None and chain in skip:
                left_out += member.size
                continue
            if chain is not None:
                sent += member.size
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    return sent, left_out, frozenset(paths.values())


class Gzip:
    """Compresses what passes through (`docker load` reads gzip as it is): layers are mostly
    text and binaries that shrink by half or more, and level 1 costs little CPU."""

    def __init__(self, out, level: int = 1):
        self.out = out
        self.zip = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: gzip framing
        self.raw = self.compressed = 0

    def write(self, data) -> int:
        self.raw += len(data)
        chunk = self.zip.compress(data)
        if chunk:
            self.compressed += len(chunk)
            self.out.write(chunk)
        return len(data)

    def close(self) -> None:
        tail = self.zip.flush()
        self.compressed += len(tail)
        self.out.write(tail)

    def flush(self) -> None:
        pass


def server_layers(inspect_output: str) -> frozenset:
    """The chain ID of every layer of every image on the server (`docker image inspect` of all)."""
    chains = set()
    for image in json.loads(inspect_output or "[]"):
        chains.update(chain_ids((image.get("RootFS") or {}).get("Layers") or []))
    return frozenset(chains)
