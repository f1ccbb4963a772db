"""HTTPS on the provisioned host, issued by a real ACME server (Pebble, in its
own container on the scenario's ACME network: ../pebble.yml), and the host as
seen from outside it: from the Pebble container, the only other host there.

Runs after the deploy proof (file order); the failure tests last, since each
must leave the site exactly as it found it.
"""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
APP = "keelapp"
DOMAINS = ["keelapp.net", "www.keelapp.net"]
LIVE = f"/etc/letsencrypt/live/{APP}"
SITE_CONF = f"/etc/nginx/sites-available/{APP}.conf"


@pytest.fixture(scope="module")
def outside(host):
    return Outside(host.backend.get_hostname())


class Outside:
    """The Pebble container: the ACME server, and a machine beside the host with nmap and curl."""

    def __init__(self, host_name):
        self.container = f"{host_name}-pebble"
        network = f"{host_name}-acme"
        self.address = subprocess.run(
            ["docker", "inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}', host_name],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        self.pebble_address = subprocess.run(
            ["docker", "inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}',
             self.container],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip

    def run(self, command, timeout=180):
        done = subprocess.run(
            ["docker", "exec", self.container, "sh", "-c", command],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        return done.stdout.strip()


def served(host, name=DOMAINS[0]):
    """The certificate nginx serves for name: serial, issuer, names and key type."""
    text = host.check_output(
        f"echo | openssl s_client -connect 127.0.0.1:443 -servername {name} 2>/dev/null | openssl x509 -noout -text"
    )
    return {
        "serial": re.search(r"Serial Number:\s*\n?\s*([0-9a-f:]+)", text).group(1),
        "issuer": re.search(r"Issuer: (.*)", text).group(1),
        "names": sorted(re.findall(r"DNS:([^,\s]+)", text)),
        "key": re.search(r"Public Key Algorithm: (\S+)", text).group(1),
    }


def playbook(*extra_vars):
    command = ["ansible-playbook", "-i", os.environ["MOLECULE_EPHEMERAL_DIRECTORY"] + "/inventory",
               "molecule/full-stack/certificate.yml"]  # fmt: skip
    for assignment in extra_vars:
        command += ["-e", assignment]
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(PROJECT / "roles"), ANSIBLE_NOCOLOR="1")
    result = subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300, check=False)
    return result.returncode, " ".join((result.stdout + result.stderr).split())


def test_certbot_issued_the_served_certificate_and_its_chain_verifies_against_pebbles_ca(host, outside):
    certificate = served(host)
    assert certificate["names"] == sorted(DOMAINS) and "Pebble Intermediate" in certificate["issuer"], certificate
    assert certificate["key"] == "id-ecPublicKey", "ECDSA by default"
    outside.run("curl -sk https://localhost:15000/roots/0 > /tmp/pebble-root.pem")
    for name in DOMAINS:
        status = outside.run(
            f"curl -s -o /dev/null -w '%{{http_code}}' --cacert /tmp/pebble-root.pem "
            f"--resolve {name}:443:{outside.address} https://{name}/readyz"
        )
        assert status == "200", (name, status)


def test_pebbles_ca_is_trusted_by_certbot_only(host):
    assert host.run("curl -s -o /dev/null https://pebble:14000/dir").rc == 60, "the host's trust store trusts Pebble"
    assert "REQUESTS_CA_BUNDLE=/etc/letsencrypt/keel-acme-ca.pem" in host.check_output(
        "systemctl show certbot.service -p Environment"
    )


def test_only_certbot_timer_renews(host):
    timer = host.service("certbot.timer")
    assert timer.is_enabled and timer.is_running
    assert not host.file("/etc/cron.d/certbot").exists
    assert host.check_output("grep -rl 'certbot' /etc/cron.d /etc/crontab /var/spool/cron || true") == ""


def test_a_forced_renewal_serves_a_new_certificate_after_a_reload_not_a_restart(host):
    before, master = served(host), host.check_output("cat /run/nginx.pid")
    host.check_output(
        "REQUESTS_CA_BUNDLE=/etc/letsencrypt/keel-acme-ca.pem "
        f"certbot renew --cert-name {APP} --force-renewal --no-random-sleep-on-renew --quiet"
    )
    after = served(host)
    for _ in range(20):  # the deploy hook's reload is done when systemctl returns; a moment's slack
        if after["serial"] != before["serial"]:
            break
        host.run("sleep 0.5")
        after = served(host)
    assert after["serial"] != before["serial"] and after["names"] == before["names"]
    assert host.check_output("cat /run/nginx.pid") == master, "nginx was restarted, not reloaded"


def test_only_tls_1_2_and_1_3_with_aead_ciphers_and_forward_secrecy_are_offered(outside):
    report = outside.run(
        f"nmap -Pn -p 443 --script ssl-enum-ciphers --script-args tls.servername={DOMAINS[0]} {DOMAINS[0]}"
    )
    versions = re.findall(r"\|\s+(SSLv\S+|TLSv1\.\d):", report)
    assert versions == ["TLSv1.2", "TLSv1.3"], report
    ciphers = re.findall(r"\|\s+(TLS_\w+)", report)
    assert ciphers and all("_GCM_" in c or "CHACHA20_POLY1305" in c for c in ciphers), ciphers
    # TLS 1.3's suites (nmap: TLS_AKE_...) all have forward secrecy; TLS 1.2's must be ECDHE.
    assert all(c.startswith(("TLS_ECDHE_", "TLS_AKE_", "TLS_AES_", "TLS_CHACHA20_")) for c in ciphers), ciphers
    assert "least strength: A" in report, report


def test_only_ssh_and_the_web_answer_from_outside(outside):
    scan = "nmap -Pn -p- -T4 --min-rate 3000 --max-retries 1 --host-timeout 150s -oG -"
    report = outside.run(f"{scan} {outside.address}")
    ports = re.search(r"Ports: (.*?)(\t|$)", report, re.M)
    assert ports, report
    open_ports = sorted(int(entry.split("/")[0]) for entry in ports.group(1).split(", ") if "/open/" in entry)
    assert open_ports == [22, 80, 443], report


def test_a_changed_domain_list_is_issued_again_and_served(host):
    added = json.dumps({"app_domains": [*DOMAINS, "shop.keelapp.net"]})
    rc, output = playbook(added)
    assert rc == 0, output[-3000:]
    assert served(host, "shop.keelapp.net")["names"] == sorted([*DOMAINS, "shop.keelapp.net"])
    rc, output = playbook()
    assert rc == 0, output[-3000:]
    assert served(host)["names"] == sorted(DOMAINS)
    rc, output = playbook()
    assert rc == 0 and "changed=0" in output, "a fitting certificate is issued again"


def test_a_failed_challenge_names_the_domain_and_the_acme_answer_and_changes_nothing(host):
    before, conf = served(host), host.file(SITE_CONF).sha256sum
    rc, output = playbook(json.dumps({"app_domains": [*DOMAINS, "nowhere.keelapp.net"]}))
    assert rc != 0
    assert "certbot could not get a certificate for keelapp.net, www.keelapp.net, nowhere.keelapp.net" in output
    answer = output.split("The ACME server's answer", 1)[1]
    assert "nowhere.keelapp.net" in answer and "Detail" in answer, answer[:1500]
    assert served(host) == before and host.file(SITE_CONF).sha256sum == conf
    assert host.run(f"curl -sk -o /dev/null -w '%{{http_code}}' --resolve {DOMAINS[0]}:443:127.0.0.1 "
                    f"https://{DOMAINS[0]}/readyz").stdout == "200"  # fmt: skip


def test_an_unreachable_acme_server_is_named_and_the_site_keeps_serving(host, outside):
    before, conf = served(host), host.file(SITE_CONF).sha256sum
    host.check_output(f"ip route add unreachable {outside.pebble_address}/32")
    try:
        rc, output = playbook("certbot_key_type=rsa")  # a reason to issue again
    finally:
        host.check_output(f"ip route del unreachable {outside.pebble_address}/32")
    assert rc != 0
    assert "from https://pebble:14000/dir" in output
    answer = output.split("The ACME server's answer", 1)[1]
    assert re.search(r"No route to host|unreachable|Connection", answer, re.I), answer[:1500]
    assert served(host) == before and host.file(SITE_CONF).sha256sum == conf
