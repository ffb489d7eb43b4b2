"""Rollout record and device files: round-trip, thread-safe updates."""

from __future__ import annotations

import os
import threading

from kit.fleet import state as st


def test_record_round_trip_and_store_writes_through(tmp_path):
    rec = st.RolloutRecord(fleet="f", image="r:1", digest_ref="r@sha256:" + "1" * 64, on_failure="rollback")
    for name in ("a", "b"):
        rec.devices[name] = st.DeviceRecord(name=name, host=f"unix:///{name}")
    path = tmp_path / "rollout.json"
    store = st.RecordStore(path, rec)
    store.save()
    store.device("a", result=st.DONE, after="r@sha256:" + "1" * 64, wave=0)
    on_disk = st.load_record(path)
    assert on_disk.devices["a"].result == st.DONE and on_disk.devices["a"].wave == 0
    assert on_disk.devices["b"].result == st.PENDING
    store.finish("done")
    again = st.load_record(path)
    assert again.status == "done" and again.finished_at
    assert again.to_dict() == store.record.to_dict()


def test_concurrent_device_updates_all_land(tmp_path):
    rec = st.RolloutRecord(fleet="f", image="i", digest_ref="d", on_failure="halt")
    names = [f"d{i}" for i in range(16)]
    for n in names:
        rec.devices[n] = st.DeviceRecord(name=n, host="h")
    store = st.RecordStore(tmp_path / "r.json", rec)
    threads = [threading.Thread(target=store.device, args=(n,), kwargs={"result": st.DONE}) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {r.result for r in st.load_record(tmp_path / "r.json").devices.values()} == {st.DONE}


def test_load_record_missing_or_corrupt_is_none(tmp_path):
    assert st.load_record(tmp_path / "nope.json") is None
    (tmp_path / "bad.json").write_text("{not json")
    assert st.load_record(tmp_path / "bad.json") is None


def test_device_files_and_fleet_dir(tmp_path):
    fleet_file = tmp_path / "fleet.yaml"
    root = st.fleet_dir(fleet_file, "warehouse")
    assert root == tmp_path / ".kit" / "fleet" / "warehouse"
    files = st.DeviceFiles(root, "nano-01")
    assert files.read(files.current) is None
    files.write_current("a")
    files.write_last_good("b")
    assert (files.read(files.current), files.read(files.last_good)) == ("a", "b")
    assert files.current == root / "nano-01" / "compose.yml"
    assert os.path.isfile(root / "nano-01" / "last-good.yml")
