"""lmgate: a secure, observable LAN gateway for local LLM servers."""
