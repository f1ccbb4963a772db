from .base import *  # noqa: F403

SECRET_KEY = "local-only-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
