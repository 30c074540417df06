"""Registry-less shipping: a `docker save` tar without the layers the server already has."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zlib

import pytest

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


def legacy_save_tar(path, layers: list[bytes]) -> None:
    """The same in the legacy format (Engine before 25): layers as `<v1 id>/layer.tar`, named by
    an ID unrelated to their content."""
    diff_ids = [blob(data) for data in layers]
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    members = {f"{i:064x}/layer.tar": data for i, data in enumerate(layers, 1)}
    members.update({f"{i:064x}/VERSION": b"1.0" for i in range(1, len(layers) + 1)})
    members[f"{blob(config)[7:]}.json"] = config
    members["manifest.json"] = json.dumps([{"Config": f"{blob(config)[7:]}.json", "RepoTags": ["x:1"],
                                            "Layers": [f"{i:064x}/layer.tar" for i in range(1, len(layers) + 1)]}]
                                          ).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def names(data: bytes) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return set(tar.getnames())


def filtered(path, layers: list[bytes], skip, out, room=None):
    """`ship.stream` over the saved tar at `path`, read as a pipe gives it (no seeking back)."""
    with open(path, "rb") as raw:
        return ship.stream(Pipe(raw), [blob(data) for data in layers], skip, out, room)


class Pipe:
    """A file that can only be read forward, as `docker save`'s stdout."""

    def __init__(self, raw):
        self.raw = raw

    def read(self, n=-1):
        return self.raw.read(n)


def test_layers_the_server_has_below_the_same_parents_are_left_out(tmp_path):
    base, app = b"base" * 100, b"app" * 100
    save_tar(tmp_path / "i.tar", [base, app, EMPTY])
    out = io.BytesIO()
    sent, left_out, chains = filtered(tmp_path / "i.tar", [base, app, EMPTY], frozenset({blob(base)}), out)
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
    sent, left_out, _ = filtered(tmp_path / "i.tar", [base, EMPTY], other, out)
    assert left_out == 0 and sent == len(base) + len(EMPTY)


def test_chain_ids_follow_the_oci_rule():
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    assert ship.chain_ids([a, b]) == [a, "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()]


def test_gzip_on_the_wire_is_what_docker_load_reads(tmp_path):
    save_tar(tmp_path / "i.tar", [b"x" * 10000])
    out = io.BytesIO()
    wire = ship.Gzip(out)
    filtered(tmp_path / "i.tar", [b"x" * 10000], frozenset(), wire)
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


def test_the_legacy_format_is_filtered_by_the_layers_content(tmp_path):
    base, app = b"base" * 100, b"app" * 100
    legacy_save_tar(tmp_path / "i.tar", [base, app])
    out = io.BytesIO()
    sent, left_out, _ = filtered(tmp_path / "i.tar", [base, app], frozenset({blob(base)}), out)
    assert (sent, left_out) == (len(app), len(base))
    kept = names(out.getvalue())
    assert f"{1:064x}/layer.tar" not in kept and f"{2:064x}/layer.tar" in kept and "manifest.json" in kept
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:  # the spooled layer arrives whole
        assert tar.extractfile(f"{2:064x}/layer.tar").read() == app


def test_a_diff_id_at_two_places_is_sent_unless_the_server_has_both(tmp_path):
    base = b"base" * 100
    save_tar(tmp_path / "i.tar", [EMPTY, base, EMPTY])
    bottom, middle, top = ship.chain_ids([blob(EMPTY), blob(base), blob(EMPTY)])
    out = io.BytesIO()
    sent, left_out, _ = filtered(tmp_path / "i.tar", [EMPTY, base, EMPTY], frozenset({bottom, middle}), out)
    assert (sent, left_out) == (len(EMPTY), len(base)) and f"blobs/sha256/{blob(EMPTY)[7:]}" in names(out.getvalue())
    out = io.BytesIO()
    assert filtered(tmp_path / "i.tar", [EMPTY, base, EMPTY], frozenset({bottom, middle, top}), out)[:2] == (
        0, len(EMPTY) + len(base))


def test_no_byte_of_a_layer_that_would_pass_the_room_is_sent(tmp_path):
    small, big, had = b"s" * 3000, b"b" * 50_000, b"h" * 90_000
    save_tar(tmp_path / "i.tar", [had, small, big])
    out = io.BytesIO()
    with pytest.raises(ship.NoRoom) as full:
        filtered(tmp_path / "i.tar", [had, small, big], frozenset(ship.chain_ids([blob(had)])), out, room=20_000)
    assert full.value.need == len(small) + len(big)  # all the new layers; what the server had is no part of it
    assert big not in out.getvalue()
    out = io.BytesIO()  # the same with room enough: everything new goes
    assert filtered(tmp_path / "i.tar", [had, small, big], frozenset(ship.chain_ids([blob(had)])), out,
                    room=len(small) + len(big))[0] == len(small) + len(big)


def test_the_room_for_layers_is_what_room_problem_lets_through():
    mb = 1024 * 1024
    df = "/var/lib/docker 3145728"  # 3072 MB free
    room = ship.room_for_layers(df, 2048)
    assert room == 1024 * mb
    assert ship.room_problem(df, room, 2048, "a:1") is None and ship.room_problem(df, room + 1, 2048, "a:1")
    assert ship.room_for_layers(df, 4096) == 0
    assert ship.room_for_layers("Cannot connect to the Docker daemon", 1) is None
