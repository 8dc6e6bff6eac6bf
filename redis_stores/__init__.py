"""State kept in Redis that both sides read and write: messages, the helper registry, dead letters, replay.

Each store is a class over one ``redis.Redis`` handed to it (no module-global connection); the atomic
steps are Lua scripts, and every key comes from ``tasks.keys.Keys``.
"""
