"""Lock files so that two runs never write the same output at once (see :mod:`pathweak.store.locks`)."""

from ..store.locks import LockedError, lock_owner, lock_stale, output_lock

__all__ = ["LockedError", "lock_owner", "lock_stale", "output_lock"]
