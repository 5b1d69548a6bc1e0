"""Debian's docker-compose 1.29 (Compose v1, docker-py underneath) against each engine.

Every test runs once against our agent and once against a reference Debian dockerd
(`compose_engine`), on a fresh copy of tests/compose/project; the scenarios and
their assertions live in tests/compose/scenarios.py.
"""

from __future__ import annotations

from tests.compose import scenarios


def test_up_serves_backend_answer_through_published_port(project_v1):
    scenarios.up_serves_backend_answer(project_v1)


def test_logs_follow_streams_new_lines(project_v1):
    scenarios.logs_follow(project_v1)


def test_exec_and_run_rm(project_v1):
    scenarios.exec_and_run(project_v1)


def test_stop_start_restart_and_restart_policy(project_v1):
    scenarios.stop_start_restart(project_v1)


def test_named_volume_survives_down_and_goes_with_down_v(project_v1):
    scenarios.named_volume_survives_down(project_v1)


def test_second_up_recreates_only_the_changed_service(project_v1):
    scenarios.second_up_recreates_only_changed(project_v1)


def test_down_v_remove_orphans_leaves_nothing_on_the_host(project_v1):
    scenarios.down_leaves_nothing(project_v1)
