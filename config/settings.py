"""One settings module for every environment.

Every value comes from the environment (or a `.env` file) through django-environ, and every default
is the embedded one: SQLite, in-memory channel layer, runs on a background thread of the web
process, local file storage and the offline model. `.env.example` documents each variable.
"""

import hashlib
import os
import socket
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEV_SECRET_KEY = "dev-only-insecure-secret-key-change-me"  # noqa: S105 - refused below when DEBUG is off

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env.str("SECRET_KEY", default=DEV_SECRET_KEY)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
CSRF_FAILURE_VIEW = "api.errors.csrf_failure"

if not DEBUG and SECRET_KEY == DEV_SECRET_KEY:
    raise ImproperlyConfigured("Set SECRET_KEY: the development key is refused when DEBUG is off.")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "api",
    "tenants",
    "conversations",
    "runs",
    "sandbox",
    "usage",
    "skills",
    "mcp_servers",
    "workspaces",
    "chat",
    "agents",
    "approvals",
    "audit",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "api.middleware.errors_in_json",
    "api.middleware.reject_malformed_requests",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
# API paths have no trailing slash; redirecting a POST to add one would lose its body.
APPEND_SLASH = False
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Runs write events from a background thread while the web process reads them: WAL lets
    # readers proceed during a write, and the timeout makes a busy writer wait instead of failing.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
else:
    # Under ASGI every request runs its sync code on a fresh thread, so Django's per-thread
    # persistent connections would reconnect per request; psycopg's pool is shared by all threads.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # The pool checks a connection before lending it out (one round trip), so after a failover or
    # `pg_terminate_backend` requests get live connections instead of the dead ones it still holds;
    # at the first dead one it checks them all (config.postgresql, Django's backend with that check).
    DATABASES["default"]["ENGINE"] = "config.postgresql"
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DB_POOL_MIN_SIZE", default=2),
        "max_size": env.int("DB_POOL_MAX_SIZE", default=20),
        "timeout": env.float("DB_POOL_TIMEOUT", default=10.0),
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis clients ---------------------------------------------------------------------------------
# Every timeout is set here rather than inherited from redis-py, whose defaults changed between
# releases (8.x reads with a 5 s timeout, which killed every quiet listener: channels-redis blocks
# in BZPOPMIN for 5 s at a time).
REDIS_CONNECT_TIMEOUT = env.float("REDIS_CONNECT_TIMEOUT", default=3.0)
# The broker's reads (kombu polls with 1 s BRPOPs): a Redis host that vanished without closing the
# connection is noticed after this long.
REDIS_SOCKET_TIMEOUT = env.float("REDIS_SOCKET_TIMEOUT", default=15.0)
# A pooled connection idle this long is PINGed before use, so one left over from before a Redis
# restart is replaced instead of failing the command that picks it up.
REDIS_HEALTH_CHECK_SECONDS = env.int("REDIS_HEALTH_CHECK_SECONDS", default=10)
# The channel layer's reads have no timeout: under Python 3.11 the asyncio timeout redis-py puts
# around each read sometimes swallowed the cancellation of a closing socket's BZPOPMIN (measured
# here: half of the closed sockets leaked a reader). TCP keepalive probes instead: a vanished Redis
# host fails the read after about 10 + 3 x 5 s of silence (Redis answers every 5 s when it lives).
REDIS_KEEPALIVE_OPTIONS = {socket.TCP_KEEPIDLE: 10, socket.TCP_KEEPINTVL: 5, socket.TCP_KEEPCNT: 3}

# --- Channel layer --------------------------------------------------------------------------------
# The core Redis layer, with room for 10,000 pending messages per process instead of its default
# 100, past which it silently drops group messages (SDK-FACTS.md). Not the pub/sub layer: measured
# here, a message a web process publishes reaches that same process's sockets only when the next
# message arrives (run.queued 40-60 ms late). Consumers repair any gap from the database either way,
# and ride out a failing layer (conversations.realtime.GroupListener).
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "conversations.layers.EventsChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": None,
                        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT,
                        "socket_keepalive": True,
                        "socket_keepalive_options": REDIS_KEEPALIVE_OPTIONS,
                        "health_check_interval": REDIS_HEALTH_CHECK_SECONDS,
                        # Two quick retries on a fresh connection (redis-py retries none for a pool
                        # it did not make): a connection dropped by a Redis restart is replaced
                        # unnoticed, while a Redis that is down fails fast to the callers' own backoff.
                        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
                    }
                ],
                "capacity": env.int("CHANNEL_CAPACITY", default=10_000),
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- Run execution --------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A run lost with its worker is failed by the heartbeat reaper; redelivering it would start the
# agent a second time.
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("RUN_MAX_SECONDS", default=3600) + 600,
    "socket_timeout": REDIS_SOCKET_TIMEOUT,
    "socket_connect_timeout": REDIS_CONNECT_TIMEOUT,
    "socket_keepalive": True,
    "health_check_interval": REDIS_HEALTH_CHECK_SECONDS,
}
CELERY_TASK_DEFAULT_QUEUE = env.str("RUN_QUEUE", default="runs")
# Workers wait out a broker outage of any length (the default gives up, and exits, after 100 tries).
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# A run in flight when the broker connection drops keeps going: its events are in PostgreSQL, and
# cancelling it would only redeliver it (Celery 6 changes this default).
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
# Runs are threads: each waits on its CLI (a process of its own) and the network, so a thread per
# run is enough and lighter than a process. Measured with Celery 5.6 as well: after a broker
# restart the prefork pool hands new tasks only to children whose task has ended, so a message sent
# after Redis is back waited for the longest run in flight; the thread pool starts it at once.
CELERY_WORKER_POOL = "threads"
CELERY_WORKER_CONCURRENCY = env.int("WORKER_CONCURRENCY", default=4)
RUN_EXECUTION = "celery" if CELERY_BROKER_URL else "thread"

RUN_MAX_SECONDS = env.int("RUN_MAX_SECONDS", default=3600)
RUN_HEARTBEAT_SECONDS = env.float("RUN_HEARTBEAT_SECONDS", default=2.0)
RUN_STALE_AFTER_SECONDS = env.float("RUN_STALE_AFTER_SECONDS", default=10.0)
# A queued run no worker has taken for this long is dispatched again (its task was lost).
RUN_REDISPATCH_SECONDS = env.float("RUN_REDISPATCH_SECONDS", default=120.0)
RUN_INTERRUPT_GRACE_SECONDS = env.float("RUN_INTERRUPT_GRACE_SECONDS", default=1.0)
# On SIGTERM (`docker stop`, a rolling update) a worker takes no new run and gives those it holds this long to end;
# then it hands each one still going back to the queue, to continue on another worker (`runs.shutdown`). Handing
# back takes up to ~4 s more (the CLI's interrupt, the last usage, the workspace's sync-out), so the default fits
# Docker's 10 s before its SIGKILL; raise it with the runtime's kill timeout (docker-compose.yml: 20 of 30 s).
RUN_SHUTDOWN_GRACE_SECONDS = env.float("RUN_SHUTDOWN_GRACE_SECONDS", default=5.0)
RUN_MAX_INPUT_CHARS = env.int("RUN_MAX_INPUT_CHARS", default=100_000)
# Warm sessions (runs.sessions): after a run completes, its conversation's sandboxed CLI stays connected on its
# worker this long, and the conversation's next run is sent into it (no sandbox launch, CLI start or resume).
# Each worker keeps at most WARM_SESSIONS_MAX (0: none) and WARM_SESSIONS_MEMORY_MB of them (their processes'
# proportional memory), closing the least recently used first. A run routed to a warm session's worker that no
# thread of it takes within RUN_WARM_CLAIM_SECONDS (the worker is busy or gone) goes to any worker, cold.
WARM_SESSION_IDLE_SECONDS = env.float("WARM_SESSION_IDLE_SECONDS", default=300.0)
WARM_SESSIONS_MAX = env.int("WARM_SESSIONS_MAX", default=8)
WARM_SESSIONS_MEMORY_MB = env.int("WARM_SESSIONS_MEMORY_MB", default=2048)
RUN_WARM_CLAIM_SECONDS = env.float("RUN_WARM_CLAIM_SECONDS", default=2.0)
# Pre-warmed sessions (runs.prewarm): for each agent profile of each active tenant, this many conversations made
# ahead with their sandboxed CLI started, handed out by the API to new conversations that ask for nothing else, so
# that their first message needs no launch either. Each holds a warm session's memory (about 100 MB): 0 (none) by
# default.
PREWARMED_SESSIONS = env.int("PREWARMED_SESSIONS", default=0)
# A tool call waiting for a person's approval (or the agent's question for an answer) holds its worker this
# long; then the run is suspended, its worker and sandbox freed, and the decision resumes it on any worker.
APPROVAL_WAIT_SECONDS = env.float("APPROVAL_WAIT_SECONDS", default=30.0)
# How many messages may wait in a conversation's queue (agent profiles with busy_policy "queue").
RUN_QUEUE_MAX = env.int("RUN_QUEUE_MAX", default=20)
# How long a run's worker retries a database that dropped its connection (a failover, a restart)
# before giving the run up; its events wait in memory meanwhile.
RUN_DATABASE_RETRY_SECONDS = env.float("RUN_DATABASE_RETRY_SECONDS", default=30.0)


def default_run_root() -> Path:
    """`var/runs` in the checkout, unless the sandbox user could not reach it there.

    Sandboxed runs need every parent of RUN_ROOT traversable by the unprivileged sandbox uid; a
    checkout under a private directory (a home, a `mktemp -d`) is not, so use one under /var/tmp.
    """
    inside = BASE_DIR / "var" / "runs"
    if os.geteuid() != 0 or all(path.stat().st_mode & 0o001 for path in [BASE_DIR, *BASE_DIR.parents]):
        return inside
    digest = hashlib.sha256(str(BASE_DIR).encode()).hexdigest()[:12]
    return Path("/var/tmp") / f"agent-platform-{digest}"  # noqa: S108 - persistent and per checkout


# Per-run private directories and per-conversation workspaces.
RUN_ROOT = Path(env.str("RUN_ROOT", default=str(default_run_root())))

# --- Sandbox ------------------------------------------------------------------------------------
# Every run's CLI runs under bubblewrap as an unprivileged uid. "unsandboxed" exists for development
# on machines without bubblewrap and is refused with DEBUG off.
SANDBOX_RUNNER = env.str("SANDBOX_RUNNER", default="bubblewrap")
if SANDBOX_RUNNER not in ("bubblewrap", "unsandboxed"):
    raise ImproperlyConfigured("SANDBOX_RUNNER must be 'bubblewrap' or 'unsandboxed'.")
if not DEBUG and SANDBOX_RUNNER == "unsandboxed":
    raise ImproperlyConfigured("SANDBOX_RUNNER=unsandboxed is refused when DEBUG is off: install bubblewrap.")
SANDBOX_BWRAP = env.str("SANDBOX_BWRAP", default="bwrap")  # the bubblewrap executable (name or path)
SANDBOX_UID = env.int("SANDBOX_UID", default=61000)  # used when the worker runs as root
SANDBOX_MEMORY_MB = env.int("SANDBOX_MEMORY_MB", default=2048)
SANDBOX_MAX_PROCESSES = env.int("SANDBOX_MAX_PROCESSES", default=256)
SANDBOX_CPU_SECONDS = env.int("SANDBOX_CPU_SECONDS", default=900)
SANDBOX_FILE_MB = env.int("SANDBOX_FILE_MB", default=1024)
SANDBOX_TMP_MB = env.int("SANDBOX_TMP_MB", default=512)
SANDBOX_WORKSPACE_MB = env.int("SANDBOX_WORKSPACE_MB", default=2048)
SANDBOX_WORKSPACE_CHECK_SECONDS = env.float("SANDBOX_WORKSPACE_CHECK_SECONDS", default=1.0)
SANDBOX_CPUS = env.float("SANDBOX_CPUS", default=1.0)  # CPUs per run (cgroup cpu controller); 0: no limit
if SANDBOX_CPUS < 0:
    raise ImproperlyConfigured("SANDBOX_CPUS must be 0 (no limit) or more.")
# The layers a sandbox reports (sandbox/bin/sandbox-init reads each from inside at the run's start).
SANDBOX_LAYERS = (
    "user", "mount", "pid", "net", "ipc", "uts", "cgroup",
    "no_new_privs", "capabilities", "seccomp", "read_only_system",
    "memory", "pids", "cpu",
)  # fmt: skip
# A run whose sandbox lacks one of these is refused (`sandbox_unavailable`) before its CLI starts. The cgroup
# limits (memory, pids, cpu) and the cgroup namespace are reported but required only when the operator lists
# them: many container hosts (Docker without a delegated cgroup, gVisor, some CI runners) give a worker no
# writable cgroup, and refusing every run there would push operators to the unsandboxed runner instead.
SANDBOX_REQUIRED_LAYERS = env.list(
    "SANDBOX_REQUIRED_LAYERS",
    default=[
        "user",
        "mount",
        "pid",
        "net",
        "ipc",
        "uts",
        "no_new_privs",
        "capabilities",
        "seccomp",
        "read_only_system",
    ],
)
if unknown_layers := sorted(set(SANDBOX_REQUIRED_LAYERS) - set(SANDBOX_LAYERS)):
    raise ImproperlyConfigured(
        f"SANDBOX_REQUIRED_LAYERS names unknown layer(s) {', '.join(unknown_layers)}; "
        f"known layers: {', '.join(SANDBOX_LAYERS)}."
    )

# --- Workspaces -----------------------------------------------------------------------------------
# A conversation's files live in the default storage; a run syncs them in before its CLI starts, and
# out every WORKSPACE_SYNC_SECONDS while it runs and once more when it ends, whatever the ending.
WORKSPACE_SYNC_SECONDS = env.float("WORKSPACE_SYNC_SECONDS", default=5.0)
WORKSPACE_FILE_MB = env.int("WORKSPACE_FILE_MB", default=100)  # a bigger file is not saved (file.skipped)
WORKSPACE_MAX_FILES = env.int("WORKSPACE_MAX_FILES", default=10_000)

# --- Skills -------------------------------------------------------------------------------------
# Each worker keeps the skill versions its runs had, expanded under RUN_ROOT/skills by checksum; past
# SKILL_CACHE_MB the least recently used are dropped (a run that has them placed keeps its copy).
SKILL_CACHE_MB = env.int("SKILL_CACHE_MB", default=2048)

# --- MCP servers ----------------------------------------------------------------------------------
# Fernet keys for the secrets vault, newest first (the first encrypts, all decrypt; `manage.py
# rotate_secrets` moves every secret to the first). Empty: one key derived from SECRET_KEY.
SECRETS_KEYS = env.list("SECRETS_KEYS", default=[])
# Programs a stdio MCP server may run inside the sandbox: name → absolute path (installed by the
# operator, visible in the sandbox's read-only /usr). Nothing else runs as a stdio server.
MCP_STDIO_COMMANDS = env.dict("MCP_STDIO_COMMANDS", default={})
# Private or loopback networks that calls made for tenants (MCP servers, OpenAPI tools, the sandbox's egress
# proxy) may reach anyway, e.g. 10.1.0.0/16 for an internal service; every other non-public address is refused
# (gateway.egress). MCP_ALLOWED_NETWORKS is its old name, still read.
EGRESS_ALLOWED_NETWORKS = env.list("EGRESS_ALLOWED_NETWORKS", default=env.list("MCP_ALLOWED_NETWORKS", default=[]))

# --- Egress: where a run's sandbox may connect, through its gateway's proxy (gateway.proxy) ---------------
# Rules no tenant may allow (the allow-list syntax of gateway.allowlist), e.g. *.internal.example.com.
EGRESS_DENY = env.list("EGRESS_DENY", default=[])
# Resolvers the proxy asks instead of the system's ("127.0.0.1:53"): names are only ever resolved outside the sandbox.
EGRESS_DNS_SERVERS = env.list("EGRESS_DNS_SERVERS", default=[])
EGRESS_MAX_CONNECTIONS = env.int("EGRESS_MAX_CONNECTIONS", default=500)  # per run
EGRESS_MAX_BYTES = env.int("EGRESS_MAX_BYTES", default=1024 * 1024 * 1024)  # per run, both ways together
EGRESS_CONNECT_SECONDS = env.float("EGRESS_CONNECT_SECONDS", default=10.0)
# The per-deployment CA that signs the certificates of hosts whose requests get a tenant's secret headers; the
# sandbox trusts it. Unset: one is made under RUN_ROOT on first use (set both on many hosts, from a secret).
EGRESS_CA_CERT_FILE = env.str("EGRESS_CA_CERT_FILE", default="")
EGRESS_CA_KEY_FILE = env.str("EGRESS_CA_KEY_FILE", default="")
# Certificates the proxy trusts for upstream TLS besides the system's (e.g. an internal CA).
EGRESS_UPSTREAM_CA_FILE = env.str("EGRESS_UPSTREAM_CA_FILE", default="")

# --- Metrics -------------------------------------------------------------------------------------
# `/metrics` (Prometheus) answers a bearer METRICS_TOKEN, or clients in METRICS_ALLOWED_NETWORKS.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_NETWORKS = env.list("METRICS_ALLOWED_NETWORKS", default=["127.0.0.0/8", "::1/128"])

# --- Model upstreams ------------------------------------------------------------------------------
ANTHROPIC_BASE_URL = env.str("ANTHROPIC_BASE_URL", default="https://api.anthropic.com")
ANTHROPIC_API_KEY = env.str("ANTHROPIC_API_KEY", default="")
AWS_REGION_NAME = env.str("AWS_REGION", default=env.str("AWS_DEFAULT_REGION", default="us-east-1"))
AWS_ACCESS_KEY_ID = env.str("AWS_ACCESS_KEY_ID", default="")
AWS_SECRET_ACCESS_KEY = env.str("AWS_SECRET_ACCESS_KEY", default="")
AWS_SESSION_TOKEN = env.str("AWS_SESSION_TOKEN", default="")
BEDROCK_BASE_URL = env.str("BEDROCK_BASE_URL", default=f"https://bedrock-runtime.{AWS_REGION_NAME}.amazonaws.com")
# The catalog model (its id) that names a conversation after its first message, through the run's gateway;
# empty, or a model the run's provider does not serve: the run's own model.
TITLE_MODEL = env.str("TITLE_MODEL", default="")

# --- File storage ---------------------------------------------------------------------------------
AWS_STORAGE_BUCKET_NAME = env.str("AWS_STORAGE_BUCKET_NAME", default="")
AWS_S3_ENDPOINT_URL = env.str("AWS_S3_ENDPOINT_URL", default="") or None  # any S3 protocol service
AWS_S3_REGION_NAME = env.str("AWS_S3_REGION_NAME", default=AWS_REGION_NAME)
# Keys of their own for storage (else AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, else botocore's chain).
AWS_S3_ACCESS_KEY_ID = env.str("AWS_S3_ACCESS_KEY_ID", default="") or AWS_ACCESS_KEY_ID
AWS_S3_SECRET_ACCESS_KEY = env.str("AWS_S3_SECRET_ACCESS_KEY", default="") or AWS_SECRET_ACCESS_KEY
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(BASE_DIR / "var" / "media")))
STORAGES = {
    "default": (
        {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {"bucket_name": AWS_STORAGE_BUCKET_NAME}}
        if AWS_STORAGE_BUCKET_NAME
        else {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    ),
    # Hashed, compressed names in production (after `collectstatic`); plain files in development.
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# --- Auth, API, realtime --------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
STREAM_TOKEN_MAX_AGE_SECONDS = env.int("STREAM_TOKEN_MAX_AGE_SECONDS", default=300)
SSE_HEARTBEAT_SECONDS = env.float("SSE_HEARTBEAT_SECONDS", default=15.0)
# Origins allowed to open WebSockets besides ALLOWED_HOSTS (e.g. a separate front-end domain).
WEBSOCKET_ALLOWED_ORIGINS = env.list("WEBSOCKET_ALLOWED_ORIGINS", default=[])

REST_FRAMEWORK = {
    # An API key, else the chat page's session of one end user (chat.auth).
    "DEFAULT_AUTHENTICATION_CLASSES": ["tenants.auth.ApiKeyAuthentication", "chat.auth.ChatSessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "api.schema.ApiSchema",
    "DEFAULT_FILTER_BACKENDS": ["api.filters.StrictFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "api.pagination.Pages",
    "EXCEPTION_HANDLER": "api.errors.exception_handler",
    "DEFAULT_METADATA_CLASS": "api.metadata.ApiMetadata",
    "DEFAULT_THROTTLE_CLASSES": ["tenants.ratelimit.TenantRateThrottle"],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["api.parsers.JSONParser"],
    # \uXXXX escapes: a lone surrogate that an error message echoes back still encodes.
    "UNICODE_JSON": False,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Agent platform API",
    "DESCRIPTION": "Multi-tenant Claude agent runs: tenants, models, conversations, runs and their events.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # The SSE endpoints are plain Django views, described by the app that serves them.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "conversations.schema.add_stream_endpoints",
    ],
    "TAGS": [
        {"name": "conversations", "description": "A tenant's conversations with the agent."},
        {"name": "runs", "description": "Messages start runs; follow, list and interrupt them."},
        {"name": "events", "description": "Every step of a run, stored in order: pages, SSE, WebSocket tokens."},
        {"name": "files", "description": "A conversation's workspace: its files, version by version."},
        {"name": "skills", "description": "A tenant's Agent Skills, version by version."},
        {
            "name": "agents",
            "description": "A tenant's agent profiles (instructions, models, tools), version by version.",
        },
        {
            "name": "approvals",
            "description": "What runs ask people: tool calls to allow or deny, the agent's questions to answer.",
        },
        {"name": "usage", "description": "Tokens and cost of each model call, as billed."},
        {"name": "models", "description": "The model catalog and its prices (platform admin keys change it)."},
        {"name": "tenants", "description": "Organisations (platform admin keys only)."},
    ],
    # Swagger UI from our own static files: self-hosted installs may have no internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "ConversationStatusEnum": "conversations.models.Conversation.Status",
        "RunStatusEnum": "conversations.models.Run.Status",
        "TenantStatusEnum": "tenants.models.Tenant.Status",
        "ModelStatusEnum": "tenants.models.LanguageModel.Status",
        "AgentKindEnum": "agents.models.AgentVersion.Kind",
        "PromptScopeEnum": "agents.models.AgentVersion.PromptScope",
        "EffortEnum": "agents.models.AgentVersion.Effort",
        "BusyPolicyEnum": "agents.models.AgentVersion.BusyPolicy",
        "ApprovalStatusEnum": "approvals.models.Approval.Status",
        "QuestionStatusEnum": "approvals.models.Question.Status",
        "DeciderKindEnum": "approvals.models.Decider",
    },
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
# Daphne serves no static files itself: WhiteNoise serves the admin's and the API docs' assets,
# from the app folders in development and from `collectstatic` output in production.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
LOGIN_URL = "admin:login"
# Session-stored messages: the admin shows a new API key once in a message, which must not sit in a
# (signed but readable) cookie.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

if not DEBUG:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # probes from inside the network speak plain HTTP
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
    SECURE_CONTENT_TYPE_NOSNIFF = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "daphne": {"level": "WARNING"},
        "django.channels.server": {"level": "WARNING"},
        # Django's own handler on "django" prints each record bare with DEBUG on, then the record reaches
        # the root's handler as well: every warning twice. Here it has only the root's.
        "django": {"handlers": [], "level": "INFO", "propagate": True},
    },
}
