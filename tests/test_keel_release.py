"""keel_release (the deploy role's release folder module) on a temporary app folder, with real git and tar:
the lock, creating a release from a commit or a shipped archive, listing, the switch and pruning."""

import base64
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time

import pytest
from conftest import load_module

keel_release = load_module("keel_release")
ReleaseError = keel_release.ReleaseError


def release_id(n, sha="abc1234"):
    return f"202611230000{n:02d}-{sha}"


def make_release(layout, n, venv="venv-a", complete=True):
    """A release as the deploy leaves it: code, release.json, migrations state, and a linked virtualenv."""
    name = release_id(n)
    path = layout.release(name)
    os.makedirs(os.path.join(path, "app"))
    os.makedirs(os.path.join(layout.venvs_dir, venv), exist_ok=True)
    os.symlink(os.path.join(layout.venvs_dir, venv), os.path.join(path, ".venv"))
    if complete:
        open(os.path.join(layout.venvs_dir, venv, ".keel-complete"), "w").close()
        for marker in ("release.json", ".keel-migrations.json"):
            with open(os.path.join(path, marker), "w") as stream:
                json.dump({"release": name}, stream)
    return name


@pytest.fixture
def layout(tmp_path):
    os.makedirs(tmp_path / "releases")
    os.makedirs(tmp_path / "venvs")
    return keel_release.Layout(str(tmp_path))


@pytest.fixture
def repo(tmp_path):
    """A git repository with one commit holding app/manage.py, and its bare cache as the deploy keeps it."""
    work = tmp_path / "work"
    (work / "app").mkdir(parents=True)
    (work / "app" / "manage.py").write_text("print('manage')\n")
    git = ["git", "-c", "user.name=Keel", "-c", "user.email=keel@example.test", "-C", str(work)]
    subprocess.run([*git, "init", "--quiet", "--initial-branch=main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "--quiet", "-m", "First"], check=True)
    cache = tmp_path / "repo.git"
    subprocess.run(["git", "clone", "--quiet", "--mirror", str(work), str(cache)], check=True)
    sha = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    return str(cache), sha


def test_the_lock_is_exclusive_and_names_its_owner(layout):
    assert keel_release.take_lock(layout, "ops@laptop, since 2026-11-23T10:00:00Z, deploying abc")["changed"]
    with pytest.raises(ReleaseError, match=r"another deploy holds the lock on this host \(ops@laptop, since"):
        keel_release.take_lock(layout, "ci@runner")
    assert keel_release.release_lock(layout) == {"changed": True}
    assert keel_release.release_lock(layout) == {"changed": False}
    assert keel_release.take_lock(layout, "ci@runner")["changed"]


def test_a_stale_lock_is_reported_then_broken_when_asked(layout):
    os.mkdir(layout.lock)  # a killed deploy's, without its owner file
    with pytest.raises(ReleaseError, match=r"\(owner unknown\).*deploy_break_lock=true"):
        keel_release.take_lock(layout, "ops")
    keel_release.take_lock(layout, "ops", break_lock=True)
    with open(os.path.join(layout.lock, "owner")) as stream:
        assert stream.read() == "ops\n"


def test_a_release_is_created_from_a_commit_of_the_cache(layout, repo):
    cache, sha = repo
    name = release_id(1, sha[:7])
    assert keel_release.create(layout, name, "git", "app", repo_cache=cache, sha=sha)["changed"]
    with open(os.path.join(layout.release(name), "app", "manage.py")) as stream:
        assert stream.read() == "print('manage')\n"


def test_a_commit_without_manage_py_where_it_is_expected_leaves_nothing(layout, repo):
    cache, sha = repo
    with pytest.raises(ReleaseError, match=r"has no manage.py in src \(app_django_dir\)"):
        keel_release.create(layout, release_id(1), "git", "src", repo_cache=cache, sha=sha)
    assert os.listdir(layout.releases_dir) == []


def test_an_unknown_commit_leaves_nothing(layout, repo):
    cache, _ = repo
    with pytest.raises(ReleaseError, match="git archive of 0123456789ab failed"):
        keel_release.create(layout, release_id(1), "git", "app", repo_cache=cache, sha="0123456789abcdef")
    assert os.listdir(layout.releases_dir) == []


def test_a_release_is_created_from_an_archive_given_inline(layout, tmp_path):
    source = tmp_path / "src" / "app"
    source.mkdir(parents=True)
    (source / "manage.py").write_text("inline")
    archive = tmp_path / "packed.tar.gz"
    with tarfile.open(archive, "w:gz") as stream:
        stream.add(source, arcname="app")
    content = base64.b64encode(archive.read_bytes()).decode()
    keel_release.create(layout, release_id(1), "inline", "app", content=content)
    with open(os.path.join(layout.release(release_id(1)), "app", "manage.py")) as stream:
        assert stream.read() == "inline"
    with pytest.raises(ReleaseError, match="archive_content is not base64"):
        keel_release.create(layout, release_id(2), "inline", "app", content="not base64!")
    with pytest.raises(ReleaseError, match="the shipped archive cannot be unpacked"):
        keel_release.create(layout, release_id(3), "inline", "app", content=base64.b64encode(b"no tar").decode())
    assert layout.releases() == [release_id(1)]


def test_create_refuses_what_it_cannot_use(layout):
    with pytest.raises(ReleaseError, match="is not a release id"):
        keel_release.create(layout, "../escape", "git", repo_cache="/x", sha="abc")
    with pytest.raises(ReleaseError, match="needs repo_cache and sha"):
        keel_release.create(layout, release_id(1), "git")


def test_the_listing_names_the_live_release_the_previous_one_and_the_complete_ones(layout):
    first, second = make_release(layout, 1), make_release(layout, 2)
    third = make_release(layout, 3, venv="venv-b", complete=False)
    os.mkdir(os.path.join(layout.releases_dir, "not-a-release"))
    assert keel_release.run({"action": "list", "root": layout.root}) == {
        "changed": False, "live": "", "previous": "",
        "releases": [first, second, third], "complete": [first, second],
    }  # fmt: skip
    keel_release.switch(layout, second)
    state = keel_release.run({"action": "list", "root": layout.root})
    assert (state["live"], state["previous"]) == (second, first)


def test_the_previous_release_is_the_one_live_before_not_one_rolled_back_from(layout):
    good, bad = make_release(layout, 1), make_release(layout, 2)
    keel_release.switch(layout, good)  # bad was deployed, then rolled back from
    fixed = make_release(layout, 3)
    with open(os.path.join(layout.release(fixed), "release.json"), "w") as stream:
        json.dump({"release": fixed, "previous": good}, stream)  # what the build writes: the live one then
    keel_release.switch(layout, fixed)
    assert keel_release.run({"action": "list", "root": layout.root})["previous"] == good
    # prune spares it, though it is the oldest and only the newest 2 are kept.
    keel_release.prune(layout, keep=2)
    assert layout.releases() == [good, bad, fixed]
    # Once it is gone, the previous release is the newest older one.
    os.rename(layout.release(good), os.path.join(layout.root, "gone"))
    assert layout.state()["previous"] == bad


def test_switching_to_a_missing_or_incomplete_release_is_refused_and_changes_nothing(layout):
    live = make_release(layout, 1)
    incomplete = make_release(layout, 2, venv="venv-b", complete=False)
    keel_release.switch(layout, live)
    for wanted in (incomplete, release_id(9)):
        with pytest.raises(ReleaseError, match=rf"Release {wanted} is not on this host, or is incomplete. "
                                               rf"Releases that can go live: {live}\."):  # fmt: skip
            keel_release.switch(layout, wanted)
        assert layout.live() == live


def test_the_switch_is_atomic_current_always_names_a_whole_release(layout):
    releases = [make_release(layout, n) for n in (1, 2)]
    keel_release.switch(layout, releases[0])
    seen, done = set(), threading.Event()

    def watch():
        while not done.is_set():
            try:
                seen.add(os.path.basename(os.readlink(layout.current)))
            except OSError:
                seen.add("no current")

    watcher = threading.Thread(target=watch)
    watcher.start()
    # At least 300 switches, and on until the watcher has seen both releases (a loaded machine may
    # schedule it late), within 30 s.
    turn, deadline = 0, time.monotonic() + 30
    while turn < 300 or (seen != set(releases) and time.monotonic() < deadline):
        assert keel_release.switch(layout, releases[(turn + 1) % 2])["changed"]
        turn += 1
    done.set()
    watcher.join()
    assert seen == set(releases)
    assert keel_release.switch(layout, releases[0]) == {"changed": False, "was": releases[0]}


def test_prune_keeps_the_live_and_previous_releases_and_their_virtualenvs(layout):
    old = [make_release(layout, n, venv=f"venv-{n}") for n in range(1, 7)]
    keel_release.switch(layout, old[1])  # rolled back far: the live one is the second oldest
    open(os.path.join(layout.releases_dir, f".{release_id(9)}.tar.gz"), "w").close()
    os.mkdir(os.path.join(layout.venvs_dir, "venv-orphan"))
    result = keel_release.prune(layout, keep=2)
    assert layout.releases() == [old[0], old[1], old[4], old[5]]
    assert sorted(os.listdir(layout.venvs_dir)) == ["venv-1", "venv-2", "venv-5", "venv-6"]
    assert (
        result["changed"] and "release " + old[2] in result["removed"] and "virtualenv venv-orphan" in result["removed"]
    )
    assert not [name for name in os.listdir(layout.releases_dir) if name.endswith(".tar.gz")]
    assert keel_release.prune(layout, keep=2) == {"changed": False, "removed": []}


def test_prune_needs_room_for_the_live_release_and_the_one_before_it(layout):
    with pytest.raises(ReleaseError, match="at least 2"):
        keel_release.prune(layout, keep=1)


def test_run_dispatches_each_action_and_reports_the_live_release(layout, repo):
    cache, sha = repo
    params = {"root": layout.root, "owner": "ops", "break_lock": False, "release": release_id(1, sha[:7]),
              "source": "git", "repo_cache": cache, "sha": sha, "django_dir": "app",
              "keep": 5, "shared_links": [], "archive_content": ""}  # fmt: skip
    assert keel_release.run(dict(params, action="lock"))["changed"]
    assert keel_release.run(dict(params, action="create"))["changed"]
    assert keel_release.run(dict(params, action="prune")) == {
        "changed": False,
        "removed": [],
        "live": "",
        "previous": "",
    }
    assert keel_release.run(dict(params, action="unlock"))["changed"]


def commit_to(work, message, files):
    git = ["git", "-c", "user.name=Keel", "-c", "user.email=keel@example.test", "-C", str(work)]
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "--quiet", "-m", message], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


def test_start_takes_the_lock_then_reads_the_live_release_and_fetches_and_resolves(layout, repo, tmp_path):
    cache, first = repo
    live = make_release(layout, 1)
    keel_release.switch(layout, live)
    env_file = tmp_path / "env"
    env_file.write_text("")
    second = commit_to(tmp_path / "work", "Second", {"app/views.py": ""})
    result = keel_release.start(layout, "ops", env_file=str(env_file), repo_url=str(tmp_path / "work"),
                                repo_cache=cache, version="main")  # fmt: skip
    assert result == {"changed": False, "locked": True, "live_release": {"release": live}, "sha": second}
    assert os.path.isdir(layout.lock)
    assert keel_release.resolve(cache, first[:10]) == first


def test_start_clones_the_cache_the_first_time(layout, repo, tmp_path):
    _, sha = repo
    cache = os.path.join(layout.root, "repo.git")
    result = keel_release.start(layout, "ops", repo_url=str(tmp_path / "work"), repo_cache=cache, version="main")
    assert result["sha"] == sha and result["live_release"] == {}
    assert os.path.isfile(os.path.join(cache, "HEAD"))


def test_start_in_check_mode_takes_no_lock(layout, repo):
    cache, sha = repo
    assert keel_release.start(layout, "ops", repo_cache=cache, version=sha, check_mode=True)["locked"] is False
    assert not os.path.exists(layout.lock)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"version": "no-such-branch"},
            r"app_version 'no-such-branch' is not a branch, tag or commit of .*"
            r"Nothing was changed on this host",
        ),
        ({"repo_url": "/nowhere/repo.git", "version": "main"}, r"fetching /nowhere/repo.git failed: .*"),
    ],
)
def test_start_releases_the_lock_it_took_when_it_fails(layout, repo, kwargs, message):
    cache, _ = repo
    with pytest.raises(ReleaseError, match=message):
        keel_release.start(layout, "ops", repo_cache=cache, **kwargs)
    assert not os.path.exists(layout.lock)


def test_start_refuses_an_unprovisioned_host_and_a_held_lock(layout, tmp_path):
    with pytest.raises(ReleaseError, match=r"/no/env is missing: run provision.yml for this host first"):
        keel_release.start(layout, "ops", env_file="/no/env")
    assert not os.path.exists(layout.lock)
    keel_release.take_lock(layout, "alice, deploying")
    with pytest.raises(ReleaseError, match=r"another deploy holds the lock on this host \(alice, deploying\)"):
        keel_release.start(layout, "bob")


def test_a_damaged_live_release_json_reads_as_nothing_live(layout):
    live = make_release(layout, 1)
    keel_release.switch(layout, live)
    for content in ("not json", "[1, 2]"):
        with open(os.path.join(layout.release(live), "release.json"), "w") as stream:
            stream.write(content)
        assert keel_release.read_live_release(layout) == {}


def test_create_links_the_shared_paths_seeding_shared_from_the_first_release(layout, repo, tmp_path):
    cache, _ = repo
    work = tmp_path / "work"
    sha = commit_to(work, "Media", {"app/media/logo.png": "png", "app/settings.ini": "[x]"})
    subprocess.run(["git", f"--git-dir={cache}", "fetch", "--quiet", str(work), "+main:main"], check=True)
    shared = tmp_path / "shared"
    links = [["app/media", str(shared / "media")], ["app/settings.ini", str(shared / "settings.ini")],
             ["app/uploads/cache", str(shared / "uploads" / "cache")]]  # fmt: skip
    first = release_id(1, sha[:7])
    keel_release.create(layout, first, "git", "app", repo_cache=cache, sha=sha, shared_links=links)
    code = layout.release(first)
    assert os.readlink(os.path.join(code, "app", "media")) == str(shared / "media")
    assert (shared / "media" / "logo.png").read_text() == "png" and (shared / "settings.ini").read_text() == "[x]"
    assert (shared / "uploads" / "cache").is_dir() and os.path.islink(os.path.join(code, "app", "uploads", "cache"))
    (shared / "media" / "upload.jpg").write_text("jpg")  # the app writes; the next release ships its own copy
    second = release_id(2, sha[:7])
    keel_release.create(layout, second, "git", "app", repo_cache=cache, sha=sha, shared_links=links)
    assert sorted(os.listdir(os.path.join(layout.release(second), "app", "media"))) == ["logo.png", "upload.jpg"]


def test_a_shared_path_outside_the_release_leaves_nothing(layout, repo, tmp_path):
    cache, sha = repo
    with pytest.raises(ReleaseError, match=r"the shared path \.\./escape is not inside the release"):
        keel_release.create(layout, release_id(1), "git", "app", repo_cache=cache, sha=sha,
                            shared_links=[["../escape", str(tmp_path / "shared")]])  # fmt: skip
    assert os.listdir(layout.releases_dir) == []


def test_go_live_without_units_switches_and_keeps_the_link_the_app_folders(layout):
    first, second = make_release(layout, 1), make_release(layout, 2)
    assert keel_release.go_live(layout, first)["web"] == "nothing"
    result = keel_release.go_live(layout, second)
    assert (result["changed"], result["was"], layout.live()) == (True, first, second)
    assert os.lstat(layout.current).st_uid == os.stat(layout.root).st_uid


def test_start_and_go_live_through_run(layout, repo):
    cache, sha = repo
    release = make_release(layout, 1)
    params = {"action": "start", "root": layout.root, "owner": "ops", "break_lock": False, "env_file": "",
              "repo_url": "", "repo_cache": cache, "version": sha}  # fmt: skip
    state = keel_release.run(params)
    assert (state["sha"], state["locked"], state["complete"]) == (sha, True, [release])
    params = {"action": "go_live", "root": layout.root, "release": release, "web_units": [], "celery_units": [],
              "reload_web": True, "django_dir": "app"}  # fmt: skip
    assert keel_release.run(params)["live"] == release


def test_go_live_names_the_web_unit_that_does_not_start_with_its_journal(layout):
    first = make_release(layout, 1)
    with pytest.raises(ReleaseError, match=rf"(?s)keel-no-such-unit.service does not start on release {first} \(.+\)\. "
                                           r"Its last lines:\n."):  # fmt: skip
        keel_release.go_live(layout, first, web_units=["keel-no-such-unit.service"], reload_web=True)
    # The switch is done: the play switches back (revert.yml), knowing which release was live.
    assert layout.live() == first


def test_go_live_reports_celery_units_that_cannot_be_restarted(layout):
    first = make_release(layout, 1)
    with pytest.raises(ReleaseError, match=rf"keel-no-such-worker.service cannot be restarted on release {first}"):
        keel_release.go_live(layout, first, celery_units=["keel-no-such-worker.service"])


def test_gunicorn_is_not_reloaded_when_systemd_cannot_show_it(layout):
    assert keel_release.reloads("keel-no-such-unit.service", layout.root, seconds=0.1) is False


def module(tmp_path, args, check_mode=False):
    """main() as Ansible runs it, given its arguments as JSON: (its JSON answer)."""
    from ansible.module_utils import basic

    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check_mode}}))
    basic._ANSIBLE_ARGS = None  # AnsibleModule reads its arguments once per process
    argv, stdout = sys.argv, sys.stdout
    sys.argv, sys.stdout = ["keel_release.py", str(args_file)], io.StringIO()
    try:
        with pytest.raises(SystemExit):
            keel_release.main()
        return json.loads(sys.stdout.getvalue())
    finally:
        sys.argv, sys.stdout = argv, stdout


def test_the_module_answers_ansible_in_json(layout, tmp_path):
    first = make_release(layout, 1)
    listing = module(tmp_path, {"action": "list", "root": layout.root})
    assert (listing["complete"], listing["live"], listing["changed"]) == ([first], "", False)
    refused = module(tmp_path, {"action": "switch", "root": layout.root, "release": release_id(9)})
    assert refused["failed"] and "is not on this host, or is incomplete" in refused["msg"]
    skipped = module(tmp_path, {"action": "switch", "root": layout.root, "release": first}, check_mode=True)
    assert skipped["skipped"] and layout.live() == ""
    assert module(tmp_path, {"action": "switch", "root": layout.root, "release": first})["live"] == first
