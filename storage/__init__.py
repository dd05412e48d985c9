"""logway's log engine: partitioned, append-only, checksummed, recoverable.

`storage` never knows HTTP exists. The gateway talks to it only through the
`Backend` protocol in `storage.backend`; `storage.embedded` implements it on a
local data directory.
"""
