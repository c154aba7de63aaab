"""An HTTP server that behaves like LM Studio, for tests and for trying lmgate without it.

Run it with `python -m lmgate.emulator --port N`, or build it in-process with
`create_app(EmulatorConfig(...))`.
"""

from lmgate.emulator.app import create_app
from lmgate.emulator.config import EmulatorConfig, ModelSpec

__all__ = ["EmulatorConfig", "ModelSpec", "create_app"]
