"""Fault containment: misbehaving guests end with their error code, in bounded time and memory,
with their instance discarded, while other functions keep serving."""
