#!/usr/bin/env python3
"""Ansible vault password client: one password per environment.

ansible.cfg names one vault identity, `keel`, so every command finds its
password with no vault flag. Ansible calls `vault-client.py --vault-id keel`
once per run; the client gives the password of the environment the run works
on: the folder under inventories/ of its -i argument (or of a file argument,
as in `ansible-vault edit inventories/prod/...`), else of ANSIBLE_INVENTORY,
else the local demo (ansible.cfg's default inventory). An explicit
`--vault-id prod@scripts/vault-client.py` names the environment itself. Only
that environment is asked about, so a run never warns about another's vault.

The password comes from, in order:

1. the environment variable KEEL_VAULT_PASSWORD_<ENV> (for CI secrets);
2. the file <KEEL_VAULT_DIR or .vault>/<env>.pass (mode 0600, never committed);
3. for the `local` demo environment only, inventories/local-vault-password,
   which is committed on purpose: that vault holds throwaway demo secrets.

An environment that has no vault.yml needs no password: the client then
answers a random one that opens nothing, and Ansible says nothing. One whose
vault.yml exists but whose password is missing is an error naming the file.
"""

import argparse
import os
import re
import secrets
import stat
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO_PASSWORD_FILE = REPO / "inventories" / "local-vault-password"
SHARED_IDENTITY = "keel"
DEFAULT_ENV = "local"
INVENTORY_FLAGS = ("-i", "--inventory", "--inventory-file")
ENV_IN_PATH = re.compile(r"(?:^|/)inventories/([A-Za-z0-9_-]+)(?:/|$)")


def password_file(env: str) -> Path:
    vault_dir = Path(os.environ.get("KEEL_VAULT_DIR", REPO / ".vault"))
    return vault_dir / f"{env}.pass"


def vault_file(env: str) -> Path:
    return REPO / "inventories" / env / "group_vars" / env / "vault.yml"


def read_password(env: str) -> str | None:
    from_env = os.environ.get(f"KEEL_VAULT_PASSWORD_{env.upper()}")
    if from_env:
        return from_env
    path = password_file(env)
    if path.is_file():
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            sys.exit(f"{path} is readable by others: run `chmod 600 {path}`")
        return path.read_text().strip()
    if env == "local" and DEMO_PASSWORD_FILE.is_file():
        return DEMO_PASSWORD_FILE.read_text().strip()
    return None


def caller_arguments() -> list[str]:
    """The command line of the Ansible command that runs this client."""
    proc = Path(f"/proc/{os.getppid()}/cmdline")
    if proc.is_file():
        return [arg for arg in proc.read_bytes().decode(errors="replace").split("\0") if arg]
    ps = subprocess.run(["ps", "-o", "args=", "-p", str(os.getppid())], capture_output=True, text=True, check=False)
    return ps.stdout.split()


def environment_of(arguments: list[str]) -> str:
    """The environment a command works on, from its inventory or file arguments."""
    inventories, paths = [], []
    for index, arg in enumerate(arguments):
        if arg in INVENTORY_FLAGS and index + 1 < len(arguments):
            inventories.append(arguments[index + 1])
        elif arg.startswith(tuple(flag + "=" for flag in INVENTORY_FLAGS)):
            inventories.append(arg.split("=", 1)[1])
        else:
            paths.append(arg)
    inventories += os.environ.get("ANSIBLE_INVENTORY", "").split(",")
    for candidate in inventories + paths:
        match = ENV_IN_PATH.search(str(Path(candidate).absolute()) if candidate else "")
        if match:
            return match.group(1)
    return DEFAULT_ENV


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vault-id", required=True)
    vault_id = parser.parse_args().vault_id
    env = environment_of(caller_arguments()) if vault_id == SHARED_IDENTITY else vault_id
    password = read_password(env)
    if password:
        print(password)
    elif vault_file(env).exists():
        sys.exit(
            f"no password for {vault_file(env).relative_to(REPO)}: create {password_file(env)} "
            f"(`make vault ENV={env}` wrote it) or set KEEL_VAULT_PASSWORD_{env.upper()}"
        )
    else:  # nothing to open: a password that opens nothing keeps Ansible quiet
        print(secrets.token_urlsafe(32))


if __name__ == "__main__":
    main()
