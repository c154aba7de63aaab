"""Multi-worker mode (`lmgate serve --workers N`): N processes accept on one socket.

The parent resolves the settings once (demo fallback included), hands them to the workers in
an env var (`handoff`), and runs uvicorn's supervisor (`supervisor`). Each worker builds its
own app (`entry`), claims a slot that names it and elects the primary (`slot`), and shares
what must be shared: runtime state and keys through SQLite, per-key limits through a small
SQLite file in the run directory (`guard/shared_limits.py`), Prometheus series through
prometheus-client's multiprocess files (`metrics`), the scheduler's one core through a Unix
socket the primary serves there (`schedule/host.py`, `schedule/remote.py`). Events, most
`/debug/*` figures and request tracking stay per worker.
"""
