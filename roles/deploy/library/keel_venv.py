#!/usr/bin/python3
"""Build a release's virtualenv with uv, or reuse the one of the same dependencies."""

DOCUMENTATION = r"""
module: keel_venv
short_description: Build a release's virtualenv with uv, or reuse the one of the same dependencies
description:
  - Finds how the release declares its dependencies (uv.lock, or a pip requirements file), checks the
    project's requires-python against the interpreter, and links the release's .venv to a virtualenv
    keyed by a hash of the lock (or requirements), the interpreter and the extra arguments.
  - A virtualenv is reused only if its build completed (a marker file is written last), so a
    half-built one is never used; it is built again from scratch.
options:
  release: {description: The release's folder., type: path, required: true}
  venvs_dir: {description: Where the keyed virtualenvs live., type: path, required: true}
  python: {description: The interpreter the virtualenv is made from., type: path, required: true}
  uv: {description: The uv binary., type: path, required: true}
  cache_dir: {description: uv's cache., type: path, required: true}
  dependencies: {description: auto, uv or requirements., type: str, default: auto, choices: [auto, uv, requirements]}
  requirements_file:
    description: The requirements file, relative to the release.
    type: str
    default: requirements.txt
  uv_project: {description: Folder of pyproject.toml and uv.lock, relative to the release., type: str, default: "."}
  extra_args: {description: Extra arguments for uv (index URLs...)., type: list, elements: str, default: []}
"""

RETURN = r"""
key: {description: The virtualenv's key., type: str, returned: always}
tool: {description: "'uv sync' or 'uv pip install'.", type: str, returned: always}
built: {description: Whether the virtualenv was built (else reused)., type: bool, returned: always}
seconds: {description: Time the build took., type: float, returned: always}
"""

import hashlib
import os
import re
import shutil
import subprocess
import time

try:
    import tomllib
except ImportError:  # Python 3.10 and older: requires-python is then read with a pattern
    tomllib = None

from ansible.module_utils.basic import AnsibleModule

COMPLETE_MARKER = ".keel-complete"
ERROR_TAIL_LINES = 25
ERROR_TAIL_CHARS = 3000


class VenvError(Exception):
    """A failure the user reads: it names the cause."""


def tail(text, lines=ERROR_TAIL_LINES, chars=ERROR_TAIL_CHARS):
    """The last lines of text, whole lines only, at most `chars` long."""
    kept = []
    size = 0
    for line in reversed([line.rstrip() for line in text.strip().splitlines() if line.strip()]):
        if len(kept) >= lines or size + len(line) + 1 > chars:
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(reversed(kept))


def parse_version(text):
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def _padded(left, right):
    size = max(len(left), len(right))
    return left + (0,) * (size - len(left)), right + (0,) * (size - len(right))


def _matches(version, operator, wanted):
    """One clause of a PEP 440 specifier, for a final release like (3, 11, 2)."""
    if wanted.endswith(".*"):
        prefix = parse_version(wanted[:-2])
        if operator not in ("==", "!="):
            raise ValueError(f"'{operator}{wanted}' is not a valid clause")
        return (version[: len(prefix)] == prefix) == (operator == "==")
    target = parse_version(wanted)
    if operator == "~=":
        if len(target) < 2:
            raise ValueError(f"'~={wanted}' needs at least two parts")
        ours, theirs = _padded(version, target)
        return ours >= theirs and version[: len(target) - 1] == target[:-1]
    ours, theirs = _padded(version, target)
    comparisons = {
        "==": ours == theirs,
        "===": ours == theirs,
        "!=": ours != theirs,
        ">=": ours >= theirs,
        "<=": ours <= theirs,
        ">": ours > theirs,
        "<": ours < theirs,
    }
    return comparisons[operator]


def satisfies(version, specifier):
    """Whether a Python version (a tuple) meets a requires-python specifier."""
    for clause in filter(None, (part.strip() for part in specifier.split(","))):
        match = re.fullmatch(r"(===|~=|==|!=|>=|<=|>|<)\s*([0-9][0-9.]*(?:\.\*)?)", clause)
        if match is None:
            raise ValueError(f"cannot read the clause {clause!r}")
        if not _matches(version, *match.groups()):
            return False
    return True


def requires_python(pyproject):
    """The [project] requires-python of a pyproject.toml, or None."""
    if not os.path.isfile(pyproject):
        return None
    with open(pyproject, "rb") as handle:
        content = handle.read()
    if tomllib is not None:
        try:
            return tomllib.loads(content.decode()).get("project", {}).get("requires-python")
        except tomllib.TOMLDecodeError as error:
            raise VenvError(f"{pyproject} is not valid TOML: {error}") from error
    match = re.search(rb"""^requires-python\s*=\s*["']([^"']+)["']""", content, re.M)
    return match.group(1).decode() if match else None


def interpreter_version(python):
    try:
        output = subprocess.run(
            [python, "-c", "import sys; print(sys.version.split()[0]); print(sys.version)"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as error:
        raise VenvError(f"the interpreter {python} does not run: {error}") from error
    short, full = output.split("\n", 1)
    return short, full.strip()


def choose_tool(params):
    """'uv' or 'requirements', and the files that define the dependencies."""
    release = params["release"]
    project = os.path.normpath(os.path.join(release, params["uv_project"]))
    lock = os.path.join(project, "uv.lock")
    pyproject = os.path.join(project, "pyproject.toml")
    requirements = os.path.normpath(os.path.join(release, params["requirements_file"]))
    shown = {path: os.path.relpath(path, release) for path in (lock, pyproject, requirements)}
    mode = params["dependencies"]
    if mode == "auto":
        if os.path.isfile(lock):
            mode = "uv"
        elif os.path.isfile(requirements):
            mode = "requirements"
        else:
            raise VenvError(
                f"the commit has neither {shown[lock]} (app_uv_project) nor {shown[requirements]} "
                "(app_requirements_file): point one of them at your project's dependencies"
            )
    if mode == "uv":
        for path, setting in ((pyproject, "app_uv_project"), (lock, "app_uv_project")):
            if not os.path.isfile(path):
                raise VenvError(f"app_dependencies is uv, but the commit has no {shown[path]} ({setting})")
        return "uv", project, [lock], pyproject
    if not os.path.isfile(requirements):
        raise VenvError(f"the commit has no {shown[requirements]} (app_requirements_file)")
    return "requirements", project, [requirements], pyproject


def check_python(pyproject, python):
    wanted = requires_python(pyproject)
    short, full = interpreter_version(python)
    if wanted is None:
        return full
    try:
        fits = satisfies(parse_version(short), wanted)
    except ValueError as error:
        raise VenvError(f"cannot read requires-python = {wanted!r} in pyproject.toml: {error}") from error
    if not fits:
        raise VenvError(
            f"the project requires Python {wanted} (requires-python in pyproject.toml), but the hosts' "
            f"interpreter {python} is Python {short}. Install a Python that fits on the hosts and point "
            "Keel at it with deploy_python (e.g. /usr/bin/python3.13), or widen requires-python."
        )
    return full


def venv_key(tool, files, interpreter, extra_args):
    digest = hashlib.sha256(tool.encode())
    for path in files:
        with open(path, "rb") as handle:
            digest.update(handle.read())
    digest.update(interpreter.encode())
    digest.update("\0".join(extra_args).encode())
    return digest.hexdigest()[:16]


def build(params, tool, project, venv, files):
    env = dict(
        os.environ,
        UV_CACHE_DIR=params["cache_dir"],
        UV_PYTHON_DOWNLOADS="never",
        UV_SYSTEM_CERTS="1",  # the system's trust store, with any extra CA Keel installed
        UV_NO_PROGRESS="1",
    )
    uv, python, extra = params["uv"], params["python"], params["extra_args"]
    if tool == "uv":
        env["UV_PROJECT_ENVIRONMENT"] = venv
        commands = [[uv, "sync", "--frozen", "--no-dev", "--no-install-project", "--python", python, *extra]]
        cwd = project
    else:
        commands = [
            [uv, "venv", "--quiet", "--python", python, venv],
            [uv, "pip", "install", "--python", os.path.join(venv, "bin", "python"), "-r", files[0], *extra],
        ]
        cwd = params["release"]
    for command in commands:
        result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            shown = " ".join(["uv", *command[1:3]])
            raise VenvError(f"{shown} failed (exit {result.returncode}):\n{tail(result.stderr + result.stdout)}")
    with open(os.path.join(venv, COMPLETE_MARKER), "w"):
        pass


def ensure_venv(params):
    tool, project, files, pyproject = choose_tool(params)
    interpreter = check_python(pyproject, params["python"])
    key = venv_key(tool, files, interpreter, params["extra_args"])
    venv = os.path.join(params["venvs_dir"], key)
    started = time.monotonic()
    built = not os.path.isfile(os.path.join(venv, COMPLETE_MARKER))
    if built:
        shutil.rmtree(venv, ignore_errors=True)
        os.makedirs(params["venvs_dir"], exist_ok=True)
        try:
            build(params, tool, project, venv, files)
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)
            raise
    link = os.path.join(params["release"], ".venv")
    temporary = link + ".next"
    if os.path.lexists(temporary):
        os.unlink(temporary)
    os.symlink(os.path.relpath(venv, params["release"]), temporary)
    os.replace(temporary, link)
    return {
        "key": key,
        "tool": "uv sync" if tool == "uv" else "uv pip install",
        "built": built,
        "seconds": round(time.monotonic() - started, 2),
    }


def main():
    module = AnsibleModule(
        argument_spec=dict(
            release=dict(type="path", required=True),
            venvs_dir=dict(type="path", required=True),
            python=dict(type="path", required=True),
            uv=dict(type="path", required=True),
            cache_dir=dict(type="path", required=True),
            dependencies=dict(type="str", default="auto", choices=["auto", "uv", "requirements"]),
            requirements_file=dict(type="str", default="requirements.txt"),
            uv_project=dict(type="str", default="."),
            extra_args=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=False,
    )
    try:
        result = ensure_venv(module.params)
    except VenvError as error:
        module.fail_json(msg=str(error))
    module.exit_json(changed=result["built"], **result)


if __name__ == "__main__":
    main()
