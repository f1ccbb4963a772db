#!/usr/bin/python3
"""The deploy's release folder on one host: the lock and the code, creating a release, listing, going live,
pruning."""

DOCUMENTATION = r"""
module: keel_release
short_description: Manage a Keel app's releases on a host (start, lock, create, list, switch, go live, prune)
description:
  - The layout under root is Keel's. releases/<YYYYmmddHHMMSS>-<sha> is one release. current is a symlink to the
    live one. venvs/<key> holds the virtualenvs that releases link as .venv. deploy.lock/ is the lock, with an
    owner file.
  - A release is complete once it has release.json, .keel-migrations.json and a finished virtualenv
    (.venv/.keel-complete); only complete releases can go live.
  - C(start) begins a deploy or a rollback on the host, in one call. It checks that env_file exists, takes the
    lock (not in check mode), reads the live release's release.json, fetches repo_url into the git cache
    repo_cache as the user it runs as (HOME is root, where a deploy key lives), and resolves version to a commit
    there. It also lists the releases, as C(list) does. If anything fails after the lock was taken, the lock is
    released before the module fails.
  - C(lock) takes the lock, or fails naming its owner. C(break_lock) removes a lock that a killed run left first.
    C(unlock) releases it.
  - C(create) makes releases/<release> from a commit of the git cache (source=git) or from a tar.gz archive
    given in archive_content (source=inline, the controller's packed commit).
    It checks that manage.py is in django_dir, then links each of shared_links into shared/: a path the release
    ships seeds its shared copy the first time, then the release's own copy goes. A failed creation leaves
    nothing behind.
  - C(list) reports the live release, the one before it, every release, and the complete ones.
  - C(switch) points current at a complete release. A new link is renamed over the old one, so current always
    names one whole release.
  - C(go_live) switches, then restarts web_units (or reloads them, see reload_web) and restarts celery_units
    without waiting for them (the gate watches them). It runs as root; the link stays the app folder's owner's.
  - C(prune) keeps the newest C(keep) releases, and never removes the live release or the one before it. It then
    removes the virtualenvs that no kept release uses. What goes is renamed away at once and deleted in the
    background.
options:
  action:
    description: What to do.
    type: str
    required: true
    choices: [start, lock, unlock, create, list, switch, go_live, prune]
  root: {description: "The app's folder (app_root).", type: path, required: true}
  current: {description: "The name of the live release's link in root.", type: str, default: current}
  owner: {description: "Who takes the lock and why, written to its owner file.", type: str, default: ""}
  break_lock: {description: "Remove a lock that is there before taking it.", type: bool, default: false}
  release: {description: "The release id, for create and switch.", type: str, default: ""}
  source:
    description: Where create takes the code from; inline, from archive_content.
    type: str
    choices: [git, inline]
    default: git
  archive_content: {description: "For source=inline, a tar.gz archive, base64-encoded.", type: str, default: ""}
  repo_cache: {description: "The bare git cache, for source=git.", type: path}
  sha: {description: "The commit, for source=git.", type: str, default: ""}
  django_dir: {description: "manage.py's folder in the release.", type: str, default: "."}
  keep: {description: "Releases prune keeps (at least 2).", type: int, default: 5}
  env_file: {description: "For start: the app's env file, which must exist.", type: str, default: ""}
  repo_url: {description: "For start: what to fetch into repo_cache; empty: nothing.", type: str, default: ""}
  version: {description: "For start: a branch, tag or commit to resolve; empty: none.", type: str, default: ""}
  shared_links:
    description: For create, pairs of (a path in the release, relative to it; its folder in shared/).
    type: list
    elements: list
    default: []
  web_units: {description: "For go_live: gunicorn's units.", type: list, elements: str, default: []}
  celery_units: {description: "For go_live: the Celery units.", type: list, elements: str, default: []}
  reload_web:
    description:
      - For go_live, a code-only change (the release links the same virtualenv as the live one) reloads gunicorn
        (HUP) instead of restarting it. New workers load the new code while the old ones finish their requests,
        and the master and the socket stay.
      - Done only when the unit runs gunicorn with --chdir through current and without --preload, and
        django_dir has no gunicorn.conf.py. Otherwise, or when the master's folder does not move to the new
        release within 5 s of the HUP, it restarts.
    type: bool
    default: false
"""

RETURN = r"""
live: {description: "The live release, or an empty string.", type: str, returned: always}
previous:
  description: >-
    The release that was live before the live one (its release.json's previous), if it is still on the host; else
    the newest older one; or an empty string.
  type: str
  returned: always
releases: {description: "Every release, oldest first.", type: list, returned: list}
complete: {description: "The releases that can go live, oldest first.", type: list, returned: list}
removed: {description: "What prune removed.", type: list, returned: prune}
live_release: {description: "The live release's release.json, or {}.", type: dict, returned: start}
sha: {description: "The commit version resolves to, or an empty string.", type: str, returned: start}
locked: {description: "Whether start took the lock (not in check mode).", type: bool, returned: start}
web: {description: "What go_live did to web_units: restarted, reloaded or nothing.", type: str, returned: go_live}
"""

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

RELEASE_ID = re.compile(r"[0-9]{14}-[0-9a-f]{7,40}")
COMPLETE_MARKERS = ("release.json", ".keel-migrations.json", os.path.join(".venv", ".keel-complete"))
JOURNAL_LINES = 15
RELOAD_SECONDS = 5


ACTIONS = ["start", "lock", "unlock", "create", "list", "switch", "go_live", "prune"]


class ReleaseError(Exception):
    """The action cannot be done; the message says why, and nothing was changed."""


class Layout:
    def __init__(self, root, current="current"):
        self.root = root
        self.releases_dir = os.path.join(root, "releases")
        self.venvs_dir = os.path.join(root, "venvs")
        self.current = os.path.join(root, current)
        self.lock = os.path.join(root, "deploy.lock")

    def release(self, release_id):
        if not RELEASE_ID.fullmatch(release_id or ""):
            raise ReleaseError(f"'{release_id}' is not a release id (YYYYmmddHHMMSS-<commit>)")
        return os.path.join(self.releases_dir, release_id)

    def releases(self):
        try:
            names = os.listdir(self.releases_dir)
        except FileNotFoundError:
            return []
        return sorted(name for name in names if RELEASE_ID.fullmatch(name) and os.path.isdir(self.release(name)))

    def is_complete(self, release_id):
        return all(os.path.exists(os.path.join(self.release(release_id), marker)) for marker in COMPLETE_MARKERS)

    def previous(self, releases, live):
        """The release that was live before the live one (its release.json says), if it is still here; else the
        newest older one. Not merely the newest older one: after a rollback from B to A and a deploy of C, the one
        before C is A, and B was rolled back from."""
        if not live:
            return ""
        recorded = read_live_release(self).get("previous") or ""
        if recorded in releases and recorded != live:
            return recorded
        older = [release for release in releases if release < live]
        return older[-1] if older else ""

    def live(self):
        try:
            return os.path.basename(os.readlink(self.current))
        except OSError:
            return ""

    def state(self):
        releases, live = self.releases(), self.live()
        return {
            "live": live,
            "previous": self.previous(releases, live),
            "releases": releases,
            "complete": [release for release in releases if self.is_complete(release)],
        }


def start(layout, owner, break_lock=False, env_file="", repo_url="", repo_cache="", version="", check_mode=False):
    """The first host step of a deploy or rollback: the lock, then what is live, then the code."""
    if env_file and not os.path.isfile(env_file):
        raise ReleaseError(f"{env_file} is missing: run provision.yml for this host first")
    locked = not check_mode
    if locked:
        take_lock(layout, owner, break_lock)
    try:
        # The lock is this run's own, released before it ends: no change to the host.
        result = {"changed": False, "locked": locked, "live_release": read_live_release(layout), "sha": ""}
        if repo_url:
            fetch(repo_url, repo_cache, layout.root)
        if version:
            result["sha"] = resolve(repo_cache, version, repo_url)
    except BaseException:
        if locked:
            release_lock(layout)
        raise
    return result


def read_live_release(layout):
    try:
        with open(os.path.join(layout.current, "release.json")) as stream:
            answer = json.load(stream)
    except (OSError, ValueError):
        return {}
    return answer if isinstance(answer, dict) else {}


def git(*args, home=None):
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", **({"HOME": home} if home else {}))
    return subprocess.run(["git", *args], capture_output=True, text=True, check=False, env=env)


def fetch(repo_url, repo_cache, home):
    """The git cache: a mirror of repo_url, fetched (or cloned the first time) as the user this runs as."""
    if os.path.isdir(repo_cache):
        steps = [("remote", "set-url", "origin", repo_url), ("fetch", "--prune", "--quiet", "origin")]
        steps = [(f"--git-dir={repo_cache}", *step) for step in steps]
    else:
        steps = [("clone", "--mirror", "--quiet", repo_url, repo_cache)]
    for step in steps:
        answer = git(*step, home=home)
        if answer.returncode != 0:
            raise ReleaseError(f"fetching {repo_url} failed: {answer.stderr.strip() or answer.stdout.strip()}")


def resolve(repo_cache, version, repo_url=""):
    answer = git(
        f"--git-dir={repo_cache}", "rev-parse", "--verify", "--quiet", "--end-of-options", f"{version}^{{commit}}"
    )
    if answer.returncode != 0:
        raise ReleaseError(
            f"app_version '{version}' is not a branch, tag or commit of {repo_url or repo_cache} "
            f"({answer.stderr.strip() or 'not found'}). Nothing was changed on this host."
        )
    return answer.stdout.strip()


def take_lock(layout, owner, break_lock=False):
    if break_lock:
        shutil.rmtree(layout.lock, ignore_errors=True)
    try:
        os.mkdir(layout.lock)
    except FileExistsError:
        try:
            with open(os.path.join(layout.lock, "owner")) as stream:
                holder = stream.read().strip() or "owner unknown"
        except OSError:
            holder = "owner unknown"
        raise ReleaseError(
            f"another deploy holds the lock on this host ({holder}). If no deploy is running (one was killed), "
            "run again with -e deploy_break_lock=true."
        ) from None
    with open(os.path.join(layout.lock, "owner"), "w") as stream:
        stream.write(owner + "\n")
    return {"changed": True}


def release_lock(layout):
    existed = os.path.isdir(layout.lock)
    shutil.rmtree(layout.lock, ignore_errors=True)
    return {"changed": existed}


def create(layout, release_id, source, django_dir=".", repo_cache=None, sha="", shared_links=(), content=""):
    path = layout.release(release_id)
    if source == "git" and not (repo_cache and sha):
        raise ReleaseError("source=git needs repo_cache and sha")
    if source == "inline":
        try:
            packed = base64.b64decode(content, validate=True)
        except ValueError as error:
            raise ReleaseError(f"archive_content is not base64: {error}") from None
    os.mkdir(path)
    try:
        if source == "git":
            extract_commit(repo_cache, sha, path)
        else:
            extract_inline(packed, path)
        if not os.path.isfile(os.path.join(path, django_dir, "manage.py")):
            raise ReleaseError(f"commit {sha[:12] or release_id} has no manage.py in {django_dir} (app_django_dir)")
        link_shared(path, shared_links)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return {"changed": True, "release": release_id}


def link_shared(path, shared_links):
    """Each (path in the release, its folder in shared/) becomes a link into shared/."""
    for in_release, in_shared in shared_links:
        inside = os.path.normpath(os.path.join(path, in_release))
        if os.path.commonpath([inside, path]) != path or inside == path:
            raise ReleaseError(f"the shared path {in_release} is not inside the release")
        if not os.path.lexists(in_shared):
            os.makedirs(os.path.dirname(in_shared), exist_ok=True)
            if os.path.isdir(inside) and not os.path.islink(inside):
                shutil.copytree(inside, in_shared, symlinks=True)
            elif os.path.lexists(inside):
                shutil.copy2(inside, in_shared, follow_symlinks=False)
            else:
                os.mkdir(in_shared)
        if os.path.isdir(inside) and not os.path.islink(inside):
            shutil.rmtree(inside)
        elif os.path.lexists(inside):
            os.unlink(inside)
        os.makedirs(os.path.dirname(inside), exist_ok=True)
        os.symlink(in_shared, inside)


def extract_commit(repo_cache, sha, path):
    """git archive of the commit, unpacked by tar into path."""
    git = subprocess.Popen(["git", f"--git-dir={repo_cache}", "archive", "--format=tar", sha],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    tar = subprocess.run(["tar", "-x", "-C", path], stdin=git.stdout, capture_output=True, text=True, check=False)
    git.stdout.close()
    git_error = git.stderr.read().decode(errors="replace").strip()
    git.stderr.close()
    if git.wait() != 0:
        raise ReleaseError(f"git archive of {sha[:12]} failed: {git_error}")
    if tar.returncode != 0:
        raise ReleaseError(f"unpacking commit {sha[:12]} failed: {tar.stderr.strip()}")


def extract_inline(packed, path):
    """The packed tar.gz bytes, unpacked by tar into path."""
    tar = subprocess.run(["tar", "-xzf", "-", "-C", path], input=packed, capture_output=True, check=False)
    if tar.returncode != 0:
        raise ReleaseError(f"the shipped archive cannot be unpacked: {tar.stderr.decode(errors='replace').strip()}")


def switch(layout, release_id):
    path = layout.release(release_id)
    if not os.path.isdir(path) or not layout.is_complete(release_id):
        state = layout.state()
        raise ReleaseError(
            f"Release {release_id} is not on this host, or is incomplete. Releases that can go live: "
            f"{', '.join(state['complete']) or 'none'}."
        )
    before = layout.live()
    if before == release_id:
        return {"changed": False, "was": before}
    link = os.path.join(layout.root, ".current.next")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(link)
    os.symlink(os.path.join("releases", release_id), link)
    os.replace(link, layout.current)
    return {"changed": True, "was": before}


def go_live(layout, release_id, web_units=(), celery_units=(), reload_web=False, django_dir="."):
    """Switch, then put gunicorn and Celery on the release."""
    live_venv = os.path.realpath(os.path.join(layout.current, ".venv")) if layout.live() else None
    result = switch(layout, release_id)
    with contextlib.suppress(OSError):  # run as root: the link stays the app's
        owner = os.stat(layout.root)
        os.lchown(layout.current, owner.st_uid, owner.st_gid)
    code_dir = os.path.realpath(os.path.join(layout.release(release_id), django_dir))
    same_venv = live_venv == os.path.realpath(os.path.join(layout.release(release_id), ".venv"))
    result["web"] = "nothing"
    if web_units:
        result["web"] = "restarted"
        if reload_web and same_venv and result["changed"] and all(reloads(unit, code_dir) for unit in web_units):
            result["web"] = "reloaded"
        else:
            restart(web_units, release_id)
    if celery_units:
        ok, answer = systemctl("restart", "--no-block", *celery_units)
        if not ok:
            raise ReleaseError(f"{' '.join(celery_units)} cannot be restarted on release {release_id}: {answer}")
    return result


def systemctl(*args):
    """(whether it worked, its output: stdout, or stderr if it failed)."""
    try:
        answer = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)
    except OSError as error:
        return False, str(error)
    if answer.returncode != 0:
        return False, answer.stderr.strip() or answer.stdout.strip()
    return True, answer.stdout


def restart(units, release_id):
    # A unit that crash-looped on a broken release may have hit its start limit, and systemd then refuses to
    # start it until that is reset: the very case of a switch back.
    systemctl("reset-failed", *units)
    ok, answer = systemctl("restart", *units)
    if not ok:
        raise ReleaseError(
            f"{' '.join(units)} does not start on release {release_id} ({answer}). Its last lines:\n{journal(units)}"
        )


def journal(units):
    command = ["journalctl", "--no-pager", "--output=cat", f"--lines={JOURNAL_LINES}", *(f"--unit={u}" for u in units)]
    try:
        lines = subprocess.run(command, capture_output=True, text=True, check=False).stdout.strip()
    except OSError as error:
        return f"(no journal: {error})"
    return lines or "(the journal has nothing)"


def reloads(unit, code_dir, seconds=RELOAD_SECONDS):
    """HUP gunicorn, when its command line reloads the code through current, and wait until its master
    has moved to code_dir (where new workers import the code from). False: restart instead."""
    ok, shown = systemctl("show", unit, "--property=ActiveState", "--property=MainPID", "--property=ExecStart")
    state = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
    command = state.get("ExecStart", "")
    if (
        not ok
        or state.get("ActiveState") != "active"
        or state.get("MainPID", "0") == "0"
        or "--chdir" not in command
        or "preload" in command
        or os.path.exists(os.path.join(code_dir, "gunicorn.conf.py"))
    ):
        return False
    if not systemctl("reload", unit)[0]:
        return False
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if os.path.realpath(f"/proc/{state['MainPID']}/cwd") == code_dir:
                return True
        time.sleep(0.05)
    return False


def prune(layout, keep):
    if keep < 2:
        raise ReleaseError(f"keep is {keep}: at least 2 (the live release and the one before it)")
    state = layout.state()
    releases, protected = state["releases"], {state["live"], state["previous"]}
    removed = [release for release in releases[: max(len(releases) - keep, 0)] if release not in protected]
    kept = [release for release in releases if release not in removed]
    used = set()
    for release in kept:
        with contextlib.suppress(OSError):
            used.add(os.path.basename(os.readlink(os.path.join(layout.release(release), ".venv"))))
    try:
        venvs = sorted(
            name for name in os.listdir(layout.venvs_dir) if os.path.isdir(os.path.join(layout.venvs_dir, name))
        )
    except FileNotFoundError:
        venvs = []
    unused = [name for name in venvs if name not in used]
    leftovers = (
        [name for name in os.listdir(layout.releases_dir) if name.startswith(".") and name.endswith(".tar.gz")]
        if os.path.isdir(layout.releases_dir)
        else []
    )
    if not (removed or unused or leftovers):
        return {"changed": False, "removed": []}
    trash = os.path.join(layout.root, f".trash-{os.getpid()}-{time.monotonic_ns()}")
    os.mkdir(trash)
    for release in removed:
        os.rename(layout.release(release), os.path.join(trash, f"release-{release}"))
    for name in unused:
        os.rename(os.path.join(layout.venvs_dir, name), os.path.join(trash, f"venv-{name}"))
    for name in leftovers:
        os.unlink(os.path.join(layout.releases_dir, name))
    # The deploy does not wait for thousands of files to go.
    subprocess.Popen(["rm", "-rf", "--", trash], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return {"changed": True, "removed": [f"release {r}" for r in removed] + [f"virtualenv {v}" for v in unused]}


def run(params, check_mode=False):
    layout = Layout(params["root"], params.get("current") or "current")
    action = params["action"]
    if action == "start":
        result = start(layout, params["owner"], params["break_lock"], params["env_file"], params["repo_url"],
                       params["repo_cache"], params["version"], check_mode)  # fmt: skip
    elif action == "lock":
        result = take_lock(layout, params["owner"], params["break_lock"])
    elif action == "unlock":
        result = release_lock(layout)
    elif action == "create":
        result = create(layout, params["release"], params["source"], params["django_dir"], params["repo_cache"],
                        params["sha"], params["shared_links"], params["archive_content"])  # fmt: skip
    elif action == "switch":
        result = switch(layout, params["release"])
    elif action == "go_live":
        result = go_live(layout, params["release"], params["web_units"], params["celery_units"], params["reload_web"],
                         params["django_dir"])  # fmt: skip
    elif action == "prune":
        result = prune(layout, params["keep"])
    else:
        result = {"changed": False}
    state = layout.state()
    result.update(live=state["live"], previous=state["previous"])
    if action in ("list", "start"):
        result.update(releases=state["releases"], complete=state["complete"])
    return result


def main():
    spec = {
        "action": {"type": "str", "required": True, "choices": ACTIONS},
        "root": {"type": "path", "required": True},
        "current": {"type": "str", "default": "current"},
        "owner": {"type": "str", "default": ""},
        "break_lock": {"type": "bool", "default": False},
        "release": {"type": "str", "default": ""},
        "source": {"type": "str", "choices": ["git", "inline"], "default": "git"},
        "archive_content": {"type": "str", "default": "", "no_log": True},
        "repo_cache": {"type": "path"},
        "sha": {"type": "str", "default": ""},
        "django_dir": {"type": "str", "default": "."},
        "keep": {"type": "int", "default": 5},
        "env_file": {"type": "str", "default": ""},
        "repo_url": {"type": "str", "default": ""},
        "version": {"type": "str", "default": ""},
        "shared_links": {"type": "list", "elements": "list", "default": []},
        "web_units": {"type": "list", "elements": "str", "default": []},
        "celery_units": {"type": "list", "elements": "str", "default": []},
        "reload_web": {"type": "bool", "default": False},
    }
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    params = module.params
    if module.check_mode and params["action"] not in ("start", "list"):
        module.exit_json(changed=False, skipped=True, msg="check mode: nothing done")
    try:
        module.exit_json(**run(params, module.check_mode))
    except ReleaseError as error:
        module.fail_json(msg=str(error))


if __name__ == "__main__":
    main()
