"""Checks that ship with the harness and work on any project (files, contracts)."""
