"""`HOST:PORT` arguments, shared by the commands (a module of its own so that a command that
starts fast, like `clusterd`, need not import another command's module)."""


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` -> (host, port)."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"listen address must be HOST:PORT, got {text!r}")
    return host, int(port)
