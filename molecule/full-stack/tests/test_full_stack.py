"""The provisioned single-host stack, after a reboot.

Molecule runs these after the side effect (a reboot), so every assertion also
proves that the stack came back by itself.
"""

import json

import pytest

APP = "keelapp"
DOMAIN = "keelapp.net"
SERVICES = [
    "nginx",
    "postgresql@{version}-main",
    "redis-server",
    "ssh",
    "fail2ban",
    "ufw",
    f"{APP}-gunicorn.socket",
    f"{APP}-celery-worker",
    f"{APP}-celery-beat",
]
APP_UNITS = [f"{APP}-gunicorn", f"{APP}-celery-worker", f"{APP}-celery-beat"]


def get(host, path, host_header=DOMAIN, extra=""):
    """An HTTPS request through nginx on the host, for the name as SNI and Host: status line, headers and body."""
    return host.run(
        f"curl -sk -i --max-time 10 --resolve {host_header}:443:127.0.0.1 {extra} https://{host_header}{path}"
    )


def get_plain(host, path, host_header=DOMAIN, extra=""):
    """The same over plain HTTP."""
    return host.run(f"curl -s -i --max-time 10 -H 'Host: {host_header}' {extra} http://127.0.0.1{path}")


def postgresql_version(host):
    """Debian's cluster version on this host: 15 on Debian 12, 17 on Debian 13."""
    return host.check_output("ls /etc/postgresql")


@pytest.mark.parametrize("name", SERVICES)
def test_service_is_enabled_and_running(host, name):
    service = host.service(name.format(version=postgresql_version(host)))
    assert service.is_enabled, name
    assert service.is_running, name


def test_no_unit_failed(host):
    failed = host.check_output("systemctl list-units --failed --plain --no-legend")
    assert failed == "", failed


def test_gunicorn_socket_is_for_nginx_and_the_app_only(host):
    socket = host.file(f"/run/{APP}/gunicorn.sock")
    assert socket.is_socket
    assert socket.user == APP and socket.group == "www-data" and socket.mode == 0o660


def test_app_answers_ready_through_nginx(host):
    response = get(host, "/readyz")
    assert response.stdout.startswith("HTTP/2 200"), response.stdout  # HTTP/2 over TLS
    body = json.loads(response.stdout.split("\r\n\r\n", 1)[1])
    live = json.loads(host.file(f"/srv/{APP}/current/release.json").content_string)
    assert body["status"] == "ready" and body["release"] == live["release"]
    assert host.service(f"{APP}-gunicorn").is_running


def test_unknown_host_header_gets_no_answer(host):
    response = get_plain(host, "/", host_header="attacker.test")
    assert response.rc == 52, response.stdout  # curl: empty reply (nginx's 444)
    response = get(host, "/", host_header="attacker.test")
    assert response.rc == 35, response.stdout  # curl: TLS handshake refused, no certificate shown


def test_nginx_sends_security_headers_and_hides_its_version(host):
    headers = get(host, "/healthz").stdout.split("\r\n\r\n", 1)[0].lower()
    assert "server: nginx\r\n" in headers
    assert "x-content-type-options: nosniff" in headers
    assert headers.count("x-frame-options: deny") == 1
    assert "referrer-policy: same-origin" in headers
    # nginx's HSTS replaces the app's (which asks for includeSubDomains and preload: opt-in in Keel).
    assert headers.count("strict-transport-security:") == 1
    assert "strict-transport-security: max-age=63072000\r\n" in headers + "\r\n"


def hashed_css_url(host):
    """The live release's content-hashed name of the guestbook's stylesheet."""
    manifest = json.loads(host.file(f"/srv/{APP}/current/app/staticfiles/staticfiles.json").content_string)
    return "/static/" + manifest["paths"]["guestbook/style.css"]


def test_plain_http_is_redirected_to_https_even_if_the_client_claims_otherwise(host):
    for path in ("/", "/readyz", "/static/x.css", "/_keel/release.json"):
        response = get_plain(host, path, extra="-H 'X-Forwarded-Proto: https'")
        assert response.stdout.startswith("HTTP/1.1 308"), response.stdout
        assert f"location: https://{DOMAIN}{path}\r\n" in response.stdout.lower()


def test_the_acme_path_is_served_over_http_without_a_redirect(host):
    host.run("echo token > /var/www/keel-acme/.well-known/acme-challenge/keel-test")
    response = get_plain(host, "/.well-known/acme-challenge/keel-test")
    # A name not yet in the site's server (just added to app_domains) too.
    newcomer = get_plain(host, "/.well-known/acme-challenge/keel-test", host_header="shop.keelapp.net")
    host.run("rm -f /var/www/keel-acme/.well-known/acme-challenge/keel-test")
    for answer in (response, newcomer):
        assert answer.stdout.startswith("HTTP/1.1 200") and answer.stdout.endswith("token\n"), answer.stdout


def test_hashed_static_files_are_cached_for_a_year(host):
    css = hashed_css_url(host)
    assert css.startswith("/static/guestbook/style.") and css.endswith(".css"), css
    response = get(host, css)
    assert response.stdout.startswith("HTTP/2 200")
    assert "cache-control: public, max-age=31536000, immutable" in response.stdout.lower()
    assert "x-content-type-options: nosniff" in response.stdout.lower()


def test_text_responses_are_gzipped(host):
    headers = get(host, hashed_css_url(host), extra="-o /dev/null -D - -H 'Accept-Encoding: gzip'").stdout
    assert "content-encoding: gzip" in headers.lower()


def test_postgresql_and_redis_listen_on_localhost_only(host):
    listeners = host.check_output("ss -ltnH")
    for port in (5432, 6379):
        addresses = [line.split()[3] for line in listeners.splitlines() if line.split()[3].endswith(f":{port}")]
        assert addresses, port
        assert all(a.startswith(("127.0.0.1:", "[::1]:")) for a in addresses), addresses


def test_app_role_uses_scram_sha_256(host):
    hashed = host.check_output(
        f"runuser -u postgres -- psql -tAc \"SELECT rolpassword FROM pg_authid WHERE rolname = '{APP}'\""
    )
    assert hashed.startswith("SCRAM-SHA-256$")


def test_redis_demands_a_password_and_evicts_cache_keys_only(host):
    assert "NOAUTH" in host.run("redis-cli ping").stdout
    conf = host.file("/etc/redis/redis.conf")
    assert conf.mode == 0o640 and conf.user == "redis"
    assert "maxmemory-policy volatile-lru" in conf.content_string
    assert "protected-mode yes" in conf.content_string


def test_firewall_denies_all_but_ssh_and_web(host):
    status = host.check_output("ufw status verbose")
    assert "Status: active" in status
    assert "Default: deny (incoming), allow (outgoing)" in status
    rules = [line for line in status.splitlines() if "IN" in line and "(v6)" not in line]
    assert sorted(line.split()[0] for line in rules) == ["22/tcp", "443/tcp", "80/tcp"], rules
    assert any(line.split()[0] == "22/tcp" and "LIMIT" in line for line in rules)


@pytest.mark.parametrize("unit", APP_UNITS)
def test_app_units_are_hardened(host, unit):
    show = host.check_output(
        f"systemctl show {unit} -p NoNewPrivileges -p ProtectSystem -p PrivateTmp -p ProtectHome -p User -p Restart"
    )
    props = dict(line.split("=", 1) for line in show.splitlines())
    assert props == {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "User": APP,
        "Restart": "on-failure",
    }


def test_gunicorn_reloads_with_hup_and_notifies_systemd(host):
    show = host.check_output(f"systemctl show {APP}-gunicorn -p Type -p ExecReload")
    assert "Type=notify" in show
    assert "/bin/kill -s HUP $MAINPID" in show


def test_celery_worker_stops_warmly(host):
    show = host.check_output(f"systemctl show {APP}-celery-worker -p KillSignal -p TimeoutStopUSec")
    assert "KillSignal=15" in show
    assert "TimeoutStopUSec=5min 30s" in show


def test_env_file_is_readable_by_the_app_user_only(host):
    env = host.file(f"/srv/{APP}/shared/env")
    assert env.user == APP and env.mode == 0o600
    assert 'ALLOWED_HOSTS="keelapp.net,www.keelapp.net"' in env.content_string


def test_app_user_cannot_log_in(host):
    assert host.user(APP).shell == "/usr/sbin/nologin"


def test_sshd_refuses_root_and_passwords(host):
    effective = host.check_output("sshd -T")
    assert "permitrootlogin no" in effective
    assert "passwordauthentication no" in effective
    assert "kbdinteractiveauthentication no" in effective


def test_fail2ban_watches_ssh(host):
    status = host.check_output("fail2ban-client status sshd")
    assert "Journal matches:" in status or "File list:" in status


def test_celery_beat_and_worker_record_heartbeats(host):
    count = host.check_output(f"runuser -u postgres -- psql -d {APP} -tAc 'SELECT count(*) FROM guestbook_heartbeat'")
    assert int(count) >= 1
