"""Registry-less shipping: a `docker save` tar without the layers the server already has."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zlib

from opskit import ship

EMPTY = b"\0" * 1024  # the tar of an empty folder: the same diff ID in every image that has one


def blob(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def save_tar(path, layers: list[bytes]) -> None:
    """A minimal `docker save` (OCI layout, as Engine 25+ writes it) of one image."""
    diff_ids = [blob(data) for data in layers]
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    members = {f"blobs/sha256/{d[7:]}": data for d, data in zip(diff_ids, layers)}
    members[f"blobs/sha256/{blob(config)[7:]}"] = config
    members["manifest.json"] = json.dumps([{"Config": f"blobs/sha256/{blob(config)[7:]}",
                                            "Layers": [f"blobs/sha256/{d[7:]}" for d in diff_ids],
                                            "RepoTags": ["x:1"]}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def names(data: bytes) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return set(tar.getnames())


def test_layers_the_server_has_below_the_same_parents_are_left_out(tmp_path):
    base, app = b"base" * 100, b"app" * 100
    save_tar(tmp_path / "i.tar", [base, app, EMPTY])
    out = io.BytesIO()
    sent, left_out, chains = ship.filtered(str(tmp_path / "i.tar"), frozenset({blob(base)}), out)
    assert left_out == len(base) and sent == len(app) + len(EMPTY)
    assert f"blobs/sha256/{blob(base)[7:]}" not in names(out.getvalue())
    assert chains == frozenset(ship.chain_ids([blob(base), blob(app), blob(EMPTY)]))


def test_a_known_diff_id_on_other_parents_is_still_sent(tmp_path):
    """The server has the empty layer at the bottom of another image; here it sits on `base`,
    which the server lacks: Docker needs the blob (the failure this rule fixes)."""
    base = b"base" * 100
    save_tar(tmp_path / "i.tar", [base, EMPTY])
    other = frozenset(ship.chain_ids([blob(EMPTY)]))
    out = io.BytesIO()
    sent, left_out, _ = ship.filtered(str(tmp_path / "i.tar"), other, out)
    assert left_out == 0 and sent == len(base) + len(EMPTY)


def test_chain_ids_follow_the_oci_rule():
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    assert ship.chain_ids([a, b]) == [a, "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()]


def test_gzip_on_the_wire_is_what_docker_load_reads(tmp_path):
    save_tar(tmp_path / "i.tar", [b"x" * 10000])
    out = io.BytesIO()
    wire = ship.Gzip(out)
    ship.filtered(str(tmp_path / "i.tar"), frozenset(), wire)
    wire.close()
    plain = zlib.decompress(out.getvalue(), 31)
    assert "manifest.json" in names(plain) and wire.compressed == len(out.getvalue()) < wire.raw


def test_room_is_the_new_layers_plus_the_inventorys_margin():
    from opskit.ship import room_problem
    mb = 1024 * 1024
    assert room_problem("/var/lib/docker 3145728", 900 * mb, 2048, "a:1") is None  # 3072 MB free >= 900 + 2048
    said = room_problem("/var/lib/docker 3145728", 1100 * mb, 2048, "a:1")
    assert said.startswith("not enough room on the server for a:1: 3072 MB free under /var/lib/docker, its new "
                           "layers take 1100 MB and 2048 MB must stay free (smoke.min_free_disk_mb)")
    assert "could not read the free space" in room_problem("Cannot connect to the Docker daemon", 1, 1, "a:1")
