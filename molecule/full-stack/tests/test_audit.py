"""The provisioned host as an auditor sees it: lynis (Debian's package), run on
the host with the test-only profile ../lynis-container.prf, must give a
hardening index of at least 80, and every warning and suggestion it makes must
be decided in docs/provision.md's "Security baseline" table.
"""

import os
import re
from pathlib import Path

import pytest

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
PROFILE = Path(__file__).resolve().parents[1] / "lynis-container.prf"
MIN_HARDENING_INDEX = 80


@pytest.fixture(scope="module")
def report(host):
    host.check_output("DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lynis >/dev/null")
    host.check_output(f"cat > /tmp/keel-lynis.prf <<'EOF'\n{PROFILE.read_text()}EOF")
    host.run("lynis audit system --quick --no-colors --profile /tmp/keel-lynis.prf > /tmp/keel-lynis.log 2>&1")
    return host.check_output("cat /var/log/lynis-report.dat")


def entries(report, kind):
    return [line.split("=", 1)[1].split("|") for line in report.splitlines() if line.startswith(f"{kind}[]=")]


def decided_tests():
    page = (PROJECT / "docs" / "provision.md").read_text()
    table = page.split("## Security baseline", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`([A-Z]+-[0-9]+|LYNIS)`", table))


def test_the_hardening_index_is_at_least_80(report):
    index = int(re.search(r"^hardening_index=(\d+)$", report, re.M).group(1))
    record = PROJECT / ".cache" / "test-logs" / "lynis-index.txt"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(f"{index}\n")
    assert index >= MIN_HARDENING_INDEX, [entry[:2] for entry in entries(report, "suggestion")]


def test_every_warning_and_suggestion_is_decided_in_the_docs(report):
    raised = {entry[0] for entry in entries(report, "warning") + entries(report, "suggestion")}
    assert raised - decided_tests() == set(), "decide these in docs/provision.md's Security baseline table"


def test_the_one_warning_left_is_lynis_misreading_deb822_sources(host, report):
    warnings = {entry[0] for entry in entries(report, "warning")}
    assert warnings <= {"PKGS-7388"}, warnings
    codename = host.system_info.codename
    assert f"n={codename}-security" in host.check_output("apt-cache policy"), "the security suite is missing"


def test_the_kernel_settings_the_container_cannot_take_are_written_for_a_real_kernel(host):
    sysctl = host.file("/etc/sysctl.d/90-keel.conf").content_string
    assert "kernel.kptr_restrict = 2" in sysctl and "net.ipv4.conf.all.log_martians = 1" in sysctl
    modules = host.file("/etc/modprobe.d/keel-disabled.conf").content_string
    assert "install usb-storage /bin/false" in modules
