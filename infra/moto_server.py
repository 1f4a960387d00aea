"""moto's server, handling one request at a time.

moto's DynamoDB transactions are not isolated from concurrent requests: TransactWriteItems
checks its conditions, writes, and on a cancellation restores a copy of the whole table
taken before it began, with no lock held, so two racing transactions can both pass a
condition DynamoDB would let only one pass, and a cancelled one can undo another's commit.
DynamoDB serialises writes to an item; here every request is served alone (moto is bound
by one interpreter lock anyway, so this costs little), and the write protocol's races are
decided as DynamoDB decides them.

Usage: python moto_server.py PORT [--until-stdin-closes] (binds 127.0.0.1 only). With the
flag, the server exits when its standard input closes: a test process that started it can
then die in any way without leaving it behind.
"""

import os
import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


class OneAtATime:
    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self.lock:
            # The body is built inside the lock: moto's handlers do their work while
            # producing it.
            return list(self.app(environ, start_response))


def exit_when_stdin_closes():
    sys.stdin.buffer.read()
    os._exit(0)


def main():
    port = int(sys.argv[1])
    if "--until-stdin-closes" in sys.argv[2:]:
        threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        "127.0.0.1",
        port,
        OneAtATime(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
