#!/usr/bin/env python3
"""Traffic of known shape for tollgate's kernel suites, run inside test namespaces.

Every client command binds explicit source ports so that each flow can be matched to its
nftables oracle counter. Sizes are payload bytes; the byte counts that matter are measured by
the kernel (conntrack and nftables), never computed here.

  serve  --tcp-port P --udp-port Q           TCP sink (reads to EOF, then closes) and UDP echo
  tcp    --dst IP --port P --sport S --bytes N [--chunks K] [--pause SECS]
  udp    --dst IP --port P --sport S --count N --size B [--pause SECS]
  short  --dst IP --port P --sport-base S --n N --bytes B
  udp-many --dst IP --port P --sport-base S --n N --size B
  udp-rounds --dst IP --port P --sport-base S --n N --size B --rounds R [--pause SECS]
"""

import argparse
import socket
import threading
import time


def family_of(ip):
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def serve(args):
    """Serve TCP (sink) and UDP (echo) on both families until killed."""
    threads = []
    for family, any_addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        tcp = socket.socket(family, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            tcp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        tcp.bind((any_addr, args.tcp_port))
        tcp.listen(1024)
        threads.append(threading.Thread(target=accept_loop, args=(tcp,), daemon=True))
        udp = socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_INET6:
            udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        udp.bind((any_addr, args.udp_port))
        threads.append(threading.Thread(target=echo_loop, args=(udp,), daemon=True))
    for t in threads:
        t.start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


def accept_loop(listener):
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=sink, args=(conn,), daemon=True).start()


def sink(conn):
    with conn:
        while conn.recv(1 << 16):
            pass


def echo_loop(sock):
    while True:
        data, peer = sock.recvfrom(1 << 16)
        sock.sendto(data, peer)


def connect(dst, port, sport):
    sock = socket.socket(family_of(dst), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("::" if ":" in dst else "0.0.0.0", sport))
    sock.connect((dst, port))
    return sock


def finish(sock):
    """Half-close, wait for the server's close, so the exchange is complete when we return."""
    sock.shutdown(socket.SHUT_WR)
    while sock.recv(1 << 16):
        pass
    sock.close()


def tcp(args):
    sock = connect(args.dst, args.port, args.sport)
    chunk = args.bytes // args.chunks
    for i in range(args.chunks):
        size = chunk if i < args.chunks - 1 else args.bytes - chunk * (args.chunks - 1)
        sock.sendall(b"t" * size)
        if args.pause and i < args.chunks - 1:
            time.sleep(args.pause)
    finish(sock)


def udp(args):
    sock = socket.socket(family_of(args.dst), socket.SOCK_DGRAM)
    sock.bind(("::" if ":" in args.dst else "0.0.0.0", args.sport))
    sock.settimeout(5)
    for i in range(args.count):
        sock.sendto(b"u" * args.size, (args.dst, args.port))
        sock.recvfrom(1 << 16)
        if args.pause and i < args.count - 1:
            time.sleep(args.pause)
    sock.close()


def short(args):
    for i in range(args.n):
        sock = connect(args.dst, args.port, args.sport_base + i)
        sock.sendall(b"s" * args.bytes)
        finish(sock)


def udp_many(args):
    """One datagram from each of N source ports; the receiver must drop them silently."""
    target = (args.dst, args.port)
    payload = b"m" * args.size
    bind_addr = "::" if ":" in args.dst else "0.0.0.0"
    for i in range(args.n):
        sock = socket.socket(family_of(args.dst), socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind_addr, args.sport_base + i))
        sock.sendto(payload, target)
        sock.close()


def udp_rounds(args):
    """N UDP flows kept alive together: each round, one datagram from each of N source ports."""
    bind_addr = "::" if ":" in args.dst else "0.0.0.0"
    payload = b"r" * args.size
    socks = []
    for i in range(args.n):
        sock = socket.socket(family_of(args.dst), socket.SOCK_DGRAM)
        sock.bind((bind_addr, args.sport_base + i))
        sock.connect((args.dst, args.port))
        socks.append(sock)
    for r in range(args.rounds):
        for sock in socks:
            sock.send(payload)
        if args.pause and r < args.rounds - 1:
            time.sleep(args.pause)
    for sock in socks:
        sock.close()


# Every option any command takes: (type, default); no default means required.
OPTIONS = {
    "tcp-port": (int, None), "udp-port": (int, None), "dst": (str, None), "port": (int, None),
    "sport": (int, None), "sport-base": (int, None), "bytes": (int, None), "count": (int, None),
    "size": (int, None), "n": (int, None), "rounds": (int, None), "chunks": (int, 1), "pause": (float, 0.0),
}

COMMANDS = {
    "serve": (serve, ["tcp-port", "udp-port"]),
    "tcp": (tcp, ["dst", "port", "sport", "bytes", "chunks", "pause"]),
    "udp": (udp, ["dst", "port", "sport", "count", "size", "pause"]),
    "short": (short, ["dst", "port", "sport-base", "n", "bytes"]),
    "udp-many": (udp_many, ["dst", "port", "sport-base", "n", "size"]),
    "udp-rounds": (udp_rounds, ["dst", "port", "sport-base", "n", "size", "rounds", "pause"]),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (run, options) in COMMANDS.items():
        p = sub.add_parser(name)
        for option in options:
            kind, default = OPTIONS[option]
            p.add_argument("--" + option, type=kind, default=default, required=default is None)
        p.set_defaults(run=run)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
