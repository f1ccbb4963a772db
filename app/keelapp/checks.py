"""Validation of settings that Django itself would accept but production must not."""

from django.core.exceptions import ImproperlyConfigured

MIN_SECRET_KEY_LENGTH = 50
MIN_SECRET_KEY_UNIQUE_CHARACTERS = 5
INSECURE_MARKERS = ("insecure", "change-me", "changeme", "change_me", "replace-me", "secret-key")


def validate_secret_key(key: str) -> None:
    """Refuse a missing, short, low-entropy or placeholder-looking SECRET_KEY."""
    if not key:
        raise ImproperlyConfigured("SECRET_KEY is not set: put a random string of 50+ characters in the environment.")
    if len(key) < MIN_SECRET_KEY_LENGTH:
        raise ImproperlyConfigured(
            f"SECRET_KEY is too short ({len(key)} characters): it needs at least {MIN_SECRET_KEY_LENGTH}."
        )
    if len(set(key)) < MIN_SECRET_KEY_UNIQUE_CHARACTERS:
        raise ImproperlyConfigured(
            f"SECRET_KEY has fewer than {MIN_SECRET_KEY_UNIQUE_CHARACTERS} distinct characters: it is not random."
        )
    lowered = key.lower()
    for marker in INSECURE_MARKERS:
        if marker in lowered:
            raise ImproperlyConfigured(f"SECRET_KEY looks like a placeholder (it contains '{marker}'): generate one.")


def validate_allowed_hosts(hosts: list[str], *, debug: bool) -> None:
    """Refuse a wildcard ALLOWED_HOSTS always, and an empty one in production."""
    if "*" in hosts:
        raise ImproperlyConfigured("ALLOWED_HOSTS must name the site's hosts; '*' accepts any Host header.")
    if not hosts and not debug:
        raise ImproperlyConfigured("ALLOWED_HOSTS is empty: list the site's domain names.")
