"""The postgresql role: the app's database, reachable with its password only, on localhost."""

APP = "keelapp"
PASSWORD = "molecule-db-password-4f9d2a"


def psql_as_app(host, password, query="SELECT current_user"):
    return host.run(
        f"PGPASSWORD='{password}' psql -h 127.0.0.1 -U {APP} -d {APP} -tAc \"{query}\"",
    )


def postgresql_version(host):
    """Debian's cluster version on this host: 15 on Debian 12, 17 on Debian 13."""
    return host.check_output("ls /etc/postgresql")


def test_postgresql_runs_and_starts_at_boot(host):
    service = host.service(f"postgresql@{postgresql_version(host)}-main")
    assert service.is_running and service.is_enabled


def test_listens_on_localhost_only(host):
    listeners = [line.split()[3] for line in host.check_output("ss -ltnH").splitlines()]
    on_5432 = [address for address in listeners if address.endswith(":5432")]
    assert on_5432 and all(a.startswith(("127.0.0.1:", "[::1]:")) for a in on_5432), on_5432


def test_app_logs_in_with_its_password_over_tcp(host):
    login = psql_as_app(host, PASSWORD)
    assert login.rc == 0, login.stderr
    assert login.stdout.strip() == APP


def test_wrong_password_is_refused(host):
    login = psql_as_app(host, "not-the-password")
    assert login.rc != 0
    assert "password authentication failed" in login.stderr


def test_app_owns_its_database_and_is_not_superuser(host):
    owner = psql_as_app(host, PASSWORD, f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{APP}'")
    assert owner.stdout.strip() == APP
    superuser = psql_as_app(host, PASSWORD, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    assert superuser.stdout.strip() == "f"


def test_password_is_stored_as_scram(host):
    stored = host.check_output(
        f"runuser -u postgres -- psql -tAc \"SELECT rolpassword FROM pg_authid WHERE rolname = '{APP}'\""
    )
    assert stored.startswith("SCRAM-SHA-256$")


def test_memory_settings_follow_the_host_ram(host):
    mem_mb = int(host.check_output("awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo"))
    expected = max(min(int(mem_mb * 0.25), 8192), 32)
    shared = host.check_output("runuser -u postgres -- psql -tAc 'SHOW shared_buffers'")
    assert shared == (f"{expected // 1024}GB" if expected % 1024 == 0 else f"{expected}MB")
    assert host.check_output("runuser -u postgres -- psql -tAc 'SHOW password_encryption'") == "scram-sha-256"


def test_no_trust_authentication(host):
    hba = host.file(f"/etc/postgresql/{postgresql_version(host)}/main/pg_hba.conf").content_string
    assert " trust" not in hba
