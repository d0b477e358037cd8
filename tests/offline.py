"""An environment in which downloads fail, whatever the machine's network and caches.

Keras downloads ImageNet weights with urllib into $KERAS_HOME/models (read when Keras
is imported). A subprocess given `offline_environment` has an empty KERAS_HOME and
every HTTP(S) request sent to a proxy port on localhost that nothing listens on, so
the download is refused at once: tests of "weights unreachable" then neither pass nor
skip depending on a cache or on the network.
"""

from __future__ import annotations

import os
import socket


def _closed_local_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed on return: connections are refused


def offline_environment(tmp_path) -> dict[str, str]:
    keras_home = os.path.join(str(tmp_path), "keras_home")
    os.makedirs(keras_home, exist_ok=True)
    proxy = f"http://127.0.0.1:{_closed_local_port()}"
    environment = {
        key: value
        for key, value in os.environ.items()
        if key.lower() not in ("no_proxy", "http_proxy", "https_proxy", "all_proxy")
    }
    environment.update(
        KERAS_HOME=keras_home,
        HTTP_PROXY=proxy,
        HTTPS_PROXY=proxy,
        http_proxy=proxy,
        https_proxy=proxy,
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    return environment
