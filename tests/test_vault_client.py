"""The vault client opens the vault of the environment a command works on, and
says nothing about the others."""

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("vault_client", REPO / "scripts" / "vault-client.py")
vault_client = importlib.util.module_from_spec(spec)
spec.loader.exec_module(vault_client)


@pytest.mark.parametrize(
    ("arguments", "env"),
    [
        (["ansible-playbook", "deploy.yml", "-i", "inventories/prod"], "prod"),
        (["ansible-playbook", "deploy.yml", "--inventory=inventories/staging/hosts.yml"], "staging"),
        (["ansible-vault", "edit", "inventories/prod/group_vars/prod/vault.yml"], "prod"),
        (["ansible-playbook", "deploy.yml"], "local"),
    ],
)
def test_the_environment_comes_from_the_command_line(arguments, env, monkeypatch):
    monkeypatch.delenv("ANSIBLE_INVENTORY", raising=False)
    assert vault_client.environment_of(arguments) == env


def ansible_inventory(env: str, **extra_env) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ansible-inventory", "-i", f"inventories/{env}", "--list"],
        cwd=REPO, env={**os.environ, **extra_env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_run_opens_its_own_vault_and_warns_about_no_other():
    result = ansible_inventory("local", KEEL_VAULT_DIR="/nonexistent")
    assert result.returncode == 0, result.stderr
    assert "vault_app_secret_key" in result.stdout
    assert "WARNING" not in result.stderr, result.stderr


def test_an_environment_without_a_vault_runs_quietly():
    result = ansible_inventory("prod", KEEL_VAULT_DIR="/nonexistent")
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
