"""Container security options: `--security-opt` parsing and seccomp (profiles, Docker's default, BPF).

Owns the seccomp profiles and their compilation to the filter a container's
process loads. May import what `runtime.containers` may, plus the container spec.
"""
