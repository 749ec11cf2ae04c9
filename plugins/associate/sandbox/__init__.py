"""A local Capillary that honours ../shared/capillary-api.md: ``python -m associate.sandbox``.

``associate.sandbox.launcher.SandboxProcess`` runs it in a child process for tests, the demo
and benchmarks.
"""
