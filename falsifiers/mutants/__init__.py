"""Known-bad variants of the code under test, patched in by dotted name."""
