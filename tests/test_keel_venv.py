"""keel_venv: how a release's dependencies are found, checked, keyed and built.

The builds use the real uv (the same version the hosts get) on a temporary
folder; a requirements file with no packages needs no index.
"""

import shutil
import sys
from pathlib import Path

import pytest
from conftest import load_module

keel_venv = load_module("keel_venv")
UV = shutil.which("uv")


@pytest.fixture
def release(tmp_path):
    folder = tmp_path / "releases" / "20260101000000-abc1234"
    folder.mkdir(parents=True)
    return folder


def params(release: Path, **overrides) -> dict:
    root = release.parent.parent
    return {
        "release": str(release),
        "venvs_dir": str(root / "venvs"),
        "python": sys.executable,
        "uv": UV,
        "cache_dir": str(root / ".cache" / "uv"),
        "dependencies": "auto",
        "requirements_file": "requirements.txt",
        "uv_project": ".",
        "extra_args": ["--offline"],
        **overrides,
    }


@pytest.mark.parametrize(
    ("version", "specifier", "fits"),
    [
        ((3, 11, 2), ">=3.11", True),
        ((3, 11, 2), ">=3.12", False),
        ((3, 13, 1), "==3.13.*", True),
        ((3, 11, 2), "==3.13.*", False),
        ((3, 11, 2), "!=3.11.*", False),
        ((3, 12, 0), ">=3.11,<3.13", True),
        ((3, 13, 0), ">=3.11, <3.13", False),
        ((3, 11, 9), "~=3.11", True),
        ((4, 0, 0), "~=3.11", False),
        ((3, 11, 2), "~=3.11.3", False),
        ((3, 11, 0), "==3.11", True),
        ((3, 11, 0), "<=3.10", False),
        ((3, 10, 0), "<3.11", True),
        ((3, 11, 0), ">3.11", False),
        ((3, 11, 0), "===3.11.0", True),
    ],
)
def test_requires_python_is_read_as_pep_440_says(version, specifier, fits):
    assert keel_venv.satisfies(version, specifier) is fits


@pytest.mark.parametrize("specifier", [">=three", "~=3", ">=3.*"])
def test_an_unreadable_specifier_is_an_error(specifier):
    with pytest.raises(ValueError):
        keel_venv.satisfies((3, 11, 0), specifier)


def test_auto_prefers_the_uv_lock_and_falls_back_to_requirements(release):
    (release / "requirements.txt").write_text("")
    assert keel_venv.choose_tool(params(release))[0] == "requirements"
    (release / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1"\n')
    (release / "uv.lock").write_text("version = 1\n")
    assert keel_venv.choose_tool(params(release))[0] == "uv"


def test_a_commit_without_dependencies_names_both_settings(release):
    with pytest.raises(keel_venv.VenvError, match=r"neither uv.lock \(app_uv_project\) nor requirements.txt"):
        keel_venv.choose_tool(params(release))


def test_uv_mode_without_a_lock_says_which_file_is_missing(release):
    (release / "pyproject.toml").write_text('[project]\nname = "x"\n')
    with pytest.raises(keel_venv.VenvError, match=r"no uv\.lock"):
        keel_venv.choose_tool(params(release, dependencies="uv"))
    with pytest.raises(keel_venv.VenvError, match=r"no requirements/prod\.txt"):
        keel_venv.choose_tool(params(release, dependencies="requirements", requirements_file="requirements/prod.txt"))


def test_a_project_that_needs_another_python_is_refused_naming_both_versions(release):
    (release / "requirements.txt").write_text("")
    (release / "pyproject.toml").write_text('[project]\nname = "x"\nrequires-python = ">=3.99"\n')
    with pytest.raises(keel_venv.VenvError) as refused:
        keel_venv.ensure_venv(params(release))
    message = str(refused.value)
    assert ">=3.99" in message and f"Python {sys.version.split()[0]}" in message and "deploy_python" in message
    assert not (release.parent.parent / "venvs").exists(), "nothing is built for a refused project"


def test_a_venv_is_built_once_and_reused_by_the_next_release_of_the_same_dependencies(release):
    (release / "requirements.txt").write_text("# nothing to install\n")
    first = keel_venv.ensure_venv(params(release))
    assert first["built"] and first["tool"] == "uv pip install"
    venv = release / ".venv"
    assert venv.is_symlink() and (venv / "bin" / "python").exists() and (venv / ".keel-complete").exists()
    second_release = release.parent / "20260102000000-def5678"
    shutil.copytree(release, second_release, symlinks=True)
    (second_release / ".venv").unlink()
    second = keel_venv.ensure_venv(params(second_release))
    assert not second["built"] and second["key"] == first["key"]
    assert (second_release / ".venv").resolve() == venv.resolve()


def test_changed_requirements_get_a_venv_of_their_own(release):
    (release / "requirements.txt").write_text("")
    first = keel_venv.ensure_venv(params(release))
    (release / "requirements.txt").write_text("# changed\n")
    second = keel_venv.ensure_venv(params(release))
    assert second["built"] and second["key"] != first["key"]


def test_a_half_built_venv_is_never_reused(release):
    (release / "requirements.txt").write_text("")
    key = keel_venv.ensure_venv(params(release))["key"]
    venv = release.parent.parent / "venvs" / key
    (venv / ".keel-complete").unlink()
    (venv / "leftover").write_text("from a killed build")
    again = keel_venv.ensure_venv(params(release))
    assert again["built"] and not (venv / "leftover").exists()


def test_a_failed_build_leaves_no_venv_and_shows_the_cause_in_whole_lines(release):
    (release / "requirements.txt").write_text("keel-no-such-package-anywhere==1.0\n")
    with pytest.raises(keel_venv.VenvError) as failed:
        keel_venv.ensure_venv(params(release))
    message = str(failed.value)
    assert message.startswith("uv pip install failed")
    assert "keel-no-such-package-anywhere" in message
    assert list((release.parent.parent / "venvs").iterdir()) == []
    assert not (release / ".venv").exists()


def test_uv_sync_builds_from_the_lock(release):
    (release / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1"\nrequires-python = ">=3.8"\n')
    shutil.copy(Path(__file__).parent / "fixtures" / "empty-uv.lock", release / "uv.lock")
    result = keel_venv.ensure_venv(params(release))
    assert result["tool"] == "uv sync" and result["built"]
    assert (release / ".venv" / "bin" / "python").exists()


def test_the_tail_keeps_whole_lines_only():
    text = "\n".join(f"line {n} " + "x" * 50 for n in range(100))
    kept = keel_venv.tail(text, lines=25, chars=300)
    assert kept.splitlines() == text.splitlines()[-len(kept.splitlines()) :]
    assert len(kept) <= 300 and kept.splitlines()[-1].startswith("line 99")
