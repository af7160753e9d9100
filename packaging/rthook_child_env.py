"""Runtime hook: child processes (git, kubectl, helm) get the host's library path, not ours.

The one-file bootloader points LD_LIBRARY_PATH at the unpacked bundle so the bundled libpython
and OpenSSL load; inherited by `git`, it would make git-remote-https load our libssl/libcrypto
instead of the host's. The dynamic loader read the variable when this process started, so
restoring it here changes only what children see.
"""

import os

_orig = os.environ.pop("LD_LIBRARY_PATH_ORIG", None)
if _orig is None:
    os.environ.pop("LD_LIBRARY_PATH", None)
else:
    os.environ["LD_LIBRARY_PATH"] = _orig
