"""Access control: API keys with scopes, namespaces (tenants), quotas and rate limits."""
