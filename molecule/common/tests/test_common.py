"""The common role's effects on a converged host.

Each assertion fails on a bare image: the converge sets values that differ
from the image's (time zone, locale, users, CAs).
"""

from pathlib import Path

FILES = Path(__file__).resolve().parent.parent / "files"
DEPLOY_KEY = (FILES / "deploy_ed25519.pub").read_text().strip()
TEST_CA_BODY = "".join(
    line for line in (FILES / "keel-test-ca.crt").read_text().splitlines() if "CERTIFICATE" not in line
)


def test_base_and_extra_packages_are_installed(host):
    for name in ("acl", "cron", "curl", "git", "locales", "logrotate", "rsync", "unattended-upgrades", "jq"):
        assert host.package(name).is_installed, name


def test_time_zone_is_set(host):
    assert host.file("/etc/localtime").linked_to == "/usr/share/zoneinfo/Europe/Berlin"
    assert host.check_output("date +%Z") in ("CET", "CEST")


def test_locale_is_generated_and_default(host):
    assert "en_GB.utf8" in host.check_output("locale -a").split()
    assert host.file("/etc/default/locale").content_string == "LANG=en_GB.UTF-8\n"


def test_unattended_upgrades_take_only_security_updates(host):
    periodic = host.check_output("apt-config dump APT::Periodic")
    assert 'APT::Periodic::Unattended-Upgrade "1";' in periodic
    assert 'APT::Periodic::Update-Package-Lists "1";' in periodic
    origins = host.check_output("apt-config dump Unattended-Upgrade::Origins-Pattern").splitlines()[1:]
    assert origins and all("label=Debian-Security" in line for line in origins)
    reboot = host.check_output("apt-config dump Unattended-Upgrade::Automatic-Reboot")
    assert 'Unattended-Upgrade::Automatic-Reboot "false";' in reboot
    for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        assert host.service(timer).is_enabled, timer


def test_the_security_suite_that_prepare_removed_is_back_and_apt_reads_it(host):
    codename = host.system_info.codename
    sources = host.file("/etc/apt/sources.list.d/keel-security.sources").content_string
    assert f"Suites: {codename}-security" in sources
    policy = host.check_output("apt-cache policy")
    assert f"n={codename}-security" in policy and "l=Debian-Security" in policy, policy


def test_unattended_upgrades_accepts_its_configuration(host):
    run = host.run("unattended-upgrade --dry-run")
    assert run.rc == 0, run.stderr


def test_admin_has_exactly_the_listed_key(host):
    user = host.user("deploy")
    assert user.exists and user.shell == "/bin/bash"
    keys = host.file("/home/deploy/.ssh/authorized_keys")
    assert keys.user == "deploy" and keys.mode == 0o600
    assert keys.content_string.strip() == DEPLOY_KEY
    assert host.file("/home/deploy/.ssh").mode == 0o700


def test_admin_has_passwordless_sudo(host):
    rule = host.file("/etc/sudoers.d/keel-admin-deploy")
    assert rule.mode == 0o440 and rule.user == "root"
    assert host.run("runuser -u deploy -- sudo -n true").rc == 0


def test_admin_marked_absent_is_removed(host):
    assert not host.user("formeradmin").exists
    assert not host.file("/home/formeradmin").exists
    assert not host.file("/etc/sudoers.d/keel-admin-formeradmin").exists
    assert host.run("visudo -c").rc == 0


def test_extra_cas_are_in_the_system_bundle(host):
    assert host.file("/usr/local/share/ca-certificates/keel-test-ca.crt").mode == 0o644
    bundle = host.file("/etc/ssl/certs/ca-certificates.crt").content_string.replace("\n", "")
    assert TEST_CA_BODY in bundle


def test_pip_uses_the_system_bundle(host):
    assert "cert = /etc/ssl/certs/ca-certificates.crt" in host.file("/etc/pip.conf").content_string


def test_https_to_pypi_works_through_the_trusted_cas(host):
    fetch = host.run(
        'python3 -c "import urllib.request;'
        "print(urllib.request.urlopen('https://pypi.org/simple/pip/', timeout=30).status)\""
    )
    assert fetch.rc == 0 and fetch.stdout.strip() == "200", fetch.stderr


def test_no_unit_failed(host):
    failed = host.check_output("systemctl list-units --failed --plain --no-legend")
    assert failed == "", failed
