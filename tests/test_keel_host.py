"""scripts/keel-host.py: how it reaches a host (the commands it builds), and that its SSH connection
is the one Ansible keeps open. Running them on a real host is proven in the full-stack scenario."""

import importlib.util
import shlex

import pytest
from ansible.plugins.connection.ssh import Connection
from conftest import REPO

spec = importlib.util.spec_from_file_location("keel_host", REPO / "scripts" / "keel-host.py")
keel_host = importlib.util.module_from_spec(spec)
spec.loader.exec_module(keel_host)


class Inventory:
    def __init__(self, **hostvars):
        self.hostvars = {"web1": hostvars}


@pytest.mark.parametrize(("address", "port", "user"), [("203.0.113.5", None, None), ("web1.example", 2222, "ops")])
def test_the_ssh_connection_is_the_one_ansible_keeps_open(address, port, user):
    ansibles = Connection._create_control_path(address, port, user) % {"directory": "DIR"}
    assert keel_host.control_path(address, port, user).rsplit("/", 1)[1] == ansibles.rsplit("/", 1)[1]


def test_over_ssh_a_user_other_than_root_goes_through_sudo_keeping_the_named_variables(monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "it's secret")
    inventory = Inventory(ansible_host="203.0.113.5", ansible_user="ops", ansible_port=2222,
                          ansible_ssh_private_key_file="~/.ssh/keel", ansible_ssh_common_args="-o Foo=bar")  # fmt: skip
    command = keel_host.remote(inventory, "web1", ["/usr/local/sbin/x-manage", "createsuperuser"],
                               env=["DJANGO_SUPERUSER_PASSWORD"])  # fmt: skip
    assert command[:7] == ["ssh", "-o", "ControlMaster=auto", "-o", "ControlPersist=300s", "-o",
                           f"ControlPath={keel_host.control_path('203.0.113.5', 2222, 'ops')}"]  # fmt: skip
    assert command[7:] == ["-T", "-p", "2222", "-i", "~/.ssh/keel", "-o", "Foo=bar", "ops@203.0.113.5", command[-1]]
    assert shlex.split(command[-1]) == [
        "env", "DJANGO_SUPERUSER_PASSWORD=it's secret",
        "sudo", "-n", "--preserve-env=DJANGO_SUPERUSER_PASSWORD", "--", "/usr/local/sbin/x-manage", "createsuperuser",
    ]  # fmt: skip


def test_through_docker_variables_pass_by_name_only_and_a_terminal_is_asked_for():
    command = keel_host.remote(Inventory(ansible_connection="community.docker.docker"), "web1", ["journalctl"],
                               tty=True, env=["DJANGO_SUPERUSER_PASSWORD"])  # fmt: skip
    assert command == ["docker", "exec", "-i", "-t", "-e", "DJANGO_SUPERUSER_PASSWORD", "web1", "journalctl"]


def test_unit_names_come_from_the_keel_role():
    assert keel_host.for_app(keel_host.UNITS["worker"][1], "shop") == "shop-celery-worker.service"
    assert keel_host.for_app(keel_host.KEEL_VARS["__keel_manage_script"], "shop") == "/usr/local/sbin/shop-manage"


def test_a_manage_command_is_required(capsys, monkeypatch):
    monkeypatch.setattr(keel_host, "Inventory", lambda path: Inventory())
    assert keel_host.main(["-i", "inventories/prod", "manage"]) == 2
    assert "say which command" in capsys.readouterr().err
