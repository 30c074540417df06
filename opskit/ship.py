"""Move images to the server without a registry: `docker save` here, streamed through a filter that
drops the layers the server already has, gzip, and into `docker load` over the SSH connection.

A `--no-cache` build makes every built layer new, but base layers are shared: what a code-only
change ships is the app's own layers. The save is never written to disk here: its layers are known
before it starts (the image's diff IDs, from `docker image inspect`), so each tar member is sent or
left out as it passes. Works with both `docker save` formats: the OCI layout of Engine 25+ names a
layer's blob by its diff ID; the legacy one (`<id>/layer.tar`) is known by its content's digest.

A layer is left out only when the server has it *with the same layers below it*: Docker keys
loaded layers by chain ID (a digest over the layer and all its parents), so the same diff ID on
another parent (the empty layer of a WORKDIR, say) is a different layer that must be sent.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import tempfile
import zlib

#: read and write the tar streams in large blocks: tarfile's default (10 KB) costs a call per block
BLOCK = 1024 * 1024


class NoRoom(Exception):
    """The layers to send do not fit in the room the server has: `need` bytes in all."""

    def __init__(self, need: int):
        super().__init__(need)
        self.need = need


def chain_ids(diff_ids) -> list[str]:
    """The OCI chain IDs of a layer list: ChainID(L1..n) = sha256(ChainID(L1..n-1) + " " + DiffID(Ln))."""
    out, chain = [], None
    for diff_id in diff_ids:
        chain = diff_id if chain is None else "sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest()
        out.append(chain)
    return out


def layer_paths(tar: tarfile.TarFile) -> dict[str, str]:
    """{member path of a layer: its chain ID}, read from a saved tar's manifest and image config."""
    manifest = json.load(tar.extractfile("manifest.json"))
    out = {}
    for entry in manifest:
        config = json.load(tar.extractfile(entry["Config"]))
        for path, chain in zip(entry["Layers"], chain_ids(config["rootfs"]["diff_ids"])):
            out[path] = chain
    return out


def _layer_of(member: tarfile.TarInfo, data, layers: set):
    """(the member's diff ID if it is a layer of the image, else None; the data to send): an OCI
    blob by its name, a legacy `layer.tar` by the digest of its content (spooled to hash it)."""
    head, _, name = member.name.rpartition("/")
    if head == "blobs/sha256" and f"sha256:{name}" in layers:
        return f"sha256:{name}", data
    if name != "layer.tar" or data is None:
        return None, data
    spool, digest = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024), hashlib.sha256()
    while chunk := data.read(BLOCK):
        digest.update(chunk)
        spool.write(chunk)
    spool.seek(0)
    diff = f"sha256:{digest.hexdigest()}"
    return (diff if diff in layers else None), spool


def stream(src, diff_ids, skip, out, room: int | None = None) -> tuple[int, int, frozenset]:
    """Copy the `docker save` tar read from `src` (of the image whose layers are `diff_ids`) to
    `out`, without the layers whose chain IDs are in `skip`; metadata always goes. With `room`,
    raises NoRoom (what is sent so far is then an unfinished tar) before a layer would take the
    bytes sent beyond it.

    Returns (bytes of layers sent, bytes of layers left out, every chain ID of the image)."""
    chains = chain_ids(diff_ids)
    layers = set(diff_ids)
    # one diff ID may sit at several places (the empty layer of each WORKDIR): its blob stays
    # behind only when the server has the layer at every one of them
    needed = {d for d, c in zip(diff_ids, chains) if c not in skip}
    sent = left_out = 0
    with tarfile.open(fileobj=src, mode="r|", bufsize=BLOCK) as tin, \
            tarfile.open(fileobj=out, mode="w|", bufsize=BLOCK) as tout:
        tout.copybufsize = BLOCK
        members = iter(tin)  # one pass: a second `for` over `tin` would start again at its first member
        for member in members:
            diff, data = _layer_of(member, tin.extractfile(member) if member.isfile() else None, layers)
            if diff is not None and diff not in needed:
                left_out += member.size
                continue
            if diff is not None:
                if room is not None and sent + member.size > room:
                    raise NoRoom(sent + member.size + _still_needed(tin, members, layers, needed))
                sent += member.size
            tout.addfile(member, data)
    return sent, left_out, frozenset(chains)


def _still_needed(tin, members, layers: set, needed: set) -> int:
    """The bytes of the needed layers among the `members` still to come (read, not sent)."""
    total = 0
    for member in members:
        diff, _ = _layer_of(member, tin.extractfile(member) if member.isfile() else None, layers)
        total += member.size if diff in needed else 0
    return total


# Docker's data root and the KB free there: where loaded layers land
FREE_SPACE = ["sh", "-c", "root=$(docker info --format '{{.DockerRootDir}}') && "
              "printf '%s ' \"$root\" && df -Pk \"$root\" | awk 'NR==2 {print $4}'"]


def _free_mb(df_output: str) -> tuple[str, int | None]:
    """(Docker's data root, the MB free there) from `FREE_SPACE`'s output; None when it says none."""
    root, _, free_kb = df_output.strip().rpartition(" ")
    return root, int(free_kb) // 1024 if free_kb.isdigit() else None


def room_for_layers(df_output: str, margin_mb: int) -> int | None:
    """The bytes new layers may take on the server (`FREE_SPACE`'s output less the margin), None
    when the output says no free space; `room_problem` words a refusal in the same units."""
    free_mb = _free_mb(df_output)[1]
    return max(free_mb - margin_mb, 0) * 1024 * 1024 if free_mb is not None else None


def room_problem(df_output: str, need: int, margin_mb: int, image: str) -> str | None:
    """Why `image` must not be loaded (None when there is room): its new layers and the margin
    the inventory keeps free (`smoke.min_free_disk_mb`) do not fit in what the server has free."""
    root, free_mb = _free_mb(df_output)
    if free_mb is None:
        return f"could not read the free space where Docker keeps images ({df_output.strip()[-200:]!r})"
    need_mb = -(-need // (1024 * 1024))
    if free_mb >= need_mb + margin_mb:
        return None
    return (f"not enough room on the server for {image}: {free_mb} MB free under {root}, its new layers take "
            f"{need_mb} MB and {margin_mb} MB must stay free (smoke.min_free_disk_mb). Nothing was loaded; free "
            "space on the server (`docker system df` shows what uses it; each deploy removes this project's "
            "images that no kept release uses)")


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
