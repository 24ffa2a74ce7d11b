#!/usr/bin/env python3
"""Prints COUNT distinct free TCP ports on 127.0.0.1, one per line, for test servers.

The ports are below the kernel's ephemeral range, which other processes' outgoing connections
draw from (a port picked there was taken by one before the server could bind it), and all are
held at once while they are picked, so no two are the same.
"""

import random
import socket
import sys


def main():
    count = int(sys.argv[1])
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    held = []
    while len(held) < count:
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", random.randrange(10000, low)))
            held.append(sock)
        except OSError:
            sock.close()
    print("\n".join(str(sock.getsockname()[1]) for sock in held))


if __name__ == "__main__":
    main()
