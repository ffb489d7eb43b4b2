"""kit/archive.py: the tars kit sends into containers and unpacks from them (real tarfile round trips;
the streams a hostile or broken container could send are built here byte for byte)."""

import io
import os
import tarfile

import pytest

from kit.archive import ArchiveError, pack, unpack


def chunks(data: bytes, size: int = 7):
    """The engine streams an archive in chunks of any size."""
    return (data[i:i + size] for i in range(0, len(data), size))


def tar_bytes(*members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(name, data=b"", type_=tarfile.REGTYPE, mode=0o644, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = type_, mode, linkname
    if type_ == tarfile.REGTYPE:
        info.size = len(data)
    return info, (data if type_ == tarfile.REGTYPE else None)


def test_pack_places_entries_at_their_container_paths_owned_by_the_user(tmp_path):
    model = tmp_path / "model"
    (model / "variables").mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"pb")
    (model / "variables" / "v").write_bytes(b"v")
    os.symlink(model / "saved_model.pb", model / "alias.pb")  # followed: the container gets a file
    spec = tmp_path / "spec.json"
    spec.write_text("{}")
    with pack([(model, "/in/saved_model"), (spec, "/in/spec.json"), (None, "/out")], uid=1000, gid=44) as f:
        with tarfile.open(fileobj=f) as tar:
            entries = {m.name: m for m in tar.getmembers()}
    assert sorted(entries) == ["in", "in/saved_model", "in/saved_model/alias.pb", "in/saved_model/saved_model.pb",
                               "in/saved_model/variables", "in/saved_model/variables/v", "in/spec.json", "out"]
    assert (entries["in"].uid, entries["in"].mode) == (0, 0o755)  # a parent: root's
    assert all((entries[n].uid, entries[n].gid) == (1000, 44) for n in entries if n != "in")
    assert entries["out"].isdir() and entries["in/saved_model/alias.pb"].isfile()


@pytest.mark.parametrize("target", ["/", "/in/../..", ""])
def test_pack_refuses_a_target_that_is_not_below_root(tmp_path, target):
    with pytest.raises(ValueError):
        pack([(None, target)])


def test_round_trip_through_a_chunked_stream(tmp_path):
    src = tmp_path / "src"
    (src / "model" / "assets").mkdir(parents=True)
    (src / "model" / "assets" / "engine.bin").write_bytes(os.urandom(3 << 20))  # larger than one read
    (src / "report.json").write_text('{"ok": true}')
    os.chmod(src / "report.json", 0o755)
    with pack([(src, "/out")]) as f:
        data = f.read()
    files = unpack(chunks(data, 65536), tmp_path / "dest", strip=1)
    assert sorted(files) == ["model/assets/engine.bin", "report.json"]
    assert (tmp_path / "dest" / "model" / "assets" / "engine.bin").read_bytes() == \
        (src / "model" / "assets" / "engine.bin").read_bytes()
    assert os.access(tmp_path / "dest" / "report.json", os.X_OK)


@pytest.mark.parametrize("bad", [
    member("out/../../escaped", b"x"),
    member("/etc/kit-escaped", b"x"),
    member("out/link", type_=tarfile.SYMTYPE, linkname="/etc/passwd"),
    member("out/hard", type_=tarfile.LNKTYPE, linkname="out/x"),
    member("out/fifo", type_=tarfile.FIFOTYPE),
])
def test_unpack_refuses_what_is_not_a_plain_file_or_directory_below_dest(tmp_path, bad):
    with pytest.raises(ArchiveError):
        unpack(chunks(tar_bytes(member("out/ok", b"fine"), bad)), tmp_path / "dest")
    assert not (tmp_path / "escaped").exists()
    assert not list((tmp_path / "dest").rglob("link")) and not list((tmp_path / "dest").rglob("hard"))


def test_unpack_drops_setuid_and_group_write(tmp_path):
    unpack(chunks(tar_bytes(member("out/tool", b"#!", mode=0o6777))), tmp_path / "dest")
    assert oct(os.stat(tmp_path / "dest" / "tool").st_mode & 0o7777) == oct(0o755)
