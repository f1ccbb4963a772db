#!/usr/bin/env python3
"""Ansible vault password client: one password per environment.

Ansible calls it as `vault-client.py --vault-id <env>` for each identity in
ansible.cfg. The password comes from, in order:

1. the environment variable KEEL_VAULT_PASSWORD_<ENV> (for CI secrets);
2. the file <KEEL_VAULT_DIR or .vault>/<env>.pass (mode 0600, never committed);
3. for the `local` demo environment only, inventories/local-vault-password,
   which is committed on purpose: that vault holds throwaway demo secrets.
"""

import argparse
import os
import stat
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO_PASSWORD_FILE = REPO / "inventories" / "local-vault-password"


def password_file(vault_id: str) -> Path:
    vault_dir = Path(os.environ.get("KEEL_VAULT_DIR", REPO / ".vault"))
    return vault_dir / f"{vault_id}.pass"


def read_password(vault_id: str) -> str | None:
    from_env = os.environ.get(f"KEEL_VAULT_PASSWORD_{vault_id.upper()}")
    if from_env:
        return from_env
    path = password_file(vault_id)
    if path.is_file():
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            sys.exit(f"{path} is readable by others: run `chmod 600 {path}`")
        return path.read_text().strip()
    if vault_id == "local" and DEMO_PASSWORD_FILE.is_file():
        return DEMO_PASSWORD_FILE.read_text().strip()
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vault-id", required=True)
    args = parser.parse_args()
    password = read_password(args.vault_id)
    if not password:
        sys.exit(
            f"no password for vault '{args.vault_id}': create {password_file(args.vault_id)} "
            f"(`make vault ENV={args.vault_id}`) or set KEEL_VAULT_PASSWORD_{args.vault_id.upper()}"
        )
    print(password)


if __name__ == "__main__":
    main()
