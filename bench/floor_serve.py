"""Serve the floor app (bench/floor_app.py) under exactly the server `cds-service serve` runs
(cds_service.server: gevent workers, keep-alive, the same limits), so the bench compares the
service with the framework's floor under the same server settings.

    python bench/floor_serve.py PORT [WORKERS]
"""

from __future__ import annotations

import sys

from gevent import monkey

monkey.patch_all()  # first, as `cds-service serve` does

from cds_service.server import ServerOptions, run  # noqa: E402


def main() -> int:
    port = int(sys.argv[1])
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 2

    def load_app() -> object:
        from floor_app import app  # this script's folder is first on sys.path

        return app

    run(load_app, ServerOptions(host="127.0.0.1", port=port, workers=workers))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
