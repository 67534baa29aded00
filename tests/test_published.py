"""Published repositories: versioned folders, an atomic CURRENT pointer, and pods' own copies (bge-stage)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bge_deploy.serving.stage import StageError, StageSettings, stage
from bge_model_repository import published


def _publish(root: Path, marker: str, fail: bool = False) -> None:
    """What bge-export --publish-root does around its export, with a one-file 'repository'."""
    with published.new_version(root) as staging:
        (staging / "bge-large-zh-v1.5").mkdir()
        (staging / "bge-large-zh-v1.5" / "config.pbtxt").write_text(marker)
        if fail:
            raise RuntimeError("export failed half-way")


def _served(folder: Path) -> str:
    return (folder / "bge-large-zh-v1.5" / "config.pbtxt").read_text()


def test_a_failed_export_leaves_the_current_version_alone(tmp_path: Path) -> None:
    _publish(tmp_path, "v1")
    before = published.current(tmp_path)
    with pytest.raises(RuntimeError, match="half-way"):
        _publish(tmp_path, "broken", fail=True)
    assert published.current(tmp_path) == before
    assert _served(before.path) == "v1"
    assert [p.name for p in (tmp_path / published.VERSIONS).iterdir()] == [before.name], "staging not removed"


def test_nothing_published_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(published.NotPublishedError, match="nothing has been published"):
        published.current(tmp_path)
    (tmp_path / published.CURRENT).write_text("../../etc\n")
    with pytest.raises(published.NotPublishedError, match="not a version folder"):
        published.current(tmp_path)
    (tmp_path / published.CURRENT).write_text("000099-20990101T000000Z\n")
    with pytest.raises(published.NotPublishedError, match="does not exist"):
        published.current(tmp_path)


def test_re_export_does_not_touch_a_running_pods_copy(tmp_path: Path) -> None:
    """A pod serves its own copy: later publishes and prunes change the shared volume only."""
    root, pod = tmp_path / "pvc", tmp_path / "pod-models"
    _publish(root, "v1")
    first = stage(StageSettings(published=root, to=pod))
    for marker in ("v2", "v3", "v4"):
        _publish(root, marker)
    assert _served(pod) == "v1"
    assert not first.path.exists(), "the oldest version should have been pruned"
    names = [v.name for v in published.versions(root)]
    assert len(names) == published.KEEP_VERSIONS and names[-1] == published.current(root).name
    assert _served(published.current(root).path) == "v4"
    # a pod (re)started now gets the new version, replacing what its folder held
    stage(StageSettings(published=root, to=pod))
    assert _served(pod) == "v4"
    assert sorted(p.name for p in pod.iterdir()) == ["bge-large-zh-v1.5"]


def test_the_pointer_never_disappears_while_versions_are_published(tmp_path: Path) -> None:
    """Readers polling CURRENT during five publishes always find a complete version."""
    _publish(tmp_path, "v0")
    seen: set[str] = set()
    errors: list[str] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                version = published.current(tmp_path)
                seen.add(_served(version.path))
            except (published.NotPublishedError, FileNotFoundError) as exc:
                errors.append(str(exc))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(1, 6):
            _publish(tmp_path, f"v{n}")
            time.sleep(0.01)
    finally:
        done.set()
        reader.join()
    # A reader can lose a race with a prune (it read the name of a version pruned a moment later):
    # then it finds the folder gone, which bge-stage reports and Kubernetes retries. Never a missing pointer.
    assert not [e for e in errors if "nothing has been published" in e or "not a version" in e], errors
    assert "v5" in seen or _served(published.current(tmp_path).path) == "v5"


def test_rollback_is_one_pointer_write(tmp_path: Path) -> None:
    _publish(tmp_path, "v1")
    previous = published.current(tmp_path)
    _publish(tmp_path, "v2")
    published.point_at(tmp_path, previous.name)
    assert _served(published.current(tmp_path).path) == "v1"
    with pytest.raises(published.NotPublishedError):
        published.point_at(tmp_path, "000000-19700101T000000Z")


def test_stage_refuses_a_version_without_the_served_model(tmp_path: Path) -> None:
    _publish(tmp_path / "pvc", "v1")
    with pytest.raises(StageError, match="holds no model 'other-model'"):
        stage(StageSettings(published=tmp_path / "pvc", to=tmp_path / "pod", model="other-model"))


def test_bge_stage_waits_then_gives_up_with_one_line(tmp_path: Path) -> None:
    """The init container's command: exit 2 with the reason when nothing is published in time."""
    started = time.monotonic()
    proc = subprocess.run(
        [Path(sys.executable).parent / "bge-stage", "--published", str(tmp_path), "--to", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        timeout=60,
        env={"BGE_STAGE_WAIT_S": "1", "BGE_STAGE_POLL_S": "0.2", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "has the bge-export Job run?" in errors[0], proc.stderr
    assert "waiting for the bge-export Job" in proc.stderr
    assert time.monotonic() - started < 30
