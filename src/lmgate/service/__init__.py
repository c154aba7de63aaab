"""Running lmgate at boot: a service definition per platform (systemd, launchd, Task
Scheduler), written from the settings `serve` would run with, and installed or removed.

`spec` turns settings into what every platform needs (the command, the env file with the
keys); one module per platform renders its files into a `Plan`; `installer` writes a plan
(under `/` or a packaging root), runs the platform's commands when it can, and undoes it.
"""
