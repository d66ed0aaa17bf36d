"""Replays LXD answers recorded from the lab (tests/unit/recorded/) in place of a live server."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ansible_collections.mage.lxd.plugins.plugin_utils.errors import NotFoundError
from ansible_collections.mage.lxd.plugins.plugin_utils.remote import Remote
from ansible_collections.mage.lxd.plugins.plugin_utils.server_kind import ServerKind, server_kind

RECORDED = Path(__file__).resolve().parent / "recorded" / "lxd-5.0.2.json"


class RecordedApi:
    """The part of LxdApi a snapshot uses, answering from a recording and logging each request."""

    def __init__(self, remote: Remote = Remote(), path: Path = RECORDED) -> None:
        self.remote = remote
        self.answers: dict[str, Any] = json.loads(path.read_text())
        self.host_info = self.answers["GET /1.0"]
        self.requests: list[str] = []

    @property
    def server_version(self) -> str:
        return self.host_info["environment"]["server_version"]

    @property
    def clustered(self) -> bool:
        return bool(self.host_info["environment"].get("server_clustered"))

    @property
    def kind(self) -> ServerKind:
        return server_kind(self.host_info)

    def describe(self) -> str:
        return self.remote.describe_as(self.kind)

    def has_extension(self, name: str) -> bool:
        return name in self.host_info["api_extensions"]

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        key = f"GET /1.0/{path}" + "".join(f" {k}={v}" for k, v in sorted((params or {}).items()) if k != "filter")
        self.requests.append(key)
        if key not in self.answers and path.startswith("networks/") and path.count("/") == 1:
            # One network is the entry of the recorded list of its project's networks (LXD answers both
            # with the same object); a name that list lacks is not found, as on the server.
            listed = self.answers.get(f"GET /1.0/networks project={(params or {}).get('project', 'default')} recursion=1")
            found = [item for item in listed or [] if item.get("name") == unquote(path.split("/", 1)[1])]
            if listed is not None and not found:
                raise NotFoundError(f"network not found: {key}")
            if found:
                return copy.deepcopy(found[0])
        if key not in self.answers:
            raise NotFoundError(f"not recorded: {key}")
        return copy.deepcopy(self.answers[key])
