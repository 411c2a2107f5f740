"""Atomic, checksummed writes and verified reads (fastpapers.train.checkpoint)."""
import errno
import os
import subprocess

import pytest
import torch

from fastpapers.train import checkpoint as C


def _ck(i):
    return {"format": C.FORMAT, "step": i, "w": torch.arange(1000.0) + i}


def test_sidecar_is_sha256sum_format(tmp_path):
    path = str(tmp_path / "ck.pt")
    C.atomic_save(_ck(0), path)
    line = open(path + ".sha256").read()
    assert line == f"{C.sha256_file(path)}  ck.pt\n"
    try:
        proc = subprocess.run(["sha256sum", "-c", "ck.pt.sha256"], cwd=tmp_path, capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no sha256sum")
    assert proc.returncode == 0 and "OK" in proc.stdout
    C.atomic_save(_ck(1), path)  # a replacement leaves one digest again
    assert open(path + ".sha256").read() == f"{C.sha256_file(path)}  ck.pt\n"
    assert sorted(os.listdir(tmp_path)) == ["ck.pt", "ck.pt.sha256"]


def test_flipped_bit_is_refused(tmp_path):
    path = str(tmp_path / "ck.pt")
    C.atomic_save(_ck(0), path)
    data = bytearray(open(path, "rb").read())
    data[-100] ^= 0x10
    open(path, "wb").write(bytes(data))
    with pytest.raises(C.CorruptFileError, match=r"ck.pt: checksum mismatch: file corrupt") as info:
        C.load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_kill_between_the_renames_still_verifies(tmp_path, monkeypatch):
    # The sidecar lists old and new digests while the file is being replaced: a kill between
    # the two renames (simulated by failing the second) leaves a pair that verifies.
    path = str(tmp_path / "ck.pt")
    C.atomic_save(_ck(0), path)
    real = C._replace_with
    calls = []

    def second_fails(p, write):
        calls.append(p)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(p, write)

    monkeypatch.setattr(C, "_replace_with", second_fails)
    with pytest.raises(KeyboardInterrupt):
        C.atomic_save(_ck(1), path)
    assert len(open(path + ".sha256").read().splitlines()) == 2
    assert C.load_checkpoint(path)["step"] == 1
    monkeypatch.setattr(C, "_replace_with", real)
    C.atomic_save(_ck(2), path)
    assert len(open(path + ".sha256").read().splitlines()) == 1 and C.load_checkpoint(path)["step"] == 2


def test_full_disk_is_one_line_and_keeps_the_previous_file(tmp_path, monkeypatch):
    path = str(tmp_path / "ck.pt")
    C.atomic_save(_ck(0), path)
    before = open(path, "rb").read(), open(path + ".sha256").read()
    real_save = torch.save

    def full(obj, f):
        f.write(b"PK\x03\x04partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(C.torch, "save", full)
    with pytest.raises(C.FileWriteError) as info:
        C.atomic_save(_ck(1), path)
    msg = str(info.value)
    assert "ck.pt" in msg and "No space left on device" in msg and "\n" not in msg
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert (open(path, "rb").read(), open(path + ".sha256").read()) == before
    assert sorted(os.listdir(tmp_path)) == ["ck.pt", "ck.pt.sha256"]
    # torch's own writer reports a failed write as RuntimeError around the OSError.
    monkeypatch.setattr(C.torch, "save", real_save)

    class FullFile:
        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, b):
            self.n += len(b)
            if self.n > 2000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(b)

        def flush(self):
            pass

    monkeypatch.setattr(C.torch, "save", lambda obj, f: real_save(obj, FullFile(f)))
    with pytest.raises(C.FileWriteError, match="No space left"):
        C.atomic_save({"format": C.FORMAT, "w": torch.randn(10000)}, path)
    monkeypatch.setattr(C.torch, "save", real_save)
    assert C.load_checkpoint(path)["step"] == 0


def test_stale_temp_files_are_removed_at_the_next_write_and_only_ours(tmp_path):
    path = str(tmp_path / "ck.pt")
    for name in [".ck.pt.abcd1234.tmp", ".ck.pt.sha256.zz_9yy00.tmp"]:
        (tmp_path / name).write_bytes(b"left by a kill")
    keep = [".ck.pt.mine.tmp", "ck.pt.tmp", ".other.pt.abcd1234.tmp", "notes.tmp"]
    for name in keep:
        (tmp_path / name).write_bytes(b"a user's")
    C.atomic_save(_ck(0), path)
    assert sorted(os.listdir(tmp_path)) == sorted(keep + ["ck.pt", "ck.pt.sha256"])
    assert C.remove_stale_temp_files(str(tmp_path)) == [str(tmp_path / ".other.pt.abcd1234.tmp")]


@pytest.mark.parametrize("content, pattern", [
    (b"", "empty"), (b"\x00" * 64, "not a readable checkpoint file"),
    (b"PK\x03\x04garbage", "truncated or corrupt"), (os.urandom(200), "checkpoint file")])
def test_unreadable_torch_files_are_one_line(tmp_path, content, pattern):
    path = tmp_path / "m.pt"
    path.write_bytes(content)
    with pytest.raises(C.CorruptFileError, match=pattern) as info:
        C.read_checkpoint(str(path))
    assert "m.pt" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(IsADirectoryError, match="folder"):
        C.load_torch_file(str(tmp_path))


def test_json_helpers(tmp_path):
    path = str(tmp_path / "c.json")
    C.atomic_save_json({"a": [1, 2]}, path)
    assert C.read_json_file(path) == {"a": [1, 2]}
    with pytest.raises(ValueError, match="c.json"):
        C.atomic_save_json({"a": float("nan")}, path)  # JSON has no NaN; the old file stays
    with pytest.raises(ValueError, match="c.json.*not JSON serializable"):
        C.atomic_save_json({"a": object()}, path)
    assert C.read_json_file(path) == {"a": [1, 2]}
    open(path + ".sha256", "w").write("not a digest\n")
    with pytest.raises(C.CorruptFileError, match="c.json.sha256"):
        C.read_json_file(path)


def test_a_write_after_a_kill_before_the_rename_keeps_the_current_file_verifiable(tmp_path, monkeypatch):
    # Killed after the sidecar listed [interrupted, current] but before the rename: the file is
    # still the current one. The next write must carry the current file's digest, not the
    # interrupted one's, while it replaces the file.
    path = str(tmp_path / "ck.pt")
    C.atomic_save(_ck(0), path)
    real_rename = C._rename_over

    def killed(tmp, dst):
        if dst == path:
            raise KeyboardInterrupt
        return real_rename(tmp, dst)

    monkeypatch.setattr(C, "_rename_over", killed)
    with pytest.raises(KeyboardInterrupt):
        C.atomic_save(_ck(1), path)
    assert len(open(path + ".sha256").read().splitlines()) == 2 and C.load_checkpoint(path)["step"] == 0
    seen = []

    def watch(tmp, dst):
        if dst == path:  # the sidecar as it stands while the file is being replaced
            seen.append(open(path + ".sha256").read().split())
        return real_rename(tmp, dst)

    monkeypatch.setattr(C, "_rename_over", watch)
    current = C.sha256_file(path)
    C.atomic_save(_ck(2), path)
    assert current in seen[0]
    assert C.load_checkpoint(path)["step"] == 2
