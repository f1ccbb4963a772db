#!/usr/bin/env python3
"""Create an environment's encrypted vault with fresh random secrets.

    scripts/vault-init.py prod

Reads inventories/<env>/group_vars/<env>/vault.example.yml, replaces every
`CHANGE-ME` with a random secret, and writes vault.yml beside it, encrypted
with the environment's vault password (created in .vault/<env>.pass when
missing). It never overwrites an existing vault.yml: edit that one with
`ansible-vault edit`.
"""

import argparse
import os
import secrets
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLACEHOLDER = "CHANGE-ME"
SECRET_BYTES = 48  # 64 URL-safe characters: long enough for Django's SECRET_KEY


def fill_placeholders(text: str) -> str:
    lines = []
    for line in text.splitlines(keepends=True):
        while PLACEHOLDER in line:
            line = line.replace(PLACEHOLDER, secrets.token_urlsafe(SECRET_BYTES), 1)
        lines.append(line)
    return "".join(lines)


def ensure_password(env: str) -> Path:
    vault_dir = Path(os.environ.get("KEEL_VAULT_DIR", REPO / ".vault"))
    path = vault_dir / f"{env}.pass"
    if not path.exists():
        vault_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(SECRET_BYTES) + "\n")
        print(f"created the vault password {path}: keep a copy in your password manager")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("env", help="environment name: a folder under inventories/")
    env = parser.parse_args().env
    vars_dir = REPO / "inventories" / env / "group_vars" / env
    example, vault = vars_dir / "vault.example.yml", vars_dir / "vault.yml"
    if not example.is_file():
        print(f"error: {example.relative_to(REPO)} not found: is '{env}' an environment?", file=sys.stderr)
        return 2
    if vault.exists():
        print(
            f"error: {vault.relative_to(REPO)} exists already; change it with "
            f"`ansible-vault edit {vault.relative_to(REPO)}`",
            file=sys.stderr,
        )
        return 2
    if env != "local":  # the demo vault's password is committed (vault-client.py)
        ensure_password(env)
    vault.write_text(fill_placeholders(example.read_text()))
    vault.chmod(0o600)
    ansible_vault = Path(sys.executable).with_name("ansible-vault")
    encrypt = subprocess.run(
        [
            str(ansible_vault),
            "encrypt",
            "--vault-id",
            f"{env}@scripts/vault-client.py",
            "--encrypt-vault-id",
            env,
            str(vault),
        ],
        cwd=REPO,
    )
    if encrypt.returncode != 0:
        vault.unlink()
        print("error: ansible-vault could not encrypt the vault; nothing was written", file=sys.stderr)
        return 1
    print(f"wrote {vault.relative_to(REPO)}, encrypted for vault id '{env}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
