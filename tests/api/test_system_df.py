"""`docker system df`: what the dashboard's Volumes page and the tray's clean-up read.

Differential: the same volume, filled by a container with the same bytes, on
our engine and on dockerd; both must count its size and its users alike.
"""

from __future__ import annotations

import uuid

import docker

from tests.support.side_by_side import Engines


def test_volume_sizes_and_users_match_dockerd(agent, dockerd, test_images):
    engines = Engines(agent, dockerd, test_images["busybox"])
    volume, holder = f"df-{uuid.uuid4().hex[:8]}", f"df-holder-{uuid.uuid4().hex[:8]}"
    try:
        engines.compare("volume", "create", volume)
        # 300,000 bytes in two files, one of them in a subdirectory; a symlink counts as itself.
        engines.compare("run", "--rm", "--network", "none", "-v", f"{volume}:/v", engines.image, "sh", "-c",
                        "head -c 100000 /dev/zero > /v/a && mkdir /v/d && head -c 200000 /dev/zero > /v/d/b"
                        " && ln -s a /v/link")
        engines.compare("create", "--name", holder, "--network", "none", "-v", f"{volume}:/v", engines.image)
        seen = []
        for engine in (agent, dockerd):
            client = docker.DockerClient(base_url=engine.docker_env()["DOCKER_HOST"], version="auto")
            try:
                usage = next(v["UsageData"] for v in client.df()["Volumes"] if v["Name"] == volume)
            finally:
                client.close()
            seen.append(usage)
        assert seen[0] == seen[1], f"ours {seen[0]} vs dockerd {seen[1]}"
        assert seen[0]["RefCount"] == 1 and seen[0]["Size"] >= 300_000
    finally:
        engines.cleanup(holder)
        for engine in (agent, dockerd):
            engine.docker("volume", "rm", "-f", volume)
