"""The guest session's host-side pieces that need no VM: what a plan ships, how a report is read."""

import tarfile

from testbed import session


def test_only_what_the_guest_needs_is_packed(tmp_path):
    plan = tmp_path / "plan"
    plan.mkdir()
    for name in ("liteflow.ko", "lf_test.ko", "plan.json", "snapshot.blob", "inputs.npy", "build.log", "notes.txt"):
        (plan / name).write_bytes(b"x")
    archive = tmp_path / "plan.tar.gz"
    session.pack_plan(plan, archive)
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == ["inputs.npy", "lf_test.ko", "liteflow.ko", "plan.json", "snapshot.blob"]


def test_the_report_is_the_last_json_line_and_chatter_before_it_is_ignored():
    assert session._last_json_line('loading\n{"not": "this"}\nnoise\n{"ok": true}\n') == {"ok": True}
    assert session._last_json_line("Traceback (most recent call last):\n  boom\n") is None
    assert session._last_json_line('{"truncated": \n') is None


def test_plan_dirs_are_fresh_and_carry_the_shared_files(tmp_path, monkeypatch):
    monkeypatch.setattr(session, "PLANS_DIR", tmp_path / "plans")
    shared = tmp_path / "liteflow.ko"
    shared.write_bytes(b"module")
    run = type("R", (), {"run_id": "r1"})()
    guest = session.GuestSession()
    first = guest.plan_dir(run, "job-0", [shared])
    (first / "stale.json").write_text("{}")
    again = guest.plan_dir(run, "job-0", [shared])
    assert again == first and sorted(p.name for p in again.iterdir()) == ["liteflow.ko"]
