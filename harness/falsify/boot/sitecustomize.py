"""Applied at interpreter start in a process ``patch_environment`` prepared: the
mutant patches of ``$HARNESS_PATCHES``. A patch that cannot be applied ends the
process (exit 70) with the reason: the system under test never runs unpatched
when a mutant was asked for."""

import json
import os
import sys


def _apply() -> None:
    raw = os.environ.get("HARNESS_PATCHES")
    if not raw:
        return
    try:
        spec = json.loads(raw)
        root = spec.get("root")
        if root and root not in sys.path:
            sys.path.insert(0, root)
        from harness.falsify.patching import apply_patches

        apply_patches(spec["patches"], spec.get("allowed", ()))
    except Exception as exc:  # noqa: BLE001 - any failure: refuse to run unpatched
        sys.stderr.write(f"harness: cannot apply mutant patches ($HARNESS_PATCHES): {exc}\n")
        sys.stderr.flush()
        os._exit(70)


_apply()
