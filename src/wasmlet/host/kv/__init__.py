"""Key-value stores behind the kv capability: in-memory (per process) and persistent
(SQL by default, Redis when `redis_url` is set). The capability (host/kv_capability.py)
enforces grants, scopes and size caps; the stores only store."""
