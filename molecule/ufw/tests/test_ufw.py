"""The ufw role on a single host: deny by default; SSH rate-limited; web open."""


def test_firewall_is_active_and_denies_by_default(host):
    status = host.check_output("ufw status verbose")
    assert "Status: active" in status
    assert "Default: deny (incoming), allow (outgoing)" in status


def test_only_ssh_and_web_are_open(host):
    status = host.check_output("ufw status verbose").splitlines()
    rules = [line.split() for line in status if " IN " in line and "(v6)" not in line]
    v4 = sorted((rule[0], rule[1]) for rule in rules)
    assert v4 == [("22/tcp", "LIMIT"), ("443/tcp", "ALLOW"), ("80/tcp", "ALLOW")], v4


def test_firewall_starts_at_boot(host):
    assert host.service("ufw").is_enabled
    assert "ENABLED=yes" in host.file("/etc/ufw/ufw.conf").content_string


def test_rules_are_in_the_kernel(host):
    rules = host.check_output("iptables -S ufw-user-input")
    assert "--dport 80 -j ACCEPT" in rules and "--dport 443 -j ACCEPT" in rules
