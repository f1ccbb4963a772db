"""The redis role: password, localhost, memory cap that spares the broker, durable queue."""

PASSWORD = "molecule-redis-password-7c1e8b"


def cli(host, command, password=PASSWORD):
    return host.run(f"redis-cli --no-auth-warning -a '{password}' {command}")


def test_redis_runs_and_starts_at_boot(host):
    service = host.service("redis-server")
    assert service.is_running and service.is_enabled


def test_anonymous_clients_are_refused(host):
    assert "NOAUTH" in host.run("redis-cli ping").stdout


def test_clients_with_the_password_are_served(host):
    assert cli(host, "ping").stdout.strip() == "PONG"
    wrong = cli(host, "ping", password="wrong")
    assert "PONG" not in wrong.stdout
    assert "WRONGPASS" in wrong.stdout + wrong.stderr or "NOAUTH" in wrong.stdout


def test_listens_on_localhost_only(host):
    listeners = [line.split()[3] for line in host.check_output("ss -ltnH").splitlines()]
    on_6379 = [address for address in listeners if address.endswith(":6379")]
    assert on_6379 and all(a.startswith(("127.0.0.1:", "[::1]:")) for a in on_6379), on_6379


def test_memory_cap_evicts_only_keys_with_a_ttl(host):
    info = cli(host, "info memory").stdout
    assert "maxmemory_policy:volatile-lru" in info
    maxmemory = int(next(line.split(":")[1] for line in info.splitlines() if line.startswith("maxmemory:")))
    assert maxmemory >= 64 * 1024 * 1024


def test_queue_survives_a_restart(host):
    assert cli(host, "rpush keel-test-queue task-1").rc == 0
    host.run("systemctl restart redis-server")
    assert cli(host, "lrange keel-test-queue 0 -1").stdout.strip() == "task-1"
    assert "aof_enabled:1" in cli(host, "info persistence").stdout


def test_config_command_is_disabled(host):
    assert "unknown command" in cli(host, "config get maxmemory").stdout.lower()


def test_config_file_is_private(host):
    conf = host.file("/etc/redis/redis.conf")
    assert conf.user == "redis" and conf.mode == 0o640
