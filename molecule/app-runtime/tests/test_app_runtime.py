"""The app, gunicorn and celery roles before the first release."""

from urllib.parse import quote

APP = "keelapp"
UNITS = [f"{APP}-gunicorn", f"{APP}-celery-worker", f"{APP}-celery-beat"]


def test_app_user_has_no_login_shell(host):
    user = host.user(APP)
    assert user.exists and user.shell == "/usr/sbin/nologin" and user.home == f"/srv/{APP}"


def test_release_folders_belong_to_the_app(host):
    for folder in ("releases", "shared", "shared/media"):
        entry = host.file(f"/srv/{APP}/{folder}")
        assert entry.is_directory and entry.user == APP, folder


def test_env_file_is_private_and_complete(host):
    env = host.file(f"/srv/{APP}/shared/env")
    assert env.user == APP and env.mode == 0o600
    content = env.content_string
    password = quote("molecule-db-password-4f9d2a", safe="")
    assert f'DATABASE_URL="postgres://{APP}:{password}@127.0.0.1:5432/{APP}"' in content
    assert 'ALLOWED_HOSTS="keelapp.test,www.keelapp.test"' in content
    assert 'CSRF_TRUSTED_ORIGINS="https://keelapp.test,https://www.keelapp.test"' in content
    assert 'DJANGO_SETTINGS_MODULE="keelapp.settings"' in content


def test_gunicorn_socket_listens_for_nginx_and_the_app(host):
    assert host.service(f"{APP}-gunicorn.socket").is_running
    socket = host.file(f"/run/{APP}/gunicorn.sock")
    assert socket.is_socket and socket.user == APP and socket.group == "www-data" and socket.mode == 0o660


def test_services_wait_for_the_first_release(host):
    for unit in UNITS:
        assert host.service(unit).is_enabled, unit
        assert not host.service(unit).is_running, unit
        unit_file = host.file(f"/etc/systemd/system/{unit}.service").content_string
        assert f"ConditionPathExists=/srv/{APP}/current/.venv/bin/" in unit_file, unit


def test_units_are_hardened_and_verified_by_systemd(host):
    for unit in UNITS:
        show = host.check_output(f"systemctl show {unit} -p NoNewPrivileges -p ProtectSystem -p PrivateTmp")
        assert sorted(show.split()) == ["NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectSystem=strict"], unit
        verify = host.run(f"systemd-analyze verify /etc/systemd/system/{unit}.service")
        assert "Unknown" not in verify.stderr and "Invalid" not in verify.stderr, verify.stderr


def test_beat_keeps_its_schedule_in_its_own_state_folder(host):
    show = host.check_output(f"systemctl show {APP}-celery-beat -p StateDirectory -p ExecStart")
    assert f"StateDirectory={APP}-celery-beat" in show
    assert f"--schedule=/var/lib/{APP}-celery-beat/schedule" in show


def test_uv_is_installed_at_the_pinned_version(host):
    assert host.check_output("/opt/keel-uv/bin/uv --version").split()[:2] == ["uv", "0.13.9"]


def test_media_folder_lets_nginx_read_what_the_app_writes(host):
    media = host.file(f"/srv/{APP}/shared/media")
    assert media.user == APP and media.group == "www-data" and media.mode == 0o2750


def test_the_units_may_write_shared_but_not_their_environment_file(host):
    for unit in (f"{APP}-gunicorn", f"{APP}-celery-worker"):
        shown = host.check_output(f"systemctl show -p ReadWritePaths -p ReadOnlyPaths {unit}")
        assert f"ReadWritePaths=/srv/{APP}/shared" in shown, unit
        assert f"ReadOnlyPaths=/srv/{APP}/shared/env" in shown, unit
