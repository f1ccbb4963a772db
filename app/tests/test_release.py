import json

from keelapp.release import read_release


def test_release_file_is_found_above_the_code(tmp_path, monkeypatch):
    monkeypatch.delenv("RELEASE_ID", raising=False)
    release_dir = tmp_path / "releases" / "20261122T203000Z-abc1234"
    code_dir = release_dir / "app"
    code_dir.mkdir(parents=True)
    (release_dir / "release.json").write_text(json.dumps({"release": release_dir.name, "sha": "abc1234def"}))
    assert read_release(code_dir) == {"release": release_dir.name, "sha": "abc1234def"}


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RELEASE_ID", "r42")
    monkeypatch.setenv("RELEASE_SHA", "f00")
    assert read_release(tmp_path) == {"release": "r42", "sha": "f00"}


def test_unknown_without_file_or_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("RELEASE_ID", raising=False)
    assert read_release(tmp_path) == {"release": "unknown", "sha": "unknown"}
