#!/usr/bin/env python3
"""Runs a real ClickHouse 26.x HTTP server for tollgate's tests, demo and development.

chdb embeds the ClickHouse engine (clickhouse-local); clickhouse-local can open ClickHouse's own
HTTP listener with `SYSTEM START LISTEN HTTP`, which lives as long as the call that opened it is
busy. This launcher opens it and keeps the call busy with a sleeping query until that query is
killed (`KILL QUERY WHERE query LIKE '%tollgate-keepalive%'`), the process gets SIGTERM, or the
process named by --watch-pid exits.

  clickhouse_server.py --data DIR --port N --token T [--watch-pid PID]

The data directory holds config.xml (127.0.0.1 only, the port, the token as display_name, so a
health check proves that the server answering is this one), the log and the data itself. A node
of a sharded cluster also has DIR/cluster.xml (its native-protocol port, its macros and the
cluster's remote_servers), which is added to config.xml; Distributed tables speak only the
native protocol, so that listener is opened first.
"""

import argparse
import os
import signal
import threading
import time


CONFIG = """<clickhouse>
  <http_port>{port}</http_port>
  <listen_host>127.0.0.1</listen_host>
  <display_name>{token}</display_name>
  <logger><log>server.log</log><errorlog>server.err.log</errorlog><level>warning</level></logger>
{cluster}</clickhouse>
"""

KEEPALIVE = ("SELECT sleepEachRow(1) FROM numbers(1000000000000) "
             "SETTINGS max_block_size = 1 FORMAT Null /* tollgate-keepalive */")


def watch(pid):
    """Exit when the process that started us is gone (tests cannot run teardown on abort)."""
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(0)
        time.sleep(0.5)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--watch-pid", type=int)
    args = parser.parse_args()

    data = os.path.abspath(args.data)
    os.makedirs(data, exist_ok=True)
    os.chdir(data)
    cluster = ""
    if os.path.exists("cluster.xml"):
        with open("cluster.xml") as f:
            cluster = f.read()
    with open("config.xml", "w") as f:
        f.write(CONFIG.format(port=args.port, token=args.token, cluster=cluster))
    if args.watch_pid:
        threading.Thread(target=watch, args=(args.watch_pid,), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

    from chdb import _chdb
    listen = ("SYSTEM START LISTEN TCP; " if cluster else "") + "SYSTEM START LISTEN HTTP; "
    _chdb.query(listen + KEEPALIVE, "TabSeparated", path=data)


if __name__ == "__main__":
    main()
