"""The lmgate benchmark: what the gateway adds on top of talking to the upstream directly.

Run `python -m bench` (or `python -m bench --quick`); see bench/README.md.
"""
