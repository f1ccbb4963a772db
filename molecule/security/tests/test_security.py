"""The security role: SSH with keys only and no root, checked config, fail2ban on SSH."""


def test_sshd_effective_settings(host):
    effective = host.check_output("sshd -T")
    for setting in (
        "permitrootlogin no",
        "passwordauthentication no",
        "kbdinteractiveauthentication no",
        "pubkeyauthentication yes",
        "x11forwarding no",
        "maxauthtries 3",
    ):
        assert setting in effective, setting


def test_ssh_server_runs(host):
    assert host.service("ssh").is_running and host.service("ssh").is_enabled
    assert host.socket("tcp://0.0.0.0:22").is_listening


def test_password_login_is_refused_by_the_server(host):
    # Ask the server which methods it offers to a user: publickey only.
    probe = host.run(
        "ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o PreferredAuthentications=none "
        "-o UserKnownHostsFile=/dev/null nobody@127.0.0.1 true"
    )
    assert "Permission denied (publickey)" in probe.stderr, probe.stderr


def test_fail2ban_jails_ssh_from_the_journal(host):
    assert host.service("fail2ban").is_running
    status = host.check_output("fail2ban-client status sshd")
    assert "Journal matches:" in status and "_SYSTEMD_UNIT=ssh" in status
    assert host.check_output("fail2ban-client get sshd maxretry") == "5"
