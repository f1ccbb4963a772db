"""The nginx role: the app's site, static caching, headers, and the catch-all server."""

DOMAIN = "keelapp.test"


def get(host, path, host_header=DOMAIN):
    return host.run(f"curl -s -i --max-time 10 -H 'Host: {host_header}' http://127.0.0.1{path}")


def test_nginx_runs_with_a_valid_configuration(host):
    assert host.service("nginx").is_running and host.service("nginx").is_enabled
    assert host.run("nginx -t").rc == 0


def test_hashed_static_files_are_cached_for_a_year(host):
    response = get(host, "/static/css/site.0123456789ab.css").stdout
    assert response.startswith("HTTP/1.1 200") and "color: #123456" in response
    assert "Cache-Control: public, max-age=31536000, immutable" in response
    assert "X-Content-Type-Options: nosniff" in response


def test_unhashed_static_files_are_cached_briefly(host):
    response = get(host, "/static/css/site.css").stdout
    assert response.startswith("HTTP/1.1 200")
    assert "Cache-Control: public, max-age=300" in response


def test_proxied_paths_carry_security_headers_even_on_errors(host):
    response = get(host, "/").stdout  # no gunicorn here: 502
    assert response.startswith("HTTP/1.1 502")
    assert "X-Frame-Options: DENY" in response and "Referrer-Policy: same-origin" in response


def test_version_is_hidden(host):
    assert "Server: nginx\r\n" in get(host, "/static/css/site.css").stdout


def test_unknown_host_gets_no_answer(host):
    assert get(host, "/", host_header="attacker.test").rc == 52


def test_debians_default_site_is_gone(host):
    assert not host.file("/etc/nginx/sites-enabled/default").exists


def test_logs_rotate_daily_for_two_weeks(host):
    rotate = host.file("/etc/logrotate.d/nginx").content_string
    assert "daily" in rotate and "rotate 14" in rotate
    assert host.run("logrotate --debug /etc/logrotate.d/nginx").rc == 0
