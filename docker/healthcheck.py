"""The image's HEALTHCHECK: is ``crew-mcp serve`` alive, and over HTTP, does its ``/healthz`` answer 200?

Over stdio there is nothing to probe, so a living server process is healthy. Over HTTP the port is read from
the server's own listening socket rather than from its arguments, so ``--port 0`` and any ``--host`` work.
Standard library only: it runs with the image's Python and no extra dependency. Exit 0 healthy, 1 not.
"""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp{,6}


def _server_processes() -> list[tuple[int, list[str]]]:
    """Every process whose command line is ``crew-mcp serve ...``: the server, and tini (PID 1) that started it."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(Path(a).name == "crew-mcp" for a in argv) and "serve" in argv:
            found.append((int(proc.name), argv))
    return found


def _listening_ports(pid: int) -> list[tuple[str, int]]:
    """(loopback host to dial, port) for every TCP socket the process listens on."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = []
    for table, host in (("tcp", "127.0.0.1"), ("tcp6", "[::1]")):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == _LISTEN and fields[9] in inodes:
                local_ip, port_hex = fields[1].rsplit(":", 1)
                loopback_v4 = local_ip.endswith("0100007F") or local_ip == "00000000"
                dial = host if table == "tcp6" or loopback_v4 else _ipv4(local_ip)
                found.append((dial, int(port_hex, 16)))
    return found


def _ipv4(hex_le: str) -> str:
    return ".".join(str(int(hex_le[i : i + 2], 16)) for i in (6, 4, 2, 0))


def main() -> int:
    """Probe the server; print one line saying why it is unhealthy."""
    servers = _server_processes()
    if not servers:
        print("no crew-mcp serve process")
        return 1
    if not any("--http" in argv for _, argv in servers):
        return 0
    ports = [port for pid, _ in servers for port in _listening_ports(pid)]
    if not ports:
        print("crew-mcp serve --http is not listening yet")
        return 1
    host, port = ports[0]
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=3) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"/healthz on port {port} did not answer 200: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
