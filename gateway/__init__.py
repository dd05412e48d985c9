"""logway's HTTP/2 gateway: Starlette routes over a `storage.backend.Backend`."""
