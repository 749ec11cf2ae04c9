"""A local Capillary that honours the customer API contract (described in docs/sandbox.md): ``python -m associate.sandbox``.

``associate.sandbox.launcher.SandboxProcess`` runs it in a child process for tests, the demo
and benchmarks.
"""
