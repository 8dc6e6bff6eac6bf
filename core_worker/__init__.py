"""Core workers: sessions, the local LLM, helpers and delivery."""
