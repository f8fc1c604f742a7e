"""Modes own a tunnel process's lifecycle: signals, pid file, readiness, exit status."""
