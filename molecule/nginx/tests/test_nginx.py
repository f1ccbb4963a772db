"""The nginx role: the app's site over HTTPS (tls_mode selfsigned here), static
caching, headers, and the catch-all servers."""

DOMAIN = "keelapp.test"


def get(host, path, host_header=DOMAIN):
    """Over HTTPS, the name as SNI and Host."""
    return host.run(f"curl -sk -i --max-time 10 --resolve {host_header}:443:127.0.0.1 https://{host_header}{path}")


def get_plain(host, path, host_header=DOMAIN):
    return host.run(f"curl -s -i --max-time 10 -H 'Host: {host_header}' http://127.0.0.1{path}")


def test_nginx_runs_with_a_valid_configuration(host):
    assert host.service("nginx").is_running and host.service("nginx").is_enabled
    assert host.run("nginx -t").rc == 0


def test_the_self_signed_certificate_covers_every_domain_and_http2_is_on(host):
    names = host.check_output(
        f"echo | openssl s_client -connect 127.0.0.1:443 -servername {DOMAIN} 2>/dev/null"
        " | openssl x509 -noout -ext subjectAltName"
    )
    assert "DNS:keelapp.test" in names and "DNS:www.keelapp.test" in names
    assert get(host, "/static/css/site.css").stdout.startswith("HTTP/2 200")


def test_plain_http_redirects_to_https_with_308(host):
    response = get_plain(host, "/static/css/site.css").stdout
    assert response.startswith("HTTP/1.1 308")
    assert f"Location: https://{DOMAIN}/static/css/site.css\r\n" in response


def test_hsts_is_sent_once_without_the_opt_ins(host):
    response = get(host, "/").stdout
    assert response.lower().count("strict-transport-security:") == 1
    assert "strict-transport-security: max-age=63072000\r\n" in response.lower()


def test_hashed_static_files_are_cached_for_a_year(host):
    response = get(host, "/static/css/site.0123456789ab.css").stdout
    assert response.startswith("HTTP/2 200") and "color: #123456" in response
    assert "cache-control: public, max-age=31536000, immutable" in response
    assert "x-content-type-options: nosniff" in response


def test_unhashed_static_files_are_cached_briefly(host):
    response = get(host, "/static/css/site.css").stdout
    assert response.startswith("HTTP/2 200")
    assert "cache-control: public, max-age=300" in response


def test_proxied_paths_carry_security_headers_even_on_errors(host):
    response = get(host, "/").stdout  # no gunicorn here: 502
    assert response.startswith("HTTP/2 502")
    assert "x-frame-options: DENY" in response and "referrer-policy: same-origin" in response


def test_version_is_hidden(host):
    assert "server: nginx\r\n" in get(host, "/static/css/site.css").stdout


def test_unknown_names_get_no_answer(host):
    assert get_plain(host, "/", host_header="attacker.test").rc == 52  # nginx's 444: an empty reply
    assert get(host, "/", host_header="attacker.test").rc == 35  # TLS handshake refused


def test_debians_default_site_is_gone(host):
    assert not host.file("/etc/nginx/sites-enabled/default").exists


def test_logs_rotate_daily_for_two_weeks(host):
    rotate = host.file("/etc/logrotate.d/nginx").content_string
    assert "daily" in rotate and "rotate 14" in rotate
    assert host.run("logrotate --debug /etc/logrotate.d/nginx").rc == 0
